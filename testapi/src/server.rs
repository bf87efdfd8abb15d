//! The HTTPS front end: TLS accept loop, bearer-token authentication, URL
//! routing to discovery or resource verbs, query/body decoding, content
//! negotiation (JSON, Table, aggregated discovery) and watch streaming.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::discovery;
use crate::errors::{ApiError, ApiResult};
use crate::openapi;
use crate::patch::PatchType;
use crate::protobuf;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{
    lock, DeleteOptions, FieldValidation, ListOptions, Propagation, SharedStore, Subresource,
    Target, WriteOptions,
};
use crate::table;
use crate::watch::{self as watchmod, event_line, Filter};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (the real server's limit is 3 MiB per
/// object; bulk test fixtures may be bigger, so be generous).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// The real server's default watch timeout is randomised around 30 minutes.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// State shared by every connection.
pub struct Shared {
    pub store: SharedStore,
    pub token: String,
    pub bookmark_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// host:port clients use, for /api's serverAddressByClientCIDRs.
    pub server_address: String,
}

/// Accept TLS connections until shutdown; each connection is served on its
/// own task and asked to finish gracefully on shutdown.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let acceptor = TlsAcceptor::from(tls);
    let mut shutdown = shared.shutdown.clone();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                // Watch events are small writes on a long-lived stream: without NODELAY
                // each waits on Nagle and the peer's delayed ACK. Go's net package (and so
                // the real API server) sets it on every connection.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                conns.spawn(serve_connection(acceptor, tcp, shared));
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

async fn serve_connection(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
    else {
        return;
    };
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = match dispatch(&shared, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::info!(
        method = %method,
        uri = %uri,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

fn json_response(code: u16, v: &Value, content_type: &str, warnings: &[String]) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

fn ok_json(v: &Value) -> Response<Body> {
    json_response(200, v, "application/json", &[])
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status(), "application/json", &[])
}

/// Decoded query parameters (the last value of a repeated key wins).
struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        let mut m = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            m.insert(dec(k), dec(v));
        }
        Query(m)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1") | Some("True"))
    }
}

/// A URL naming a resource or one object of it.
#[derive(Debug)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
    watch_prefix: bool,
}

#[derive(Debug)]
enum Route {
    Root,
    Health,
    Version,
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    OpenApiV2,
    OpenApiV3,
    OpenApiV3Doc(String),
    Resource(ResourcePath),
}

fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest) = match s.as_slice() {
        [] => return Some(Route::Root),
        ["healthz" | "livez" | "readyz", ..] => return Some(Route::Health),
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::Api),
        ["apis"] => return Some(Route::Apis),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["api", v] => return Some(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g, v] => return Some(Route::GroupVersion(g.to_string(), v.to_string())),
        ["openapi", "v2"] => return Some(Route::OpenApiV2),
        ["openapi", "v3"] => return Some(Route::OpenApiV3),
        ["openapi", "v3", rest @ ..] => return Some(Route::OpenApiV3Doc(rest.join("/"))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (watch_prefix, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let own = |x: &&str| x.to_string();
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] => (
            None,
            "namespaces",
            Some(ns.to_string()),
            Some(sub.to_string()),
        ),
        ["namespaces", ns, plural, tail @ ..] => {
            let name = tail.first().map(own);
            let sub = tail.get(1).map(own);
            if tail.len() > 2 {
                return None;
            }
            (Some(ns.to_string()), *plural, name, sub)
        }
        [plural, tail @ ..] => {
            if tail.len() > 2 {
                return None;
            }
            (None, *plural, tail.first().map(own), tail.get(1).map(own))
        }
        [] => return None,
    };
    Some(Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        plural: plural.to_string(),
        name,
        sub,
        watch_prefix,
    }))
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == shared.token)
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large("the request body is too large"))
            } else {
                Err(ApiError::bad_request(format!(
                    "reading the request body failed: {e}"
                )))
            }
        }
    }
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Decode a create/update body: JSON, YAML (which the real server also
/// accepts), or protobuf for the few kinds kubectl's typed commands send.
fn decode_object(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode the request body as JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode the request body as YAML: {e}"))),
        "application/vnd.kubernetes.protobuf" => match protobuf::decode(body) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - protobuf bodies are supported for v1 Namespace, ConfigMap, Secret and ServiceAccount only; send application/json",
            )),
            Err(e) => Err(ApiError::bad_request(format!("couldn't decode the protobuf request body: {e}"))),
        },
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml"
        ))),
    }
}

