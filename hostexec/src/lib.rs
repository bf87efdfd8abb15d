//! The one boundary through which HwameiStor runs host commands.
//!
//! Every LVM, mkfs, mount (and later DRBD) invocation goes through [`Executor`], so that the
//! commands the components run are in one place, carry their full command line and stderr
//! in errors, and never pass through a shell. On top of it sit typed services that speak
//! in the tools' own terms ([`lvm::Lvm`] now; DRBD and filesystems next), which the agent
//! calls and tests replace with stateful fakes (`hwameistor-testkit`).

use futures::future::BoxFuture;
use std::fmt;
use std::process::Stdio;
use std::time::Duration;
use thiserror::Error;

pub mod disk;
pub mod drbd;
pub mod lvm;

/// A command to run on the host: a program and its arguments, never a shell line, so no
/// argument is ever interpreted by a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCommand {
    pub program: String,
    pub args: Vec<String>,
}

impl HostCommand {
    pub fn new(program: impl Into<String>) -> Self {
        HostCommand {
            program: program.into(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

impl fmt::Display for HostCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                write!(f, " '{}'", a.replace('\'', "'\\''"))?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

/// What a command printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdOutput {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ExecError {
    #[error("could not start `{command}`: {reason}")]
    Spawn { command: String, reason: String },
    #[error("`{command}` failed (exit code {code:?}): {stderr}")]
    Failed {
        command: String,
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
}

impl ExecError {
    /// The stderr of a command that ran and failed; empty otherwise.
    pub fn stderr(&self) -> &str {
        match self {
            ExecError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// Runs host commands.
pub trait Executor: Send + Sync + 'static {
    fn run<'a>(&'a self, cmd: &'a HostCommand) -> BoxFuture<'a, Result<CmdOutput, ExecError>>;
}

/// How the agent reaches the host's tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HostMode {
    /// Run the tools directly: the agent runs on the host (or its image carries the tools
    /// and sees the host's /dev).
    Direct,
    /// Enter the mount namespace of the host's PID 1 first, so the host's own LVM
    /// configuration and lock files are used.
    Nsenter,
}

/// Runs commands for real, with a timeout, in a C locale so output can be parsed.
pub struct HostExecutor {
    mode: HostMode,
    timeout: Duration,
}

impl HostExecutor {
    pub fn new(mode: HostMode, timeout: Duration) -> Self {
        HostExecutor { mode, timeout }
    }

    /// Runs tools directly in this process's namespaces (the CSI node service mounts inside
    /// its own container, whose kubelet directory propagates to the host).
    pub fn direct(timeout: Duration) -> Self {
        Self::new(HostMode::Direct, timeout)
    }

    fn build(&self, cmd: &HostCommand) -> tokio::process::Command {
        let mut c = match self.mode {
            HostMode::Direct => {
                let mut c = tokio::process::Command::new(&cmd.program);
                c.args(&cmd.args);
                c
            }
            HostMode::Nsenter => {
                let mut c = tokio::process::Command::new("nsenter");
                c.args(["--target", "1", "--mount", "--uts", "--ipc", "--net", "--"]);
                c.arg(&cmd.program).args(&cmd.args);
                c
            }
        };
        c.env("LANG", "C")
            .env("LC_ALL", "C")
            // LVM warns about every inherited descriptor; the warnings would pollute stderr.
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

impl Executor for HostExecutor {
    fn run<'a>(&'a self, cmd: &'a HostCommand) -> BoxFuture<'a, Result<CmdOutput, ExecError>> {
        Box::pin(async move {
            let command = cmd.to_string();
            let started = std::time::Instant::now();
            let child = self.build(cmd).spawn().map_err(|e| ExecError::Spawn {
                command: command.clone(),
                reason: e.to_string(),
            })?;
            let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => {
                    return Err(ExecError::Spawn {
                        command,
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(ExecError::Timeout {
                        command,
                        timeout: self.timeout,
                    })
                }
            };
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            tracing::debug!(command = %command, elapsed_ms = started.elapsed().as_millis() as u64, code = ?out.status.code(), "host command");
            if out.status.success() {
                Ok(CmdOutput { stdout, stderr })
            } else {
                Err(ExecError::Failed {
                    command,
                    code: out.status.code(),
                    stdout,
                    stderr,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let c = HostCommand::new("lvcreate").args(["-n", "my vol", "it's"]);
        assert_eq!(c.to_string(), "lvcreate -n 'my vol' 'it'\\''s'");
    }

    #[tokio::test]
    async fn real_executor_reports_command_and_stderr() {
        let ex = HostExecutor::new(HostMode::Direct, Duration::from_secs(5));
        let ok = ex
            .run(&HostCommand::new("sh").args(["-c", "echo hi"]))
            .await;
        assert_eq!(ok.map(|o| o.stdout), Ok("hi\n".to_string()));
        let err = ex
            .run(&HostCommand::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .await;
        match err {
            Err(ExecError::Failed {
                command,
                code,
                stderr,
                ..
            }) => {
                assert_eq!(command, "sh -c 'echo boom >&2; exit 3'");
                assert_eq!(code, Some(3));
                assert_eq!(stderr, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
        let missing = ex.run(&HostCommand::new("/nonexistent/tool")).await;
        assert!(matches!(missing, Err(ExecError::Spawn { .. })));
    }

    #[tokio::test]
    async fn real_executor_times_out() {
        let ex = HostExecutor::new(HostMode::Direct, Duration::from_millis(200));
        let r = ex.run(&HostCommand::new("sleep").arg("5")).await;
        assert!(matches!(r, Err(ExecError::Timeout { .. })), "{r:?}");
    }
}
