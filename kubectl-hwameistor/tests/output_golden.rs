//! Exact table and JSON output of the result types, built from typed structs (no cluster).

use hwameistor_api::HaState;
use kubectl_hwameistor::admin::diagnose::{DiagnoseReport, Finding, Severity};
use kubectl_hwameistor::admin::disks::{DiskList, DiskRow};
use kubectl_hwameistor::admin::pools::{PoolList, PoolRow};
use kubectl_hwameistor::admin::split_brain;
use kubectl_hwameistor::admin::volumes::{ReplicaRow, VolumeDetail, VolumeList, VolumeRow};
use kubectl_hwameistor::output::{render, OutputFormat, OutputOptions};

const GI: i64 = 1 << 30;

fn opts(format: OutputFormat) -> OutputOptions {
    OutputOptions {
        format,
        no_headers: false,
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn disks() -> DiskList {
    let base = DiskRow {
        node: "node-a".into(),
        name: "disk-a1".into(),
        device: Some("/dev/sdb".into()),
        disk_type: Some("HDD".into()),
        capacity_bytes: Some(100 * GI),
        state: Some("Active".into()),
        phase: Some("Available".into()),
        claim: None,
        volume: None,
        reserved: false,
        reason: None,
        pool: None,
        serial: Some("S1".into()),
        wwn: Some("0x5000c500a1".into()),
        model: Some("ST1000".into()),
        by_id: Some("/dev/disk/by-id/wwn-0x5000c500a1".into()),
    };
    let bound = DiskRow {
        name: "disk-a2".into(),
        device: Some("/dev/sdc".into()),
        disk_type: Some("SSD".into()),
        capacity_bytes: Some(1536 * GI),
        phase: Some("Bound".into()),
        claim: Some("node-a-1".into()),
        reason: Some("in pool LocalStorage_PoolSSD (claim node-a-1)".into()),
        pool: Some("LocalStorage_PoolSSD".into()),
        serial: None,
        wwn: None,
        model: None,
        by_id: None,
        ..base.clone()
    };
    let serving = DiskRow {
        name: "disk-a3".into(),
        device: Some("/dev/sdd".into()),
        phase: Some("Bound".into()),
        volume: Some("pvc-1".into()),
        reason: Some("used by disk volume pvc-1 (whole disk)".into()),
        ..base.clone()
    };
    DiskList {
        items: vec![base, bound, serving],
    }
}

#[test]
fn disk_table_has_the_documented_columns_and_reasons() {
    let out = render(&disks(), opts(OutputFormat::Table)).unwrap();
    assert_eq!(
        lines(&out),
        [
            "NODE     NAME      DEVICE     TYPE   CAPACITY   STATE    PHASE       OWNER          REASON",
            "node-a   disk-a1   /dev/sdb   HDD    100Gi      Active   Available   -              -",
            "node-a   disk-a2   /dev/sdc   SSD    1.5Ti      Active   Bound       ldc/node-a-1   in pool LocalStorage_PoolSSD (claim node-a-1)",
            "node-a   disk-a3   /dev/sdd   HDD    100Gi      Active   Bound       ldv/pvc-1      used by disk volume pvc-1 (whole disk)",
        ]
    );
}

#[test]
fn wide_disk_table_adds_identity_columns_and_no_headers_drops_the_header() {
    let out = render(
        &disks(),
        OutputOptions {
            format: OutputFormat::Wide,
            no_headers: true,
        },
    )
    .unwrap();
    // Without the header row the columns are as wide as their widest value; REASON is
    // 45 characters wide from the second disk's reason.
    let reason2 = "in pool LocalStorage_PoolSSD (claim node-a-1)";
    assert_eq!(reason2.len(), 45);
    assert_eq!(
        lines(&out),
        [
            format!(
                "node-a   disk-a1   /dev/sdb   HDD   100Gi   Active   Available   -              {:<45}   S1   0x5000c500a1   ST1000   /dev/disk/by-id/wwn-0x5000c500a1",
                "-"
            ),
            format!("node-a   disk-a2   /dev/sdc   SSD   1.5Ti   Active   Bound       ldc/node-a-1   {reason2}   -    -              -        -"),
            format!(
                "node-a   disk-a3   /dev/sdd   HDD   100Gi   Active   Bound       ldv/pvc-1      {:<45}   S1   0x5000c500a1   ST1000   /dev/disk/by-id/wwn-0x5000c500a1",
                "used by disk volume pvc-1 (whole disk)"
            ),
        ]
    );
}

#[test]
fn disk_json_is_the_typed_struct() {
    let out = render(
        &DiskList {
            items: vec![disks().items[0].clone()],
        },
        opts(OutputFormat::Json),
    )
    .unwrap();
    let expected = r#"{
  "items": [
    {
      "node": "node-a",
      "name": "disk-a1",
      "device": "/dev/sdb",
      "diskType": "HDD",
      "capacityBytes": 107374182400,
      "state": "Active",
      "phase": "Available",
      "claim": null,
      "volume": null,
      "reserved": false,
      "reason": null,
      "pool": null,
      "serial": "S1",
      "wwn": "0x5000c500a1",
      "model": "ST1000",
      "byId": "/dev/disk/by-id/wwn-0x5000c500a1"
    }
  ]
}
"#;
    assert_eq!(out, expected);
    // YAML comes from the same struct.
    let yaml = render(
        &DiskList {
            items: vec![disks().items[0].clone()],
        },
        opts(OutputFormat::Yaml),
    )
    .unwrap();
    assert!(
        yaml.starts_with("items:\n- node: node-a\n  name: disk-a1\n"),
        "{yaml}"
    );
}

fn volumes() -> VolumeList {
    let replica = |node: &str, state: &str| ReplicaRow {
        name: format!("pvc-1-{node}"),
        node: node.into(),
        state: Some(state.into()),
        synced: None,
        allocated_bytes: Some(10 * GI),
        device: Some("/dev/LocalStorage_PoolHDD/pvc-1".into()),
        message: None,
        ..Default::default()
    };
    VolumeList {
        items: vec![VolumeRow {
            name: "pvc-1".into(),
            kind: "LVM".into(),
            pool: "LocalStorage_PoolHDD".into(),
            required_bytes: 10 * GI,
            allocated_bytes: Some(10 * GI),
            used_bytes: None,
            replica_number: 2,
            replicas: vec![replica("node-a", "Ready"), replica("node-b", "NotReady")],
            state: Some("NotReady".into()),
            published_node: Some("node-a".into()),
            pvc_namespace: Some("default".into()),
            pvc_name: Some("data-db-0".into()),
            message: None,
            ha_state: None,
            split_brain_keep: None,
            convertible: false,
            group: None,
        }],
    }
}

#[test]
fn volume_table_shows_replicas_with_their_nodes_and_states() {
    let out = render(&volumes(), opts(OutputFormat::Table)).unwrap();
    assert_eq!(
        lines(&out),
        [
            "NAME    KIND   POOL                   CAPACITY   REPLICAS   NODES                          STATE      HA   PUBLISHED   PVC                 GROUP",
            "pvc-1   LVM    LocalStorage_PoolHDD   10Gi       1/2        node-a:Ready,node-b:NotReady   NotReady   -    node-a      default/data-db-0   -",
        ]
    );
}

#[test]
fn pool_table_and_json() {
    let pools = PoolList {
        items: vec![PoolRow {
            node: "node-a".into(),
            class: "HDD".into(),
            pool: "LocalStorage_PoolHDD".into(),
            total_bytes: 200 * GI,
            used_bytes: 190 * GI,
            free_bytes: 10 * GI,
            volumes: 3,
            disks: 2,
            extent_size_bytes: 4 << 20,
        }],
    };
    assert_eq!(
        lines(&render(&pools, opts(OutputFormat::Table)).unwrap()),
        [
            "NODE     CLASS   TOTAL   USED    FREE   USE%   VOLUMES   DISKS",
            "node-a   HDD     200Gi   190Gi   10Gi   95%    3         2",
        ]
    );
    assert_eq!(
        lines(&render(&pools, opts(OutputFormat::Wide)).unwrap())[1],
        "node-a   HDD     200Gi   190Gi   10Gi   95%    3         2       LocalStorage_PoolHDD   4Mi"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render(&pools, opts(OutputFormat::Json)).unwrap()).unwrap();
    assert_eq!(json["items"][0]["totalBytes"], 200 * GI);
    assert_eq!(json["items"][0]["volumes"], 3);
}

#[test]
fn diagnose_table_and_json() {
    let report = DiagnoseReport {
        findings: vec![
            Finding {
                check: "crds".into(),
                severity: Severity::Ok,
                object: None,
                message: "5 CRDs installed and Established".into(),
                hint: None,
            },
            Finding {
                check: "controller".into(),
                severity: Severity::Error,
                object: Some("Lease hwameistor/hwameistor-controller".into()),
                message: "no controller holds the leadership".into(),
                hint: Some("check the controller's logs".into()),
            },
        ],
        errors: 1,
        warnings: 0,
    };
    assert_eq!(
        lines(&render(&report, opts(OutputFormat::Table)).unwrap()),
        [
            "STATUS   CHECK        OBJECT                                   MESSAGE                              HINT",
            "ok       crds         -                                        5 CRDs installed and Established     -",
            "error    controller   Lease hwameistor/hwameistor-controller   no controller holds the leadership   check the controller's logs",
        ]
    );
    let json = render(&report, opts(OutputFormat::Json)).unwrap();
    assert!(json.contains("\"severity\": \"error\""), "{json}");
    assert!(json.contains("\"errors\": 1"), "{json}");
    assert_eq!(report.exit_code(false), 1);
}

/// An HA volume resyncing: node-a primary, node-b outdated and catching up.
fn ha_volume() -> VolumeRow {
    let replica = |node: &str| ReplicaRow {
        name: format!("pvc-2-{node}"),
        node: node.into(),
        state: Some("Ready".into()),
        synced: Some(node == "node-a"),
        allocated_bytes: Some(10 * GI),
        device: Some("/dev/drbd7".into()),
        message: None,
        missing: false,
        allowed_primary: Some(node == "node-a"),
        outdated: Some(node == "node-b"),
        role: Some(
            if node == "node-a" {
                "Primary"
            } else {
                "Secondary"
            }
            .into(),
        ),
        disk_state: Some(
            if node == "node-a" {
                "UpToDate"
            } else {
                "Inconsistent"
            }
            .into(),
        ),
        connection_state: Some(
            if node == "node-a" {
                "SyncSource"
            } else {
                "SyncTarget"
            }
            .into(),
        ),
        peer_role: Some(
            if node == "node-a" {
                "Secondary"
            } else {
                "Primary"
            }
            .into(),
        ),
        peer_disk_state: Some(
            if node == "node-a" {
                "Inconsistent"
            } else {
                "UpToDate"
            }
            .into(),
        ),
        sync_progress: Some("42.5%".into()),
        out_of_sync_bytes: Some(if node == "node-a" { 0 } else { 6 * GI }),
        suspended: Some(false),
        split_brain: Some(false),
    };
    VolumeRow {
        name: "pvc-2".into(),
        kind: "LVM".into(),
        pool: "LocalStorage_PoolHDD".into(),
        required_bytes: 10 * GI,
        allocated_bytes: Some(10 * GI),
        used_bytes: None,
        replica_number: 2,
        replicas: vec![replica("node-a"), replica("node-b")],
        state: Some("Ready".into()),
        published_node: Some("node-a".into()),
        pvc_namespace: Some("default".into()),
        pvc_name: Some("data-db-1".into()),
        message: None,
        ha_state: Some(HaState::Syncing),
        split_brain_keep: None,
        convertible: false,
        group: None,
    }
}

#[test]
fn ha_volume_detail_shows_each_replicas_replication_and_assignment() {
    let d = VolumeDetail {
        volume: ha_volume(),
        snapshots: Vec::new(),
        data_source: None,
    };
    assert_eq!(
        lines(&render(&d, opts(OutputFormat::Table)).unwrap()),
        [
            "NAME    KIND   POOL                   CAPACITY   REPLICAS   NODES                       STATE   HA        PUBLISHED   PVC                 GROUP",
            "pvc-2   LVM    LocalStorage_PoolHDD   10Gi       2/2        node-a:Ready,node-b:Ready   Ready   Syncing   node-a      default/data-db-1   -",
            "",
            "Replicas:",
            "REPLICA        NODE     STATE   SYNCED   ALLOCATED   DEVICE       MESSAGE",
            "pvc-2-node-a   node-a   Ready   true     10Gi        /dev/drbd7   -",
            "pvc-2-node-b   node-b   Ready   false    10Gi        /dev/drbd7   -",
            "",
            "Replication (HA Syncing):",
            "NODE     ASSIGNED   ROLE        DISK           CONNECTION   PEER-ROLE   PEER-DISK      SYNC                     FLAGS",
            "node-a   primary    Primary     UpToDate       SyncSource   Secondary   Inconsistent   42.5%                    -",
            "node-b   outdated   Secondary   Inconsistent   SyncTarget   Primary     UpToDate       42.5%, 6Gi out of sync   -",
        ]
    );
    // JSON carries the same fields.
    let json: serde_json::Value =
        serde_json::from_str(&render(&d, opts(OutputFormat::Json)).unwrap()).unwrap();
    let b = &json["volume"]["replicas"][1];
    assert_eq!(json["volume"]["haState"], "Syncing");
    assert_eq!(
        (
            &b["node"],
            &b["allowedPrimary"],
            &b["outdated"],
            &b["role"],
            &b["diskState"],
            &b["connectionState"],
            &b["peerDiskState"],
            &b["syncProgress"],
            &b["outOfSyncBytes"]
        ),
        (
            &"node-b".into(),
            &false.into(),
            &true.into(),
            &"Secondary".into(),
            &"Inconsistent".into(),
            &"SyncTarget".into(),
            &"UpToDate".into(),
            &"42.5%".into(),
            &(6 * GI).into()
        )
    );
}

#[test]
fn volume_list_shows_the_ha_state_and_wide_the_allowed_primary() {
    let list = VolumeList {
        items: vec![volumes().items[0].clone(), ha_volume()],
    };
    assert_eq!(
        lines(&render(&list, opts(OutputFormat::Wide)).unwrap()),
        [
            "NAME    KIND   POOL                   CAPACITY   REPLICAS   NODES                          STATE      HA        PUBLISHED   PVC                 GROUP   ALLOCATED   USED   PRIMARY   MESSAGE",
            "pvc-1   LVM    LocalStorage_PoolHDD   10Gi       1/2        node-a:Ready,node-b:NotReady   NotReady   -         node-a      default/data-db-0   -       10Gi        -      -         -",
            "pvc-2   LVM    LocalStorage_PoolHDD   10Gi       2/2        node-a:Ready,node-b:Ready      Ready      Syncing   node-a      default/data-db-1   -       10Gi        -      node-a    -",
        ]
    );
}

#[test]
fn the_split_brain_plan_says_what_is_kept_and_what_is_discarded() {
    let v: hwameistor_api::LocalVolume = serde_json::from_value(serde_json::json!({
        "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume",
        "metadata": {"name": "pvc-3", "resourceVersion": "812"},
        "spec": {"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 10 * GI, "replicaNumber": 2,
                 "pvcNamespace": "default", "pvcName": "data-db-0",
                 "config": {"version": 9, "requiredCapacityBytes": 10 * GI, "resourceId": 3, "replicas": [
                     {"id": 1, "hostname": "node-a", "ip": "10.0.0.1", "primary": true},
                     {"id": 2, "hostname": "node-b", "ip": "10.0.0.2"}]}},
        "status": {"state": "Ready", "haState": "SplitBrain", "publishedNode": "node-b"}
    }))
    .unwrap();
    let replicas: Vec<hwameistor_api::LocalVolumeReplica> = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeReplica",
                "metadata": {"name": format!("pvc-3-{n}")},
                "spec": {"volumeName": "pvc-3", "poolName": "LocalStorage_PoolHDD", "nodeName": n,
                         "requiredCapacityBytes": 10 * GI},
                "status": {"state": "Ready", "replication": {"role": "Primary", "diskState": "UpToDate",
                           "connectionState": "StandAlone", "splitBrain": true}}
            }))
            .unwrap()
        })
        .collect();
    let refs: Vec<&hwameistor_api::LocalVolumeReplica> = replicas.iter().collect();
    let plan = split_brain::plan_for(&v, &refs, "node-a").unwrap();
    assert_eq!(
        lines(&render(&plan, opts(OutputFormat::Table)).unwrap()),
        [
            "Plan: resolve the split brain of volume pvc-3 (PVC default/data-db-0)",
            "NODE     REPLICA        ROLE      DISK       CONNECTION   ASSIGNED    DATA",
            "node-a   pvc-3-node-a   Primary   UpToDate   StandAlone   primary     KEPT",
            "node-b   pvc-3-node-b   Primary   UpToDate   StandAlone   secondary   DISCARDED since the split; resyncs from node-a",
            "",
            "Notes:",
            "NOTE",
            "The data of node-a is KEPT: it is the volume's data from now on.",
            "The changes made on node-b since the split are DISCARDED: node-b drops them and resyncs from node-a. They cannot be recovered afterwards.",
            "The volume is published on node-b: the pod using PVC default/data-db-0 runs there. Stop it (scale its workload down) now: node-b must not be in use; its replica waits, NotReady, until nothing uses the volume there, and only then discards and resyncs.",
            "The controller last allowed node-a to be primary (to serve the volume).",
            "Written as spec.splitBrainResolution.keep=node-a on LocalVolume pvc-3, only if it is unchanged since it was read (resourceVersion 812).",
        ]
    );
    assert_eq!(
        plan.confirmation_action(),
        "discard the changes made on node-b to volume pvc-3 since the split brain"
    );
}

