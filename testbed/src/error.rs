//! Errors of the testbed. Every error that concerns a VM names it and carries the tail of its
//! serial console, because a boot or guest failure is almost never explained by the host side.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host tool or file the testbed needs is absent.
    #[error("missing host prerequisite {what}: install the Debian package `{package}` (apt-get install {package})")]
    MissingPrerequisite { what: String, package: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A host command (apt-get, dpkg-deb, depmod, ldd, cargo, ...) failed.
    #[error("host command `{cmd}` failed: {detail}")]
    HostCommand { cmd: String, detail: String },

    #[error("invalid testbed spec: {0}")]
    InvalidSpec(String),

    /// The VM failed to boot, died, or its guest daemon misbehaved.
    #[error("VM {vm}: {message}\n--- console tail ---\n{console_tail}")]
    Vm {
        vm: String,
        message: String,
        console_tail: String,
    },

    /// A command run by `exec_ok` exited non-zero.
    #[error("VM {vm}: command `{cmd}` exited with {code}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    CommandFailed {
        vm: String,
        cmd: String,
        code: String,
        stdout: String,
        stderr: String,
    },

    /// A command ran past its timeout and was killed (with its process group) in the guest.
    #[error("VM {vm}: command `{cmd}` timed out after {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    CommandTimeout {
        vm: String,
        cmd: String,
        timeout: Duration,
        stdout: String,
        stderr: String,
    },

    /// The guest daemon reported that an operation failed (e.g. reading a missing file).
    #[error("VM {vm}: guest operation {op} failed: {message}")]
    Guest {
        vm: String,
        op: String,
        message: String,
    },

    /// A QEMU monitor (QMP) command failed.
    #[error("VM {vm}: QMP {command} failed: {message}\n--- console tail ---\n{console_tail}")]
    Qmp {
        vm: String,
        command: String,
        message: String,
        console_tail: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn missing(what: impl Into<String>, package: impl Into<String>) -> Self {
        Error::MissingPrerequisite {
            what: what.into(),
            package: package.into(),
        }
    }
}

/// Adds a context string to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::io(context(), e))
    }
}
