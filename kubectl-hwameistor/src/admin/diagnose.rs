//! `diagnose`: read-only health checks over everything HwameiStor depends on, each finding
//! with a severity and a hint. The checks run on a snapshot, so they are pure and testable;
//! only [`collect`] talks to the cluster.

use super::disks::unavailability;
use super::lookup::list_all;
use super::volumes::{ReplicaRow, VolumeRow};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    ClaimPhase, DiskPhase, DiskPresence, DiskVolumeState, HaState, LocalDisk, LocalDiskClaim,
    LocalDiskVolume, LocalStorageNode, LocalVolume, LocalVolumeConvert, LocalVolumeExpand,
    LocalVolumeMigrate, LocalVolumeReplica, NodeState, OperationPhase, OperationStatus,
    ReplicaState, VolumeState, CSI_DRIVER_NAME, DISK_DRIVER_NAME,
};
use hwameistor_core::drbd::ConnState;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;
use std::collections::BTreeSet;

/// The Lease the controller replicas elect their leader with.
pub const CONTROLLER_LEASE: &str = "hwameistor-controller";
/// The scheduler extender's Deployment and Service.
pub const EXTENDER: &str = "hwameistor-scheduler-extender";
/// The second scheduler's Deployment (and its scheduler name).
pub const SCHEDULER: &str = "hwameistor-scheduler";
/// A pool used beyond this share is reported.
pub const POOL_FULL_PERCENT: i64 = 90;
/// A deleted disk volume whose disk is not given back after this long is reported (a full
/// wipe of a large disk takes long: the message says how far it is).
pub const RELEASE_STUCK_SECS: i64 = 30 * 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    /// Nothing wrong, but under way (e.g. a resync): worth knowing, never an exit code.
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub check: String,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnoseReport {
    pub findings: Vec<Finding>,
    pub errors: usize,
    pub warnings: usize,
}

impl DiagnoseReport {
    /// Non-zero on any error; warnings only count with `strict`.
    pub fn exit_code(&self, strict: bool) -> i32 {
        if self.errors > 0 || (strict && self.warnings > 0) {
            1
        } else {
            0
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} checks: {} error(s), {} warning(s)",
            self.findings.len(),
            self.errors,
            self.warnings
        )
    }
}

impl Render for DiagnoseReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["STATUS", "CHECK", "OBJECT", "MESSAGE", "HINT"]);
        for f in &self.findings {
            t.push(vec![
                f.severity.as_str().into(),
                f.check.clone(),
                or_dash(f.object.as_deref()),
                f.message.clone(),
                or_dash(f.hint.as_deref()),
            ]);
        }
        vec![t]
    }
}

/// Everything the checks look at. None for what could not be read (e.g. not allowed).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub namespace: String,
    pub now: Option<jiff::Timestamp>,
    pub crds: Vec<CustomResourceDefinition>,
    pub daemonsets: Vec<DaemonSet>,
    pub nodes: Option<Vec<Node>>,
    pub storage_nodes: Vec<LocalStorageNode>,
    pub disks: Vec<LocalDisk>,
    pub claims: Vec<LocalDiskClaim>,
    pub volumes: Vec<LocalVolume>,
    pub replicas: Vec<LocalVolumeReplica>,
    pub disk_volumes: Vec<LocalDiskVolume>,
    /// Volume operations (history included).
    pub migrates: Vec<LocalVolumeMigrate>,
    pub converts: Vec<LocalVolumeConvert>,
    pub expands: Vec<LocalVolumeExpand>,
    pub snapshots: Vec<hwameistor_api::LocalVolumeSnapshot>,
    /// The cluster serves VolumeSnapshots (the external-snapshotter's CRDs); None when it
    /// could not be read.
    pub volume_snapshot_crds: Option<bool>,
    pub lease: Option<Lease>,
    pub csi_driver: Option<CSIDriver>,
    pub disk_csi_driver: Option<CSIDriver>,
    pub csi_nodes: Option<Vec<CSINode>>,
    pub scheduler: SchedulerSnapshot,
}

/// The hwameistor-scheduler and its extender, as far as they could be read.
#[derive(Clone, Debug, Default)]
pub struct SchedulerSnapshot {
    pub extender: Option<Deployment>,
    pub scheduler: Option<Deployment>,
    /// The extender's serving certificate Secret.
    pub cert: Option<Secret>,
    /// The extender's `/readyz` through the API server's service proxy: its answer, or why
    /// it could not be had; `None` when not asked (no extender installed).
    pub readyz: Option<Result<String, String>>,
}

struct Findings(Vec<Finding>);

impl Findings {
    fn add(
        &mut self,
        check: &str,
        severity: Severity,
        object: Option<String>,
        message: String,
        hint: Option<&str>,
    ) {
        self.0.push(Finding {
            check: check.into(),
            severity,
            object,
            message,
            hint: hint.map(str::to_string),
        });
    }
    fn ok(&mut self, check: &str, message: String) {
        self.add(check, Severity::Ok, None, message, None);
    }
}

/// The names of the CRDs HwameiStor needs.
pub fn required_crds() -> Vec<String> {
    hwameistor_api::crds::all()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect()
}

fn check_crds(s: &Snapshot, f: &mut Findings) -> bool {
    let mut all_ok = true;
    for name in required_crds() {
        match s.crds.iter().find(|c| c.name_any() == name) {
            None => {
                all_ok = false;
                f.add(
                    "crds",
                    Severity::Error,
                    Some(name),
                    "CRD is not installed".into(),
                    Some("run `kubectl hwameistor install`"),
                );
            }
            Some(c) if !super::readiness::crd_established(c) => {
                all_ok = false;
                f.add(
                    "crds",
                    Severity::Error,
                    Some(name),
                    "CRD is not Established".into(),
                    Some("check `kubectl describe crd` for naming conflicts; re-run `kubectl hwameistor upgrade`"),
                );
            }
            Some(_) => {}
        }
    }
    if all_ok {
        f.ok(
            "crds",
            format!("{} CRDs installed and Established", required_crds().len()),
        );
    }
    all_ok
}

/// The node agent DaemonSet: the one named like a node agent, else the only one.
fn node_daemonset(s: &Snapshot) -> Option<&DaemonSet> {
    s.daemonsets
        .iter()
        .find(|d| {
            let n = d.name_any();
            n.contains("node") || n.contains("agent")
        })
        .or_else(|| {
            if s.daemonsets.len() == 1 {
                s.daemonsets.first()
            } else {
                None
            }
        })
}

fn check_agents(s: &Snapshot, f: &mut Findings) {
    match node_daemonset(s) {
        None => f.add(
            "agents",
            Severity::Error,
            None,
            format!("no node agent DaemonSet in namespace {}", s.namespace),
            Some("run `kubectl hwameistor install`, or pass -n with the namespace HwameiStor runs in"),
        ),
        Some(ds) => {
            let st = ds.status.clone().unwrap_or_default();
            let obj = Some(format!("DaemonSet {}/{}", s.namespace, ds.name_any()));
            let msg = format!("{}/{} agent pods ready", st.number_ready, st.desired_number_scheduled);
            if st.desired_number_scheduled == 0 {
                f.add("agents", Severity::Warning, obj, "the agent DaemonSet is scheduled on no node".into(),
                    Some("check its nodeSelector and tolerations (install --node-selector/--toleration)"));
            } else if st.number_ready < st.desired_number_scheduled {
                let sev = if st.number_ready == 0 { Severity::Error } else { Severity::Warning };
                f.add("agents", sev, obj, msg, Some(&format!("kubectl -n {} get pods -o wide; kubectl -n {} logs POD", s.namespace, s.namespace)));
            } else {
                f.ok("agents", msg);
            }
        }
    }
    let reported: BTreeSet<String> = s.storage_nodes.iter().map(|n| n.name_any()).collect();
    if let Some(nodes) = &s.nodes {
        for n in nodes {
            if !reported.contains(&n.name_any()) {
                f.add(
                    "agents",
                    Severity::Warning,
                    Some(format!("node {}", n.name_any())),
                    "no LocalStorageNode: no agent has reported from this node".into(),
                    Some("expected if the agent is not meant to run there; otherwise check the agent pod on that node"),
                );
            }
        }
    }
    for n in &s.storage_nodes {
        let st = n.status.clone().unwrap_or_default();
        if st.state == Some(NodeState::NotReady) {
            let why = st
                .conditions
                .iter()
                .find(|c| c.status != "True" && !c.message.is_empty())
                .or_else(|| st.conditions.iter().find(|c| !c.message.is_empty()))
                .map(|c| format!("{}: {}", c.type_, c.message))
                .unwrap_or_else(|| "no condition message".into());
            f.add(
                "agents",
                Severity::Error,
                Some(format!("node {}", n.name_any())),
                format!("LocalStorageNode is NotReady ({why})"),
                Some("the agent cannot manage storage there: check LVM on the node and the agent's logs"),
            );
        }
    }
}

