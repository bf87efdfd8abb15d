//! DrbdCli against real DRBD: two VMs (Debian kernel with the in-tree DRBD 8.4, drbd-utils
//! 9.x from the host) joined by their private segment, each with a data and a metadata
//! logical volume, driven through an executor that runs each command's argv in the VM.
//! Needs root and qemu-system-x86_64 (see the testbed crate); a missing prerequisite fails
//! the test with the package to install.

mod support;

use async_trait::async_trait;
use futures::future::join_all;
use hwameistor_core::drbd::{ConnState, DiskState, Host, ResourceConfig, ResourceStatus, Role};
use hwameistor_hostexec::drbd::{ConfigFiles, Drbd, DrbdCli, DrbdError};
use hwameistor_hostexec::lvm::{Lvm, LvmCli};
use hwameistor_testbed::{Testbed, VmSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{on_testbed, quote, VmExec, CMD_TIMEOUT};

const MIB: i64 = 1 << 20;
/// Upper bound of the whole test; dropping the testbed (also on panic) kills its VMs.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Upper bound of one wait for a DRBD state (a resync of 16 MiB takes seconds).
const STATE_TIMEOUT: Duration = Duration::from_secs(90);
const DIR: &str = "/etc/hwameistor/drbd";
const VG: &str = "vg";

/// Files in one VM: written beside the target and renamed over it.
struct VmFiles(VmExec);

impl VmFiles {
    async fn sh(&self, line: &str) -> std::io::Result<hwameistor_testbed::ExecOutput> {
        self.0
            .tb
            .vm(&self.0.vm)
            .exec_timeout(line, CMD_TIMEOUT)
            .await
            .map_err(std::io::Error::other)
    }
}

#[async_trait]
impl ConfigFiles for VmFiles {
    async fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        if !self
            .sh(&format!("test -e {}", quote(path)))
            .await?
            .success()
        {
            return Ok(None);
        }
        let vm = self.0.tb.vm(&self.0.vm);
        vm.read_file(path)
            .await
            .map(Some)
            .map_err(std::io::Error::other)
    }

    async fn write(&self, path: &str, data: &[u8]) -> std::io::Result<()> {
        let tmp = format!("{path}.tmp");
        let vm = self.0.tb.vm(&self.0.vm);
        vm.write_file(&tmp, data)
            .await
            .map_err(std::io::Error::other)?;
        let out = self
            .sh(&format!("mv -f {} {}", quote(&tmp), quote(path)))
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(out.stderr))
        }
    }

    async fn remove(&self, path: &str) -> std::io::Result<()> {
        let out = self.sh(&format!("rm -f {}", quote(path))).await?;
        if out.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(out.stderr))
        }
    }
}

/// One node: its DRBD and LVM through the VM.
struct Node {
    name: String,
    ip: String,
    drbd: DrbdCli,
    lvm: LvmCli,
    exec: VmExec,
}

impl Node {
    fn new(tb: &Arc<Testbed>, name: &str) -> Node {
        let exec = VmExec {
            tb: tb.clone(),
            vm: name.into(),
        };
        let drbd =
            DrbdCli::with_config_dir(Arc::new(exec.clone()), Arc::new(VmFiles(exec.clone())), DIR)
                .expect("config dir");
        Node {
            name: name.into(),
            ip: tb.vm(name).private_ip(),
            drbd,
            lvm: LvmCli::new(Arc::new(exec.clone())),
            exec,
        }
    }