#[test]
fn a_raw_disk_volume_is_listed_with_its_kind_disk_and_node() {
    use hwameistor_api::{
        DiskType, DiskVolumeState, LocalDiskVolume, LocalDiskVolumeSpec, LocalDiskVolumeStatus,
        WipePolicy,
    };
    use kubectl_hwameistor::admin::volumes::disk_volume_row;
    let mut v = LocalDiskVolume::new(
        "pvc-9",
        LocalDiskVolumeSpec {
            node_name: "node-a".into(),
            disk_type: DiskType::Ssd,
            required_capacity_bytes: 100 * GI,
            max_capacity_bytes: None,
            pvc_namespace: Some("kafka".into()),
            pvc_name: Some("log-0".into()),
            wipe: WipePolicy::Signatures,
        },
    );
    v.status = Some(LocalDiskVolumeStatus {
        state: Some(DiskVolumeState::Ready),
        local_disk_name: Some("disk-a2".into()),
        device_path: Some("/dev/disk/by-id/wwn-0x5000c500a2".into()),
        capacity_bytes: Some(1536 * GI),
        published_node: Some("node-a".into()),
        published_targets: vec!["/var/lib/kubelet/pods/p/volumeDevices/pvc-9".into()],
        ..Default::default()
    });
    let mut pending = v.clone();
    pending.metadata.name = Some("pvc-8".into());
    pending.status = Some(LocalDiskVolumeStatus {
        state: Some(DiskVolumeState::Pending),
        message: Some("no free SSD disk of at least 100Gi on node node-a".into()),
        ..Default::default()
    });
    let list = VolumeList {
        items: vec![disk_volume_row(&pending), disk_volume_row(&v)],
    };
    let out = render(&list, opts(OutputFormat::Table)).unwrap();
    assert_eq!(
        lines(&out),
        [
            "NAME    KIND   POOL                CAPACITY   REPLICAS   NODES          STATE     HA   PUBLISHED   PVC           GROUP",
            "pvc-8   Disk   LocalDisk_PoolSSD   100Gi      0/1        -              Pending   -    -           kafka/log-0   -",
            "pvc-9   Disk   LocalDisk_PoolSSD   100Gi      1/1        node-a:Ready   Ready     -    node-a      kafka/log-0   -",
        ]
    );
}
