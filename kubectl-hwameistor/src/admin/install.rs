//! `install` and `upgrade`: apply the embedded manifests in dependency order as a list of
//! tasks, then wait for the components to be ready.

use super::apply::{AppliedObject, Applier, ApplyAction};
use super::customize::{customize, Customization};
use super::lookup::ensure_installed;
use super::manifests::{Bundle, ObjectKey};
use super::readiness::{
    wait_crds_established, wait_workloads_ready, workload_status, WorkloadStatus,
};
use super::serving_certs::{cert_targets, from_secret, secure_webhooks, ServingCert};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use crate::progress::Progress;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub customization: Customization,
    /// Server-side dry run: validate and report, change nothing.
    pub dry_run: bool,
    /// Wait for Deployments and DaemonSets to be ready.
    pub wait: bool,
    /// For CRDs to be Established and workloads to be ready, together.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Operation {
    Install,
    Upgrade,
}

/// What install or upgrade did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub operation: Operation,
    pub namespace: String,
    pub dry_run: bool,
    /// In the order they were applied.
    pub objects: Vec<AppliedObject>,
    pub workloads: Vec<WorkloadStatus>,
    /// Secrets holding generated webhook serving certificates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// What was left out and why, with what to do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ApplyReport {
    /// One line: how many objects were created, configured and left unchanged.
    pub fn summary(&self) -> String {
        let count = |a| self.objects.iter().filter(|o| o.action == a).count();
        let verb = match self.operation {
            Operation::Install => "install",
            Operation::Upgrade => "upgrade",
        };
        // Replacements are rare and worth seeing; the count is left out when there are none.
        let replaced = match count(ApplyAction::Replaced) {
            0 => String::new(),
            n => format!(", {n} replaced"),
        };
        format!(
            "{verb}{}: {} created, {} configured{replaced}, {} unchanged",
            if self.dry_run {
                " (dry run, nothing changed)"
            } else {
                ""
            },
            count(ApplyAction::Created),
            count(ApplyAction::Configured),
            count(ApplyAction::Unchanged)
        )
    }
}

/// Shows at most `max` changed paths, saying how many more there are.
fn changes_cell(changes: &[String], max: usize) -> String {
    if changes.is_empty() {
        "-".into()
    } else if changes.len() <= max {
        changes.join(", ")
    } else {
        format!(
            "{} (+{} more)",
            changes[..max].join(", "),
            changes.len() - max
        )
    }
}

impl Render for ApplyReport {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        let mut objects = TableView::new(&["KIND", "NAMESPACE", "NAME", "ACTION", "CHANGES"]);
        for o in &self.objects {
            objects.push(vec![
                o.key.kind.clone(),
                or_dash(o.key.namespace.as_deref()),
                o.key.name.clone(),
                o.action_text(),
                changes_cell(&o.changes, if wide { usize::MAX } else { 3 }),
            ]);
        }
        let mut workloads = TableView::new(&["KIND", "NAMESPACE", "NAME", "READY", "UP-TO-DATE"])
            .titled("Workloads:");
        for w in &self.workloads {
            workloads.push(vec![
                w.key.kind.clone(),
                or_dash(w.key.namespace.as_deref()),
                w.key.name.clone(),
                format!("{}/{}", w.ready, w.desired),
                if w.up_to_date { "yes" } else { "no" }.into(),
            ]);
        }
        vec![objects, workloads]
    }
}

/// This year, for certificate validity.
pub fn current_year() -> i32 {
    i32::from(
        jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .year(),
    )
}

/// Applies the customizations, adds webhook certificates and sorts for install. Pure, so
/// `install --dry-run -o yaml` can print the result without a cluster.
pub fn prepare(
    mut bundle: Bundle,
    c: &Customization,
    existing_certs: &BTreeMap<String, ServingCert>,
) -> Result<(Bundle, Vec<String>), AdminError> {
    customize(&mut bundle, c);
    let ns = super::customize::manifest_namespace(&bundle);
    let targets = secure_webhooks(&mut bundle, &ns, existing_certs, current_year())?;
    bundle.sort_for_install();
    Ok((
        bundle,
        targets
            .into_iter()
            .map(|t| format!("{}/{}", t.namespace, t.secret))
            .collect(),
    ))
}

