//! The one boundary through which the CSI node service runs host commands.
//!
//! It has the shape of the agent's `hwameistor_agent::exec` on purpose. It cannot be that
//! module: the agent binary serves this crate's node service, so this crate cannot depend
//! on the agent (Cargo refuses the cycle). Commands are a program and arguments, never a
//! shell line; errors carry the full command line and stderr.

use futures::future::BoxFuture;
use std::fmt;
use std::process::Stdio;
use std::time::Duration;
use thiserror::Error;

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

/// Runs host commands.
pub trait Executor: Send + Sync + 'static {
    fn run<'a>(&'a self, cmd: &'a HostCommand) -> BoxFuture<'a, Result<CmdOutput, ExecError>>;
}

/// Runs commands in this process's mount namespace (where the kubelet's directories are
/// mounted with bidirectional propagation), with a timeout and a C locale.
pub struct HostExecutor {
    timeout: Duration,
}

impl HostExecutor {
    pub fn new(timeout: Duration) -> Self {
        HostExecutor { timeout }
    }
}

impl Executor for HostExecutor {
    fn run<'a>(&'a self, cmd: &'a HostCommand) -> BoxFuture<'a, Result<CmdOutput, ExecError>> {
        Box::pin(async move {
            let command = cmd.to_string();
            let child = tokio::process::Command::new(&cmd.program)
                .args(&cmd.args)
                .env("LANG", "C")
                .env("LC_ALL", "C")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| ExecError::Spawn {
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
            tracing::debug!(command = %command, code = ?out.status.code(), "host command");
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

    #[tokio::test]
    async fn reports_command_code_and_stderr() {
        let ex = HostExecutor::new(Duration::from_secs(5));
        let ok = ex
            .run(&HostCommand::new("sh").args(["-c", "echo hi"]))
            .await;
        assert_eq!(ok.map(|o| o.stdout), Ok("hi\n".to_string()));
        match ex
            .run(&HostCommand::new("sh").args(["-c", "echo boom >&2; exit 2"]))
            .await
        {
            Err(ExecError::Failed {
                command,
                code,
                stderr,
                ..
            }) => {
                assert_eq!(
                    (command.as_str(), code, stderr.as_str()),
                    ("sh -c 'echo boom >&2; exit 2'", Some(2), "boom")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let slow = HostExecutor::new(Duration::from_millis(100));
        assert!(matches!(
            slow.run(&HostCommand::new("sleep").arg("3")).await,
            Err(ExecError::Timeout { .. })
        ));
    }
}