    async fn sh(&self, line: &str) -> String {
        self.exec
            .tb
            .vm(&self.exec.vm)
            .exec_ok_timeout(line, CMD_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn state(&self, res: &str) -> Option<ResourceStatus> {
        let all = self.drbd.status().await.expect("status");
        all.into_iter().find(|s| s.name == res)
    }

    /// Runs `line` until its output satisfies `ok`; panics after [`STATE_TIMEOUT`].
    async fn until(&self, what: &str, line: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let out = self.sh(line).await;
            if ok(&out) {
                return out;
            }
            if start.elapsed() > STATE_TIMEOUT {
                panic!(
                    "{}: no {what} within {STATE_TIMEOUT:?}; last output:\n{out}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Polls the resource's state until `ok` holds; panics with the last state after
    /// [`STATE_TIMEOUT`]. Returns the states seen on the way (each distinct one once).
    async fn wait(
        &self,
        res: &str,
        what: &str,
        ok: impl Fn(&ResourceStatus) -> bool,
    ) -> Vec<ResourceStatus> {
        let start = Instant::now();
        let mut seen: Vec<ResourceStatus> = Vec::new();
        loop {
            let s = self.state(res).await;
            if let Some(s) = &s {
                if seen.last() != Some(s) {
                    seen.push(s.clone());
                }
                if ok(s) {
                    return seen;
                }
            }
            if start.elapsed() > STATE_TIMEOUT {
                panic!(
                    "{}: {res} not {what} within {STATE_TIMEOUT:?}; last state {s:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The fence-peer and split-brain handler the resources name: logs its arguments and
/// environment, and exits with the code in /tmp/fence-exit (4, "peer outdated", if none).
const HANDLER: &str = "/usr/local/bin/test-drbd-handler";
const HANDLER_SCRIPT: &str = "#!/bin/sh\n\
{ echo \"argv: $*\"; env; } >> /tmp/fence.log\n\
exit \"$(cat /tmp/fence-exit 2>/dev/null || echo 4)\"\n";

fn config(name: &str, minor: u32, nodes: &[&Node]) -> ResourceConfig {
    ResourceConfig {
        name: name.into(),
        minor,
        port: 43001 + minor as u16,
        hosts: nodes
            .iter()
            .map(|n| Host {
                hostname: n.name.clone(),
                address: n.ip.clone(),
                disk: format!("/dev/{VG}/{name}"),
                meta_disk: format!("/dev/{VG}/{name}_drbdmeta"),
            })
            .collect(),
        handler: Some(HANDLER.into()),
    }
}

fn synced(s: &ResourceStatus) -> bool {
    s.connection == ConnState::Connected
        && s.disk == DiskState::UpToDate
        && s.peer_disk == DiskState::UpToDate
        && s.out_of_sync_bytes == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drbd_cli_drives_real_drbd_8_4_between_two_vms() {
    on_testbed(
        vec![
            VmSpec::new("n1").disk("D1", 256 << 20),
            VmSpec::new("n2").disk("D1", 256 << 20),
        ],
        TEST_TIMEOUT,
        |tb| async move { scenario(&tb).await },
    )
    .await;
}

async fn scenario(tb: &Arc<Testbed>) {
    let n1 = Node::new(tb, "n1");
    let n2 = Node::new(tb, "n2");
    let both = [&n1, &n2];
    let t = Instant::now();

    // The module is loaded at boot; unload it on n1 so kernel() has to load it.
    n1.sh("rmmod drbd").await;
    // Steps of the same kind run on both nodes at once (the VMs are slow, not busy).
    join_all(both.map(|n| async move {
        tb.vm(&n.name)
            .write_file_mode(HANDLER, HANDLER_SCRIPT.as_bytes(), 0o755)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let k = n.drbd.kernel().await.expect("kernel");
        assert!(k.version.starts_with("8.4."), "{k:?}");
        n.lvm.create_pv("/dev/vda").await.expect("pv");
        n.lvm
            .create_vg(VG, &["/dev/vda".to_string()])
            .await
            .expect("vg");
        for (lv, size) in [
            ("r0", 16 * MIB),
            ("r0_drbdmeta", 4 * MIB),
            ("r1", 8 * MIB),
            ("r1_drbdmeta", 4 * MIB),
            ("r2", 8 * MIB),
            ("r2_drbdmeta", 4 * MIB),
        ] {
            n.lvm.create_lv(VG, lv, size).await.expect("lv");
        }
    }))
    .await;
    eprintln!("kernel and volumes: {:?}", t.elapsed());

    // Configuration and metadata.
    let r0 = config("r0", 0, &both);
    join_all(both.map(|n| async {
        assert!(n.drbd.write_config(&r0).await.expect("write"));
        assert!(!n.drbd.write_config(&r0).await.expect("unchanged"));
        let main = n.sh(&format!("cat {DIR}/drbd.conf")).await;
        assert!(main.contains("usage-count no;"), "{main}");
        assert!(!n.drbd.has_metadata("r0").await.expect("probe"));
        n.drbd.create_metadata("r0").await.expect("create-md");
        assert!(n.drbd.has_metadata("r0").await.expect("probe"));
        assert_eq!(
            n.drbd.create_metadata("r0").await,
            Err(DrbdError::MetadataExists("r0".into()))
        );
        assert_eq!(
            n.drbd.up("nosuch").await,
            Err(DrbdError::NoSuchResource("nosuch".into()))
        );
    }))
    .await;
    // The node's own /etc/drbd.conf plays no part: our file is the only one given.
    assert!(!n1
        .sh("drbdadm dump all 2>&1 || true")
        .await
        .contains("resource r0"));

    // Up on both: connected, nothing UpToDate yet.
    join_all(both.map(|n| async {
        n.drbd.up("r0").await.expect("up");
        n.drbd.adjust("r0").await.expect("adjust");
    }))
    .await;
    n1.drbd.up("r0").await.expect("up again is adjust");
    let fresh = n1
        .wait("r0", "connected", |s| s.connection == ConnState::Connected)
        .await;
    let s = fresh.last().expect("state");
    assert_eq!(
        (s.disk, s.peer_disk, s.role, s.peer_role),
        (
            DiskState::Inconsistent,
            DiskState::Inconsistent,
            Role::Secondary,
            Role::Secondary
        )
    );
    assert!(s.out_of_sync_bytes > 15 * MIB as u64, "{s:?}");
    assert_eq!(
        n1.drbd.primary("r0", false).await,
        Err(DrbdError::NotUpToDate("r0".into()))
    );
    eprintln!("connected: {:?}", t.elapsed());

    // The first primary is forced; the initial sync runs to UpToDate on both.
    n1.drbd.primary("r0", true).await.expect("primary --force");
    let seen = n1.wait("r0", "synced", synced).await;
    assert_eq!(seen.last().map(|s| s.role), Some(Role::Primary));
    let progress: Vec<_> = seen.iter().filter_map(|s| s.sync_percent).collect();
    eprintln!(
        "initial sync of 16 MiB: {:?} (progress seen: {progress:?})",
        t.elapsed()
    );
    assert!(progress.iter().all(|p| (0.0..=100.0).contains(p)));
    n2.wait("r0", "synced", |s| {
        synced(s) && s.peer_role == Role::Primary
    })
    .await;

    // A mounted device cannot be demoted or taken down.
    n1.sh(
        "set -e; mkfs.ext4 -q -F /dev/drbd0; mkdir -p /mnt/r0; mount /dev/drbd0 /mnt/r0
         echo replicated > /mnt/r0/f; sync",
    )
    .await;
    assert_eq!(
        n1.drbd.secondary("r0").await,
        Err(DrbdError::InUse("r0".into()))
    );
    assert_eq!(n1.drbd.down("r0").await, Err(DrbdError::InUse("r0".into())));
    assert_eq!(
        n2.drbd.primary("r0", false).await,
        Err(DrbdError::PeerIsPrimary("r0".into()))
    );
    n1.sh("umount /mnt/r0").await;
    n1.drbd.secondary("r0").await.expect("secondary");

    // The other side takes over and reads what was written.
    n2.drbd.primary("r0", false).await.expect("primary on n2");
    let got = n2
        .sh("mkdir -p /mnt/r0; mount /dev/drbd0 /mnt/r0; cat /mnt/r0/f; umount /mnt/r0")
        .await;
    assert_eq!(got.trim(), "replicated");
    n2.drbd.secondary("r0").await.expect("secondary on n2");
    eprintln!("switchover: {:?}", t.elapsed());

    // Resize: both backing volumes grown, then one primary grows the device.
    join_all(both.map(|n| async { n.lvm.extend_lv(VG, "r0", 24 * MIB).await.expect("lvextend") }))
        .await;
    let e = n1.drbd.resize("r0", false).await.expect_err("no primary");
    assert!(e.to_string().contains("Need one Primary"), "{e}");
    n1.drbd.primary("r0", false).await.expect("primary");
    n1.drbd.resize("r0", false).await.expect("resize");
    // The new size takes effect once the peers have agreed on it, just after the command.
    let grown = (24 * MIB).to_string();
    n1.until("grown device", "blockdev --getsize64 /dev/drbd0", |s| {
        s.trim() == grown
    })
    .await;
    n1.wait("r0", "synced after resize", synced).await;
    eprintln!("resize: {:?}", t.elapsed());

    // Disconnect and connect (both idempotent).
    n1.drbd.disconnect("r0").await.expect("disconnect");
    n1.drbd.disconnect("r0").await.expect("disconnect again");
    n1.wait("r0", "StandAlone", |s| {
        s.connection == ConnState::StandAlone
    })
    .await;
    // With fencing the peer of a primary that disconnects cleanly outdates itself.
    n2.wait("r0", "waiting and outdated", |s| {
        s.connection == ConnState::WFConnection && s.disk == DiskState::Outdated
    })
    .await;
    n1.drbd.connect("r0", false).await.expect("connect");
    n1.drbd.connect("r0", false).await.expect("connect again");
    n1.wait("r0", "synced after reconnect", synced).await;
    n1.drbd
        .resume_io("r0")
        .await
        .expect("resume-io (nothing frozen)");

    // A primary that loses its peer (link cut) freezes I/O and runs the fence-peer handler;
    // a handler that fails (exit 1: neither 4 "peer outdated" nor 7 "peer stonithed")
    // leaves I/O frozen until resume-io.
    n1.sh("echo 1 > /tmp/fence-exit; rm -f /tmp/fence.log")
        .await;
    n2.sh("ip link set eth1 down").await;
    // I/O freezes the moment the loss is noticed, before the handler runs; wait for the
    // kernel's verdict on the handler's answer.
    n1.until("the fence-peer handler's answer", "dmesg", |d| {
        d.contains("fence-peer helper broken, returned 1")
    })
    .await;
    let s = n1.state("r0").await.expect("r0");
    assert!(s.suspended, "still frozen: {s:?}");
    assert_eq!(
        (s.role, s.connection, s.peer_disk),
        (Role::Primary, ConnState::WFConnection, DiskState::DUnknown)
    );
    let log = n1.sh("cat /tmp/fence.log").await;
    assert!(log.contains("argv: fence-peer"), "{log}");
    assert!(log.contains("DRBD_RESOURCE=r0"), "{log}");
    assert!(
        log.contains(&format!("DRBD_PEER_ADDRESS={}", n2.ip)),
        "{log}"
    );
    n1.drbd.resume_io("r0").await.expect("resume-io");
    n1.wait("r0", "resumed", |s| !s.suspended).await;
    n2.sh("ip link set eth1 up").await;
    n1.wait("r0", "synced after the link is back", synced).await;
    eprintln!("fenced, frozen, resumed: {:?}", t.elapsed());

    // A secondary outdated by hand resyncs when it reconnects.
    n2.drbd.disconnect("r0").await.expect("disconnect n2");
    // A peer that disconnects cleanly outdates itself: the primary records it and goes on
    // writing, neither freezing nor asking the fence-peer handler.
    let after = n1
        .wait("r0", "waiting for its peer", |s| {
            s.connection == ConnState::WFConnection
        })
        .await;
    let s = after.last().expect("state");
    assert_eq!((s.peer_disk, s.suspended), (DiskState::Outdated, false));
    n2.wait("r0", "StandAlone", |s| {
        s.connection == ConnState::StandAlone
    })
    .await;
    n2.drbd.outdate("r0").await.expect("outdate");
    n2.wait("r0", "Outdated", |s| s.disk == DiskState::Outdated)
        .await;
    n2.drbd.connect("r0", false).await.expect("connect n2");
    n2.wait("r0", "UpToDate again", synced).await;
    eprintln!("disconnect/connect/outdate: {:?}", t.elapsed());

    // A second resource whose initial sync is skipped (both sides freshly zeroed).
    let r1 = config("r1", 1, &both);
    join_all(both.map(|n| async {
        n.drbd.write_config(&r1).await.expect("write r1");
        n.drbd.create_metadata("r1").await.expect("create-md r1");
        n.drbd.up("r1").await.expect("up r1");
    }))
    .await;
    n1.wait("r1", "connected", |s| {
        s.connection == ConnState::Connected && s.peer_disk == DiskState::Inconsistent
    })
    .await;
    n1.drbd.skip_initial_sync("r1").await.expect("skip sync");
    let seen = n1.wait("r1", "UpToDate on both", synced).await;
    assert!(
        seen.iter().all(|s| !s.connection.syncing()),
        "no resync: {seen:#?}"
    );
    let all = n2.drbd.status().await.expect("status");
    assert_eq!(
        all.iter()
            .map(|s| (s.name.as_str(), s.minor))
            .collect::<Vec<_>>(),
        [("r0", 0), ("r1", 1)]
    );
    eprintln!("skipped initial sync: {:?}", t.elapsed());

    // Down, wipe, and the metadata device reused.
    n1.drbd.secondary("r0").await.expect("secondary");
    join_all(both.map(|n| async move {
        for r in ["r0", "r1"] {
            n.drbd.down(r).await.expect("down");
            n.drbd.down(r).await.expect("down again");
        }
        assert_eq!(n.state("r0").await, None);
        assert!(n.drbd.has_metadata("r0").await.expect("probe after down"));
        n.drbd.wipe_metadata("r0").await.expect("wipe");
        assert!(!n.drbd.has_metadata("r0").await.expect("probe after wipe"));
    }))
    .await;
    // wipe-md leaves the activity log behind; creating metadata again must still work.
    n1.drbd
        .create_metadata("r0")
        .await
        .expect("create-md again");
    assert!(n1.drbd.has_metadata("r0").await.expect("probe"));
    n1.drbd.wipe_metadata("r0").await.expect("wipe again");
    join_all(both.map(|n| async move {
        for r in ["r0", "r1"] {
            n.drbd.remove_config(r).await.expect("remove");
            n.drbd.remove_config(r).await.expect("remove again");
        }
        assert_eq!(
            n.drbd.up("r0").await,
            Err(DrbdError::NoSuchResource("r0".into()))
        );
    }))
    .await;
    let left = n1.sh(&format!("ls {DIR}")).await;
    assert_eq!(left.trim(), "drbd.conf");
    eprintln!("down, wipe, remove: {:?}", t.elapsed());

    // A resource on one node (a volume created convertible): its file names no peer. Up
    // attaches it StandAlone, its first primary is forced alone (the fence-peer handler
    // answers "outdated" for the absent peer), it grows alone, then a peer is added and
    // `adjust` connects and fully syncs it while the device is mounted, then the peer is
    // removed again and `adjust` leaves it alone.
    n1.sh("echo 4 > /tmp/fence-exit").await;
    let alone = config("r2", 2, &[&n1]);
    n1.drbd.write_config(&alone).await.expect("write r2");
    n1.drbd.create_metadata("r2").await.expect("create-md r2");
    n1.drbd.up("r2").await.expect("up alone");
    n1.drbd.up("r2").await.expect("up alone again");
    let s = n1.state("r2").await.expect("r2");
    assert_eq!(
        (s.connection, s.disk, s.role),
        (
            ConnState::StandAlone,
            DiskState::Inconsistent,
            Role::Secondary
        )
    );
    n1.drbd.primary("r2", true).await.expect("forced alone");
    n1.wait("r2", "UpToDate alone", |s| {
        s.disk == DiskState::UpToDate && s.role == Role::Primary
    })
    .await;
    n1.sh(
        "set -e; mkfs.ext4 -q -F /dev/drbd2; mkdir -p /mnt/r2; mount /dev/drbd2 /mnt/r2
         echo alone > /mnt/r2/f; sync",
    )
    .await;
    n1.lvm
        .extend_lv(VG, "r2", 12 * MIB)
        .await
        .expect("lvextend");
    n1.drbd.resize("r2", true).await.expect("resize alone");
    let grown = (12 * MIB).to_string();
    n1.until("grown alone", "blockdev --getsize64 /dev/drbd2", |s| {
        s.trim() == grown
    })
    .await;
    n2.lvm
        .extend_lv(VG, "r2", 12 * MIB)
        .await
        .expect("lvextend n2");
    let paired = config("r2", 2, &both);
    for n in both {
        n.drbd.write_config(&paired).await.expect("write r2 paired");
    }
    n2.drbd
        .create_metadata("r2")
        .await
        .expect("create-md r2 n2");
    n2.drbd.up("r2").await.expect("up n2");
    n1.drbd.adjust("r2").await.expect("adjust connects");
    n1.wait("r2", "synced with its new peer", synced).await;
    n1.sh("echo more >> /mnt/r2/f; sync").await;
    n1.sh("umount /mnt/r2").await;
    n1.drbd.secondary("r2").await.expect("secondary r2");
    n2.drbd
        .primary("r2", false)
        .await
        .expect("primary r2 on n2");
    let got = n2
        .sh("mkdir -p /mnt/r2; mount /dev/drbd2 /mnt/r2; cat /mnt/r2/f; umount /mnt/r2")
        .await;
    assert_eq!(got.trim(), "alone\nmore");
    n2.drbd.secondary("r2").await.expect("secondary r2 n2");
    n1.drbd.primary("r2", false).await.expect("primary r2 back");
    n2.drbd.down("r2").await.expect("down n2");
    n1.drbd.write_config(&alone).await.expect("write r2 alone");
    n1.drbd.adjust("r2").await.expect("adjust drops the peer");
    let s = n1.state("r2").await.expect("r2");
    assert_eq!(
        (s.connection, s.disk, s.role),
        (ConnState::StandAlone, DiskState::UpToDate, Role::Primary)
    );
    n1.drbd.adjust("r2").await.expect("adjust alone again");
    n1.drbd.secondary("r2").await.expect("secondary");
    n1.drbd.down("r2").await.expect("down");
    n1.drbd.up("r2").await.expect("up alone after down");
    n1.drbd
        .primary("r2", false)
        .await
        .expect("promoted alone after down");
    eprintln!("a resource alone, joined, alone again: {:?}", t.elapsed());
}
