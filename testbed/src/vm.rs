//! One node VM: booting it, talking to its exec daemon, hot-plugging disks, stopping it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::process::Child;

use crate::error::{Error, IoContext};
use crate::guest_conn::{CallError, GuestConn};
use crate::protocol::{Op, Reply};
use crate::qemu::{self, Disk, Qmp};
use crate::spec::{validate_disk, DiskSpec};

/// Default boot timeout: TCG boots take ~10 s alone, several at once on two cores take longer.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default timeout of [`Vm::exec`].
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// The private segment every VM's eth1 is on: `192.168.77.<index + 10>/24`.
pub const PRIVATE_NET_PREFIX: &str = "192.168.77.";
/// How the guest reaches the host's 127.0.0.1 (QEMU user-mode networking).
pub const HOST_ADDR_FROM_GUEST: &str = "10.0.2.2";

/// How long a clean poweroff may take before the VM is killed.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of console log quoted in errors.
const TAIL_LINES: usize = 60;

/// Result of a command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; `None` when the command was killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Output, lossily decoded as UTF-8 (use [`Vm::read_file`] for binary data).
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// State of a process started with [`Vm::spawn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Everything the testbed decides for a VM before it boots.
pub(crate) struct VmConfig {
    pub name: String,
    pub index: usize,
    pub dir: PathBuf,
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub disks: Vec<DiskSpec>,
    /// This VM's own port on the L2 hub (the hub tells VMs apart by port).
    pub hub_port: u16,
    pub mac0: String,
    pub mac1: String,
    pub files: Vec<(String, Vec<u8>)>,
    pub boot_timeout: Duration,
}

/// One node VM. Its QEMU process is killed when the `Vm` is dropped.
pub struct Vm {
    name: String,
    index: usize,
    dir: PathBuf,
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    memory_mib: u32,
    cpus: u32,
    disks: Vec<Disk>,
    next_disk_id: u32,
    hub_port: u16,
    mac0: String,
    mac1: String,
    files: Vec<(String, Vec<u8>)>,
    boot_timeout: Duration,
    child: Option<Child>,
    guest: Option<GuestConn>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("disks", &self.disks)
            .finish()
    }
}