fn write_options(q: &Query) -> ApiResult<WriteOptions> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}"
            )))
        }
    };
    let field_validation = match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: Invalid value: {other:?}: fieldValidation must be one of Ignore, Warn, Strict"
            )))
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_validation,
        field_manager: q.get("fieldManager").map(str::to_string),
        force: q.flag("force"),
    })
}

fn list_options(q: &Query) -> ApiResult<ListOptions> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        ),
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").map(str::to_string),
        resource_version: q.get("resourceVersion").map(str::to_string),
        resource_version_match: q
            .get("resourceVersionMatch")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    })
}

/// DeleteOptions from the body (if any) and the query.
fn delete_options(q: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut o = DeleteOptions::default();
    let body_v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode DeleteOptions: {e}")))?
    };
    let body_dry = body_v
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == "All"));
    o.dry_run = q.get("dryRun") == Some("All") || body_dry;
    if let Some(p) = body_v.get("preconditions") {
        o.precondition_uid = p.get("uid").and_then(Value::as_str).map(str::to_string);
        o.precondition_rv = p
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let policy = q.get("propagationPolicy").map(str::to_string).or_else(|| {
        body_v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let orphan = policy.as_deref() == Some("Orphan")
        || body_v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        || q.get("orphanDependents") == Some("true");
    o.propagation = match policy.as_deref() {
        _ if orphan => Propagation::Orphan,
        Some("Foreground") => Propagation::Foreground,
        None | Some("") | Some("Background") => Propagation::Background,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )))
        }
    };
    Ok(o)
}