/// The CRD that must exist before a VolumeSnapshotClass can.
pub const SNAPSHOT_CLASS_CRD: &str = "volumesnapshotclasses.snapshot.storage.k8s.io";

/// What to say when the cluster lacks the VolumeSnapshot CRDs.
pub fn snapshot_crds_missing_note() -> String {
    format!(
        "VolumeSnapshotClass hwameistor-lvm-snapshot left out: the cluster has no VolumeSnapshot CRDs ({SNAPSHOT_CLASS_CRD}), so VolumeSnapshots cannot be taken. Install the external-snapshotter's CRDs and its snapshot-controller (github.com/kubernetes-csi/external-snapshotter: client/config/crd and deploy/kubernetes/snapshot-controller), then run `kubectl hwameistor upgrade`"
    )
}

/// Leaves out the objects whose API the cluster does not serve (VolumeSnapshotClasses
/// without the VolumeSnapshot CRDs, which are the cluster's, not ours), saying so.
async fn without_missing_apis(
    cluster: &Cluster,
    mut bundle: Bundle,
) -> Result<(Bundle, Vec<String>), AdminError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    if bundle.of_kind("VolumeSnapshotClass").next().is_none() {
        return Ok((bundle, Vec::new()));
    }
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let present = crds
        .get_opt(SNAPSHOT_CLASS_CRD)
        .await
        .map_err(|e| AdminError::api(format!("reading CRD {SNAPSHOT_CLASS_CRD}"), e))?
        .is_some();
    if present {
        return Ok((bundle, Vec::new()));
    }
    bundle.objects.retain(|o| o.kind() != "VolumeSnapshotClass");
    Ok((bundle, vec![snapshot_crds_missing_note()]))
}

/// Serving certificates already in the cluster, so re-applying keeps the same CA.
async fn existing_certs(
    cluster: &Cluster,
    bundle: &Bundle,
    c: &Customization,
) -> Result<BTreeMap<String, ServingCert>, AdminError> {
    let mut probe = bundle.clone();
    customize(&mut probe, c);
    let mut out = BTreeMap::new();
    let ns = super::customize::manifest_namespace(&probe);
    for t in cert_targets(&probe, &ns) {
        let api: Api<Secret> = Api::namespaced(cluster.client.clone(), &t.namespace);
        let secret = api.get_opt(&t.secret).await.map_err(|e| {
            AdminError::api(format!("reading Secret {}/{}", t.namespace, t.secret), e)
        })?;
        if let Some(cert) = secret
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| from_secret(&v))
        {
            // Near its expiry: left out, so a new one is generated and applied.
            if !cert.renewal_due(
                jiff::Timestamp::now()
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .date(),
            ) {
                out.insert(t.secret, cert);
            }
        }
    }
    Ok(out)
}

/// Installs (or re-applies) HwameiStor from `bundle`.
pub async fn install(
    cluster: &Cluster,
    bundle: Bundle,
    opts: &InstallOptions,
    progress: &Progress,
) -> Result<ApplyReport, AdminError> {
    run(cluster, bundle, opts, progress, Operation::Install).await
}

/// Re-applies the bundle over an existing installation, reporting what changes.
pub async fn upgrade(
    cluster: &Cluster,
    bundle: Bundle,
    opts: &InstallOptions,
    progress: &Progress,
) -> Result<ApplyReport, AdminError> {
    ensure_installed(cluster).await?;
    run(cluster, bundle, opts, progress, Operation::Upgrade).await
}

