//! The lvm2 command lines LvmCli runs and how it reads their answers, against a scripted
//! executor. (Behaviour is tested against the stateful fake and, in VMs, real LVM.)

use hwameistor_hostexec::lvm::{Lvm, LvmCli, LvmError};
use hwameistor_testkit::FakeExecutor;
use std::sync::Arc;

const HDD: &str = "LocalStorage_PoolHDD";

fn pvs(rows: &[String]) -> String {
    format!(r#"{{"report":[{{"pv":[{}]}}]}}"#, rows.join(","))
}

fn pv(name: &str, vg: &str, vg_size: i64, vg_free: i64) -> String {
    format!(
        r#"{{"pv_name":"{name}","vg_name":"{vg}","pv_size":"1073741824","pv_free":"1073741824","vg_size":"{vg_size}","vg_free":"{vg_free}","vg_extent_size":"4194304","lv_count":"0","pv_count":"1"}}"#
    )
}

fn cli(fake: &FakeExecutor) -> LvmCli {
    LvmCli::new(Arc::new(fake.clone()))
}

#[tokio::test]
async fn the_state_is_read_in_two_commands_with_segments_folded() {
    let fake = FakeExecutor::new();
    fake.ok(
        "pvs",
        &pvs(&[
            pv("/dev/vdb", HDD, 100, 60),
            pv("/dev/vdc", HDD, 100, 60),
            pv("/dev/vdd", "", 0, 0),
        ]),
    )
    .ok(
        "lvs",
        r#"{"report":[{"lv":[
            {"lv_name":"v","vg_name":"LocalStorage_PoolHDD","lv_size":"40","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolHDD/v","devices":"/dev/vdb(0)"},
            {"lv_name":"v","vg_name":"LocalStorage_PoolHDD","lv_size":"40","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolHDD/v","devices":"/dev/vdc(0)"}]}]}"#,
    );
    let st = cli(&fake).report().await.expect("state");
    assert_eq!((st.pvs.len(), st.vgs.len(), st.lvs.len()), (3, 1, 1));
    assert_eq!(st.lvs[0].devices, vec!["/dev/vdb", "/dev/vdc"]);
    assert_eq!(
        fake.commands(),
        [
            "pvs --reportformat json --units b --nosuffix -o pv_name,vg_name,pv_size,pv_free,vg_size,vg_free,vg_extent_size,lv_count,pv_count",
            "lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_size,lv_attr,lv_path,devices,pool_lv,data_percent,metadata_percent,lv_metadata_size,origin",
        ]
    );
}

#[tokio::test]
async fn each_operation_is_one_command_never_forced() {
    let fake = FakeExecutor::new();
    for tool in [
        "pvcreate", "vgcreate", "vgextend", "lvcreate", "lvextend", "lvchange", "lvremove",
    ] {
        fake.ok(tool, "");
    }
    let lvm = cli(&fake);
    lvm.create_pv("/dev/vdb").await.expect("pv");
    lvm.create_vg(HDD, &["/dev/vdb".into(), "/dev/vdc".into()])
        .await
        .expect("vg");
    lvm.extend_vg(HDD, &["/dev/vdd".into()])
        .await
        .expect("vgextend");
    lvm.create_lv(HDD, "pvc-1", 8 << 20).await.expect("lv");
    lvm.extend_lv(HDD, "pvc-1", 12 << 20).await.expect("extend");
    lvm.activate_lv(HDD, "pvc-1").await.expect("activate");
    lvm.remove_lv(HDD, "pvc-1").await.expect("remove");
    lvm.create_thin_pool(HDD, "hwameistor-thin", 1 << 30, 8 << 20)
        .await
        .expect("pool");
    lvm.extend_thin_metadata(HDD, "hwameistor-thin", 12 << 20)
        .await
        .expect("metadata");
    lvm.create_thin_lv(HDD, "hwameistor-thin", "pvc-2", 4 << 30)
        .await
        .expect("thin");
    lvm.create_snapshot(HDD, "pvc-1", "snap_a", Some(4 << 20))
        .await
        .expect("cow snapshot");
    lvm.create_snapshot(HDD, "pvc-2", "snap_b", None)
        .await
        .expect("thin snapshot");
    assert_eq!(
        fake.commands(),
        [
            "pvcreate /dev/vdb",
            "vgcreate LocalStorage_PoolHDD /dev/vdb /dev/vdc",
            "vgextend LocalStorage_PoolHDD /dev/vdd",
            "lvcreate --yes -W y -Z y --addtag hwameistor -n pvc-1 -L 8388608b LocalStorage_PoolHDD",
            "lvextend -L 12582912b LocalStorage_PoolHDD/pvc-1",
            "lvchange -a y LocalStorage_PoolHDD/pvc-1",
            "lvremove --yes LocalStorage_PoolHDD/pvc-1",
            "lvcreate --yes --type thin-pool --zero y --addtag hwameistor -n hwameistor-thin -L 1073741824b --poolmetadatasize 8388608b LocalStorage_PoolHDD",
            "lvextend --poolmetadatasize 12582912b LocalStorage_PoolHDD/hwameistor-thin",
            "lvcreate --yes --type thin --addtag hwameistor -n pvc-2 -V 4294967296b --thinpool hwameistor-thin LocalStorage_PoolHDD",
            "lvcreate --yes --snapshot --permission r --addtag hwameistor -n snap_a -L 4194304b LocalStorage_PoolHDD/pvc-1",
            "lvcreate --yes --snapshot --permission r --addtag hwameistor -n snap_b --setactivationskip n LocalStorage_PoolHDD/pvc-2",
        ]
    );
}