fn check_controller(s: &Snapshot, f: &mut Findings) {
    let hint_logs = format!(
        "kubectl -n {} get pods; check the controller's logs",
        s.namespace
    );
    let Some(lease) = &s.lease else {
        f.add(
            "controller",
            Severity::Error,
            Some(format!("Lease {}/{CONTROLLER_LEASE}", s.namespace)),
            "no leader election lease: the controller has never run".into(),
            Some(&hint_logs),
        );
        return;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let obj = Some(format!("Lease {}/{CONTROLLER_LEASE}", s.namespace));
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        f.add(
            "controller",
            Severity::Error,
            obj,
            "no controller holds the leadership".into(),
            Some(&hint_logs),
        );
        return;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    match (spec.renew_time, s.now) {
        (Some(renew), Some(now)) => {
            let age = now.as_second() - renew.0.as_second();
            if age > duration {
                f.add(
                    "controller",
                    Severity::Error,
                    obj,
                    format!("leader {holder} last renewed its lease {age}s ago (lease duration {duration}s): stale"),
                    Some(&hint_logs),
                );
            } else {
                f.ok(
                    "controller",
                    format!("leader {holder}, lease renewed {}s ago", age.max(0)),
                );
            }
        }
        _ => f.ok("controller", format!("leader {holder}")),
    }
}

fn ready_replicas(d: &Deployment) -> (i32, i32) {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (ready, want)
}

fn check_scheduler(s: &Snapshot, f: &mut Findings) {
    let sch = &s.scheduler;
    let ns = &s.namespace;
    let (Some(ext), Some(kube_sched)) = (&sch.extender, &sch.scheduler) else {
        if sch.extender.is_none() && sch.scheduler.is_none() {
            // A supported choice (install --no-scheduler), not a fault.
            f.ok(
                "scheduler",
                "the hwameistor-scheduler is not installed: pods use the default scheduler, guided by CSIStorageCapacity only (no room is held for a burst of new pods)".into(),
            );
        } else {
            f.add(
                "scheduler",
                Severity::Error,
                None,
                format!(
                    "only one of Deployment {ns}/{EXTENDER} and {ns}/{SCHEDULER} exists: the scheduler calls an extender that is not there, or the extender serves no scheduler"
                ),
                Some("kubectl hwameistor upgrade re-applies both"),
            );
        }
        return;
    };
    let logs = |name: &str| {
        format!(
            "kubectl -n {ns} describe deployment {name}; kubectl -n {ns} logs deployment/{name}"
        )
    };
    for (name, d) in [(EXTENDER, ext), (SCHEDULER, kube_sched)] {
        let (ready, want) = ready_replicas(d);
        if ready < 1 {
            f.add(
                "scheduler",
                Severity::Error,
                Some(format!("Deployment {ns}/{name}")),
                format!(
                    "{name} has no ready replica ({ready}/{want}): pods with schedulerName {SCHEDULER} are not scheduled"
                ),
                Some(&logs(name)),
            );
        } else if ready < want {
            f.add(
                "scheduler",
                Severity::Warning,
                Some(format!("Deployment {ns}/{name}")),
                format!("{name} runs {ready} of {want} replicas"),
                Some(&logs(name)),
            );
        }
    }
    match &sch.readyz {
        Some(Ok(body)) if body.trim() == "ok" => f.ok(
            "scheduler",
            format!("extender reachable through Service {ns}/{EXTENDER}, caches synced"),
        ),
        Some(Ok(body)) => f.add(
            "scheduler",
            Severity::Error,
            Some(format!("Service {ns}/{EXTENDER}")),
            format!("the extender answers but is not ready: {}", body.trim()),
            Some(&logs(EXTENDER)),
        ),
        Some(Err(e)) => f.add(
            "scheduler",
            Severity::Error,
            Some(format!("Service {ns}/{EXTENDER}")),
            format!("the extender cannot be reached through its Service: {e}; the admission webhook it serves is down too, so new pods keep the scheduler they name (it fails open)"),
            Some(&logs(EXTENDER)),
        ),
        None => {}
    }
    let secret_name = format!("{EXTENDER}-tls");
    let obj = Some(format!("Secret {ns}/{secret_name}"));
    let cert = sch
        .cert
        .as_ref()
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| super::serving_certs::from_secret(&v));
    let today = s.now.map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date());
    match (cert, today) {
        (None, _) => f.add(
            "scheduler",
            Severity::Error,
            obj,
            "the extender's serving certificate is missing or unreadable: the scheduler cannot verify it".into(),
            Some("kubectl hwameistor upgrade generates it"),
        ),
        (Some(c), Some(today)) => {
            let end = c.not_after.clone().unwrap_or_else(|| "an unknown date".into());
            let expired = c
                .not_after
                .as_deref()
                .and_then(|d| d.parse::<jiff::civil::Date>().ok())
                .is_some_and(|d| d <= today);
            if expired {
                f.add(
                    "scheduler",
                    Severity::Error,
                    obj,
                    format!("the extender's serving certificate expired on {end}"),
                    Some("kubectl hwameistor upgrade renews it"),
                );
            } else if c.renewal_due(today) {
                f.add(
                    "scheduler",
                    Severity::Warning,
                    obj,
                    format!("the extender's serving certificate expires on {end}"),
                    Some("kubectl hwameistor upgrade renews it"),
                );
            } else {
                f.ok(
                    "scheduler",
                    format!("extender certificate valid until {end}"),
                );
            }
        }
        (Some(_), None) => {}
    }
}

/// Both CSI drivers: their CSIDriver objects, and their registration with the kubelet of
/// every storage node.
fn check_csi(s: &Snapshot, f: &mut Findings) {
    for (driver, object, kind, registrar) in [
        (
            CSI_DRIVER_NAME,
            &s.csi_driver,
            "HwameiStor LVM volumes",
            "node-driver-registrar",
        ),
        (
            DISK_DRIVER_NAME,
            &s.disk_csi_driver,
            "HwameiStor raw-disk volumes",
            "node-driver-registrar-disk",
        ),
    ] {
        if object.is_none() {
            f.add(
                "csi",
                Severity::Error,
                Some(format!("CSIDriver {driver}")),
                "CSIDriver is not registered".into(),
                Some("run `kubectl hwameistor upgrade` to re-apply it"),
            );
        }
        let Some(csi_nodes) = &s.csi_nodes else {
            continue;
        };
        let mut missing = 0;
        for n in &s.storage_nodes {
            let name = n.name_any();
            let registered = csi_nodes
                .iter()
                .find(|c| c.name_any() == name)
                .is_some_and(|c| c.spec.drivers.iter().any(|d| d.name == driver));
            if !registered {
                missing += 1;
                f.add(
                    "csi",
                    Severity::Error,
                    Some(format!("node {name}")),
                    format!("CSI driver {driver} is not registered with the kubelet: pods there cannot use {kind}"),
                    Some(&format!("check the {registrar} container of the agent pod on that node")),
                );
            }
        }
        if object.is_some() && missing == 0 {
            f.ok(
                "csi",
                format!(
                    "CSIDriver {driver} registered on {} node(s)",
                    s.storage_nodes.len()
                ),
            );
        }
    }
}

