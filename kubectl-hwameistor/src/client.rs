//! Connecting to the cluster the way kubectl does: `--kubeconfig`, `$KUBECONFIG`,
//! `~/.kube/config`, then in-cluster; `--context`; `--request-timeout`.

use crate::errors::AdminError;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::Duration;

/// The standard kubectl connection flags.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// None or zero: no timeout (kubectl's `--request-timeout=0`).
    pub request_timeout: Option<Duration>,
}

/// The cluster a command works on: a client, the system namespace HwameiStor runs in, and
/// the request timeout (needed to size watches so the server ends them before we time out).
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    pub request_timeout: Option<Duration>,
}

impl Cluster {
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Cluster {
            client,
            namespace: namespace.into(),
            request_timeout: None,
        }
    }

    /// Server-side timeout for a watch: under the client's read timeout, so a quiet watch is
    /// closed by the server (and resumed) instead of failing as a client timeout.
    pub fn watch_timeout_secs(&self) -> u32 {
        watch_timeout_secs(self.request_timeout)
    }
}

/// Server-side watch timeout for a client request timeout (None or zero: no timeout).
pub fn watch_timeout_secs(request_timeout: Option<Duration>) -> u32 {
    match request_timeout {
        Some(t) if !t.is_zero() => t.as_secs().saturating_sub(2).clamp(1, 290) as u32,
        _ => 290,
    }
}

/// Builds a client from the connection flags.
pub async fn connect(opts: &ConnectOptions) -> Result<kube::Client, AdminError> {
    let path_str = opts.kubeconfig.as_ref().map(|p| p.display().to_string());
    let kc_err = |message: String| AdminError::Kubeconfig {
        path: path_str.clone(),
        message,
    };
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Some(Kubeconfig::read_from(path).map_err(|e| kc_err(e.to_string()))?),
        None => match Kubeconfig::read() {
            Ok(kc) => Some(kc),
            // Inside a pod there is usually no kubeconfig: fall back to the service account,
            // unless the user asked for a named context, which only a kubeconfig has.
            Err(_)
                if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                    && opts.context.is_none() =>
            {
                None
            }
            Err(e) => {
                return Err(AdminError::Kubeconfig {
                    path: None,
                    message: format!("none found in $KUBECONFIG or ~/.kube/config ({e})"),
                })
            }
        },
    };
    if let (Some(kc), Some(wanted)) = (&kubeconfig, &opts.context) {
        let known: Vec<String> = kc.contexts.iter().map(|c| c.name.clone()).collect();
        if !known.contains(wanted) {
            return Err(AdminError::UnknownContext {
                name: wanted.clone(),
                known,
            });
        }
    }
    let mut config = match kubeconfig {
        Some(kc) => {
            let options = KubeConfigOptions {
                context: opts.context.clone(),
                cluster: None,
                user: None,
            };
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| kc_err(e.to_string()))?
        }
        None => kube::Config::incluster()
            .map_err(|e| kc_err(format!("in-cluster configuration: {e}")))?,
    };
    if let Some(t) = opts.request_timeout.filter(|t| !t.is_zero()) {
        config.read_timeout = Some(t);
        config.write_timeout = Some(t);
        config.connect_timeout = Some(t.min(Duration::from_secs(30)));
        // Count the timeout from the request, not from when a pooled connection went idle.
        config.reset_reader_on_write = true;
    }
    kube::Client::try_from(config).map_err(|e| kc_err(format!("cannot build a client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_end_before_the_request_timeout() {
        let t = |secs| watch_timeout_secs(Some(Duration::from_secs(secs)));
        assert_eq!(t(30), 28);
        assert_eq!(t(1), 1);
        assert_eq!(t(0), 290);
        assert_eq!(t(3600), 290);
        assert_eq!(watch_timeout_secs(None), 290);
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_says_which_file() {
        let opts = ConnectOptions {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..Default::default()
        };
        let e = match connect(&opts).await {
            Ok(_) => panic!("a missing kubeconfig must fail"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.starts_with("cannot load kubeconfig /nonexistent/kubeconfig: "),
            "{e}"
        );
        assert!(
            e.ends_with("pass --kubeconfig FILE or set KUBECONFIG"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_unknown_context_lists_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
             users: [{name: u, user: {token: t}}]\n\
             contexts: [{name: ctx-a, context: {cluster: c, user: u}}, {name: ctx-b, context: {cluster: c, user: u}}]\n\
             current-context: ctx-a\n",
        )
        .unwrap();
        let opts = ConnectOptions {
            kubeconfig: Some(path),
            context: Some("nope".into()),
            ..Default::default()
        };
        let e = match connect(&opts).await {
            Ok(_) => panic!("an unknown context must fail"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            e,
            "context \"nope\" not found in the kubeconfig; known contexts: ctx-a, ctx-b"
        );
    }
}
