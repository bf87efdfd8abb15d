//! The extender's HTTP(S) endpoint: `POST /filter`, `/prioritize`, `/bind` as kube-scheduler
//! calls them, `POST /mutate-pods` and `/validate` as the API server calls its admission
//! webhooks, and `GET /healthz`, `/readyz`, `/metrics`.
//!
//! Bodies larger than the limit are refused with 413 and malformed ones with 400, each with
//! a message saying what was wrong; nothing a client sends can make it panic. With TLS, the
//! certificate and key files are read again when they change (a rotated Secret reaches the
//! pod's files), so rotation needs no restart.

use crate::extender::Extender;
use crate::protocol::{ExtenderArgs, ExtenderBindingArgs};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::core::admission::AdmissionReview;
use kube::core::DynamicObject;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest request body accepted by default: a pod and the candidates' names (the
/// scheduler is configured `nodeCacheCapable`) are far smaller.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// How a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the request body failed: {0}")]
    Read(String),
    #[error("request body is not valid JSON for this call: {0}")]
    Json(String),
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        format!("{msg}\n").into_bytes(),
    )
}

fn json<T: serde::Serialize>(v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => respond(StatusCode::OK, "application/json", b),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    max: usize,
) -> Result<T, BodyError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge(max));
    }
    let collected = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge(max)
            } else {
                BodyError::Read(e.to_string())
            }
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(|e| BodyError::Json(e.to_string()))
}

/// Answers one request.
pub async fn handle(ext: Arc<Extender>, req: Request<Incoming>, max_body: usize) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let verb = path.rsplit('/').next().unwrap_or("").to_string();
    match (method, verb.as_str()) {
        (Method::GET, "healthz") => text(StatusCode::OK, "ok"),
        (Method::GET, "readyz") => {
            if ext.is_ready() {
                text(StatusCode::OK, "ok")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
            }
        }
        (Method::GET, "metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            ext.metrics.render().into_bytes(),
        ),
        (Method::POST, "filter") => match read_json::<ExtenderArgs>(req, max_body).await {
            Ok(args) => json(&ext.filter(&args)),
            Err(e) => bad(&ext, e),
        },
        (Method::POST, "prioritize") => match read_json::<ExtenderArgs>(req, max_body).await {
            Ok(args) => match ext.prioritize(&args) {
                Ok(list) => json(&list),
                Err(e) => {
                    ext.metrics
                        .bad_requests
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    text(StatusCode::BAD_REQUEST, &e.to_string())
                }
            },
            Err(e) => bad(&ext, e),
        },
        (Method::POST, "bind") => match read_json::<ExtenderBindingArgs>(req, max_body).await {
            Ok(args) => json(&ext.bind(&args).await),
            Err(e) => bad(&ext, e),
        },
        (Method::POST, "mutate-pods" | "validate") => {
            match read_json::<AdmissionReview<DynamicObject>>(req, max_body).await {
                Ok(r) => json(&ext.admit(r).await),
                Err(e) => bad(&ext, e),
            }
        }
        (_, "filter" | "prioritize" | "bind" | "mutate-pods" | "validate") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "filter, prioritize, bind, mutate-pods and validate are POST calls",
        ),
        (_, "healthz" | "readyz" | "metrics") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "only GET")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: this server answers POST /filter, /prioritize, /bind, /mutate-pods, /validate and GET /healthz, /readyz, /metrics",
        ),
    }
}

fn bad(ext: &Extender, e: BodyError) -> Response<Body> {
    ext.metrics
        .bad_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(error = %e, "bad extender request");
    text(e.status(), &e.to_string())
}

/// The certificate and key of the HTTPS endpoint, read again when the files change.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<rustls::ServerConfig>, Option<SystemTime>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A server configuration from PEM files.
pub fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("reading certificates from {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("certificate in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("private key in {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(cfg)
}

impl TlsFiles {
    pub fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<TlsFiles> {
        let cfg = load_tls(&cert, &key)?;
        let stamp = modified(&cert).max(modified(&key));
        Ok(TlsFiles {
            cert,
            key,
            current: RwLock::new((Arc::new(cfg), stamp)),
        })
    }

    /// The configuration for the next connection: the files' if they changed and load,
    /// else the one in use (a half-written rotation is picked up on a later connection).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let stamp = modified(&self.cert).max(modified(&self.key));
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.1 == stamp {
                return cur.0.clone();
            }
        }
        match load_tls(&self.cert, &self.key) {
            Ok(cfg) => {
                tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                let cfg = Arc::new(cfg);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (cfg.clone(), stamp);
                cfg
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed certificate files do not load; serving with the previous ones");
                self.current
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .clone()
            }
        }
    }
}

/// Serves `ext` on `listener` (HTTPS when `tls` is given) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    ext: Arc<Extender>,
    tls: Option<Arc<TlsFiles>>,
    max_body: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let ext = ext.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ext = ext.clone();
                        async move { Ok::<_, Infallible>(handle(ext, req, max_body).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(files) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(files.config());
                            let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                                return;
                            };
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}