#[tokio::test]
async fn lvm_refusals_become_typed_errors() {
    let fake = FakeExecutor::new();
    fake.fail(
        "lvcreate --yes -W y -Z y --addtag hwameistor -n dup",
        "  Logical Volume \"dup\" already exists in volume group \"LocalStorage_PoolHDD\"",
    )
    .fail(
        "lvcreate --yes -W y -Z y --addtag hwameistor -n big",
        "  Volume group \"LocalStorage_PoolHDD\" has insufficient free space (10 extents): 100 required.",
    )
    .fail(
        "lvcreate",
        "  Volume group \"LocalStorage_PoolHDD\" not found\n  Cannot process volume group LocalStorage_PoolHDD",
    )
    .fail(
        "lvremove --yes LocalStorage_PoolHDD/busy",
        "  Logical volume LocalStorage_PoolHDD/busy contains a filesystem in use.",
    )
    .fail(
        "lvremove",
        "  Failed to find logical volume \"LocalStorage_PoolHDD/gone\"",
    )
    .fail(
        "pvcreate /dev/vdb",
        "WARNING: ext4 signature detected on /dev/vdb at offset 1080. Wipe it? [y/n]: [n]\n  Aborted wiping of ext4.",
    )
    .fail("pvcreate", "  No device found for /dev/vdz.");
    let lvm = cli(&fake);
    assert!(matches!(
        lvm.create_lv(HDD, "dup", 4).await,
        Err(LvmError::LvExists { .. })
    ));
    assert!(matches!(
        lvm.create_lv(HDD, "big", 400 << 20).await,
        Err(LvmError::InsufficientSpace { need, .. }) if need == 400 << 20
    ));
    assert_eq!(
        lvm.create_lv(HDD, "x", 4).await,
        Err(LvmError::NoSuchVg(HDD.into()))
    );
    assert!(matches!(
        lvm.remove_lv(HDD, "busy").await,
        Err(LvmError::LvInUse { .. })
    ));
    assert!(matches!(
        lvm.remove_lv(HDD, "gone").await,
        Err(LvmError::NoSuchLv { .. })
    ));
    let refused = lvm.create_pv("/dev/vdb").await;
    assert!(
        matches!(&refused, Err(LvmError::DeviceRefused { device, reason }) if device == "/dev/vdb" && reason.contains("ext4")),
        "{refused:?}"
    );
    // An unclassified failure keeps the command line and stderr.
    let other = lvm.create_pv("/dev/vdz").await.expect_err("no device");
    assert!(other.to_string().contains("No device found"), "{other}");
}

#[tokio::test]
async fn garbage_reports_name_the_command() {
    let fake = FakeExecutor::new();
    fake.ok("pvs", "not json");
    let e = cli(&fake).report().await.expect_err("garbage");
    assert!(
        matches!(&e, LvmError::Report { command, .. } if command == "pvs"),
        "{e}"
    );
}
