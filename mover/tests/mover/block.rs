//! A copy between two real block devices: loop devices on this host. Their size comes from
//! BLKGETSIZE64 and the target's zero chunks are zeroed with BLKZEROOUT (or the fallbacks),
//! paths a regular file never takes.
//!
//! Needs root and `losetup` (util-linux), like the project's other loop-device tests; a
//! missing tool fails the test saying which.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use hwameistor_mover::{
    CancellationToken, Client, FileCheckpointStore, Grant, ServerOptions, StaticAuthorizer,
    TargetZeroed,
};

use crate::support::*;

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

/// An attached loop device, detached on drop.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(file: &Path) -> LoopDevice {
        let out = Command::new(losetup())
            .args(["--find", "--show"])
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running losetup: {e}"));
        assert!(
            out.status.success(),
            "losetup failed (root needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(path.starts_with("/dev/loop"), "losetup said {path:?}");
        LoopDevice(path)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new(losetup()).args(["-d", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_between_block_devices() -> TestResult {
    let zero = [1, 2, 9];
    let data = device_image(12, &zero, 0, 30);
    let fx = Fixture::new(&data)?;
    // The target's backing file holds garbage, so zeroing it is visible.
    std::fs::write(&fx.target, vec![0x5a; data.len() + 3 * CHUNK])?;
    let source = LoopDevice::attach(&fx.source);
    let target = LoopDevice::attach(&fx.target);

    let grant = Grant {
        device: PathBuf::from(&source.0),
        ..fx.grant()
    };
    let authorizer = StaticAuthorizer::new().grant(fx.identity.operation.clone(), grant);
    let server = hwameistor_mover::Server::new(
        fx.identity.source_node.clone(),
        fx.source_key.clone(),
        authorizer,
        ServerOptions::default(),
    );
    let running = Running::start(server, "127.0.0.1:0").await?;
    let mut config = fx.config(running.addr);
    config.target = PathBuf::from(&target.0);
    config.target_zeroed = TargetZeroed::No;
    let client = Client::new(
        config,
        fx.target_key.clone(),
        Arc::new(FileCheckpointStore::new(&fx.checkpoint)),
    )?;
    let outcome = client.run(CancellationToken::new()).await?;
    running.stop().await;

    // The size came from the source device; the larger target keeps its tail.
    assert_eq!(outcome.bytes, data.len() as u64);
    assert_eq!(outcome.zero_chunks, zero.len() as u64);
    let copied = std::fs::read(&target.0)?;
    assert!(
        copied[..data.len()] == data[..],
        "the copy differs from the source"
    );
    assert!(copied[data.len()..].iter().all(|&b| b == 0x5a));
    assert_eq!(outcome.digest.to_hex(), expected_digest(&data, CHUNK));
    Ok(())
}