fn check_pools(s: &Snapshot, f: &mut Findings) {
    let rows = super::pools::pool_rows(&s.storage_nodes);
    let mut full = 0;
    for p in &rows {
        if p.use_percent() > POOL_FULL_PERCENT {
            full += 1;
            f.add(
                "pools",
                Severity::Warning,
                Some(format!("pool {} on node {}", p.class, p.node)),
                format!(
                    "{}% used, {} free of {}",
                    p.use_percent(),
                    format_size(p.free_bytes),
                    format_size(p.total_bytes)
                ),
                Some(&format!(
                    "add disks: kubectl hwameistor disk claim {} --type {}",
                    p.node, p.class
                )),
            );
        }
    }
    // Thin pools: warned before they fill (their agent grows them from the group's free
    // space while it has some).
    let warn_at = hwameistor_core::thin::ThinPolicy::default().warn_at_percent;
    for n in &s.storage_nodes {
        for p in n.status.iter().flat_map(|st| st.pools.values()) {
            let Some(t) = &p.thin else { continue };
            for w in hwameistor_core::thin::usage_warnings(
                &p.name,
                t.data_used_percent as f64,
                t.metadata_used_percent as f64,
                warn_at,
            ) {
                full += 1;
                f.add(
                    "pools",
                    Severity::Warning,
                    Some(format!("thin pool {} on node {}", p.class, n.name_any())),
                    w,
                    Some(&format!(
                        "the pool grows from its group's free space ({} left); add disks: kubectl hwameistor disk claim {} --type {}",
                        format_size(p.free_capacity_bytes),
                        n.name_any(),
                        p.class
                    )),
                );
            }
        }
    }
    if full == 0 {
        f.ok(
            "pools",
            format!(
                "{} pool(s), none above {POOL_FULL_PERCENT}% used",
                rows.len()
            ),
        );
    }
}

fn check_volumes(s: &Snapshot, f: &mut Findings) {
    let mut bad = 0;
    for v in &s.volumes {
        let st = v.status.clone().unwrap_or_default();
        let (sev, hint) = match st.state {
            Some(VolumeState::Ready) => continue,
            Some(VolumeState::NotReady) => (
                Severity::Error,
                "kubectl hwameistor volume get VOLUME shows which replica is not Ready",
            ),
            _ => (
                Severity::Warning,
                "in progress; if it stays so, check the controller and the replicas' nodes",
            ),
        };
        bad += 1;
        let state = st
            .state
            .map(|x| format!("{x:?}"))
            .unwrap_or_else(|| "no state yet".into());
        let msg = match st.message.filter(|m| !m.is_empty()) {
            Some(m) => format!("volume is {state}: {m}"),
            None => format!("volume is {state}"),
        };
        f.add(
            "volumes",
            sev,
            Some(format!("volume {}", v.name_any())),
            msg,
            Some(hint),
        );
    }
    if bad == 0 {
        f.ok("volumes", format!("{} volume(s) Ready", s.volumes.len()));
    }
    let mut bad = 0;
    for r in &s.replicas {
        let st = r.status.clone().unwrap_or_default();
        let sev = match st.state {
            Some(ReplicaState::Ready) => continue,
            Some(ReplicaState::Failed) | Some(ReplicaState::NotReady) => Severity::Error,
            _ => Severity::Warning,
        };
        bad += 1;
        let state = st
            .state
            .map(|x| format!("{x:?}"))
            .unwrap_or_else(|| "no state yet".into());
        let msg = match st.message.filter(|m| !m.is_empty()) {
            Some(m) => format!("replica on node {} is {state}: {m}", r.spec.node_name),
            None => format!("replica on node {} is {state}", r.spec.node_name),
        };
        f.add(
            "replicas",
            sev,
            Some(format!("replica {}", r.name_any())),
            msg,
            Some("check the agent on the replica's node"),
        );
    }
    if bad == 0 {
        f.ok("replicas", format!("{} replica(s) Ready", s.replicas.len()));
    }
}

/// HA volumes, one finding per problem: a split brain is an error whose hint is the
/// command that resolves it (a warning once a resolution is pending); frozen I/O is an
/// error; a replica down, disconnected, outdated or missing is a warning naming it and why;
/// a resync is info with its progress.
fn check_ha(s: &Snapshot, f: &mut Findings) {
    let rows = super::volumes::volume_list(&s.volumes, &s.replicas).items;
    let mut ha = 0;
    let mut bad = 0;
    for v in rows.iter().filter(|v| v.is_ha()) {
        ha += 1;
        let found = ha_findings(v);
        bad += found
            .iter()
            .filter(|x| x.severity >= Severity::Warning)
            .count();
        f.0.extend(found);
    }
    if bad == 0 {
        f.ok(
            "ha",
            format!("{ha} HA volume(s), none degraded or in split brain"),
        );
    }
}

/// The other replicas' nodes of `v`, joined.
fn peers_of(v: &VolumeRow, node: &str) -> String {
    let peers: Vec<&str> = v
        .replicas
        .iter()
        .map(|r| r.node.as_str())
        .filter(|n| *n != node)
        .collect();
    if peers.is_empty() {
        "its peer".into()
    } else {
        peers.join(", ")
    }
}

/// Why a replica of a Degraded volume is not a full copy, and what to check; None when it
/// is one. Pure.
fn degraded_reason(v: &VolumeRow, r: &ReplicaRow) -> Option<(String, String)> {
    let node = &r.node;
    let peer = peers_of(v, node);
    let agent = format!("kubectl hwameistor node get {node}");
    if r.missing {
        return Some((
            format!("no replica on {node}: the volume's config places one there but no LocalVolumeReplica exists (not created yet, or deleted)"),
            format!("the controller creates it: check the controller and the room in {node}'s pool ({agent})"),
        ));
    }
    let Some(conn) = r.connection_state.as_deref() else {
        return Some((
            format!("the replica on {node} reports no replication state: its DRBD resource is not up"),
            format!("check the agent on {node} ({agent}) and the replica's message (kubectl hwameistor volume get {})", v.name),
        ));
    };
    let mut why = Vec::new();
    let connected = ConnState::parse(conn).is_some_and(|c| c.connected());
    if !connected {
        why.push(format!("is disconnected ({conn})"));
    }
    if r.outdated == Some(true) {
        why.push("is outdated (fenced: it may lack writes its peer acknowledged, and is not promoted until it has resynced)".to_string());
    }
    if why.is_empty() {
        return None;
    }
    let hint = if connected {
        format!(
            "it resyncs from {peer} by itself; if it does not, check the agent on {node} ({agent})"
        )
    } else {
        format!("check that {node} is up and its agent runs ({agent}), and the replication network between {node} and {peer}; it resyncs once connected")
    };
    Some((
        format!("one copy only: the replica on {node} {}", why.join(" and ")),
        hint,
    ))
}

