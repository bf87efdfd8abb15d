//! [`TestCluster`]: a real cluster when `HWAMEISTOR_TEST_KUBECONFIG` names a
//! kubeconfig, otherwise a fresh in-process [`TestApiServer`].

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cleanup::Cleanup;
use crate::errors::Error;
use crate::test_server::{ServerOptions, TestApiServer};

/// The environment variable that switches tests to a real cluster.
pub const KUBECONFIG_ENV: &str = "HWAMEISTOR_TEST_KUBECONFIG";

pub enum TestCluster {
    Local(TestApiServer),
    Real { kubeconfig: PathBuf },
}

impl TestCluster {
    pub async fn start() -> Result<Self, Error> {
        match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(path) => Ok(TestCluster::Real {
                kubeconfig: PathBuf::from(path),
            }),
            None => Ok(TestCluster::Local(
                TestApiServer::start(ServerOptions::default()).await?,
            )),
        }
    }

    pub async fn client(&self) -> Result<kube::Client, Error> {
        match self {
            TestCluster::Local(s) => s.client().await,
            TestCluster::Real { kubeconfig } => {
                let kc = Kubeconfig::read_from(kubeconfig)?;
                let config =
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
                Ok(kube::Client::try_from(config)?)
            }
        }
    }

    /// Kubeconfig text for a client that reaches this machine's loopback at
    /// `server_host` (`127.0.0.1` on the host itself, `10.0.2.2` inside a QEMU node VM).
    ///
    /// For a real cluster the given kubeconfig is made portable: a server on loopback is
    /// rewritten to `server_host` with `tls-server-name` keeping the certificate's name,
    /// and files it refers to (CA, client certificate and key, token file) are inlined,
    /// since the VM has none of them. A kubeconfig whose user runs an exec or auth-provider
    /// plugin cannot work in a VM: that is an error naming it, not a silent failure later.
    pub fn kubeconfig_yaml(&self, server_host: &str) -> Result<String, Error> {
        match self {
            TestCluster::Local(s) => Ok(s.kubeconfig_yaml(server_host)),
            TestCluster::Real { kubeconfig } => {
                let text = std::fs::read_to_string(kubeconfig).map_err(|source| {
                    Error::ReadKubeconfig {
                        path: kubeconfig.clone(),
                        source,
                    }
                })?;
                portable_kubeconfig(&text, kubeconfig, server_host)
            }
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, TestCluster::Real { .. })
    }

    /// A guard that deletes, when dropped, what is registered with it: on a
    /// real cluster only (an in-process server goes with the test).
    pub fn cleanup(&self) -> Cleanup {
        match self {
            TestCluster::Local(_) => Cleanup::new(None),
            TestCluster::Real { kubeconfig } => Cleanup::new(Some(kubeconfig.clone())),
        }
    }

    /// The local server, if this is not a real cluster.
    pub fn local(&self) -> Option<&TestApiServer> {
        match self {
            TestCluster::Local(s) => Some(s),
            TestCluster::Real { .. } => None,
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Splits `https://host:port/path` into (scheme://, host, rest).
fn split_server(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme_len = scheme.len() + 3;
    let host_end = if rest.starts_with('[') {
        rest.find(']')? + 1
    } else {
        rest.find([':', '/']).unwrap_or(rest.len())
    };
    Some((&url[..scheme_len], &rest[..host_end], &rest[host_end..]))
}

/// See [`TestCluster::kubeconfig_yaml`].
pub fn portable_kubeconfig(
    text: &str,
    path: &std::path::Path,
    server_host: &str,
) -> Result<String, Error> {
    use base64::Engine as _;
    use serde_yaml_ng::Value;
    let fail = |reason: String| Error::PortableKubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let inline = |map: &mut serde_yaml_ng::Mapping, file_key: &str, data_key: &str| {
        let Some(file) = map.remove(file_key) else {
            return Ok(());
        };
        let file = file.as_str().unwrap_or_default().to_string();
        let full = base.join(&file);
        let bytes = std::fs::read(&full)
            .map_err(|e| fail(format!("{file_key} {}: {e}", full.display())))?;
        let value = if data_key == "token" {
            String::from_utf8_lossy(&bytes).trim().to_string()
        } else {
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        map.insert(Value::from(data_key), Value::from(value));
        Ok::<(), Error>(())
    };
    let mut doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| fail(format!("not YAML: {e}")))?;
    let for_vm = !is_loopback_host(server_host);
    if let Some(clusters) = doc.get_mut("clusters").and_then(Value::as_sequence_mut) {
        for c in clusters {
            let Some(cluster) = c.get_mut("cluster").and_then(Value::as_mapping_mut) else {
                continue;
            };
            inline(
                cluster,
                "certificate-authority",
                "certificate-authority-data",
            )?;
            let server = cluster
                .get("server")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some((scheme, host, rest)) = split_server(&server) {
                if is_loopback_host(host) {
                    cluster.insert(
                        Value::from("server"),
                        Value::from(format!("{scheme}{server_host}{rest}")),
                    );
                    let skip = cluster
                        .get("insecure-skip-tls-verify")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if !skip && !cluster.contains_key("tls-server-name") {
                        let name = host.trim_start_matches('[').trim_end_matches(']');
                        cluster.insert(Value::from("tls-server-name"), Value::from(name));
                    }
                }
            }
        }
    }
    if let Some(users) = doc.get_mut("users").and_then(Value::as_sequence_mut) {
        for u in users {
            let name = u
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(user) = u.get_mut("user").and_then(Value::as_mapping_mut) else {
                continue;
            };
            inline(user, "client-certificate", "client-certificate-data")?;
            inline(user, "client-key", "client-key-data")?;
            inline(user, "tokenFile", "token")?;
            for plugin in ["exec", "auth-provider"] {
                if for_vm && user.contains_key(plugin) {
                    return Err(fail(format!(
                        "user {name} authenticates with an {plugin} plugin, which a node VM cannot run; give the tests a kubeconfig with a token or a client certificate"
                    )));
                }
            }
        }
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| fail(format!("cannot render: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_server_is_rewritten_and_files_are_inlined() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.crt"), b"CA").expect("ca");
        std::fs::write(dir.path().join("token"), b"secret\n").expect("token");
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n    tokenFile: token\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n";
        let path = dir.path().join("kubeconfig");
        let out = portable_kubeconfig(text, &path, "10.0.2.2").expect("portable");
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).expect("yaml");
        let c = &v["clusters"][0]["cluster"];
        assert_eq!(c["server"].as_str(), Some("https://10.0.2.2:6443"));
        assert_eq!(c["tls-server-name"].as_str(), Some("127.0.0.1"));
        assert_eq!(c["certificate-authority-data"].as_str(), Some("Q0E="));
        assert!(c.get("certificate-authority").is_none());
        assert_eq!(v["users"][0]["user"]["token"].as_str(), Some("secret"));
    }

    #[test]
    fn remote_servers_stay_and_plugins_are_refused_for_a_vm() {
        let text = "clusters:\n- name: c\n  cluster:\n    server: https://api.example.test:6443\nusers:\n- name: u\n  user:\n    exec: {command: gcloud}\n";
        let path = std::path::Path::new("/nonexistent/kubeconfig");
        let e = portable_kubeconfig(text, path, "10.0.2.2").expect_err("exec in a VM");
        assert!(e.to_string().contains("exec plugin"), "{e}");
        let host = portable_kubeconfig(text, path, "127.0.0.1").expect("fine on the host");
        assert!(host.contains("https://api.example.test:6443"), "{host}");
        assert_eq!(
            split_server("https://[::1]:6443/x"),
            Some(("https://", "[::1]", ":6443/x"))
        );
        assert!(is_loopback_host("[::1]") && is_loopback_host("localhost"));
    }
}
