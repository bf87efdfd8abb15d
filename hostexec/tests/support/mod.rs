//! What the VM tests of the host boundary share: an executor that runs each command's argv
//! in a testbed VM (as the host executor runs it on a node), and the testbed's assets.
#![allow(dead_code)]

use futures::future::BoxFuture;
use hwameistor_hostexec::{CmdOutput, ExecError, Executor, HostCommand};
use hwameistor_testbed::{Testbed, TestbedAssets, VmSpec};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound of one command in a VM.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(90);

/// A word for `sh -c`: single-quoted, so the guest shell interprets nothing in it.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What the host executor does, in a VM: argv quoted, a C locale, stdin closed.
pub fn shell_line(cmd: &HostCommand) -> String {
    let mut line = String::from("LC_ALL=C LANG=C exec");
    for w in std::iter::once(&cmd.program).chain(&cmd.args) {
        line.push(' ');
        line.push_str(&quote(w));
    }
    line.push_str(" </dev/null");
    line
}

/// Runs commands in one VM of a shared testbed.
#[derive(Clone)]
pub struct VmExec {
    pub tb: Arc<Testbed>,
    pub vm: String,
}

impl Executor for VmExec {
    fn run<'a>(&'a self, cmd: &'a HostCommand) -> BoxFuture<'a, Result<CmdOutput, ExecError>> {
        Box::pin(async move {
            let command = cmd.to_string();
            let out = self
                .tb
                .vm(&self.vm)
                .exec_timeout(&shell_line(cmd), CMD_TIMEOUT)
                .await
                .map_err(|e| match e {
                    hwameistor_testbed::Error::CommandTimeout { timeout, .. } => {
                        ExecError::Timeout {
                            command: command.clone(),
                            timeout,
                        }
                    }
                    other => ExecError::Spawn {
                        command: command.clone(),
                        reason: other.to_string(),
                    },
                })?;
            if out.success() {
                Ok(CmdOutput {
                    stdout: out.stdout,
                    stderr: out.stderr,
                })
            } else {
                Err(ExecError::Failed {
                    command,
                    code: out.code,
                    stdout: out.stdout,
                    stderr: out.stderr.trim().to_string(),
                })
            }
        })
    }
}

/// The testbed's kernel, initramfs and guest tools (built once per machine); a missing QEMU
/// fails the test with the package to install.
pub async fn assets() -> TestbedAssets {
    let qemu_found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").exists()));
    assert!(
        qemu_found,
        "qemu-system-x86_64 not found: this test boots real VMs; install the Debian package qemu-system-x86"
    );
    tokio::task::spawn_blocking(|| TestbedAssets::build(&[]))
        .await
        .expect("asset build panicked")
        .unwrap_or_else(|e| panic!("testbed assets: {e}"))
}

/// Boots `vms`, runs `scenario` on them within `timeout`, and shuts the VMs down (dropping
/// the testbed on a panic kills them too).
pub async fn on_testbed<F, Fut>(vms: Vec<VmSpec>, timeout: Duration, scenario: F)
where
    F: FnOnce(Arc<Testbed>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = std::time::Instant::now();
    let assets = assets().await;
    let tb = tokio::time::timeout(timeout, async {
        let tb = Arc::new(
            Testbed::start(&assets, vms)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        eprintln!("VMs up after {:?}", started.elapsed());
        scenario(tb.clone()).await;
        tb
    })
    .await
    .unwrap_or_else(|_| panic!("test did not finish within {timeout:?}"));
    match Arc::try_unwrap(tb) {
        Ok(tb) => tb.shutdown().await.unwrap_or_else(|e| panic!("{e}")),
        Err(_) => panic!("testbed still shared after the scenario"),
    }
    eprintln!("whole test {:?}", started.elapsed());
}