/// The findings of one HA volume. Pure.
pub fn ha_findings(v: &VolumeRow) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |severity: Severity, message: String, hint: String| {
        out.push(Finding {
            check: "ha".into(),
            severity,
            object: Some(format!("volume {}", v.name)),
            message,
            hint: Some(hint),
        })
    };
    let get = format!("kubectl hwameistor volume get {}", v.name);
    for r in v.replicas.iter().filter(|r| r.suspended == Some(true)) {
        let peer = peers_of(v, &r.node);
        add(
            Severity::Error,
            format!("I/O on {} is suspended: writes to the volume hang until {peer} is recorded outdated (fenced)", r.node),
            format!("the agent on {} resumes I/O once it has fenced {peer} through the API: check that agent's logs and its access to the API server; {get} shows whether {} was fenced itself", r.node, r.node),
        );
    }
    if v.in_split_brain() {
        let nodes: Vec<&str> = v.replicas.iter().map(|r| r.node.as_str()).collect();
        match v.split_brain_keep.as_deref() {
            None => add(
                Severity::Error,
                format!("split brain: both replicas ({}) were primary while disconnected and hold different data; nothing was discarded, and they stay apart until you choose the node whose data to keep", nodes.join(", ")),
                v.resolve_command(),
            ),
            Some(keep) => {
                let peer = peers_of(v, keep);
                add(
                    Severity::Warning,
                    format!("split brain being resolved: the data of {keep} is kept; the changes of {peer} since the split are discarded once it reconnects"),
                    format!("{get} follows it; {peer} waits while its replica is in use there (stop its pod)"),
                );
            }
        }
        return out;
    }
    match v.ha_state {
        Some(HaState::Degraded) => {
            let reasons: Vec<(String, String)> = v
                .replicas
                .iter()
                .filter_map(|r| degraded_reason(v, r))
                .collect();
            if reasons.is_empty() {
                add(
                    Severity::Warning,
                    format!(
                        "one copy only (HA state Degraded){}",
                        v.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                    format!("{get} shows each replica's replication state"),
                );
            }
            for (message, hint) in reasons {
                add(Severity::Warning, message, hint);
            }
        }
        Some(HaState::Syncing) => {
            let progress = v.resync_progress();
            let message = if progress.is_empty() {
                "resync running".to_string()
            } else {
                format!("resync running: {}", progress.join("; "))
            };
            add(Severity::Info, message, format!("{get} shows the progress"));
        }
        _ => {}
    }
    out
}

/// A pending operation waiting longer than this is reported as a warning.
pub const PENDING_WARN_SECONDS: i64 = 600;

/// Kind, name, volume, status and creation time of one operation.
type OpFacts<'a> = (
    &'static str,
    String,
    &'a str,
    Option<&'a OperationStatus>,
    Option<jiff::Timestamp>,
);

/// Volume operations: one that failed (kept as history) is a warning naming why; one pending
/// for long, what it waits for; one running, where it is (info); a volume held by an
/// operation that no longer exists is an error (nothing will let it go).
fn check_operations(s: &Snapshot, f: &mut Findings) {
    let mut ops: Vec<OpFacts> = Vec::new();
    for m in &s.migrates {
        ops.push((
            "migrate",
            m.name_any(),
            &m.spec.volume_name,
            m.status.as_ref(),
            m.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ));
    }
    for c in &s.converts {
        ops.push((
            "convert",
            c.name_any(),
            &c.spec.volume_name,
            c.status.as_ref(),
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ));
    }
    for e in &s.expands {
        ops.push((
            "expand",
            e.name_any(),
            &e.spec.volume_name,
            e.status.as_ref(),
            e.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ));
    }
    let mut bad = 0;
    for (kind, name, volume, st, created) in &ops {
        let object = Some(format!("{kind} {name}"));
        let hint = format!("kubectl hwameistor operation get {name}");
        let msg = st.and_then(|s| s.message.clone()).unwrap_or_default();
        match st.and_then(|s| s.phase) {
            Some(OperationPhase::Failed) => {
                bad += 1;
                f.add(
                    "operations",
                    Severity::Warning,
                    object,
                    format!("{kind} of volume {volume} failed: {msg}"),
                    Some(&format!("{hint}; fix the cause and create it again (the volume is usable as it was)")),
                );
            }
            Some(OperationPhase::Running) | Some(OperationPhase::Aborting) => {
                let p = st
                    .and_then(|s| s.progress.as_ref())
                    .map(|p| format!(" ({}%)", p.percent))
                    .unwrap_or_default();
                let step = st.and_then(|s| s.step.clone()).unwrap_or_default();
                f.add(
                    "operations",
                    Severity::Info,
                    object,
                    format!(
                        "{kind} of volume {volume} at {step}{p}{}",
                        if msg.is_empty() {
                            String::new()
                        } else {
                            format!(": {msg}")
                        }
                    ),
                    Some(&hint),
                );
            }
            None | Some(OperationPhase::Pending) => {
                let waited = match (s.now, created) {
                    (Some(now), Some(c)) => now.as_second() - c.as_second(),
                    _ => 0,
                };
                if waited >= PENDING_WARN_SECONDS {
                    bad += 1;
                    f.add(
                        "operations",
                        Severity::Warning,
                        object,
                        format!(
                            "{kind} of volume {volume} has waited {} min: {}",
                            waited / 60,
                            if msg.is_empty() { "not started by the controller" } else { msg.as_str() }
                        ),
                        Some(&format!("{hint}; abort it with kubectl hwameistor operation abort {name} if it should not run")),
                    );
                }
            }
            _ => {}
        }
    }
    for v in &s.volumes {
        let Some(held) = v.spec.operation.as_ref() else {
            continue;
        };
        let exists = ops
            .iter()
            .any(|(_, name, volume, _, _)| *name == held.name && *volume == v.name_any().as_str());
        if !exists {
            bad += 1;
            f.add(
                "operations",
                Severity::Error,
                Some(format!("volume {}", v.name_any())),
                format!(
                    "held by operation {} which no longer exists: no other operation can change this volume",
                    held.name
                ),
                Some("check the volume's replicas (kubectl hwameistor volume get), then clear spec.operation on the LocalVolume"),
            );
        }
    }
    if bad == 0 {
        f.ok(
            "operations",
            format!("{} volume operation(s), none failed or stuck", ops.len()),
        );
    }
}

fn check_disks(s: &Snapshot, f: &mut Findings) {
    let mut bad = 0;
    for d in &s.disks {
        let st = d.status.clone().unwrap_or_default();
        let bound = d.spec.claim_ref.is_some() || st.phase == Some(DiskPhase::Bound);
        let obj = Some(format!(
            "disk {} on node {}",
            d.name_any(),
            d.spec.node_name
        ));
        if st.state == Some(DiskPresence::Inactive) {
            bad += 1;
            if let Some(v) = &d.spec.volume_ref {
                f.add("disks", Severity::Error, obj, unavailability(d).unwrap_or_default(),
                    Some(&format!("disk volume {} cannot serve its pod: reattach the disk (its data is on it)", v.name)));
            } else if bound {
                f.add("disks", Severity::Error, obj, unavailability(d).unwrap_or_default(),
                    Some("the disk carries pool data: reattach it, or replace it and migrate the volumes"));
            } else {
                f.add("disks", Severity::Warning, obj, "Inactive: not seen in the agent's latest scan".into(),
                    Some("expected after removing a disk; delete the LocalDisk once it is gone for good"));
            }
            continue;
        }
        // A disk volume's disk is Bound to the volume, in no pool.
        if bound && d.spec.volume_ref.is_none() {
            let in_pool = s
                .storage_nodes
                .iter()
                .filter(|n| n.name_any() == d.spec.node_name)
                .any(|n| {
                    n.status
                        .iter()
                        .flat_map(|st| st.pools.values())
                        .flat_map(|p| &p.disks)
                        .any(|pd| {
                            pd.local_disk.as_deref() == Some(d.name_any().as_str())
                                || Some(pd.device_path.as_str()) == st.device_path.as_deref()
                        })
                });
            if !in_pool && st.phase == Some(DiskPhase::Bound) {
                bad += 1;
                f.add("disks", Severity::Warning, obj, "Bound but missing from the node's pools".into(),
                    Some("its claim may still be extending; otherwise check the agent's logs on that node"));
            }
        }
    }
    if bad == 0 {
        f.ok("disks", format!("{} disk(s), none missing", s.disks.len()));
    }
}

