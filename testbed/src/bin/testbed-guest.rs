//! Guest exec daemon: runs as PID 1 inside every testbed VM (the init script execs it) and serves
//! the host's requests over a virtio-serial port. See `hwameistor_testbed::protocol`.
//!
//! Deliberately thread-based and free of async: it must stay small and its behaviour must be easy
//! to reason about while being PID 1.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hwameistor_testbed::protocol::{Op, Reply, Request, Response, PORT_NAME};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a child ended, as reported by `waitpid`.
#[derive(Clone, Copy, Debug)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
}

/// Central child bookkeeping. Being PID 1 we inherit every orphan, so a single thread reaps with
/// `waitpid(-1)`; per-child `wait` calls would race with it. Children are registered under this
/// lock *before* the reaper can look them up (see `spawn_registered`), so an exit is never lost and
/// an unknown pid is always an orphan whose status nobody wants.
#[derive(Default)]
struct Children {
    waiting: HashMap<i32, mpsc::Sender<Exit>>,
    /// Processes started by `Spawn`: `None` while running.
    spawned: HashMap<i32, Option<Exit>>,
}

fn children() -> &'static Mutex<Children> {
    static C: OnceLock<Mutex<Children>> = OnceLock::new();
    C.get_or_init(Default::default)
}

fn lock_children() -> std::sync::MutexGuard<'static, Children> {
    // A panic while holding the lock would poison it; the data stays consistent enough for us.
    children().lock().unwrap_or_else(|e| e.into_inner())
}

fn reaper() {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain syscall with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            // ECHILD: nothing to reap yet.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let exit = if libc::WIFEXITED(status) {
            Exit {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            Exit {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            continue;
        };
        let mut c = lock_children();
        if let Some(tx) = c.waiting.remove(&pid) {
            let _ = tx.send(exit);
        }
        if let Some(slot) = c.spawned.get_mut(&pid) {
            *slot = Some(exit);
        }
    }
}

/// Spawns while holding the children lock so the reaper cannot see the exit before the pid is
/// registered.
fn spawn_registered(
    cmd: &mut Command,
    background: bool,
) -> std::io::Result<(std::process::Child, mpsc::Receiver<Exit>)> {
    let mut c = lock_children();
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    c.waiting.insert(pid, tx);
    if background {
        c.spawned.insert(pid, None);
    }
    Ok((child, rx))
}

fn shell(cmd: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd).env("PATH", PATH).env("HOME", "/root");
    // Own process group, so a timeout or kill reaches everything the command started.
    c.process_group(0);
    c
}

/// Output collected by a reader thread; `done` flips at EOF.
#[derive(Default)]
struct Collected {
    data: Mutex<(Vec<u8>, bool)>,
    cv: Condvar,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Collected> {
    let out = Arc::new(Collected::default());
    let o = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => o
                    .data
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .extend_from_slice(&buf[..n]),
            }
        }
        o.data.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        o.cv.notify_all();
    });
    out
}

/// Waits until EOF or the deadline, then returns what was read. A background process that kept
/// the pipe open must not hang the request, hence the deadline.
fn take(c: &Collected, deadline: Instant) -> Vec<u8> {
    let mut g = c.data.lock().unwrap_or_else(|e| e.into_inner());
    while !g.1 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        g = match c.cv.wait_timeout(g, deadline - now) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
    }
    std::mem::take(&mut g.0)
}

fn exec(cmd: &str, stdin: Option<Vec<u8>>, timeout: Duration) -> Reply {
    let mut c = shell(cmd);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (mut child, rx) = match spawn_registered(&mut c, false) {
        Ok(x) => x,
        Err(e) => {
            return Reply::Error {
                message: format!("spawn sh: {e}"),
            }
        }
    };
    let pid = child.id() as i32;
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        // A writer thread, since a command may not read all input before producing output.
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let out = child.stdout.take().map(collect);
    let err = child.stderr.take().map(collect);
    let (exit, timed_out) = match rx.recv_timeout(timeout) {
        Ok(e) => (Some(e), false),
        Err(_) => {
            // SAFETY: signalling our own child's process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            (rx.recv_timeout(Duration::from_secs(5)).ok(), true)
        }
    };
    let deadline = Instant::now() + Duration::from_millis(if timed_out { 200 } else { 1000 });
    let stdout = out.map(|o| take(&o, deadline)).unwrap_or_default();
    let stderr = err.map(|o| take(&o, deadline)).unwrap_or_default();
    Reply::Exec {
        code: exit.and_then(|e| e.code),
        signal: exit.and_then(|e| e.signal),
        timed_out,
        stdout,
        stderr,
    }
}

fn spawn_bg(cmd: &str, log_path: &str) -> Reply {
    let log = Path::new(log_path);
    if let Some(p) = log.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let open = || OpenOptions::new().create(true).append(true).open(log);
    let (out, err) = match (open(), open()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return Reply::Error {
                message: format!("open {log_path}: {e}"),
            }
        }
    };
    let mut c = shell(cmd);
    c.stdin(Stdio::null()).stdout(out).stderr(err);
    match spawn_registered(&mut c, true) {
        Ok((child, _rx)) => Reply::Spawned { pid: child.id() },
        Err(e) => Reply::Error {
            message: format!("spawn sh: {e}"),
        },
    }
}

