//! A scripted [`Executor`]: for testing the code that builds command lines and reads their
//! output (e.g. [`hwameistor_hostexec::lvm::LvmCli`]), not for testing behaviour — that is
//! what the stateful fakes are for.

use futures::future::BoxFuture;
use hwameistor_hostexec::{CmdOutput, ExecError, Executor, HostCommand};
use std::sync::{Arc, Mutex};

/// A command-line prefix and the answer to commands that start with it.
type Rule = (String, Result<CmdOutput, ExecError>);

/// A scripted executor for unit tests: answers each command with the first rule whose
/// prefix matches its command line, and records every command it was asked to run.
#[derive(Default, Clone)]
pub struct FakeExecutor {
    rules: Arc<Mutex<Vec<Rule>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FakeExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers commands starting with `prefix` with `stdout`.
    pub fn ok(&self, prefix: &str, stdout: &str) -> &Self {
        self.push(
            prefix,
            Ok(CmdOutput {
                stdout: stdout.to_string(),
                stderr: String::new(),
            }),
        )
    }

    /// Fails commands starting with `prefix` with exit code 5 and `stderr`.
    pub fn fail(&self, prefix: &str, stderr: &str) -> &Self {
        self.push(
            prefix,
            Err(ExecError::Failed {
                command: prefix.to_string(),
                code: Some(5),
                stdout: String::new(),
                stderr: stderr.to_string(),
            }),
        )
    }

    fn push(&self, prefix: &str, answer: Result<CmdOutput, ExecError>) -> &Self {
        if let Ok(mut rules) = self.rules.lock() {
            rules.push((prefix.to_string(), answer));
        }
        self
    }

    /// Every command line run so far.
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Executor for FakeExecutor {
    fn run<'a>(&'a self, cmd: &'a HostCommand) -> BoxFuture<'a, Result<CmdOutput, ExecError>> {
        let line = cmd.to_string();
        if let Ok(mut log) = self.log.lock() {
            log.push(line.clone());
        }
        let answer = self.rules.lock().ok().and_then(|rules| {
            rules
                .iter()
                .find(|(p, _)| line.starts_with(p.as_str()))
                .map(|(_, a)| a.clone())
        });
        Box::pin(async move {
            answer.unwrap_or_else(|| {
                Err(ExecError::Spawn {
                    command: line.clone(),
                    reason: "no scripted answer".into(),
                })
            })
        })
    }
}