/// Raw-disk volumes: Failed is an error (its disk lost or missing), Pending (no disk fits)
/// and a release that does not end are warnings, a binding not yet confirmed is info.
fn check_disk_volumes(s: &Snapshot, f: &mut Findings) {
    let mut bad = 0;
    for v in &s.disk_volumes {
        let st = v.status.clone().unwrap_or_default();
        let node = &v.spec.node_name;
        let obj = Some(format!("disk volume {}", v.name_any()));
        let msg = st
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "no message".into());
        let list = format!("kubectl hwameistor disk list --node {node}");
        match st.state {
            Some(DiskVolumeState::Ready) => {}
            Some(DiskVolumeState::Failed) => {
                bad += 1;
                f.add(
                    "disk-volumes",
                    Severity::Error,
                    obj,
                    format!("Failed: {msg}"),
                    Some(&format!(
                        "{list} shows its disk; once its data is safe, delete the volume's PVC"
                    )),
                );
            }
            Some(DiskVolumeState::Releasing) => {
                let since = v
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .zip(s.now)
                    .map(|(t, now)| now.as_second() - t.0.as_second());
                if since.is_some_and(|secs| secs > RELEASE_STUCK_SECS) {
                    bad += 1;
                    f.add(
                        "disk-volumes",
                        Severity::Warning,
                        obj,
                        format!("deleted {} min ago, its disk not given back yet: {msg}", since.unwrap_or(0) / 60),
                        Some(&format!("the agent on {node} wipes the disk once nothing holds it; its logs say what does")),
                    );
                }
            }
            Some(DiskVolumeState::Pending) | None => {
                bad += 1;
                f.add(
                    "disk-volumes",
                    Severity::Warning,
                    obj,
                    format!("Pending: {msg}"),
                    Some(&format!("{list} shows the free disks; add or release a disk of type {} and at least {} there", v.spec.disk_type, format_size(v.spec.required_capacity_bytes))),
                );
            }
            Some(DiskVolumeState::Bound) => {
                f.add(
                    "disk-volumes",
                    Severity::Info,
                    obj,
                    format!("Bound, not confirmed yet: {msg}"),
                    Some(&format!(
                        "the agent on {node} confirms it; if it stays so, check that agent"
                    )),
                );
            }
        }
    }
    if bad == 0 {
        f.ok(
            "disk-volumes",
            format!(
                "{} disk volume(s), none pending or failed",
                s.disk_volumes.len()
            ),
        );
    }
}

fn check_claims(s: &Snapshot, f: &mut Findings) {
    let mut bad = 0;
    for c in &s.claims {
        let st = c.status.clone().unwrap_or_default();
        let obj = Some(format!("claim {}", c.name_any()));
        let msg = st
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "no message".into());
        match st.phase {
            Some(ClaimPhase::Failed) => {
                bad += 1;
                f.add(
                    "claims",
                    Severity::Error,
                    obj,
                    format!("Failed: {msg}"),
                    Some("fix the cause, then delete and re-create the claim"),
                );
            }
            Some(ClaimPhase::Pending) | None => {
                bad += 1;
                f.add(
                    "claims",
                    Severity::Warning,
                    obj,
                    format!("Pending: {msg}"),
                    Some(&format!(
                        "kubectl hwameistor disk list --node {} shows why disks do not match",
                        c.spec.node_name
                    )),
                );
            }
            _ => {}
        }
    }
    if bad == 0 {
        f.ok(
            "claims",
            format!("{} claim(s), none pending or failed", s.claims.len()),
        );
    }
}

fn check_snapshots(s: &Snapshot, f: &mut Findings) {
    use super::snapshots::{snapshot_row, NEAR_OVERFLOW_PERCENT};
    // A choice, like running without the hwameistor-scheduler: said, not flagged.
    if s.volume_snapshot_crds == Some(false) {
        f.ok(
            "snapshots",
            format!("the cluster has no VolumeSnapshot CRDs ({}): VolumeSnapshots of HwameiStor volumes cannot be taken; install the external-snapshotter's CRDs and snapshot-controller, then `kubectl hwameistor upgrade` (adds the VolumeSnapshotClass)", super::install::SNAPSHOT_CLASS_CRD),
        );
    }
    let mut bad = 0;
    for sn in &s.snapshots {
        let r = snapshot_row(sn);
        let obj = Some(format!("snapshot {} (volume {})", r.name, r.volume));
        if r.state.as_deref() == Some("Failed") {
            bad += 1;
            f.add(
                "snapshots",
                Severity::Error,
                obj,
                format!("Failed: {}", r.message.as_deref().unwrap_or("no message")),
                Some("it holds no usable data: delete it (its VolumeSnapshot) and take another"),
            );
        } else if r.near_overflow() {
            bad += 1;
            f.add(
                "snapshots",
                Severity::Warning,
                obj,
                format!(
                    "{}% of its {} copy-on-write space is used (warned from {NEAR_OVERFLOW_PERCENT}%); when it is full LVM invalidates it and its data is lost",
                    r.used_percent.unwrap_or(0),
                    format_size(r.cow_bytes.unwrap_or(0))
                ),
                Some("copy what you need from it (restore it to a new volume) now; give later snapshots more room: VolumeSnapshotClass parameter cowSize"),
            );
        }
    }
    if bad == 0 && !s.snapshots.is_empty() {
        f.ok(
            "snapshots",
            format!(
                "{} snapshot(s), none failed or near overflow",
                s.snapshots.len()
            ),
        );
    }
}

/// Runs every check on a snapshot.
pub fn diagnose_snapshot(s: &Snapshot) -> DiagnoseReport {
    let mut f = Findings(Vec::new());
    let installed = check_crds(s, &mut f);
    check_agents(s, &mut f);
    check_controller(s, &mut f);
    check_csi(s, &mut f);
    check_scheduler(s, &mut f);
    if installed {
        check_pools(s, &mut f);
        check_volumes(s, &mut f);
        check_ha(s, &mut f);
        check_operations(s, &mut f);
        check_disks(s, &mut f);
        check_disk_volumes(s, &mut f);
        check_claims(s, &mut f);
        check_snapshots(s, &mut f);
    }
    let errors = f.0.iter().filter(|x| x.severity == Severity::Error).count();
    let warnings =
        f.0.iter()
            .filter(|x| x.severity == Severity::Warning)
            .count();
    DiagnoseReport {
        findings: f.0,
        errors,
        warnings,
    }
}

/// A list that may be forbidden or absent: None then, so the check is skipped rather than
/// the whole diagnosis failing.
async fn optional_list<K>(api: Api<K>) -> Option<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default()).await.ok().map(|l| l.items)
}

/// Reads everything the checks need.
pub async fn collect(cluster: &Cluster) -> Result<Snapshot, AdminError> {
    let c = cluster.client.clone();
    let ns = cluster.namespace.as_str();
    let crd_api: Api<CustomResourceDefinition> = Api::all(c.clone());
    let wanted = required_crds();
    let crds = crd_api
        .list(&ListParams::default())
        .await
        .map_err(|e| AdminError::api("listing CRDs", e))?
        .items
        .into_iter()
        .filter(|x| wanted.contains(&x.name_any()))
        .collect();
    // Without the CRDs the custom resource lists 404; the CRD check reports that.
    async fn or_empty<T>(r: Result<Vec<T>, AdminError>) -> Result<Vec<T>, AdminError> {
        match r {
            Err(AdminError::NotInstalled) => Ok(Vec::new()),
            other => other,
        }
    }
    Ok(Snapshot {
        namespace: ns.to_string(),
        now: Some(jiff::Timestamp::now()),
        crds,
        daemonsets: Api::<DaemonSet>::namespaced(c.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| AdminError::api(format!("listing DaemonSets in {ns}"), e))?
            .items,
        nodes: optional_list(Api::<Node>::all(c.clone())).await,
        storage_nodes: or_empty(list_all(cluster).await).await?,
        disks: or_empty(list_all(cluster).await).await?,
        claims: or_empty(list_all(cluster).await).await?,
        volumes: or_empty(list_all(cluster).await).await?,
        replicas: or_empty(list_all(cluster).await).await?,
        disk_volumes: or_empty(list_all(cluster).await).await?,
        migrates: or_empty(list_all(cluster).await).await?,
        converts: or_empty(list_all(cluster).await).await?,
        expands: or_empty(list_all(cluster).await).await?,
        snapshots: or_empty(list_all(cluster).await).await?,
        volume_snapshot_crds: crd_api
            .get_opt(super::install::SNAPSHOT_CLASS_CRD)
            .await
            .ok()
            .map(|c| c.is_some()),
        lease: Api::<Lease>::namespaced(c.clone(), ns)
            .get_opt(CONTROLLER_LEASE)
            .await
            .map_err(|e| AdminError::api(format!("reading Lease {ns}/{CONTROLLER_LEASE}"), e))?,
        csi_driver: Api::<CSIDriver>::all(c.clone())
            .get_opt(CSI_DRIVER_NAME)
            .await
            .map_err(|e| AdminError::api(format!("reading CSIDriver {CSI_DRIVER_NAME}"), e))?,
        disk_csi_driver: Api::<CSIDriver>::all(c.clone())
            .get_opt(DISK_DRIVER_NAME)
            .await
            .map_err(|e| AdminError::api(format!("reading CSIDriver {DISK_DRIVER_NAME}"), e))?,
        csi_nodes: optional_list(Api::<CSINode>::all(c.clone())).await,
        scheduler: collect_scheduler(&c, ns).await,
    })
}

