//! LvmCli's snapshots against real LVM (dm-snapshot and dm-thin in a VM's kernel): a
//! copy-on-write snapshot taken while the volume is being written holds a consistent state
//! (every block either as it was or as rewritten, the rewritten ones a prefix: the writes
//! done before the instant it was taken) and keeps it while the writes go on; its use of
//! its space reads back; one whose space overflows is invalidated by LVM and the core's
//! snapshot decisions report it Failed; an origin is not removed before its snapshots; a
//! thin volume's snapshot is thin, readable, and keeps its data.
//! Needs root and qemu-system-x86_64 (see the testbed crate).

mod support;

use hwameistor_api::{LocalVolumeSnapshot, LocalVolumeSnapshotSpec, SnapshotState};
use hwameistor_core::lvm::{plan_remove_lv, LvPlanError};
use hwameistor_core::snapshot::{next_step, SnapshotStep};
use hwameistor_hostexec::lvm::{Lvm, LvmCli};
use hwameistor_testbed::{Testbed, VmSpec};
use std::sync::Arc;
use std::time::Duration;
use support::{on_testbed, VmExec};

const MIB: i64 = 1 << 20;
const VG: &str = "LocalStorage_PoolHDD";
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Blocks of the written volume: small enough that one write is one request.
const BLOCK: i64 = 128 << 10;
const BLOCKS: i64 = 256;
/// For the guest loops that read or write every block (TCG is slow).
const LONG: Duration = Duration::from_secs(300);

