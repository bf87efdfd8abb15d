//! Wiping whole disks for real, on host loop devices (no device-mapper needed): the
//! signatures go, a full wipe zeroes every byte, and a disk in use is refused by the kernel
//! with its data intact.
//!
//! Needs root, util-linux and e2fsprogs. The fixture unmounts and detaches on drop.

use hwameistor_hostexec::disk::{Wipe, WipeCli};
use hwameistor_hostexec::HostExecutor;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const MI: u64 = 1 << 20;

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn sh(program: &str, args: &[&str]) -> String {
    let (ok, out) = run(program, args);
    assert!(ok, "{program} {args:?} failed");
    out
}

struct Fixture {
    dir: tempfile::TempDir,
    file: PathBuf,
    dev: String,
    mounted: Option<PathBuf>,
}

impl Fixture {
    fn new(size: u64) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("disk.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(size))
            .expect("backing file");
        let dev = sh("losetup", &["--find", "--show", &file.to_string_lossy()]);
        Fixture {
            dir,
            file,
            dev,
            mounted: None,
        }
    }

    /// The signature `blkid -p` finds on the device, if any.
    fn signature(&self) -> Option<String> {
        let (ok, out) = run("blkid", &["-p", "-o", "value", "-s", "TYPE", &self.dev]);
        (ok && !out.is_empty()).then_some(out)
    }

    fn mount(&mut self) {
        let at = self.dir.path().join("mnt");
        std::fs::create_dir_all(&at).expect("mount point");
        sh("mount", &[&self.dev, &at.to_string_lossy()]);
        self.mounted = Some(at);
    }

    fn unmount(&mut self) {
        if let Some(at) = self.mounted.take() {
            let _ = run("umount", &[&at.to_string_lossy()]);
        }
    }

    /// Bytes of the backing file at `offset`.
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        sh("sync", &[]);
        let mut f = std::fs::File::open(&self.file).expect("open");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).expect("read");
        buf
    }

    fn fill(&self, byte: u8) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.dev)
            .expect("open device");
        let chunk = vec![byte; MI as usize];
        for _ in 0..16 {
            f.write_all(&chunk).expect("write");
        }
        f.sync_all().expect("sync");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.unmount();
        let _ = run("losetup", &["-d", &self.dev]);
    }
}

fn wiper() -> WipeCli {
    WipeCli::new(Arc::new(HostExecutor::direct(Duration::from_secs(60))))
}

#[tokio::test]
async fn signatures_go_a_full_wipe_zeroes_and_a_disk_in_use_is_refused_intact() {
    let mut fx = Fixture::new(16 * MI);
    let w = wiper();

    // A filesystem: its signature goes, nothing else is promised.
    sh("mkfs.ext4", &["-q", "-F", &fx.dev]);
    assert_eq!(fx.signature().as_deref(), Some("ext4"));
    w.wipe(&fx.dev, false).await.expect("wipe signatures");
    assert_eq!(fx.signature(), None);

    // Data everywhere: a full wipe leaves zeros in every byte.
    fx.fill(0xa5);
    assert_eq!(fx.read(8 * MI, 16), vec![0xa5; 16]);
    w.wipe(&fx.dev, true).await.expect("full wipe");
    let all = fx.read(0, (16 * MI) as usize);
    assert!(all.iter().all(|b| *b == 0), "every byte zeroed");

    // Mounted: the kernel refuses the exclusive open, the filesystem is untouched.
    sh("mkfs.ext4", &["-q", "-F", &fx.dev]);
    fx.mount();
    let err = w.wipe(&fx.dev, false).await.expect_err("refused in use");
    assert!(err.to_string().contains("wipefs --all"), "{err}");
    fx.unmount();
    assert_eq!(fx.signature().as_deref(), Some("ext4"), "data intact");
    w.wipe(&fx.dev, false).await.expect("wipe once unmounted");
    assert_eq!(fx.signature(), None);
}
