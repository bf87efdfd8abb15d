//! LvmCli's thin pools against real LVM (dm-thin-pool in a VM's kernel): the pool the
//! core's plan asks for is made with its data and metadata, thin volumes take nothing from
//! the group until written, what is written shows in the pool's reported use, the pool's
//! data and metadata grow, and LVM's report reads back as the planner's view.
//! Needs root and qemu-system-x86_64 (see the testbed crate).

mod support;

use hwameistor_core::thin::{
    plan_ensure_thin_lv, plan_grow_pool, thin_pool, ThinOp, ThinPolicy, THIN_POOL_LV,
};
use hwameistor_hostexec::lvm::{Lvm, LvmCli};
use hwameistor_testbed::{Testbed, VmSpec};
use std::sync::Arc;
use std::time::Duration;
use support::{on_testbed, VmExec};

const MIB: i64 = 1 << 20;
const VG: &str = "LocalStorage_PoolHDD";
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Carries out a thin plan with `lvm`, as the agent will.
async fn apply(lvm: &LvmCli, name: &str, ops: Vec<ThinOp>) {
    let st = lvm.report().await.expect("report");
    let pool = thin_pool(&st, VG);
    for op in ops {
        match op {
            ThinOp::CreatePool {
                data_bytes,
                metadata_bytes,
            } => lvm
                .create_thin_pool(VG, THIN_POOL_LV, data_bytes, metadata_bytes)
                .await
                .expect("create pool"),
            ThinOp::ExtendPool {
                data_bytes,
                metadata_bytes,
            } => {
                let p = pool.clone().expect("a pool to grow");
                if data_bytes > p.data_bytes {
                    lvm.extend_lv(VG, THIN_POOL_LV, data_bytes)
                        .await
                        .expect("grow data");
                }
                if metadata_bytes > p.metadata_bytes {
                    lvm.extend_thin_metadata(VG, THIN_POOL_LV, metadata_bytes)
                        .await
                        .expect("grow metadata");
                }
            }
            ThinOp::CreateThin { bytes } => lvm
                .create_thin_lv(VG, THIN_POOL_LV, name, bytes)
                .await
                .expect("create thin"),
            ThinOp::ExtendThin { bytes } => {
                lvm.extend_lv(VG, name, bytes).await.expect("grow thin")
            }
            ThinOp::Activate => lvm.activate_lv(VG, name).await.expect("activate"),
            ThinOp::CloneFrom { source } => lvm.clone_thin(VG, &source, name).await.expect("clone"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_pools_are_made_grown_and_read_back_from_real_lvm() {
    on_testbed(
        vec![VmSpec::new("n1").disk("D1", 1024 << 20)],
        TEST_TIMEOUT,
        |tb| async move { scenario(&tb).await },
    )
    .await;
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
    let free0 = lvm.report().await.expect("report").vg(VG).expect("vg").free;
    let policy = ThinPolicy {
        min_data_bytes: 256 * MIB,
        ..Default::default()
    };

    // Two volumes of 300 MiB: the first makes a 256 MiB pool (600 MiB fits a ratio of 2
    // only at 300 MiB: the second grows it).
    for name in ["t1", "t2"] {
        let st = lvm.report().await.expect("report");
        let ops = plan_ensure_thin_lv(&st, VG, name, 300 * MIB, &policy).expect("plan");
        apply(&lvm, name, ops).await;
    }
    let st = lvm.report().await.expect("report");
    let p = thin_pool(&st, VG).expect("the pool, read back");
    assert_eq!(
        (
            p.data_bytes,
            p.metadata_bytes,
            p.provisioned_bytes,
            p.volumes
        ),
        (300 * MIB, 8 * MIB, 600 * MIB, 2),
        "{p:?}"
    );
    // The group gave the data and twice the metadata (the spare); the thin volumes nothing.
    let free1 = st.vg(VG).expect("vg").free;
    assert_eq!(free0 - free1, 300 * MIB + 2 * 8 * MIB, "{st:#?}");
    let t1 = st.lv(VG, "t1").expect("t1");
    assert!(
        t1.active() && t1.pool_lv.as_deref() == Some(THIN_POOL_LV),
        "{t1:?}"
    );
    assert!(t1.devices.is_empty(), "{t1:?}");
    // A new thin volume reads zeros.
    let zeros = vm
        .exec_ok("cmp -n 1048576 /dev/LocalStorage_PoolHDD/t1 /dev/zero && echo same")
        .await
        .expect("cmp");
    assert!(zeros.contains("same"), "{zeros:?}");

    // 240 MiB written: 80% of the pool's data, reported; the pool grows by a quarter.
    vm.exec_ok("dd if=/dev/urandom of=/dev/LocalStorage_PoolHDD/t1 bs=1M count=240 oflag=direct 2>/dev/null")
        .await
        .expect("write");
    let st = lvm.report().await.expect("report");
    let p = thin_pool(&st, VG).expect("pool");
    assert!(
        (79.0..=81.0).contains(&p.data_percent),
        "data use {}%",
        p.data_percent
    );
    assert!(p.metadata_percent > 0.0, "{p:?}");
    let grow = plan_grow_pool(&st, VG, &policy).expect("grows at 70%");
    assert_eq!(
        grow,
        ThinOp::ExtendPool {
            data_bytes: 376 * MIB,
            metadata_bytes: 8 * MIB
        }
    );
    apply(&lvm, "", vec![grow]).await;
    // Metadata grown on its own (the planner asks for it when it fills).
    lvm.extend_thin_metadata(VG, THIN_POOL_LV, 12 * MIB)
        .await
        .expect("metadata");
    let st = lvm.report().await.expect("report");
    let p = thin_pool(&st, VG).expect("pool");
    assert_eq!((p.data_bytes, p.metadata_bytes), (376 * MIB, 12 * MIB));
    assert!(p.data_percent < 70.0, "{p:?}");
    // The written data is intact through the pool's growth; a thin volume grows.
    let st0 = st.lv(VG, "t2").expect("t2").size;
    let ops = plan_ensure_thin_lv(&st, VG, "t2", 400 * MIB, &policy).expect("plan");
    assert!(
        ops.contains(&ThinOp::ExtendThin { bytes: 400 * MIB }),
        "{ops:?}"
    );
    apply(&lvm, "t2", ops).await;
    let st = lvm.report().await.expect("report");
    assert_eq!(
        (st0, st.lv(VG, "t2").expect("t2").size),
        (300 * MIB, 400 * MIB)
    );
    lvm.remove_lv(VG, "t2").await.expect("remove thin");
    lvm.remove_lv(VG, "t1").await.expect("remove thin");
    assert_eq!(
        thin_pool(&lvm.report().await.expect("report"), VG)
            .expect("pool")
            .volumes,
        0
    );
}