async fn sum(vm: &hwameistor_testbed::Vm, lv: &str) -> String {
    vm.exec_ok(&format!("md5sum < /dev/{VG}/{lv} | cut -c1-32"))
        .await
        .expect("sum")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_consistent_kept_watched_and_invalidated_on_real_lvm() {
    on_testbed(
        vec![VmSpec::new("n1").disk("D1", 1024 << 20)],
        TEST_TIMEOUT,
        |tb| async move { scenario(&tb).await },
    )
    .await;
}

/// What snapshot `snap` of `origin` (`cow` bytes of space, or thin) looks like to the agent.
fn object(snap: &str, origin: &str, cow: Option<i64>) -> LocalVolumeSnapshot {
    let mut s = LocalVolumeSnapshot::new(
        snap,
        LocalVolumeSnapshotSpec {
            source_volume: origin.into(),
            node_name: "n1".into(),
            pool_name: VG.into(),
            source_capacity_bytes: BLOCK * BLOCKS,
            cow_capacity_bytes: cow,
        },
    );
    s.metadata.finalizers = Some(vec![hwameistor_api::FINALIZER_SNAPSHOT.into()]);
    s.status = Some(hwameistor_api::LocalVolumeSnapshotStatus {
        state: Some(SnapshotState::Creating),
        ..Default::default()
    });
    s
}

async fn scenario(tb: &Arc<Testbed>) {
    let exec = VmExec {
        tb: tb.clone(),
        vm: "n1".into(),
    };
    let vm = tb.vm("n1");
    let lvm = LvmCli::new(Arc::new(exec));
    lvm.create_pv("/dev/vda").await.expect("pv");
    lvm.create_vg(VG, &["/dev/vda".to_string()])
        .await
        .expect("vg");
    let size = BLOCK * BLOCKS;
    lvm.create_lv(VG, "data", size).await.expect("volume");
    let dev = format!("/dev/{VG}/data");
    // Known content, kept in the guest to compare with.
    vm.exec_ok(&format!(
        "head -c {size} /dev/urandom > /tmp/orig && dd if=/tmp/orig of={dev} bs=1M oflag=direct status=none"
    ))
    .await
    .expect("fill");

    // A writer rewrites every block in order ("block-<i>-v2"), one direct write each; the
    // snapshot is taken while it runs (the core names it snap_<object>).
    let snap = hwameistor_core::snapshot::lv_name("s1");
    let writer = vm
        .spawn(
            &format!(
                "i=0; while [ $i -lt {BLOCKS} ]; do yes block-$i-v2 | head -c {BLOCK} | dd of={dev} bs={BLOCK} seek=$i iflag=fullblock oflag=direct conv=notrunc status=none || exit 1; i=$((i+1)); done"
            ),
            "/tmp/writer.log",
        )
        .await
        .expect("writer");
    // Let it start.
    vm.exec_ok(&format!(
        "for t in $(seq 1 200); do cmp -s -n 16 {dev} /tmp/orig || break; sleep 0.05; done"
    ))
    .await
    .expect("writer started");
    let st = lvm.report().await.expect("report");
    let s1 = object(
        "s1",
        "data",
        Some(hwameistor_core::snapshot::full_cow_bytes(size)),
    );
    let SnapshotStep::Create { cow, lv, .. } = next_step("n1", &s1, &st, "now") else {
        panic!("the core would take it");
    };
    assert_eq!(lv, snap);
    lvm.create_snapshot(VG, "data", &snap, cow)
        .await
        .expect("snapshot while writing");
    let writing = vm.process_state(writer).await.expect("writer state");
    let taken_sum = vm
        .exec_ok(&format!("md5sum < /dev/{VG}/{snap} | cut -c1-32"))
        .await
        .expect("sum");
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        match vm.process_state(writer).await.expect("writer state") {
            hwameistor_testbed::ProcessState::Exited { code, signal } => {
                let log = String::from_utf8_lossy(
                    &vm.read_file("/tmp/writer.log").await.unwrap_or_default(),
                )
                .to_string();
                assert_eq!((code, signal), (Some(0), None), "writer failed: {log}");
                break;
            }
            _ if tokio::time::Instant::now() > deadline => panic!("the writer did not finish"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // Every block is either as it was or as rewritten, and the rewritten ones come first.
    let blocks = vm
        .exec_ok_timeout(&format!(
            "i=0; out=''; while [ $i -lt {BLOCKS} ]; do \
               s=$(dd if=/dev/{VG}/{snap} bs={BLOCK} skip=$i count=1 status=none | md5sum | cut -c1-32); \
               o=$(dd if=/tmp/orig bs={BLOCK} skip=$i count=1 status=none | md5sum | cut -c1-32); \
               n=$(yes block-$i-v2 | head -c {BLOCK} | md5sum | cut -c1-32); \
               if [ \"$s\" = \"$o\" ]; then out=\"${{out}}o\"; elif [ \"$s\" = \"$n\" ]; then out=\"${{out}}n\"; else out=\"${{out}}x\"; fi; \
               i=$((i+1)); done; echo $out"
        ), LONG)
        .await
        .expect("compare blocks");
    let blocks = blocks.trim();
    assert_eq!(blocks.len(), BLOCKS as usize, "{blocks}");
    let rewritten = blocks.chars().take_while(|c| *c == 'n').count();
    assert!(
        blocks[rewritten..].chars().all(|c| c == 'o'),
        "the snapshot is not a state the volume was in: {blocks}"
    );
    eprintln!(
        "snapshot taken after {rewritten} of {BLOCKS} blocks were rewritten (writer {} when it was taken)",
        if matches!(writing, hwameistor_testbed::ProcessState::Running) {
            "running"
        } else {
            "done"
        }
    );
    // Kept while the volume changed under it.
    let later_sum = vm
        .exec_ok(&format!("md5sum < /dev/{VG}/{snap} | cut -c1-32"))
        .await
        .expect("sum");
    assert_eq!(taken_sum, later_sum);
    // Its use reads back, and the core reports it Ready.
    let st = lvm.report().await.expect("report");
    let lv = st.lv(VG, &snap).expect("snapshot reported").clone();
    assert!(lv.is_cow_snapshot() && !lv.snapshot_invalid(), "{lv:?}");
    assert_eq!(lv.origin.as_deref(), Some("data"));
    let used = lv.cow_used_bp.expect("COW use");
    assert!(used > 0, "{lv:?}");
    let SnapshotStep::Status(ready) = next_step("n1", &s1, &st, "now") else {
        panic!("Ready");
    };
    assert_eq!(ready.state, Some(SnapshotState::Ready));
    // The origin cannot be removed before it.
    assert!(matches!(
        plan_remove_lv(&st, VG, "data"),
        Err(LvPlanError::HasSnapshots { .. })
    ));

    // A snapshot with one extent of space: 16 MiB of changes overflow it; LVM invalidates
    // it and the core reports it Failed.
    let small = hwameistor_core::snapshot::lv_name("s2");
    lvm.create_snapshot(VG, "data", &small, Some(4 * MIB))
        .await
        .expect("small snapshot");
    vm.exec_ok(&format!(
        "dd if=/dev/urandom of={dev} bs=1M count=16 oflag=direct conv=notrunc status=none"
    ))
    .await
    .expect("overflow it");
    let st = lvm.report().await.expect("report");
    let lv = st.lv(VG, &small).expect("reported").clone();
    assert!(lv.snapshot_invalid(), "{lv:?}");
    let mut s2 = object("s2", "data", Some(4 * MIB));
    s2.status = Some(ready.as_ref().clone());
    let SnapshotStep::Status(failed) = next_step("n1", &s2, &st, "now") else {
        panic!("Failed");
    };
    assert_eq!(failed.state, Some(SnapshotState::Failed));
    // The first snapshot, with the full space (the volume and the bookkeeping), kept
    // everything although all of the volume changed.
    assert!(!st.lv(VG, &snap).expect("s1").snapshot_invalid());
    for s in [&small, &snap] {
        lvm.remove_lv(VG, s).await.expect("remove snapshot");
    }
    assert!(plan_remove_lv(&lvm.report().await.expect("report"), VG, "data").expect("ok"));

    // A thin volume's snapshot: thin, active, same data; kept while the volume changes.
    lvm.create_thin_pool(VG, "hwameistor-thin", 128 * MIB, 8 * MIB)
        .await
        .expect("pool");
    lvm.create_thin_lv(VG, "hwameistor-thin", "t", 64 * MIB)
        .await
        .expect("thin");
    vm.exec_ok(&format!(
        "dd if=/dev/urandom of=/dev/{VG}/t bs=1M count=8 oflag=direct status=none"
    ))
    .await
    .expect("write thin");
    let before = sum(vm, "t").await;
    let thin_snap = hwameistor_core::snapshot::lv_name("s3");
    lvm.create_snapshot(VG, "t", &thin_snap, None)
        .await
        .expect("thin snapshot");
    let st = lvm.report().await.expect("report");
    let lv = st.lv(VG, &thin_snap).expect("reported").clone();
    assert!(lv.active(), "activation not skipped: {lv:?}");
    assert_eq!(
        (lv.origin.as_deref(), lv.pool_lv.as_deref(), lv.cow_used_bp),
        (Some("t"), Some("hwameistor-thin"), None)
    );
    assert_eq!(sum(vm, &thin_snap).await, before);
    vm.exec_ok(&format!(
        "dd if=/dev/urandom of=/dev/{VG}/t bs=1M count=8 oflag=direct status=none"
    ))
    .await
    .expect("rewrite thin");
    assert_ne!(sum(vm, "t").await, before);
    assert_eq!(
        sum(vm, &thin_snap).await,
        before,
        "the thin snapshot kept its data"
    );
    let s3 = object("s3", "t", None);
    let SnapshotStep::Status(ready) = next_step("n1", &s3, &st, "now") else {
        panic!("Ready");
    };
    assert!(ready.ready_to_use);
}
