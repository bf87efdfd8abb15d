//! CustomResourceDefinitions generated from the Rust types, and their YAML rendering.
//!
//! `manifests/crds/` holds the rendered YAML; a test fails when it is stale, and
//! `cargo run -p hwameistor-api --bin crdgen` rewrites it.

use crate::{
    LocalDisk, LocalDiskClaim, LocalDiskVolume, LocalStorageNode, LocalVolume, LocalVolumeConvert,
    LocalVolumeExpand, LocalVolumeGroup, LocalVolumeMigrate, LocalVolumeReplica,
    LocalVolumeSnapshot,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD of the system, in the order they are installed.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        LocalDisk::crd(),
        LocalDiskClaim::crd(),
        LocalStorageNode::crd(),
        LocalVolume::crd(),
        LocalVolumeReplica::crd(),
        LocalVolumeMigrate::crd(),
        LocalVolumeConvert::crd(),
        LocalVolumeExpand::crd(),
        LocalVolumeGroup::crd(),
        LocalDiskVolume::crd(),
        LocalVolumeSnapshot::crd(),
    ]
}

/// The file name a CRD is rendered to, e.g. `hwameistor.io_localdisks.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    let name = crd.metadata.name.as_deref().unwrap_or_default();
    match name.split_once('.') {
        Some((plural, group)) => format!("{group}_{plural}.yaml"),
        None => format!("{name}.yaml"),
    }
}

/// Renders a CRD as YAML with a header saying where it came from.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in api/ by `cargo run -p hwameistor-api --bin crdgen`.\n# Do not edit by hand.\n{body}"
    ))
}
