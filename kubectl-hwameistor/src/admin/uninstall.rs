//! `uninstall`: remove what install applied, in reverse order, without ever touching the
//! pools and data on the nodes; CRDs (and with them every HwameiStor record) only on request.

use super::apply::Applier;
use super::customize::Customization;
use super::install::prepare;
use super::lookup::list_all;
use super::manifests::{install_rank, Bundle, ManifestObject, ObjectKey};
use crate::client::Cluster;
use crate::confirm::Confirmation;
use crate::errors::{short_list, AdminError};
use crate::output::{or_dash, Render, TableView};
use crate::progress::Progress;
use hwameistor_api::{LocalDisk, LocalVolume};
use kube::ResourceExt;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct UninstallOptions {
    pub customization: Customization,
    pub force_with_volumes: bool,
    pub delete_crds: bool,
    pub dry_run: bool,
    pub confirmation: Confirmation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DeleteResult {
    Deleted,
    NotFound,
    /// A CRD left in place because --delete-crds was not given.
    Kept,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedObject {
    #[serde(flatten)]
    pub key: ObjectKey,
    pub result: DeleteResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UninstallReport {
    pub dry_run: bool,
    pub objects: Vec<DeletedObject>,
    /// What was deliberately left alone, and why.
    pub notes: Vec<String>,
}

impl Render for UninstallReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["KIND", "NAMESPACE", "NAME", "RESULT"]);
        for o in &self.objects {
            let result = match (o.result, self.dry_run) {
                (DeleteResult::Deleted, true) => "would be deleted",
                (DeleteResult::Deleted, false) => "deleted",
                (DeleteResult::NotFound, _) => "not found",
                (DeleteResult::Kept, _) => "kept",
            };
            t.push(vec![
                o.key.kind.clone(),
                or_dash(o.key.namespace.as_deref()),
                o.key.name.clone(),
                result.into(),
            ]);
        }
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in &self.notes {
            notes.push(vec![n.clone()]);
        }
        vec![t, notes]
    }
}

/// Always said: uninstall never reaches the nodes.
pub const DATA_NOTE: &str = "Pools and data on the nodes were not touched: the LocalStorage_Pool* volume groups and their volumes stay on the disks.";

/// Deletion order: the reverse of install order, except that CRDs go last of all, after
/// the namespace, so every record stays readable until the very end.
fn uninstall_order(objects: &[ManifestObject]) -> Vec<&ManifestObject> {
    let mut v: Vec<&ManifestObject> = objects.iter().collect();
    v.reverse();
    v.sort_by_key(|o| match o.kind() {
        "CustomResourceDefinition" => u8::MAX,
        k => u8::MAX - 1 - install_rank(k),
    });
    v
}

pub async fn uninstall(
    cluster: &Cluster,
    bundle: Bundle,
    opts: &UninstallOptions,
    progress: &Progress,
) -> Result<UninstallReport, AdminError> {
    // Volumes are listed before anything is deleted; no CRDs means no volumes.
    let volumes: Vec<String> = match list_all::<LocalVolume>(cluster).await {
        Ok(v) => v.iter().map(|v| v.name_any()).collect(),
        Err(AdminError::NotInstalled) => Vec::new(),
        Err(e) => return Err(e),
    };
    if !volumes.is_empty() {
        if !opts.force_with_volumes {
            return Err(AdminError::VolumesExist { names: volumes });
        }
        if !opts.dry_run {
            opts.confirmation.confirm(
                &format!("uninstall HwameiStor while {} LocalVolume(s) exist", volumes.len()),
                &format!(
                    "These volumes will be left without a controller or CSI driver (their data stays on the nodes):\n  {}",
                    short_list(&volumes, 50)
                ),
            )?;
        }
    }
    let mut disks_with_finalizers = 0;
    if opts.delete_crds {
        if let Ok(disks) = list_all::<LocalDisk>(cluster).await {
            disks_with_finalizers = disks.iter().filter(|d| !d.finalizers().is_empty()).count();
        }
        if !opts.dry_run {
            opts.confirmation.confirm(
                "delete the HwameiStor CRDs",
                "Deleting the CRDs deletes every LocalDisk, LocalDiskClaim, LocalStorageNode, LocalVolume and LocalVolumeReplica record. Pools and data on the nodes stay.",
            )?;
        }
    }

    let (bundle, _) = prepare(bundle, &opts.customization, &BTreeMap::new())?;
    let order = uninstall_order(&bundle.objects);
    let mut applier = Applier::new(cluster);
    let mut report = UninstallReport {
        dry_run: opts.dry_run,
        objects: Vec::new(),
        notes: vec![DATA_NOTE.to_string()],
    };
    progress.start(order.len() as u64, "uninstall");
    for obj in order {
        let key = applier.key_of(obj);
        let result = if obj.kind() == "CustomResourceDefinition" && !opts.delete_crds {
            DeleteResult::Kept
        } else if applier.delete(obj, opts.dry_run).await? {
            DeleteResult::Deleted
        } else {
            DeleteResult::NotFound
        };
        progress.task_done(&format!("{result:?} {key}"));
        report.objects.push(DeletedObject { key, result });
    }
    progress.finish();
    if !opts.delete_crds {
        report.notes.push(
            "CRDs and their records (LocalDisks, LocalStorageNodes, ...) were kept; pass --delete-crds to remove them.".into(),
        );
    } else if disks_with_finalizers > 0 {
        report.notes.push(format!(
            "{disks_with_finalizers} LocalDisk(s) carry finalizers and no agent runs to remove them: their CRD stays Terminating until `kubectl patch ld NAME --type merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'` is run for each."
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_in_reverse_install_order_with_crds_last() {
        let yaml = "
apiVersion: v1
kind: Namespace
metadata: {name: hwameistor}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: localdisks.hwameistor.io}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: hwameistor}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node, namespace: hwameistor}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: sc}
";
        let mut b = Bundle::parse([("t.yaml", yaml)]).unwrap();
        b.sort_for_install();
        let kinds: Vec<&str> = uninstall_order(&b.objects)
            .iter()
            .map(|o| o.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "StorageClass",
                "DaemonSet",
                "ServiceAccount",
                "Namespace",
                "CustomResourceDefinition"
            ]
        );
    }
}
