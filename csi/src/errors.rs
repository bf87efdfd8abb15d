//! Errors of the crate's public surface and their gRPC codes.
//!
//! The CSI spec fixes which code each failure gets (the sidecars act on them: e.g. the
//! provisioner reschedules a pod on ResourceExhausted), so every conversion here is a
//! decision, not a default.

use crate::capability::CapabilityError;
use crate::params::ParamError;
use hwameistor_core::sizing::SizeError;
use thiserror::Error;
use tonic::{Code, Status};

/// Starting a CSI server failed.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("CSI endpoint {0:?} is not a unix:// address (example: unix:///csi/csi.sock)")]
    Endpoint(String),
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: String,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub fn invalid(msg: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, msg)
}

pub fn not_found(msg: impl Into<String>) -> Status {
    Status::new(Code::NotFound, msg)
}

pub fn precondition(msg: impl Into<String>) -> Status {
    Status::new(Code::FailedPrecondition, msg)
}

pub fn internal(msg: impl Into<String>) -> Status {
    Status::new(Code::Internal, msg)
}

/// A required request field is empty.
pub fn missing(field: &str) -> Status {
    invalid(format!("{field} is required"))
}

impl From<ParamError> for Status {
    fn from(e: ParamError) -> Status {
        invalid(e.to_string())
    }
}

impl From<CapabilityError> for Status {
    fn from(e: CapabilityError) -> Status {
        invalid(e.to_string())
    }
}

/// The size rule's refusal as a gRPC status.
pub fn size_status(e: SizeError) -> Status {
    match e {
        SizeError::Invalid(_) => invalid(e.to_string()),
        // The spec's code for "unsupported capacity".
        SizeError::BelowMinimum { .. } => Status::new(Code::OutOfRange, e.to_string()),
    }
}

/// An API server error: transient ones become Unavailable so the sidecar retries.
pub fn kube_status(context: &str, e: kube::Error) -> Status {
    match &e {
        kube::Error::Api(s) if s.code == 404 => not_found(format!("{context}: {e}")),
        kube::Error::Api(s) if s.code == 409 => Status::new(
            Code::Aborted,
            format!("{context}: concurrent change, retry: {e}"),
        ),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => invalid(format!("{context}: {e}")),
        _ => Status::new(Code::Unavailable, format!("{context}: {e}")),
    }
}