fn kill(pid: u32, signal: i32) -> Reply {
    let Ok(pid) = i32::try_from(pid) else {
        return Reply::Error {
            message: format!("bad pid {pid}"),
        };
    };
    // Processes we spawned lead their own group: signal the group so the shell's children
    // (the real workload) get it too.
    let target = if lock_children().spawned.contains_key(&pid) {
        -pid
    } else {
        pid
    };
    // SAFETY: plain syscall.
    if unsafe { libc::kill(target, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        // The group may already be gone while the leader is a zombie being reaped.
        if target < 0 && unsafe { libc::kill(pid, signal) } == 0 {
            return Reply::Done;
        }
        return Reply::Error {
            message: format!("kill({target}, {signal}): {e}"),
        };
    }
    Reply::Done
}

fn status(pid: u32) -> Reply {
    match lock_children().spawned.get(&(pid as i32)) {
        Some(None) => Reply::Status {
            running: true,
            code: None,
            signal: None,
        },
        Some(Some(e)) => Reply::Status {
            running: false,
            code: e.code,
            signal: e.signal,
        },
        None => Reply::Error {
            message: format!("pid {pid} was not started by spawn"),
        },
    }
}

fn write_file(path: &str, data: &[u8], mode: u32) -> Reply {
    let p = Path::new(path);
    let res = (|| {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(p)?;
        f.write_all(data)?;
        // `mode` on open only applies to new files.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    })();
    match res {
        Ok(()) => Reply::Done,
        Err(e) => Reply::Error {
            message: format!("write {path}: {e}"),
        },
    }
}

fn read_file(path: &str) -> Reply {
    match std::fs::read(path) {
        Ok(data) => Reply::File { data },
        Err(e) => Reply::Error {
            message: format!("read {path}: {e}"),
        },
    }
}

fn poweroff() -> Reply {
    std::thread::spawn(|| {
        // Let the reply reach the host first.
        std::thread::sleep(Duration::from_millis(200));
        eprintln!("testbed-guest: syncing and powering off");
        // SAFETY: plain syscalls; we are PID 1 and want the machine off.
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
        // Only reached when not PID 1 / not privileged (e.g. tried on a host).
        let _ = Command::new("poweroff").arg("-f").status();
    });
    Reply::Done
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn handle(op: Op) -> Reply {
    match op {
        Op::Ping => Reply::Pong {
            hostname: hostname(),
        },
        Op::Exec {
            cmd,
            stdin,
            timeout_ms,
        } => exec(&cmd, stdin, Duration::from_millis(timeout_ms)),
        Op::Spawn { cmd, log_path } => spawn_bg(&cmd, &log_path),
        Op::Kill { pid, signal } => kill(pid, signal),
        Op::Status { pid } => status(pid),
        Op::WriteFile { path, data, mode } => write_file(&path, &data, mode),
        Op::ReadFile { path } => read_file(&path),
        Op::Poweroff => poweroff(),
    }
}

/// Finds `/dev/vportNpM` whose sysfs name is ours; waits for it since udev/devtmpfs may lag.
fn find_port() -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == PORT_NAME {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return dev;
                    }
                }
            }
        }
        if Instant::now() > deadline {
            eprintln!("testbed-guest: virtio port {PORT_NAME} not found; powering off");
            // SAFETY: see poweroff().
            unsafe { libc::reboot(libc::RB_POWER_OFF) };
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let port = find_port();
    let file = match OpenOptions::new().read(true).write(true).open(&port) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("testbed-guest: open {}: {e}", port.display());
            std::process::exit(1);
        }
    };
    let writer: Arc<Mutex<File>> = match file.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            eprintln!("testbed-guest: dup port: {e}");
            std::process::exit(1);
        }
    };
    std::thread::spawn(reaper);
    eprintln!("testbed-guest: serving on {}", port.display());

    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            // EOF: the host side is not connected (before it connects, or between QEMU
            // reconnects). Reads return 0 at once in that state, so poll.
            Ok(0) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                // A partial line followed by EOF: the host went away mid-request; drop it.
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("testbed-guest: read port: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                // Typically a stale fragment from before the host connected; the host retries.
                eprintln!("testbed-guest: bad request ({e})");
                continue;
            }
        };
        let writer = writer.clone();
        std::thread::spawn(move || {
            let reply = handle(req.op);
            let resp = Response { id: req.id, reply };
            let mut bytes = match serde_json::to_vec(&resp) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("testbed-guest: encode response: {e}");
                    return;
                }
            };
            bytes.push(b'\n');
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = w.write_all(&bytes).and_then(|_| w.flush()) {
                eprintln!("testbed-guest: write port: {e}");
            }
        });
    }
}