async fn dispatch(shared: &Arc<Shared>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    let route = parse_route(&path).ok_or_else(ApiError::path_not_found)?;
    if let Route::Health = route {
        let mut r = Response::new(full(b"ok".to_vec()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(r);
    }
    if !authorized(shared, &req) {
        return Err(ApiError::unauthorized());
    }
    let accept = header(&req, ACCEPT);
    let q = Query::parse(req.uri().query());
    let is_get = req.method() == Method::GET;
    let discovery_get = |v: Option<Value>| -> ApiResult<Response<Body>> {
        if !is_get {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        v.map(|v| ok_json(&v)).ok_or_else(ApiError::path_not_found)
    };
    match route {
        Route::Root => {
            let paths = [
                "/api",
                "/api/v1",
                "/apis",
                "/healthz",
                "/livez",
                "/openapi/v2",
                "/openapi/v3",
                "/readyz",
                "/version",
            ];
            discovery_get(Some(json!({"paths": paths})))
        }
        Route::Health => unreachable!("handled above"),
        Route::Version => discovery_get(Some(discovery::version())),
        Route::Api => {
            if discovery::wants_aggregated(&accept) {
                let v = discovery::aggregated(lock(&shared.store).registry(), true);
                return Ok(json_response(
                    200,
                    &v,
                    discovery::AGGREGATED_CONTENT_TYPE,
                    &[],
                ));
            }
            discovery_get(Some(discovery::api_versions(&shared.server_address)))
        }
        Route::Apis => {
            let reg = lock(&shared.store).registry().clone();
            if discovery::wants_aggregated(&accept) {
                let v = discovery::aggregated(&reg, false);
                return Ok(json_response(
                    200,
                    &v,
                    discovery::AGGREGATED_CONTENT_TYPE,
                    &[],
                ));
            }
            discovery_get(Some(discovery::api_group_list(&reg)))
        }
        Route::Group(g) => discovery_get(discovery::api_group(lock(&shared.store).registry(), &g)),
        Route::GroupVersion(g, v) => discovery_get(discovery::resource_list(
            lock(&shared.store).registry(),
            &g,
            &v,
        )),
        Route::OpenApiV2 => Err(ApiError::path_not_found()),
        Route::OpenApiV3 => discovery_get(Some(openapi::root(lock(&shared.store).registry()))),
        Route::OpenApiV3Doc(p) => discovery_get(openapi::group_version_doc(
            lock(&shared.store).registry(),
            &p,
        )),
        Route::Resource(rp) => resource(shared, req, rp, q, accept).await,
    }
}

async fn resource(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    rp: ResourcePath,
    q: Query,
    accept: String,
) -> ApiResult<Response<Body>> {
    let method = req.method().clone();
    let content_type = header(&req, CONTENT_TYPE);
    let body = read_body(req).await?;
    let target = {
        let st = lock(&shared.store);
        st.target(&rp.group, &rp.version, &rp.plural, rp.namespace.clone())
    }
    .ok_or_else(ApiError::path_not_found)?;
    if !target.def.namespaced && rp.namespace.is_some() {
        return Err(ApiError::path_not_found());
    }
    let sub = match rp.sub.as_deref() {
        None => Subresource::Main,
        Some("status") if target.def.has_status(&rp.version) => Subresource::Status,
        Some("binding") if rp.group.is_empty() && rp.plural == "pods" => {
            return bind_pod(shared, &target, &method, rp.name.as_deref(), &q, &body);
        }
        Some(_) => return Err(ApiError::path_not_found()),
    };
    let all_namespaces = target.def.namespaced && rp.namespace.is_none();
    let is_watch = rp.watch_prefix || q.flag("watch");
    match (method, rp.name.as_deref()) {
        (Method::GET, None) if is_watch => start_watch(shared, &target, &q),
        (Method::GET, None) => {
            let lo = list_options(&q)?;
            let page = lock(&shared.store).list(&target, &lo)?;
            let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
            if let Some(c) = &page.continue_token {
                meta["continue"] = json!(c);
                if let Some(n) = page.remaining {
                    meta["remainingItemCount"] = json!(n);
                }
            }
            if table::wants_table(&accept) {
                let t = table::render(
                    &target,
                    &page.items,
                    meta,
                    q.get("includeObject").unwrap_or("Metadata"),
                );
                return Ok(ok_json(&t));
            }
            let list = json!({
                "kind": target.def.list_kind,
                "apiVersion": target.api_version(),
                "metadata": meta,
                "items": page.items,
            });
            Ok(ok_json(&list))
        }
        (Method::GET, Some(name)) => {
            if is_watch {
                return Err(ApiError::method_not_allowed("watch is not supported on a single object; use a fieldSelector on metadata.name"));
            }
            let obj = lock(&shared.store).get(&target, name)?;
            if table::wants_table(&accept) {
                let t = table::render(
                    &target,
                    std::slice::from_ref(&obj),
                    json!({"resourceVersion": obj["metadata"]["resourceVersion"].clone()}),
                    q.get("includeObject").unwrap_or("Metadata"),
                );
                return Ok(ok_json(&t));
            }
            Ok(ok_json(&obj))
        }
        (Method::POST, None) if !all_namespaces && sub == Subresource::Main => {
            let o = write_options(&q)?;
            let obj = decode_object(&content_type, &body)?;
            let w = lock(&shared.store).create(&target, obj, &o)?;
            Ok(json_response(
                201,
                &w.object,
                "application/json",
                &w.warnings,
            ))
        }
        (Method::PUT, Some(name)) if !all_namespaces => {
            let o = write_options(&q)?;
            let obj = decode_object(&content_type, &body)?;
            let w = lock(&shared.store).update(&target, name, obj, sub, &o)?;
            Ok(json_response(
                200,
                &w.object,
                "application/json",
                &w.warnings,
            ))
        }
        (Method::PATCH, Some(name)) if !all_namespaces => {
            let o = write_options(&q)?;
            let ptype = PatchType::from_content_type(&content_type).ok_or_else(|| {
                ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
                ))
            })?;
            let patch: Value = if ptype == PatchType::Apply {
                serde_yaml_ng::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
            };
            let w = lock(&shared.store).patch(&target, name, ptype, &patch, sub, &o)?;
            let code = if w.created { 201 } else { 200 };
            Ok(json_response(
                code,
                &w.object,
                "application/json",
                &w.warnings,
            ))
        }
        (Method::DELETE, Some(name)) if !all_namespaces && sub == Subresource::Main => {
            let o = delete_options(&q, &body)?;
            let d = lock(&shared.store).delete(&target, name, &o)?;
            let code = if d.finished { 200 } else { 202 };
            Ok(json_response(code, &d.object, "application/json", &[]))
        }
        (Method::DELETE, None) if !all_namespaces && sub == Subresource::Main => {
            let o = delete_options(&q, &body)?;
            let lo = list_options(&q)?;
            let list = lock(&shared.store).delete_collection(&target, &lo, &o)?;
            Ok(ok_json(&list))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

/// `POST pods/NAME/binding`: assigns the pod to the Binding's target node, as the real
/// server does for a scheduler: once (a pod already on a node is a conflict), with the
/// Binding's uid as a precondition when it names one.
fn bind_pod(
    shared: &Arc<Shared>,
    target: &Target,
    method: &Method,
    name: Option<&str>,
    q: &Query,
    body: &[u8],
) -> ApiResult<Response<Body>> {
    let Some(name) = name else {
        return Err(ApiError::path_not_found());
    };
    if *method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    let binding: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding Binding: {e}")))?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("Binding.target.name is required"))?
        .to_string();
    let o = write_options(q)?;
    let mut st = lock(&shared.store);
    let pod = st.get(target, name)?;
    if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str) {
        if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!("the UID in the precondition ({uid}) does not match the UID in record"),
            ));
        }
    }
    if let Some(on) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::conflict(
            "",
            "pods",
            name,
            &format!("pod {name} is already assigned to node \"{on}\""),
        ));
    }
    st.patch(
        target,
        name,
        PatchType::Merge,
        &json!({"spec": {"nodeName": node}}),
        Subresource::Main,
        &o,
    )?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        "application/json",
        &[],
    ))
}

