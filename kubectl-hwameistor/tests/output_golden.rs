//! Exact table and JSON output of the result types, built from typed structs (no cluster).

use kubectl_hwameistor::admin::diagnose::{DiagnoseReport, Finding, Severity};
use kubectl_hwameistor::admin::disks::{DiskList, DiskRow};
use kubectl_hwameistor::admin::pools::{PoolList, PoolRow};
use kubectl_hwameistor::admin::volumes::{ReplicaRow, VolumeList, VolumeRow};
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
    DiskList {
        items: vec![base, bound],
    }
}

#[test]
fn disk_table_has_the_documented_columns_and_reasons() {
    let out = render(&disks(), opts(OutputFormat::Table)).unwrap();
    assert_eq!(
        lines(&out),
        [
            "NODE     NAME      DEVICE     TYPE   CAPACITY   STATE    PHASE       CLAIM      REASON",
            "node-a   disk-a1   /dev/sdb   HDD    100Gi      Active   Available   -          -",
            "node-a   disk-a2   /dev/sdc   SSD    1.5Ti      Active   Bound       node-a-1   in pool LocalStorage_PoolSSD (claim node-a-1)",
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
                "node-a   disk-a1   /dev/sdb   HDD   100Gi   Active   Available   -          {:<45}   S1   0x5000c500a1   ST1000   /dev/disk/by-id/wwn-0x5000c500a1",
                "-"
            ),
            format!("node-a   disk-a2   /dev/sdc   SSD   1.5Ti   Active   Bound       node-a-1   {reason2}   -    -              -        -"),
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
    };
    VolumeList {
        items: vec![VolumeRow {
            name: "pvc-1".into(),
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
        }],
    }
}

#[test]
fn volume_table_shows_replicas_with_their_nodes_and_states() {
    let out = render(&volumes(), opts(OutputFormat::Table)).unwrap();
    assert_eq!(
        lines(&out),
        [
            "NAME    POOL                   CAPACITY   REPLICAS   NODES                          STATE      PUBLISHED   PVC",
            "pvc-1   LocalStorage_PoolHDD   10Gi       1/2        node-a:Ready,node-b:NotReady   NotReady   node-a      default/data-db-0",
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