impl Vm {
    /// Creates the disk images; does not boot.
    pub(crate) fn new(c: VmConfig) -> Result<Vm, Error> {
        let mut vm = Vm {
            name: c.name,
            index: c.index,
            dir: c.dir,
            qemu: c.qemu,
            kernel: c.kernel,
            initrd: c.initrd,
            memory_mib: c.memory_mib,
            cpus: c.cpus,
            disks: vec![],
            next_disk_id: 0,
            hub_port: c.hub_port,
            mac0: c.mac0,
            mac1: c.mac1,
            files: c.files,
            boot_timeout: c.boot_timeout,
            child: None,
            guest: None,
        };
        for d in &c.disks {
            let disk = vm.new_disk(d)?;
            vm.disks.push(disk);
        }
        Ok(vm)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Position in the testbed's spec list.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Address on the private VM segment (eth1), e.g. `192.168.77.10`.
    pub fn private_ip(&self) -> String {
        format!("{PRIVATE_NET_PREFIX}{}", self.index + 10)
    }

    /// Serials of the attached disks, in attachment order.
    pub fn disk_serials(&self) -> Vec<String> {
        self.disks.iter().map(|d| d.serial.clone()).collect()
    }

    /// The attached disks, in attachment order.
    pub fn disks(&self) -> Vec<DiskSpec> {
        self.disks
            .iter()
            .map(|d| DiskSpec::new(d.serial.clone(), d.size_bytes))
            .collect()
    }

    /// Host path of a disk's image file (to inspect or corrupt it from the host).
    pub fn disk_image(&self, serial: &str) -> Option<&Path> {
        self.disks
            .iter()
            .find(|d| d.serial == serial)
            .map(|d| d.path.as_path())
    }

    /// Pid of the QEMU process, while the VM runs.
    pub fn qemu_pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Everything the serial console printed, across reboots.
    pub fn console_log(&self) -> String {
        std::fs::read(qemu::console_path(&self.dir))
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    }

    fn console_tail(&self) -> String {
        let mut t = qemu::tail(&qemu::console_path(&self.dir), TAIL_LINES);
        let q = qemu::tail(&qemu::qemu_log_path(&self.dir), 10);
        if !q.trim().is_empty() {
            t.push_str("\n--- qemu output ---\n");
            t.push_str(&q);
        }
        t
    }

    fn vm_err(&self, message: impl Into<String>) -> Error {
        Error::Vm {
            vm: self.name.clone(),
            message: message.into(),
            console_tail: self.console_tail(),
        }
    }

    fn qmp_err(&self, command: &str, message: String) -> Error {
        Error::Qmp {
            vm: self.name.clone(),
            command: command.to_string(),
            message,
            console_tail: self.console_tail(),
        }
    }

    async fn call(&self, op: Op, timeout: Duration) -> Result<Reply, Error> {
        let what = op_name(&op);
        let Some(g) = &self.guest else {
            return Err(self.vm_err(format!("{what}: VM is not running")));
        };
        match g.call(op, timeout).await {
            Ok(Reply::Error { message }) => Err(Error::Guest {
                vm: self.name.clone(),
                op: what.into(),
                message,
            }),
            Ok(r) => Ok(r),
            Err(CallError::Timeout) => Err(self.vm_err(format!(
                "{what}: no answer from the guest within {timeout:?}"
            ))),
            Err(CallError::Disconnected) => {
                Err(self.vm_err(format!("{what}: guest connection lost (VM died?)")))
            }
            Err(CallError::Io(e)) => Err(self.vm_err(format!("{what}: {e}"))),
        }
    }

    fn unexpected(&self, op: &str, r: Reply) -> Error {
        self.vm_err(format!("{op}: unexpected reply {r:?}"))
    }

    /// Runs `sh -c cmd` with the default timeout (60 s).
    pub async fn exec(&self, cmd: &str) -> Result<ExecOutput, Error> {
        self.exec_timeout(cmd, DEFAULT_EXEC_TIMEOUT).await
    }

    pub async fn exec_timeout(&self, cmd: &str, t: Duration) -> Result<ExecOutput, Error> {
        self.exec_stdin(cmd, None, t).await
    }

    /// Runs `sh -c cmd` with `stdin` as its standard input. On timeout the command's process
    /// group is killed and [`Error::CommandTimeout`] carries the output so far.
    pub async fn exec_stdin(
        &self,
        cmd: &str,
        stdin: Option<&[u8]>,
        t: Duration,
    ) -> Result<ExecOutput, Error> {
        let op = Op::Exec {
            cmd: cmd.to_string(),
            stdin: stdin.map(<[u8]>::to_vec),
            timeout_ms: t.as_millis().try_into().unwrap_or(u64::MAX),
        };
        // The guest enforces `t`; the margin covers killing and transferring the output.
        match self
            .call(op, t.saturating_add(Duration::from_secs(15)))
            .await?
        {
            Reply::Exec {
                code,
                signal,
                timed_out,
                stdout,
                stderr,
            } => {
                let stdout = String::from_utf8_lossy(&stdout).into_owned();
                let stderr = String::from_utf8_lossy(&stderr).into_owned();
                if timed_out {
                    return Err(Error::CommandTimeout {
                        vm: self.name.clone(),
                        cmd: cmd.to_string(),
                        timeout: t,
                        stdout,
                        stderr,
                    });
                }
                Ok(ExecOutput {
                    code,
                    signal,
                    stdout,
                    stderr,
                })
            }
            r => Err(self.unexpected("exec", r)),
        }
    }

    /// Runs `cmd`, returning its stdout; a non-zero exit is an error carrying both outputs.
    pub async fn exec_ok(&self, cmd: &str) -> Result<String, Error> {
        self.exec_ok_timeout(cmd, DEFAULT_EXEC_TIMEOUT).await
    }

    pub async fn exec_ok_timeout(&self, cmd: &str, t: Duration) -> Result<String, Error> {
        let out = self.exec_timeout(cmd, t).await?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(Error::CommandFailed {
            vm: self.name.clone(),
            cmd: cmd.to_string(),
            code: match (out.code, out.signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                (None, None) => "unknown status".into(),
            },
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Starts `sh -c cmd` in the background (own process group, stdin /dev/null, stdout and
    /// stderr appended to `log_path`) and returns its pid.
    pub async fn spawn(&self, cmd: &str, log_path: &str) -> Result<u32, Error> {
        let op = Op::Spawn {
            cmd: cmd.to_string(),
            log_path: log_path.to_string(),
        };
        match self.call(op, Duration::from_secs(30)).await? {
            Reply::Spawned { pid } => Ok(pid),
            r => Err(self.unexpected("spawn", r)),
        }
    }

    /// Sends `signal` to `pid`; for a pid from [`Vm::spawn`], to its whole process group.
    pub async fn kill(&self, pid: u32, signal: i32) -> Result<(), Error> {
        match self
            .call(Op::Kill { pid, signal }, Duration::from_secs(30))
            .await?
        {
            Reply::Done => Ok(()),
            r => Err(self.unexpected("kill", r)),
        }
    }

    /// Whether a process started with [`Vm::spawn`] still runs.
    pub async fn process_state(&self, pid: u32) -> Result<ProcessState, Error> {
        match self
            .call(Op::Status { pid }, Duration::from_secs(30))
            .await?
        {
            Reply::Status { running: true, .. } => Ok(ProcessState::Running),
            Reply::Status { code, signal, .. } => Ok(ProcessState::Exited { code, signal }),
            r => Err(self.unexpected("status", r)),
        }
    }

    /// Writes a file (mode 0644), creating parent directories.
    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<(), Error> {
        self.write_file_mode(path, data, 0o644).await
    }

    pub async fn write_file_mode(&self, path: &str, data: &[u8], mode: u32) -> Result<(), Error> {
        let op = Op::WriteFile {
            path: path.to_string(),
            data: data.to_vec(),
            mode,
        };
        match self.call(op, Duration::from_secs(60)).await? {
            Reply::Done => Ok(()),
            r => Err(self.unexpected("write_file", r)),
        }
    }

    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        let op = Op::ReadFile {
            path: path.to_string(),
        };
        match self.call(op, Duration::from_secs(60)).await? {
            Reply::File { data } => Ok(data),
            r => Err(self.unexpected("read_file", r)),
        }
    }

    /// Cleanly powers off and boots again with the same disk images (their content persists;
    /// everything else in the guest is lost, and `VmSpec::files` are written again).
    /// `disk_order` lists serials to attach in that order (all of them, each once).
    pub async fn reboot(&mut self, disk_order: Option<Vec<String>>) -> Result<(), Error> {
        if let Some(order) = &disk_order {
            let mut want = order.clone();
            want.sort();
            let mut have = self.disk_serials();
            have.sort();
            if want != have {
                return Err(Error::InvalidSpec(format!(
                    "VM {}: disk order {order:?} is not a permutation of the disks {have:?}",
                    self.name
                )));
            }
        }
        self.stop().await?;
        if let Some(order) = disk_order {
            let mut disks = std::mem::take(&mut self.disks);
            for s in order {
                if let Some(i) = disks.iter().position(|d| d.serial == s) {
                    self.disks.push(disks.remove(i));
                }
            }
        }
        self.boot().await
    }

    /// Kills the VM's QEMU with SIGKILL: a power cut. No shutdown runs in the guest; what it
    /// held in memory (page cache included) is gone, while every write the guest had
    /// completed on a virtio disk, flushed or not, is in the disk's image file (see
    /// `qemu::args` for why). The VM keeps its disks, name, addresses and network partitions;
    /// [`Vm::power_on`] boots it again. Errors when the VM is not running.
    ///
    /// To crash a VM in the middle of work, run that work with [`Vm::spawn`] (or on another VM):
    /// this takes `&mut self`, so no [`Vm::exec`] on this VM can be pending.
    pub async fn crash(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Err(self.vm_err("crash: VM is not running"));
        };
        // Kill first, then drop the guest connection: the guest must not see anything of the
        // host going away before it dies.
        let killed = child.kill().await;
        self.guest = None;
        killed.ctx(|| format!("VM {}: SIGKILL QEMU", self.name))?;
        tracing::info!(vm = %self.name, "VM crashed (QEMU killed)");
        Ok(())
    }

    /// Boots a VM that is not running, after [`Vm::crash`] or after its QEMU ended by itself
    /// (guest poweroff or panic), with the same disk images in the same order, name, MACs and
    /// private IP; waits for the exec daemon and writes `VmSpec::files` again, as
    /// [`Vm::reboot`] does. Errors when the VM is running.
    pub async fn power_on(&mut self) -> Result<(), Error> {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                // Exited on its own: reaped now, so it can start again.
                Ok(Some(_)) => {
                    self.child = None;
                    self.guest = None;
                }
                Ok(None) => return Err(self.vm_err("power_on: VM is running")),
                Err(e) => return Err(self.vm_err(format!("power_on: QEMU state: {e}"))),
            }
        }
        self.boot().await
    }

    /// Hot-plugs a new empty virtio disk; the guest's udevd creates its by-id link.
    pub async fn add_disk(&mut self, spec: DiskSpec) -> Result<(), Error> {
        validate_disk(&self.name, &spec)?;
        if self.disks.iter().any(|d| d.serial == spec.serial) {
            return Err(Error::InvalidSpec(format!(
                "VM {}: a disk with serial {} is already attached",
                self.name, spec.serial
            )));
        }
        let disk = self.new_disk(&spec)?;
        let mut q = self.qmp().await?;
        let res = async {
            q.execute(
                "blockdev-add",
                json!({
                    "driver": "raw",
                    "node-name": disk.node_name(),
                    "cache": qemu::disk_cache_json(),
                    "file": { "driver": "file", "filename": disk.path.display().to_string() },
                }),
            )
            .await
            .map_err(|e| ("blockdev-add", e))?;
            q.execute(
                "device_add",
                json!({
                    "driver": "virtio-blk-pci",
                    "id": disk.device_id(),
                    "drive": disk.node_name(),
                    "serial": disk.serial,
                    "write-cache": "on",
                }),
            )
            .await
            .map_err(|e| ("device_add", e))
        }
        .await;
        if let Err((cmd, e)) = res {
            return Err(self.qmp_err(cmd, e));
        }
        self.disks.push(disk);
        Ok(())
    }

    /// Hot-unplugs a disk (the guest must cooperate: ACPI eject). Its image file stays in the
    /// testbed directory until shutdown but is not attached again on reboot.
    pub async fn hot_remove_disk(&mut self, serial: &str) -> Result<(), Error> {
        let Some(i) = self.disks.iter().position(|d| d.serial == serial) else {
            return Err(Error::InvalidSpec(format!(
                "VM {}: no disk with serial {serial}",
                self.name
            )));
        };
        let disk = self.disks[i].clone();
        let mut q = self.qmp().await?;
        let dev = disk.device_id();
        if let Err(e) = q.execute("device_del", json!({ "id": dev })).await {
            return Err(self.qmp_err("device_del", e));
        }
        let deleted = q
            .wait_event(
                "DEVICE_DELETED",
                |d| d.get("device").and_then(|v| v.as_str()) == Some(dev.as_str()),
                Duration::from_secs(60),
            )
            .await;
        if let Err(e) = deleted {
            return Err(self.qmp_err("device_del", e));
        }
        if let Err(e) = q
            .execute("blockdev-del", json!({ "node-name": disk.node_name() }))
            .await
        {
            return Err(self.qmp_err("blockdev-del", e));
        }
        self.disks.remove(i);
        Ok(())
    }

    async fn qmp(&self) -> Result<Qmp, Error> {
        if self.child.is_none() {
            return Err(self.vm_err("QMP: VM is not running"));
        }
        Qmp::connect(&qemu::qmp_path(&self.dir))
            .await
            .map_err(|e| self.qmp_err("connect", e))
    }

    fn new_disk(&mut self, spec: &DiskSpec) -> Result<Disk, Error> {
        let id = self.next_disk_id;
        self.next_disk_id += 1;
        let path = self.dir.join(format!("disk{id}.img"));
        let f = std::fs::File::create(&path).ctx(|| format!("create {}", path.display()))?;
        // Sparse: costs nothing until the guest writes.
        f.set_len(spec.size_bytes)
            .ctx(|| format!("size {}", path.display()))?;
        Ok(Disk {
            serial: spec.serial.clone(),
            size_bytes: spec.size_bytes,
            path,
            id,
        })
    }

    /// Starts QEMU and waits for the guest daemon; then writes /etc/hosts and the spec files.
    pub(crate) async fn boot(&mut self) -> Result<(), Error> {
        for p in [qemu::ctl_path(&self.dir), qemu::qmp_path(&self.dir)] {
            let _ = std::fs::remove_file(p);
        }
        let cidr = format!("{}/24", self.private_ip());
        let args = qemu::args(&qemu::Launch {
            name: &self.name,
            kernel: &self.kernel,
            initrd: &self.initrd,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            dir: &self.dir,
            disks: &self.disks,
            hub_port: self.hub_port,
            mac0: &self.mac0,
            mac1: &self.mac1,
            private_cidr: &cidr,
        });
        let log_path = qemu::qemu_log_path(&self.dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ctx(|| format!("open {}", log_path.display()))?;
        let log2 = log.try_clone().ctx(|| "dup qemu log".into())?;
        tracing::debug!(vm = %self.name, ?args, "starting qemu");
        let mut cmd = tokio::process::Command::new(&self.qemu);
        cmd.args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        // Drop covers panics; this covers the test process being killed outright (CI timeout,
        // SIGKILL), which would otherwise leave VMs running. It fires when the spawning thread
        // exits, i.e. at the latest when the tokio runtime shuts down, which the testbed cannot
        // outlive anyway (its sockets belong to that runtime).
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .ctx(|| format!("VM {}: start {}", self.name, self.qemu.display()))?;
        self.child = Some(child);
        let t0 = std::time::Instant::now();
        self.wait_ready().await?;
        tracing::info!(vm = %self.name, elapsed = ?t0.elapsed(), "VM booted");
        for (path, data) in self.files.clone() {
            self.write_file(&path, &data).await?;
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.boot_timeout;
        let ctl = qemu::ctl_path(&self.dir);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    self.guest = None;
                    return Err(self.vm_err(format!("QEMU exited during boot ({status})")));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill_now();
                return Err(self.vm_err(format!(
                    "guest daemon did not answer within {:?}",
                    self.boot_timeout
                )));
            }
            match &self.guest {
                None => {
                    if let Ok(g) = GuestConn::connect(&ctl).await {
                        self.guest = Some(g);
                        continue;
                    }
                }
                Some(g) => {
                    // Pings sent before the daemon opened the port are lost or arrive as a
                    // fragment; each retry uses a fresh id, so only a current answer counts.
                    if let Ok(Reply::Pong { .. }) =
                        g.call(Op::Ping, Duration::from_millis(1000)).await
                    {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clean poweroff through the guest, falling back to QMP `quit` and then SIGKILL.
    pub(crate) async fn stop(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut clean = false;
        if let Some(g) = &self.guest {
            if let Ok(Reply::Done) = g.call(Op::Poweroff, Duration::from_secs(10)).await {
                clean = tokio::time::timeout(POWEROFF_TIMEOUT, child.wait())
                    .await
                    .is_ok();
            }
        }
        self.guest = None;
        if clean {
            return Ok(());
        }
        if let Ok(mut q) = Qmp::connect(&qemu::qmp_path(&self.dir)).await {
            let _ = q.execute("quit", json!({})).await;
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        Err(self.vm_err("did not power off cleanly; QEMU was stopped forcibly"))
    }

    /// Synchronous kill for Drop and failure paths.
    fn kill_now(&mut self) {
        self.guest = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Ping => "ping",
        Op::Exec { .. } => "exec",
        Op::Spawn { .. } => "spawn",
        Op::Kill { .. } => "kill",
        Op::Status { .. } => "status",
        Op::WriteFile { .. } => "write_file",
        Op::ReadFile { .. } => "read_file",
        Op::Poweroff => "poweroff",
    }
}