fn start_watch(shared: &Arc<Shared>, target: &Target, q: &Query) -> ApiResult<Response<Body>> {
    let lo = list_options(q)?;
    let send_initial = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    match (send_initial, lo.resource_version_match.as_deref()) {
        (true, Some("NotOlderThan")) => {
            if !bookmarks {
                return Err(ApiError::unprocessable("allowWatchBookmarks: Invalid value: false: sendInitialEvents requires setting allowWatchBookmarks to true"));
            }
        }
        (true, _) => {
            return Err(ApiError::unprocessable("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
        }
        (false, Some(_)) => {
            return Err(ApiError::unprocessable("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
        }
        (false, None) => {}
    }
    let timeout = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(s) => Duration::from_secs(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {s:?}")))?,
        ),
    };
    let filter = Filter {
        namespace: target.namespace.clone(),
        labels: lo.labels.clone(),
        fields: lo.fields.clone(),
    };
    let session = {
        let mut st = lock(&shared.store);
        st.watch(
            target,
            filter,
            lo.resource_version.as_deref(),
            send_initial,
            bookmarks,
        )
    };
    let session = match session {
        Ok(s) => s,
        // The real server answers an expired resourceVersion with 200 and a
        // single ERROR event carrying the 410 Status.
        Err(e) if e.code == 410 => {
            let line = event_line("ERROR", &e.to_status());
            let mut r = Response::new(Full::new(line).boxed_unsync());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(watchmod::run(
        session,
        tx,
        shared.store.clone(),
        shared.bookmark_interval,
        timeout,
        shared.shutdown.clone(),
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let Some(Route::Resource(r)) =
            parse_route("/apis/hwameistor.io/v1alpha1/namespaces/ns/localvolumes/v1/status")
        else {
            panic!("not a resource route");
        };
        assert_eq!(
            (
                r.group.as_str(),
                r.namespace.as_deref(),
                r.plural.as_str(),
                r.name.as_deref(),
                r.sub.as_deref()
            ),
            (
                "hwameistor.io",
                Some("ns"),
                "localvolumes",
                Some("v1"),
                Some("status")
            )
        );
        let Some(Route::Resource(r)) = parse_route("/api/v1/namespaces/ns1") else {
            panic!()
        };
        assert_eq!(
            (r.plural.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("ns1"), None)
        );
        let Some(Route::Resource(r)) = parse_route("/api/v1/namespaces/ns1/status") else {
            panic!()
        };
        assert_eq!(
            (r.plural.as_str(), r.sub.as_deref()),
            ("namespaces", Some("status"))
        );
        let Some(Route::Resource(r)) = parse_route("/api/v1/watch/namespaces/ns1/pods") else {
            panic!()
        };
        assert!(r.watch_prefix);
        assert_eq!(r.plural, "pods");
        assert!(parse_route("/apis/a/b/c/d/e/f/g").is_none());
    }
}
