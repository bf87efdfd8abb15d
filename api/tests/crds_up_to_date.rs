//! The checked-in CRD YAML must match what the Rust types generate.

use std::path::PathBuf;

#[test]
fn checked_in_crd_yaml_matches_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let mut stale = Vec::new();
    for crd in hwameistor_api::crds::all() {
        let path = dir.join(hwameistor_api::crds::file_name(&crd));
        let want = hwameistor_api::crds::render(&crd).expect("render CRD");
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "CRD YAML is stale ({}); run `cargo run -p hwameistor-api --bin crdgen`",
        stale.join(", ")
    );
}

#[test]
fn every_crd_is_cluster_scoped_with_status_and_short_name() {
    let want_short = [
        "ld",
        "ldc",
        "lsn",
        "lv",
        "lvr",
        "lvmigrate",
        "lvconvert",
        "lvexpand",
        "lvg",
        "ldv",
        "lvs",
    ];
    let crds = hwameistor_api::crds::all();
    assert_eq!(crds.len(), want_short.len());
    for (crd, short) in crds.iter().zip(want_short) {
        assert_eq!(crd.spec.group, "hwameistor.io");
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
    }
}

#[test]
fn printed_columns_follow_the_documented_layout() {
    let cols = |kind: &str| -> Vec<String> {
        let crd = hwameistor_api::crds::all()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .expect("crd");
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name.to_uppercase())
            .collect()
    };
    // kubectl prints NAME first, then these.
    assert_eq!(
        cols("LocalVolume"),
        [
            "POOL",
            "KIND",
            "REPLICAS",
            "CAPACITY",
            "ACCESSIBILITY",
            "STATE",
            "RESOURCE",
            "PUBLISHED",
            "HA",
            "AGE"
        ]
    );
    assert_eq!(
        cols("LocalVolumeReplica"),
        [
            "KIND",
            "CAPACITY",
            "NODE",
            "STATE",
            "SYNCED",
            "DEVICE",
            "ROLE",
            "DISK",
            "CONNECTION",
            "SYNC",
            "AGE"
        ]
    );
    assert_eq!(
        cols("LocalDiskVolume"),
        [
            "NODE",
            "TYPE",
            "REQUIRED",
            "DISK",
            "CAPACITY",
            "STATE",
            "PUBLISHED",
            "DEVICE",
            "PVC",
            "MESSAGE",
            "AGE"
        ]
    );
    assert_eq!(
        cols("LocalVolumeMigrate"),
        ["VOLUME", "FROM", "TO", "PHASE", "STEP", "PROGRESS", "ABORT", "MESSAGE", "AGE"]
    );
    assert_eq!(
        cols("LocalVolumeConvert"),
        ["VOLUME", "REPLICAS", "TO", "PHASE", "STEP", "PROGRESS", "ABORT", "MESSAGE", "AGE"]
    );
    assert_eq!(
        cols("LocalVolumeExpand"),
        [
            "VOLUME",
            "CAPACITY",
            "ALLOCATED",
            "PHASE",
            "STEP",
            "ABORT",
            "MESSAGE",
            "AGE"
        ]
    );
    assert_eq!(
        cols("LocalVolumeSnapshot"),
        ["VOLUME", "NODE", "SIZE", "COW", "USED%", "READY", "STATE", "MESSAGE", "AGE"]
    );
}

/// The schema refuses what the operations can never run: a conversion to anything but two
/// replicas, an expansion below the smallest volume, a migration without a source.
#[test]
fn operation_schemas_refuse_impossible_requests() {
    let spec = |kind: &str| -> serde_json::Value {
        let crd = hwameistor_api::crds::all()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .expect("crd");
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        schema["openAPIV3Schema"]["properties"]["spec"].clone()
    };
    let convert = spec("LocalVolumeConvert");
    assert_eq!(convert["properties"]["replicaNumber"]["minimum"], 2.0);
    assert_eq!(convert["properties"]["replicaNumber"]["maximum"], 2.0);
    let expand = spec("LocalVolumeExpand");
    assert_eq!(
        expand["properties"]["requiredCapacityBytes"]["minimum"],
        4194304.0
    );
    let migrate = spec("LocalVolumeMigrate");
    let required: Vec<&str> = migrate["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(required.contains(&"volumeName") && required.contains(&"sourceNode"));
    assert_eq!(migrate["properties"]["sourceNode"]["minLength"], 1);
}

#[test]
fn states_are_enums_in_the_schema() {
    for crd in hwameistor_api::crds::all() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        for field in ["state", "phase"] {
            if let Some(f) = status.get(field) {
                assert!(
                    f.get("enum")
                        .and_then(|e| e.as_array())
                        .is_some_and(|e| !e.is_empty()),
                    "{}: status.{field} is not an enum: {f}",
                    crd.spec.names.kind
                );
            }
        }
    }
}
