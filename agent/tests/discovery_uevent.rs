//! Kernel uevents from a real loop device. Needs root and `losetup` (util-linux).
//!
//! Attaching a file to an existing loop device only emits "change"; to see "add" the test
//! attaches to a loop number that does not exist yet, which makes the kernel create it.
//! The device is detached and removed again afterwards, also on failure.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hwameistor_agent::discovery::watch_block_uevents;

/// LOOP_CTL_REMOVE from <linux/loop.h>: removes an unattached loop device by number.
const LOOP_CTL_REMOVE: nix::libc::c_ulong = 0x4C81;
nix::ioctl_write_int_bad!(loop_ctl_remove, LOOP_CTL_REMOVE);

fn losetup() -> PathBuf {
    [
        "/usr/sbin/losetup",
        "/sbin/losetup",
        "/usr/bin/losetup",
        "/bin/losetup",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("`losetup` not found: install util-linux"))
}

/// A loop device this test created; detached and removed on drop.
struct NewLoop {
    number: u32,
}

impl NewLoop {
    fn path(&self) -> String {
        format!("/dev/loop{}", self.number)
    }
}

impl Drop for NewLoop {
    fn drop(&mut self) {
        let _ = Command::new(losetup()).args(["-d", &self.path()]).status();
        let Ok(control) = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
        else {
            return;
        };
        // Detach completes asynchronously; retry while the device is still busy.
        for _ in 0..20 {
            // SAFETY: LOOP_CTL_REMOVE takes the device number by value and touches no
            // memory of ours; the fd is open for the duration of the call.
            let removed =
                unsafe { loop_ctl_remove(control.as_raw_fd(), self.number as nix::libc::c_int) };
            if removed.is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Attaches `file` to the first loop number from `start` that does not exist yet.
fn attach_new_loop(file: &Path, start: u32) -> NewLoop {
    let file = file.to_str().expect("utf-8 path");
    for number in start..start + 200 {
        if Path::new(&format!("/sys/block/loop{number}")).exists()
            || Path::new(&format!("/dev/loop{number}")).exists()
        {
            continue;
        }
        let status = Command::new(losetup())
            .args([&format!("/dev/loop{number}"), file])
            .stdin(Stdio::null())
            .status()
            .expect("run losetup");
        if status.success() {
            return NewLoop { number };
        }
    }
    panic!("could not attach {file} to a new loop device");
}

#[tokio::test]
async fn loop_attach_emits_add_event() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the uevent test attaches loop devices and needs root"
    );
    let mut events = watch_block_uevents().expect("open uevent socket");

    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("uevent.img");
    File::create(&image)
        .expect("create image")
        .set_len(8 * 1024 * 1024)
        .expect("size image");
    let start = 300 + std::process::id() % 300;
    let dev = attach_new_loop(&image, start);
    let name = format!("loop{}", dev.number);

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("uevent channel closed; saw {seen:?}"),
            Err(_) => panic!("no add event for {name} within 5 s; saw {seen:?}"),
        };
        assert_eq!(event.subsystem, "block", "{event:?}");
        if event.action == "add" && event.devname.as_deref() == Some(name.as_str()) {
            assert_eq!(event.devtype.as_deref(), Some("disk"));
            assert_eq!(event.major, Some(7));
            assert_eq!(event.minor, Some(dev.number));
            assert!(
                event.devpath.ends_with(&format!("/block/{name}")),
                "{event:?}"
            );
            break;
        }
        seen.push(event);
    }
    assert!(Path::new(&dev.path()).exists() || Path::new(&format!("/sys/block/{name}")).exists());
}