/// The scheduler's objects, and the extender's readiness through the service proxy (the
/// plugin talks to the API server only).
async fn collect_scheduler(c: &kube::Client, ns: &str) -> SchedulerSnapshot {
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let extender = deployments.get_opt(EXTENDER).await.ok().flatten();
    let scheduler = deployments.get_opt(SCHEDULER).await.ok().flatten();
    let cert = Api::<Secret>::namespaced(c.clone(), ns)
        .get_opt(&format!("{EXTENDER}-tls"))
        .await
        .ok()
        .flatten();
    let readyz = if extender.is_some() {
        let path = format!("/api/v1/namespaces/{ns}/services/https:{EXTENDER}:443/proxy/readyz");
        let answer = match http::Request::get(path).body(Vec::new()) {
            Ok(req) => tokio::time::timeout(std::time::Duration::from_secs(5), c.request_text(req))
                .await
                .map_err(|_| "no answer within 5s".to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        Some(answer)
    } else {
        None
    };
    SchedulerSnapshot {
        extender,
        scheduler,
        cert,
        readyz,
    }
}

pub async fn diagnose(cluster: &Cluster) -> Result<DiagnoseReport, AdminError> {
    Ok(diagnose_snapshot(&collect(cluster).await?))
}

#[cfg(test)]
mod tests {
    use super::super::volumes::ha_fixtures::*;
    use super::super::volumes::volume_row;
    use super::*;
    use hwameistor_api::SplitBrainResolution;

    fn findings(v: &LocalVolume, replicas: &[&LocalVolumeReplica]) -> Vec<Finding> {
        ha_findings(&volume_row(v, replicas))
    }

    fn split(r: &mut LocalVolumeReplica) {
        r.status
            .as_mut()
            .unwrap()
            .replication
            .as_mut()
            .unwrap()
            .split_brain = true;
    }

    #[test]
    fn a_split_brain_is_an_error_whose_hint_is_the_command() {
        let mut v = ha_volume(
            "pvc-1",
            &["node-a", "node-b"],
            "node-a",
            Some(HaState::SplitBrain),
        );
        let mut a = ha_replica("pvc-1", "node-a", "Primary", "UpToDate", "StandAlone");
        let mut b = ha_replica("pvc-1", "node-b", "Primary", "UpToDate", "StandAlone");
        split(&mut a);
        split(&mut b);
        let f = findings(&v, &[&a, &b]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].check.as_str(), f[0].severity),
            ("ha", Severity::Error)
        );
        assert_eq!(f[0].object.as_deref(), Some("volume pvc-1"));
        assert_eq!(
            f[0].hint.as_deref(),
            Some("kubectl hwameistor volume resolve-split-brain pvc-1 --keep <node-a|node-b>")
        );
        assert!(
            f[0].message
                .starts_with("split brain: both replicas (node-a, node-b)"),
            "{}",
            f[0].message
        );
        // A replica's report counts before the controller summed it up.
        v.status.as_mut().unwrap().ha_state = Some(HaState::Healthy);
        assert_eq!(findings(&v, &[&a, &b])[0].severity, Severity::Error);
        // Once resolved, a warning that says what happens and what it waits for.
        v.spec.split_brain_resolution = Some(SplitBrainResolution {
            keep: "node-a".into(),
        });
        let f = findings(&v, &[&a, &b]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].message.contains("the data of node-a is kept"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].hint.as_deref().unwrap().contains("stop its pod"),
            "{f:?}"
        );
    }

    #[test]
    fn degraded_names_the_replica_and_why() {
        let mut v = ha_volume(
            "v",
            &["node-a", "node-b"],
            "node-a",
            Some(HaState::Degraded),
        );
        v.spec.config.as_mut().unwrap().replicas[1].outdated = true;
        let a = ha_replica("v", "node-a", "Primary", "UpToDate", "WFConnection");
        let b = ha_replica("v", "node-b", "Secondary", "Outdated", "StandAlone");
        let f = findings(&v, &[&a, &b]);
        // node-a waits for its peer: the copy that is missing is node-b's.
        let msgs: Vec<&str> = f.iter().map(|x| x.message.as_str()).collect();
        assert_eq!(f.len(), 2, "{msgs:?}");
        assert!(f.iter().all(|x| x.severity == Severity::Warning));
        assert_eq!(
            msgs[0],
            "one copy only: the replica on node-a is disconnected (WFConnection)"
        );
        assert!(
            msgs[1].starts_with("one copy only: the replica on node-b is disconnected (StandAlone) and is outdated (fenced"),
            "{msgs:?}"
        );
        assert!(f[1]
            .hint
            .as_deref()
            .unwrap()
            .contains("kubectl hwameistor node get node-b"));

        // A replica the config wants but that does not exist.
        let f = findings(&v, &[&a]);
        assert!(
            f.iter()
                .any(|x| x.message.starts_with("no replica on node-b")),
            "{f:?}"
        );
        // A replica whose DRBD resource is not up.
        let mut down = ha_replica("v", "node-b", "", "", "");
        down.status.as_mut().unwrap().replication = None;
        let f = findings(&v, &[&a, &down]);
        assert!(
            f.iter().any(|x| x.message == "the replica on node-b reports no replication state: its DRBD resource is not up"),
            "{f:?}"
        );
    }

    #[test]
    fn a_resync_is_info_with_its_progress_and_healthy_says_nothing() {
        let v = ha_volume("v", &["node-a", "node-b"], "node-a", Some(HaState::Syncing));
        let a = ha_replica("v", "node-a", "Primary", "UpToDate", "SyncSource");
        let mut b = ha_replica("v", "node-b", "Secondary", "Inconsistent", "SyncTarget");
        let rep = b.status.as_mut().unwrap().replication.as_mut().unwrap();
        rep.sync_progress = Some("42.5%".into());
        rep.out_of_sync_bytes = 512 << 20;
        let f = findings(&v, &[&a, &b]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        assert_eq!(
            f[0].message,
            "resync running: node-b from node-a: 42.5%, 512Mi out of sync"
        );
        assert_eq!(
            f[0].hint.as_deref(),
            Some("kubectl hwameistor volume get v shows the progress")
        );

        let v = ha_volume("v", &["node-a", "node-b"], "node-a", Some(HaState::Healthy));
        let a = ha_replica("v", "node-a", "Primary", "UpToDate", "Connected");
        let b = ha_replica("v", "node-b", "Secondary", "UpToDate", "Connected");
        assert!(findings(&v, &[&a, &b]).is_empty());
    }

    #[test]
    fn frozen_io_is_an_error() {
        let v = ha_volume(
            "v",
            &["node-a", "node-b"],
            "node-a",
            Some(HaState::Degraded),
        );
        let mut a = ha_replica("v", "node-a", "Primary", "UpToDate", "WFConnection");
        a.status
            .as_mut()
            .unwrap()
            .replication
            .as_mut()
            .unwrap()
            .suspended = true;
        let b = ha_replica("v", "node-b", "Secondary", "UpToDate", "WFConnection");
        let f = findings(&v, &[&a, &b]);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(
            f[0].message,
            "I/O on node-a is suspended: writes to the volume hang until node-b is recorded outdated (fenced)"
        );
    }

    #[test]
    fn a_thin_pool_filling_up_is_warned_about() {
        use hwameistor_api::{
            LocalStorageNodeSpec, LocalStorageNodeStatus, PoolClass, PoolStatus, ThinPoolStatus,
        };
        let n = LocalStorageNode::new(
            "node-a",
            LocalStorageNodeSpec {
                hostname: "node-a".into(),
                storage_ip: None,
            },
        );
        let thin = |data, meta| ThinPoolStatus {
            data_bytes: 10 << 30,
            metadata_bytes: 16 << 20,
            data_used_percent: data,
            metadata_used_percent: meta,
            provisioned_bytes: 30 << 30,
            volume_count: 3,
        };
        let pool = |t| PoolStatus {
            name: "LocalStorage_PoolHDD".into(),
            class: PoolClass::Hdd,
            total_capacity_bytes: 100 << 30,
            used_capacity_bytes: 20 << 30,
            free_capacity_bytes: 80 << 30,
            extent_size_bytes: 4 << 20,
            volume_count: 3,
            disks: vec![],
            thin: Some(t),
            thin_overprovision_percent: None,
        };
        let findings = |t| {
            let mut n = n.clone();
            n.status = Some(LocalStorageNodeStatus {
                pools: [("LocalStorage_PoolHDD".to_string(), pool(t))].into(),
                ..Default::default()
            });
            let s = Snapshot {
                storage_nodes: vec![n],
                ..Default::default()
            };
            let mut f = Findings(Vec::new());
            check_pools(&s, &mut f);
            f.0
        };
        let calm = findings(thin(79, 10));
        assert_eq!(calm.len(), 1);
        assert_eq!(calm[0].severity, Severity::Ok);
        let full = findings(thin(85, 92));
        assert_eq!(full.len(), 2, "{full:?}");
        assert!(full.iter().all(|x| x.severity == Severity::Warning));
        assert_eq!(
            full[0].message,
            "thin pool LocalStorage_PoolHDD/hwameistor-thin data is 85.0% used; when it is full every thin volume in it stops taking writes"
        );
        assert!(full[1].message.contains("metadata is 92.0% used"));
        assert!(full[0].hint.as_deref().unwrap().contains("(80Gi left)"));
    }

    #[test]
    fn disk_volumes_failed_pending_and_stuck_releases_are_reported() {
        use hwameistor_api::{
            DiskType, LocalDiskSpec, LocalDiskStatus, LocalDiskVolumeSpec, LocalDiskVolumeStatus,
            ObjectRef, WipePolicy,
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let ldv = |name: &str, state: DiskVolumeState, msg: &str| {
            let mut v = LocalDiskVolume::new(
                name,
                LocalDiskVolumeSpec {
                    node_name: "node-a".into(),
                    disk_type: DiskType::Ssd,
                    required_capacity_bytes: 100 << 30,
                    max_capacity_bytes: None,
                    pvc_namespace: None,
                    pvc_name: None,
                    wipe: WipePolicy::Full,
                },
            );
            v.status = Some(LocalDiskVolumeStatus {
                state: Some(state),
                message: Some(msg.into()),
                ..Default::default()
            });
            v
        };
        let mut slow = ldv("slow", DiskVolumeState::Releasing, "zeroing");
        slow.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(1_000).unwrap()));
        let mut fresh = slow.clone();
        fresh.metadata.name = Some("fresh".into());
        fresh.metadata.deletion_timestamp = Some(Time(
            jiff::Timestamp::from_second(1_000 + 2 * RELEASE_STUCK_SECS - 60).unwrap(),
        ));
        // Its disk: Bound to the volume, in no pool; that is not a problem.
        let mut disk = LocalDisk::new(
            "disk-a1",
            LocalDiskSpec {
                node_name: "node-a".into(),
                reserved: false,
                claim_ref: None,
                volume_ref: Some(ObjectRef {
                    name: "ok".into(),
                    uid: "u".into(),
                }),
            },
        );
        disk.status = Some(LocalDiskStatus {
            state: Some(DiskPresence::Active),
            phase: Some(DiskPhase::Bound),
            ..Default::default()
        });
        let s = Snapshot {
            now: Some(jiff::Timestamp::from_second(1_000 + 2 * RELEASE_STUCK_SECS).unwrap()),
            disk_volumes: vec![
                ldv("ok", DiskVolumeState::Ready, ""),
                ldv(
                    "lost",
                    DiskVolumeState::Failed,
                    "disk disk-a2 no longer names it",
                ),
                ldv("waiting", DiskVolumeState::Pending, "no free SSD disk"),
                slow,
                fresh,
            ],
            disks: vec![disk.clone()],
            ..Default::default()
        };
        let mut f = Findings(Vec::new());
        check_disk_volumes(&s, &mut f);
        check_disks(&s, &mut f);
        let got: Vec<(Severity, &str, &str)> =
            f.0.iter()
                .map(|x| {
                    (
                        x.severity,
                        x.object.as_deref().unwrap_or("-"),
                        x.message.as_str(),
                    )
                })
                .collect();
        assert_eq!(
            got,
            [
                (
                    Severity::Error,
                    "disk volume lost",
                    "Failed: disk disk-a2 no longer names it"
                ),
                (
                    Severity::Warning,
                    "disk volume waiting",
                    "Pending: no free SSD disk"
                ),
                (
                    Severity::Warning,
                    "disk volume slow",
                    "deleted 60 min ago, its disk not given back yet: zeroing"
                ),
                (Severity::Ok, "-", "1 disk(s), none missing"),
            ]
        );
        assert!(f.0[1]
            .hint
            .as_deref()
            .unwrap()
            .contains("a disk of type SSD and at least 100Gi"));
        // Gone from its node: an error naming the volume.
        disk.status.as_mut().unwrap().state = Some(DiskPresence::Inactive);
        let s = Snapshot {
            disks: vec![disk],
            ..Default::default()
        };
        let mut f = Findings(Vec::new());
        check_disks(&s, &mut f);
        assert_eq!(f.0[0].severity, Severity::Error);
        assert_eq!(
            f.0[0].message,
            "serves disk volume ok but is missing: not seen in the agent's latest scan"
        );
    }

    #[test]
    fn operations_failed_stuck_running_and_a_lost_hold_are_reported() {
        let op = |name: &str, vol: &str, phase: Option<OperationPhase>, msg: &str| {
            let mut m = LocalVolumeMigrate::new(
                name,
                serde_json::from_value(
                    serde_json::json!({"volumeName": vol, "sourceNode": "node-a"}),
                )
                .unwrap(),
            );
            m.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::from_second(1_000).unwrap(),
                ));
            m.status = Some(OperationStatus {
                phase,
                message: Some(msg.into()),
                step: Some("Copy".into()),
                ..Default::default()
            });
            m
        };
        let mut held = ha_volume("v2", &["node-a"], "node-a", None);
        held.spec.operation = Some(hwameistor_api::OperationRef {
            kind: None,
            name: "gone".into(),
            uid: "u".into(),
            bandwidth_limit_bytes_per_second: None,
        });
        let s = Snapshot {
            now: Some(jiff::Timestamp::from_second(1_000 + 3_600).unwrap()),
            migrates: vec![
                op(
                    "m1",
                    "v1",
                    Some(OperationPhase::Failed),
                    "no node can take the replica",
                ),
                op(
                    "m2",
                    "v1",
                    Some(OperationPhase::Pending),
                    "in use on node-a",
                ),
                op("m3", "v3", Some(OperationPhase::Running), ""),
                op("m4", "v4", Some(OperationPhase::Succeeded), "moved"),
            ],
            volumes: vec![held],
            ..Default::default()
        };
        let mut f = Findings(Vec::new());
        check_operations(&s, &mut f);
        let got: Vec<(Severity, String)> =
            f.0.iter()
                .map(|x| (x.severity, x.message.clone()))
                .collect();
        assert_eq!(
            got,
            vec![
                (Severity::Warning, "migrate of volume v1 failed: no node can take the replica".into()),
                (Severity::Warning, "migrate of volume v1 has waited 60 min: in use on node-a".into()),
                (Severity::Info, "migrate of volume v3 at Copy".into()),
                (Severity::Error, "held by operation gone which no longer exists: no other operation can change this volume".into()),
            ]
        );
    }

    #[test]
    fn the_ha_check_runs_with_the_others_and_info_is_not_a_warning() {
        let crds = hwameistor_api::crds::all()
            .into_iter()
            .map(|mut c| {
                c.status = serde_json::from_value(serde_json::json!({
                    "conditions": [{"type": "Established", "status": "True"}]
                }))
                .unwrap();
                c
            })
            .collect();
        let v = ha_volume("v", &["node-a", "node-b"], "node-a", Some(HaState::Syncing));
        let b = ha_replica("v", "node-b", "Secondary", "Inconsistent", "SyncTarget");
        let s = Snapshot {
            crds,
            volumes: vec![v, ha_volume("plain", &["node-a"], "node-a", None)],
            replicas: vec![
                ha_replica("v", "node-a", "Primary", "UpToDate", "SyncSource"),
                b,
            ],
            ..Default::default()
        };
        let mut plain = s.clone();
        plain.volumes[1].spec.config.as_mut().unwrap().resource_id = -1;
        let r = diagnose_snapshot(&plain);
        let ha: Vec<&Finding> = r.findings.iter().filter(|f| f.check == "ha").collect();
        assert_eq!(ha.len(), 2, "{ha:?}");
        assert_eq!(ha[0].severity, Severity::Info);
        assert_eq!(ha[1].severity, Severity::Ok);
        assert_eq!(
            ha[1].message,
            "1 HA volume(s), none degraded or in split brain"
        );
        assert_eq!(
            r.exit_code(true),
            if r.warnings + r.errors > 0 { 1 } else { 0 }
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"severity\":\"info\""), "{json}");
    }

    fn ready_deployment(name: &str, ready: i32, want: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some(name.into());
        d.spec = Some(k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: Some(want),
            ..Default::default()
        });
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            ready_replicas: Some(ready),
            ..Default::default()
        });
        d
    }

    fn cert_secret(not_after: &str) -> Secret {
        let c = super::super::serving_certs::generate(EXTENDER, "hwameistor", 2026).unwrap();
        let mut v =
            super::super::serving_certs::tls_secret(&format!("{EXTENDER}-tls"), "hwameistor", &c);
        v["metadata"]["annotations"][super::super::serving_certs::NOT_AFTER_ANNOTATION] =
            serde_json::Value::String(not_after.into());
        serde_json::from_value(v).unwrap()
    }

    fn scheduler_findings(sch: SchedulerSnapshot, today: &str) -> Vec<Finding> {
        let s = Snapshot {
            namespace: "hwameistor".into(),
            now: Some(
                format!("{today}T12:00:00Z")
                    .parse::<jiff::Timestamp>()
                    .unwrap(),
            ),
            scheduler: sch,
            ..Default::default()
        };
        let mut f = Findings(Vec::new());
        check_scheduler(&s, &mut f);
        f.0
    }

    #[test]
    fn the_scheduler_check_covers_absence_readiness_reachability_and_the_certificate() {
        let none = scheduler_findings(SchedulerSnapshot::default(), "2026-11-26");
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].severity, Severity::Ok);
        assert!(none[0].message.contains("not installed"));

        let healthy = scheduler_findings(
            SchedulerSnapshot {
                extender: Some(ready_deployment(EXTENDER, 1, 1)),
                scheduler: Some(ready_deployment(SCHEDULER, 2, 2)),
                cert: Some(cert_secret("2036-01-01")),
                readyz: Some(Ok("ok\n".into())),
            },
            "2026-11-26",
        );
        assert!(
            healthy.iter().all(|x| x.severity == Severity::Ok),
            "{healthy:?}"
        );
        assert!(healthy
            .iter()
            .any(|x| x.message.contains("valid until 2036-01-01")));

        let broken = scheduler_findings(
            SchedulerSnapshot {
                extender: Some(ready_deployment(EXTENDER, 0, 1)),
                scheduler: Some(ready_deployment(SCHEDULER, 1, 2)),
                cert: Some(cert_secret("2027-01-10")),
                readyz: Some(Err("503 Service Unavailable: no endpoints".into())),
            },
            "2026-11-26",
        );
        let of = |sev: Severity| broken.iter().filter(|x| x.severity == sev).count();
        assert_eq!(of(Severity::Error), 2, "{broken:?}");
        assert_eq!(of(Severity::Warning), 2, "{broken:?}");
        assert!(broken
            .iter()
            .any(|x| x.message.contains("cannot be reached through its Service")));
        assert!(broken
            .iter()
            .any(|x| x.message.contains("expires on 2027-01-10")
                && x.hint.as_deref() == Some("kubectl hwameistor upgrade renews it")));

        let expired = scheduler_findings(
            SchedulerSnapshot {
                extender: Some(ready_deployment(EXTENDER, 1, 1)),
                scheduler: Some(ready_deployment(SCHEDULER, 1, 1)),
                cert: Some(cert_secret("2026-11-01")),
                readyz: Some(Ok("ok".into())),
            },
            "2026-11-26",
        );
        assert!(expired
            .iter()
            .any(|x| x.severity == Severity::Error && x.message.contains("expired on 2026-11-01")));
        let half = scheduler_findings(
            SchedulerSnapshot {
                scheduler: Some(ready_deployment(SCHEDULER, 1, 1)),
                ..Default::default()
            },
            "2026-11-26",
        );
        assert_eq!(half[0].severity, Severity::Error);
    }

    #[test]
    fn failed_and_filling_snapshots_are_flagged_and_missing_snapshot_crds_told() {
        use hwameistor_api::{
            LocalVolumeSnapshot, LocalVolumeSnapshotSpec, LocalVolumeSnapshotStatus, SnapshotState,
        };
        let snap = |name: &str, state: SnapshotState, used: Option<i64>| {
            let mut s = LocalVolumeSnapshot::new(
                name,
                LocalVolumeSnapshotSpec {
                    source_volume: "db".into(),
                    node_name: "n1".into(),
                    pool_name: "LocalStorage_PoolHDD".into(),
                    source_capacity_bytes: 1 << 30,
                    cow_capacity_bytes: Some(256 << 20),
                },
            );
            s.status = Some(LocalVolumeSnapshotStatus {
                state: Some(state),
                ready_to_use: state == SnapshotState::Ready,
                used_percent: used,
                message: (state == SnapshotState::Failed).then(|| "overflowed".into()),
                ..Default::default()
            });
            s
        };
        let s = Snapshot {
            snapshots: vec![
                snap("fine", SnapshotState::Ready, Some(10)),
                snap("filling", SnapshotState::Ready, Some(85)),
                snap("lost", SnapshotState::Failed, Some(100)),
            ],
            volume_snapshot_crds: Some(false),
            ..Default::default()
        };
        let mut f = Findings(Vec::new());
        check_snapshots(&s, &mut f);
        let got: Vec<(Severity, &str)> =
            f.0.iter()
                .map(|x| (x.severity, x.object.as_deref().unwrap_or("-")))
                .collect();
        assert_eq!(
            got,
            [
                (Severity::Ok, "-"),
                (Severity::Warning, "snapshot filling (volume db)"),
                (Severity::Error, "snapshot lost (volume db)"),
            ]
        );
        assert!(f.0[1].message.contains("85% of its 256Mi"), "{:?}", f.0[1]);
        let healthy = Snapshot {
            snapshots: vec![snap("fine", SnapshotState::Ready, Some(10))],
            volume_snapshot_crds: Some(true),
            ..Default::default()
        };
        let mut f = Findings(Vec::new());
        check_snapshots(&healthy, &mut f);
        assert_eq!(f.0.len(), 1);
        assert_eq!(f.0[0].severity, Severity::Ok);
    }
}
