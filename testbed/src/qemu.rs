//! The QEMU command line and a minimal QMP (QEMU monitor protocol) client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::error::Error;
use crate::protocol::PORT_NAME;

pub(crate) const QEMU: &str = "qemu-system-x86_64";

/// Finds QEMU or says which package provides it.
pub(crate) fn qemu_binary() -> Result<PathBuf, Error> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(QEMU))
        .find(|p| p.exists())
        .ok_or_else(|| Error::missing(format!("program `{QEMU}`"), "qemu-system-x86"))
}

/// A disk as attached to QEMU.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub serial: String,
    pub size_bytes: u64,
    pub path: PathBuf,
    /// Unique per VM; names the QEMU block node (`nd<id>`) and device (`vd<id>`).
    pub id: u32,
}

impl Disk {
    pub(crate) fn node_name(&self) -> String {
        format!("nd{}", self.id)
    }
    pub(crate) fn device_id(&self) -> String {
        format!("vd{}", self.id)
    }
}

pub(crate) struct Launch<'a> {
    pub name: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
    pub dir: &'a Path,
    pub disks: &'a [Disk],
    pub hub_port: u16,
    pub mac0: &'a str,
    pub mac1: &'a str,
    /// CIDR address on the private segment, e.g. `192.168.77.10/24`.
    pub private_cidr: &'a str,
}

pub(crate) fn console_path(dir: &Path) -> PathBuf {
    dir.join("console.log")
}
pub(crate) fn qemu_log_path(dir: &Path) -> PathBuf {
    dir.join("qemu.log")
}
pub(crate) fn ctl_path(dir: &Path) -> PathBuf {
    dir.join("ctl.sock")
}
pub(crate) fn qmp_path(dir: &Path) -> PathBuf {
    dir.join("qmp.sock")
}

/// Cache settings of every disk, attached at boot or hot-plugged ([`DISK_CACHE`] as options,
/// [`disk_cache_json`] for QMP), with `write-cache=on` on the virtio device.
///
/// Crash tests depend on this: after `Vm::crash` (SIGKILL of QEMU) everything the guest had
/// flushed must be in the image file. Verified with QEMU 7.2 (`query-named-block-nodes` on a VM
/// started with these options) and by the crash test in `tests/ha.rs`:
/// - both the raw node and its file child report `writeback: true, direct: false,
///   no-flush: false` (QEMU's defaults, spelled out so they cannot change unnoticed);
/// - the raw format over the file driver keeps no data in QEMU's own memory: a guest write
///   completes once `pwritev` has put it into the host page cache, which belongs to the host
///   kernel and survives the QEMU process. So SIGKILL loses only what the guest had not
///   submitted yet (its own page cache), never a write it saw complete, flushed or not;
/// - `write-cache=on` tells the guest its disk has a volatile cache, so fsync in the guest sends
///   a virtio FLUSH (as on real disks), which QEMU turns into `fdatasync` of the image file
///   (`no-flush: false`): flushed data would even survive a host crash, which tests never need.
pub(crate) const DISK_CACHE: &str = "cache.direct=off,cache.no-flush=off";

/// [`DISK_CACHE`] as the `cache` member of a QMP `blockdev-add`.
pub(crate) fn disk_cache_json() -> Value {
    json!({ "direct": false, "no-flush": false })
}

