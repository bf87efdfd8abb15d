//! Error types: the library's own [`Error`] and [`ApiError`], an API failure
//! rendered to clients as a `meta.k8s.io/v1` `Status` object.

use serde_json::{json, Value};

/// Failures of the library API (starting the server, building clients).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("kubeconfig could not be used: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("kube client could not be built: {0}")]
    Client(#[from] kube::Error),
    #[error("reading kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("kubeconfig {path} cannot be handed to another host: {reason}")]
    PortableKubeconfig {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// One entry of `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// e.g. `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`.
    pub reason: String,
    /// The body of the field error, without the field path, e.g.
    /// `Invalid value: 5: spec.x in body should be less than or equal to 4`.
    pub message: String,
    /// The field path, e.g. `spec.x`.
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: &str, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The error as the real server prints it inside an Invalid message:
    /// `field: body`.
    pub fn display(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// `Status.details`: what the failure is about.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    /// The real server puts the resource (plural) here for
    /// NotFound/AlreadyExists/Conflict and the Kind for Invalid.
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
}

/// An API failure with the HTTP code, reason and details the real server uses.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel through every request path and should stay small.
    pub details: Option<Box<Details>>,
}

/// `resource.group`, or just `resource` for the core group, as used in messages.
pub fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    fn base(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: Some(name.to_string()),
            group: Some(group.to_string()),
            kind: Some(kind.to_string()),
            causes: Vec::new(),
        }));
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::base(
            404,
            "NotFound",
            format!("{} \"{}\" not found", group_resource(group, plural), name),
        )
        .with_details(group, plural, name)
    }

    /// 404 for a URL that names no served resource.
    pub fn path_not_found() -> Self {
        Self::base(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::base(
            409,
            "AlreadyExists",
            format!(
                "{} \"{}\" already exists",
                group_resource(group, plural),
                name
            ),
        )
        .with_details(group, plural, name)
    }

    /// 409 Conflict, `Operation cannot be fulfilled on R "name": detail`.
    pub fn conflict(group: &str, plural: &str, name: &str, detail: &str) -> Self {
        Self::base(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                group_resource(group, plural),
                name,
                detail
            ),
        )
        .with_details(group, plural, name)
    }

    /// The optimistic-concurrency conflict of a stale resourceVersion.
    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid: `Kind.group "name" is invalid: field: detail`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let body = match causes.as_slice() {
            [one] => one.display(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(Cause::display)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut e = Self::base(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {body}"),
        )
        .with_details(group, kind, name);
        if let Some(d) = e.details.as_mut() {
            d.causes = causes;
        }
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::base(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::base(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::base(403, "Forbidden", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::base(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::base(410, "Expired", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::base(415, "UnsupportedMediaType", message)
    }

    /// 422 without field causes (e.g. a JSON patch that cannot be applied).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::base(422, "Invalid", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::base(413, "RequestEntityTooLarge", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::base(500, "InternalError", message)
    }

    /// The `Status` object sent as the response body (or inside a watch ERROR event).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if let Some(n) = &d.name {
                details.insert("name".into(), json!(n));
            }
            if let Some(g) = d.group.as_ref().filter(|g| !g.is_empty()) {
                details.insert("group".into(), json!(g));
            }
            if let Some(k) = &d.kind {
                details.insert("kind".into(), json!(k));
            }
            if !d.causes.is_empty() {
                let causes: Vec<Value> = d
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Shorthand for results of API operations.
pub type ApiResult<T> = Result<T, ApiError>;