async fn run(
    cluster: &Cluster,
    bundle: Bundle,
    opts: &InstallOptions,
    progress: &Progress,
    operation: Operation,
) -> Result<ApplyReport, AdminError> {
    let start = Instant::now();
    let remaining = || opts.timeout.saturating_sub(start.elapsed());
    let existing = existing_certs(cluster, &bundle, &opts.customization).await?;
    let (bundle, certificates) = prepare(bundle, &opts.customization, &existing)?;
    let (bundle, notes) = without_missing_apis(cluster, bundle).await?;
    let mut applier = Applier::new(cluster);
    let mut report = ApplyReport {
        operation,
        namespace: cluster.namespace.clone(),
        dry_run: opts.dry_run,
        objects: Vec::new(),
        workloads: Vec::new(),
        certificates,
        notes,
    };
    let verb = match operation {
        Operation::Install => "install",
        Operation::Upgrade => "upgrade",
    };
    progress.start(bundle.objects.len() as u64, verb);
    let mut crds_to_wait: Vec<String> = Vec::new();
    // In a dry run nothing is created, so the server cannot validate objects inside a
    // namespace this run would create; they are reported as created without a check.
    let mut new_namespaces: BTreeSet<String> = BTreeSet::new();
    for obj in &bundle.objects {
        if obj.kind() != "CustomResourceDefinition" && !crds_to_wait.is_empty() && !opts.dry_run {
            progress.status("waiting for CRDs to be Established");
            wait_crds_established(cluster, &crds_to_wait, remaining()).await?;
            crds_to_wait.clear();
        }
        let key = applier.key_of(obj);
        let applied = match &key.namespace {
            Some(ns) if opts.dry_run && new_namespaces.contains(ns) => AppliedObject {
                key,
                action: ApplyAction::Created,
                changes: Vec::new(),
                immutable: Vec::new(),
            },
            _ => {
                applier
                    .apply_with_diff(obj, opts.dry_run, remaining())
                    .await?
            }
        };
        if obj.kind() == "Namespace" && applied.action == ApplyAction::Created {
            new_namespaces.insert(obj.name().to_string());
        }
        if obj.kind() == "CustomResourceDefinition" {
            crds_to_wait.push(obj.name().to_string());
        }
        progress.task_done(&format!("{} {}", applied.action_text(), applied.key));
        report.objects.push(applied);
    }
    if !crds_to_wait.is_empty() && !opts.dry_run {
        wait_crds_established(cluster, &crds_to_wait, remaining()).await?;
    }
    let workloads: Vec<ObjectKey> = report
        .objects
        .iter()
        .map(|o| o.key.clone())
        .filter(|k| matches!(k.kind.as_str(), "Deployment" | "DaemonSet" | "StatefulSet"))
        .collect();
    if !opts.dry_run {
        report.workloads = if opts.wait {
            wait_workloads_ready(cluster, &workloads, remaining(), progress).await?
        } else {
            let mut now = Vec::new();
            for k in &workloads {
                now.extend(workload_status(cluster, k).await?);
            }
            now
        };
    }
    progress.finish();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_actions() {
        let obj = |action| AppliedObject {
            key: ObjectKey {
                kind: "ConfigMap".into(),
                namespace: Some("hwameistor".into()),
                name: "c".into(),
            },
            action,
            changes: vec![],
            immutable: vec![],
        };
        let r = ApplyReport {
            operation: Operation::Upgrade,
            namespace: "hwameistor".into(),
            dry_run: true,
            objects: vec![
                obj(ApplyAction::Created),
                obj(ApplyAction::Unchanged),
                obj(ApplyAction::Unchanged),
            ],
            workloads: vec![],
            certificates: vec![],
            notes: Vec::new(),
        };
        assert_eq!(
            r.summary(),
            "upgrade (dry run, nothing changed): 1 created, 0 configured, 2 unchanged"
        );
        let mut with_replacement = r.clone();
        with_replacement.objects.push(obj(ApplyAction::Replaced));
        assert_eq!(
            with_replacement.summary(),
            "upgrade (dry run, nothing changed): 1 created, 0 configured, 1 replaced, 2 unchanged"
        );
    }

    #[test]
    fn long_change_lists_are_cut_in_the_narrow_table() {
        let c: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        assert_eq!(changes_cell(&c, 3), "f0, f1, f2 (+2 more)");
        assert_eq!(changes_cell(&c, usize::MAX), "f0, f1, f2, f3, f4");
    }
}