/// QEMU's option parser treats ',' as a separator; doubling it escapes it.
fn esc(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

pub(crate) fn args(l: &Launch<'_>) -> Vec<String> {
    let append = format!(
        "console=ttyS0 quiet panic=-1 tb_name={} tb_ip={} tb_mac0={} tb_mac1={}",
        l.name, l.private_cidr, l.mac0, l.mac1
    );
    let mut a: Vec<String> = vec![
        "-accel".into(),
        "tcg".into(),
        "-machine".into(),
        "pc".into(),
        // No default NIC, VGA, CD-ROM or floppy: each only costs boot time.
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        // A guest reboot (or panic, with panic=-1) ends the process instead of looping.
        "-no-reboot".into(),
        "-m".into(),
        l.memory_mib.to_string(),
        "-smp".into(),
        l.cpus.to_string(),
        "-kernel".into(),
        l.kernel.display().to_string(),
        "-initrd".into(),
        l.initrd.display().to_string(),
        "-append".into(),
        append,
        // Appending keeps the console of earlier boots of this VM (reboot tests).
        "-chardev".into(),
        format!("file,id=con,path={},append=on", esc(&console_path(l.dir))),
        "-serial".into(),
        "chardev:con".into(),
        "-monitor".into(),
        "none".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", esc(&qmp_path(l.dir))),
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        format!(
            "socket,id=ctl,path={},server=on,wait=off",
            esc(&ctl_path(l.dir))
        ),
        "-device".into(),
        format!("virtserialport,bus=vser0.0,chardev=ctl,name={PORT_NAME}"),
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={},romfile=", l.mac0),
        "-netdev".into(),
        format!("socket,id=n1,connect=127.0.0.1:{}", l.hub_port),
        "-device".into(),
        format!("virtio-net-pci,netdev=n1,mac={},romfile=", l.mac1),
        "-device".into(),
        "virtio-rng-pci".into(),
    ];
    for d in l.disks {
        a.push("-blockdev".into());
        a.push(format!(
            "driver=raw,node-name={},{DISK_CACHE},file.driver=file,file.filename={}",
            d.node_name(),
            esc(&d.path)
        ));
        a.push("-device".into());
        a.push(format!(
            "virtio-blk-pci,drive={},id={},serial={},write-cache=on",
            d.node_name(),
            d.device_id(),
            d.serial
        ));
    }
    a
}

/// Last `lines` lines of a log file, carriage returns removed (the serial console has them).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_else(|e| format!("<{}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A QMP session. Events that arrive while waiting for a command's answer are kept for
/// [`Qmp::wait_event`].
pub(crate) struct Qmp {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    events: Vec<Value>,
}

const QMP_TIMEOUT: Duration = Duration::from_secs(30);

impl Qmp {
    pub(crate) async fn connect(path: &Path) -> Result<Qmp, String> {
        let s = tokio::time::timeout(QMP_TIMEOUT, UnixStream::connect(path))
            .await
            .map_err(|_| "timed out connecting".to_string())?
            .map_err(|e| format!("connect {}: {e}", path.display()))?;
        let (rd, wr) = s.into_split();
        let mut q = Qmp {
            rd: BufReader::new(rd),
            wr,
            events: vec![],
        };
        // Greeting, then capability negotiation (required before any command).
        let greeting = q.read_msg().await?;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected greeting {greeting}"));
        }
        q.execute("qmp_capabilities", json!({})).await?;
        Ok(q)
    }

    async fn read_msg(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = tokio::time::timeout(QMP_TIMEOUT, self.rd.read_line(&mut line))
            .await
            .map_err(|_| "timed out waiting for QMP".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("QMP connection closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("bad QMP message {line:?}: {e}"))
    }

    /// Runs a command and returns its `return` value.
    pub(crate) async fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let mut msg = json!({ "execute": cmd });
        if args.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = args;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        self.wr
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        loop {
            let m = self.read_msg().await?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string());
            }
            if m.get("event").is_some() {
                self.events.push(m);
            }
        }
    }

    /// Waits for an event named `name` whose `data` satisfies `pred`.
    pub(crate) async fn wait_event(
        &mut self,
        name: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        let matches = |m: &Value| {
            m.get("event").and_then(Value::as_str) == Some(name)
                && pred(m.get("data").unwrap_or(&Value::Null))
        };
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(self.events.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.read_msg())
                .await
                .map_err(|_| format!("timed out after {timeout:?} waiting for event {name}"))?;
            match m {
                Ok(m) if matches(&m) => return Ok(m),
                Ok(_) => {}
                // read_msg's own timeout only means "quiet for a while"; keep waiting.
                Err(e) if e.starts_with("timed out") => {}
                Err(e) => return Err(e),
            }
        }
    }
}
