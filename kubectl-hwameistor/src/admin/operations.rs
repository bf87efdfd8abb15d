//! Volume operations as the plugin sees them: LocalVolumeMigrate, LocalVolumeConvert and
//! LocalVolumeExpand read into one row shape, listed together, shown, aborted, deleted,
//! created under a fresh name, and followed to their end with a progress bar each.
//!
//! The controller runs the operations (see `hwameistor_core::operation`); the plugin only
//! creates them, sets `spec.abort`, and reads their status. What it predicts (whether an
//! abort is still possible) it asks the same pure state machines the controller runs.

use crate::client::Cluster;
use crate::errors::{humanize, is_not_found, AdminError};
use crate::output::{or_dash, Render, TableView};
use crate::progress::{Progress, TrackView};
use futures::StreamExt;
use hwameistor_api::operation::CONDITION_WAITING;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    LocalVolume, LocalVolumeConvert, LocalVolumeExpand, LocalVolumeMigrate, OperationKind,
    OperationPhase, OperationProgress, OperationStatus, LABEL_GROUP_OPERATION,
};
use hwameistor_core::operation::{self as core_op, Machine};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Label on the migrations made to empty a node (by a drain, or the controller's evictor):
/// the node's name. The controller's evictor reads it, so it is the core's constant.
pub use hwameistor_core::operation::evict::LABEL_DRAIN;

/// Longest object name Kubernetes accepts for these resources.
const MAX_NAME: usize = 253;

/// One operation of any kind, as listed and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationRow {
    pub kind: OperationKind,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    pub volume: String,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// Migrate: the node whose replica moves; convert: the node of the existing replica
    /// (once started).
    #[serde(default)]
    pub source_node: Option<String>,
    /// The nodes asked for (migrate: in order of preference; convert: at most one).
    #[serde(default)]
    pub target_nodes: Vec<String>,
    /// The node the controller chose (once started).
    #[serde(default)]
    pub target_node: Option<String>,
    /// Convert: replicas after the conversion.
    #[serde(default)]
    pub replica_number: Option<i64>,
    /// Expand: the capacity asked for, the one before, and the smallest its replicas report.
    #[serde(default)]
    pub required_capacity_bytes: Option<i64>,
    #[serde(default)]
    pub original_capacity_bytes: Option<i64>,
    #[serde(default)]
    pub allocated_capacity_bytes: Option<i64>,
    /// Migrate: the cap on a block copy's rate.
    #[serde(default)]
    pub bandwidth_limit_bytes_per_second: Option<i64>,
    /// An abort was asked for (`spec.abort`).
    #[serde(default)]
    pub abort: bool,
    /// The node whose drain created it (label `hwameistor.io/drain`).
    #[serde(default)]
    pub drain_node: Option<String>,
    /// The group-wide operation that made it for its volume (label
    /// `hwameistor.io/group-operation`).
    #[serde(default)]
    pub group_lead: Option<String>,
    /// The group's other volumes it takes along (once started).
    #[serde(default)]
    pub group_volumes: Vec<String>,
    /// None until the controller first wrote its status.
    #[serde(default)]
    pub phase: Option<OperationPhase>,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// What it waits for, while its `Waiting` condition is True.
    #[serde(default)]
    pub waiting: Option<String>,
    #[serde(default)]
    pub progress: Option<OperationProgress>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub completion_time: Option<String>,
    #[serde(default)]
    pub conditions: Vec<ConditionRow>,
}

/// A condition of an operation, flattened for printing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRow {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

fn time(t: &Option<Time>) -> Option<String> {
    t.as_ref().map(|t| t.0.to_string())
}

impl OperationRow {
    /// The parts every kind shares.
    fn common(kind: OperationKind, meta: &ObjectMeta, volume: &str, st: &OperationStatus) -> Self {
        let waiting = st
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_WAITING && c.status == "True")
            .map(|c| c.message.clone())
            .filter(|m| !m.is_empty());
        OperationRow {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            volume: volume.to_string(),
            created: time(&meta.creation_timestamp),
            source_node: None,
            target_nodes: Vec::new(),
            target_node: st.target_node.clone(),
            replica_number: None,
            required_capacity_bytes: None,
            original_capacity_bytes: st.original_capacity_bytes,
            allocated_capacity_bytes: st.allocated_capacity_bytes,
            bandwidth_limit_bytes_per_second: None,
            abort: false,
            drain_node: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_DRAIN))
                .cloned(),
            group_lead: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_GROUP_OPERATION))
                .cloned(),
            group_volumes: st.group_volumes.clone(),
            phase: st.phase,
            step: st.step.clone(),
            message: st.message.clone(),
            waiting,
            progress: st.progress.clone(),
            start_time: time(&st.start_time),
            completion_time: time(&st.completion_time),
            conditions: st
                .conditions
                .iter()
                .map(|c| ConditionRow {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.0.to_string(),
                })
                .collect(),
        }
    }

    /// Whether it ended (it will never change the volume again).
    pub fn is_final(&self) -> bool {
        self.phase.is_some_and(|p| p.is_final())
    }

    /// `kind/name`, the way `operation get` takes it.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind.as_str().to_lowercase(), self.name)
    }

    /// The phase as a cell; `-` before the controller first wrote a status.
    pub fn phase_cell(&self) -> String {
        match self.phase {
            Some(p) => format!("{p:?}"),
            None => "-".into(),
        }
    }

    /// What it changes, in one cell without blanks: `a->b` (migrate; `?` until the
    /// controller chose), `+b` (convert: a replica added on b), `10Gi->20Gi` (expand).
    pub fn change_cell(&self) -> String {
        let target = || {
            self.target_node
                .clone()
                .or_else(|| match self.target_nodes.as_slice() {
                    [] => None,
                    [one] => Some(format!("{one}?")),
                    many => Some(format!("{}?", many.join("|"))),
                })
                .unwrap_or_else(|| "?".into())
        };
        match self.kind {
            OperationKind::Migrate => format!(
                "{}->{}",
                self.source_node.as_deref().unwrap_or("?"),
                target()
            ),
            OperationKind::Convert => format!("+{}", target()),
            OperationKind::Expand => format!(
                "{}->{}",
                self.original_capacity_bytes
                    .map(format_size)
                    .unwrap_or_else(|| "?".into()),
                self.required_capacity_bytes
                    .map(format_size)
                    .unwrap_or_else(|| "?".into())
            ),
        }
    }

    /// Percent done, when it reports progress.
    pub fn progress_cell(&self) -> String {
        match &self.progress {
            Some(p) => format!("{}%", p.percent),
            None => "-".into(),
        }
    }

    /// Bytes done of total, rate and time left, e.g. `4Gi/10Gi, 50Mi/s, ETA 2m10s`.
    pub fn progress_text(&self) -> Option<String> {
        let p = self.progress.as_ref()?;
        let mut parts = vec![format!(
            "{}/{}",
            format_size(p.bytes_done),
            format_size(p.bytes_total)
        )];
        if let Some(r) = p.bytes_per_second.filter(|r| *r > 0) {
            parts.push(format!("{}/s", format_size(r)));
        }
        if let Some(eta) = p.eta_seconds {
            parts.push(format!(
                "ETA {}",
                humanize(Duration::from_secs(u64::try_from(eta).unwrap_or(0)))
            ));
        }
        Some(parts.join(", "))
    }

    /// One line saying where it stands: phase and step, progress, and the message (or what
    /// it waits for).
    pub fn status_line(&self) -> String {
        let mut head = match (&self.phase, &self.step) {
            (None, _) => "created; waiting for the controller to pick it up".to_string(),
            (Some(p), Some(s)) if !p.is_final() => format!("{p:?} {s}"),
            (Some(p), _) => format!("{p:?}"),
        };
        if self.abort && !self.is_final() && self.phase != Some(OperationPhase::Aborting) {
            head.push_str(" (abort requested)");
        }
        let progress = if self.phase == Some(OperationPhase::Running) {
            self.progress_text()
        } else {
            None
        };
        let message = self.message.clone().or_else(|| self.waiting.clone());
        match (progress, message) {
            (Some(p), Some(m)) => format!("{head} {p}: {m}"),
            (Some(p), None) => format!("{head} {p}"),
            (None, Some(m)) => format!("{head}: {m}"),
            (None, None) => head,
        }
    }

    /// What a progress bar shows for it. While it moves bytes the bar says it runs, so the
    /// text leads with the step and the figures (a terminal line is short).
    pub fn track_view(&self) -> TrackView {
        let position = self
            .progress
            .as_ref()
            .filter(|p| p.bytes_total > 0 && self.phase == Some(OperationPhase::Running))
            .map(|p| {
                (
                    u64::try_from(p.bytes_done).unwrap_or(0),
                    u64::try_from(p.bytes_total).unwrap_or(0),
                )
            });
        let message = match (position, self.progress_text()) {
            (Some(_), Some(figures)) => {
                let mut m = match &self.step {
                    Some(s) => format!("{s} {figures}"),
                    None => figures,
                };
                if self.abort {
                    m.push_str(" (abort requested)");
                }
                if let Some(x) = self.message.as_ref().or(self.waiting.as_ref()) {
                    m.push_str(": ");
                    m.push_str(x);
                }
                m
            }
            _ => self.status_line(),
        };
        TrackView { position, message }
    }

    /// The exit code of a command that followed it to its end: 0 when it succeeded.
    pub fn exit_code(&self) -> i32 {
        match self.phase {
            Some(OperationPhase::Succeeded) => 0,
            _ => 1,
        }
    }

    /// The age cell at `now`, kubectl style.
    pub fn age_cell(&self, now: jiff::Timestamp) -> String {
        self.created
            .as_deref()
            .and_then(|c| c.parse::<jiff::Timestamp>().ok())
            .map(|c| age(now.as_second() - c.as_second()))
            .unwrap_or_else(|| "-".into())
    }
}

/// `seconds` as kubectl prints ages: `45s`, `3m20s`, `42m`, `5h10m`, `30h`, `3d4h`, `12d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else {
        format!("{d}d")
    }
}

/// A kind of operation resource the plugin reads and follows.
pub trait OperationResource:
    Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: OperationKind;
    fn row(&self) -> OperationRow;
    fn status(&self) -> Option<&OperationStatus>;
}

impl OperationResource for LocalVolumeMigrate {
    const KIND: OperationKind = OperationKind::Migrate;
    fn row(&self) -> OperationRow {
        let st = self.status.clone().unwrap_or_default();
        let mut r = OperationRow::common(Self::KIND, &self.metadata, &self.spec.volume_name, &st);
        r.source_node = Some(self.spec.source_node.clone());
        r.target_nodes = self.spec.target_nodes.clone();
        r.bandwidth_limit_bytes_per_second = self.spec.bandwidth_limit_bytes_per_second;
        r.abort = self.spec.abort;
        r
    }
    fn status(&self) -> Option<&OperationStatus> {
        self.status.as_ref()
    }
}

impl OperationResource for LocalVolumeConvert {
    const KIND: OperationKind = OperationKind::Convert;
    fn row(&self) -> OperationRow {
        let st = self.status.clone().unwrap_or_default();
        let mut r = OperationRow::common(Self::KIND, &self.metadata, &self.spec.volume_name, &st);
        r.source_node = st.source_nodes.first().cloned();
        r.target_nodes = self.spec.target_node.iter().cloned().collect();
        r.replica_number = Some(self.spec.replica_number);
        r.abort = self.spec.abort;
        r
    }
    fn status(&self) -> Option<&OperationStatus> {
        self.status.as_ref()
    }
}

impl OperationResource for LocalVolumeExpand {
    const KIND: OperationKind = OperationKind::Expand;
    fn row(&self) -> OperationRow {
        let st = self.status.clone().unwrap_or_default();
        let mut r = OperationRow::common(Self::KIND, &self.metadata, &self.spec.volume_name, &st);
        r.required_capacity_bytes = Some(self.spec.required_capacity_bytes);
        r.abort = self.spec.abort;
        r
    }
    fn status(&self) -> Option<&OperationStatus> {
        self.status.as_ref()
    }
}

/// One operation object of whichever kind.
#[derive(Clone, Debug)]
pub enum AnyOperation {
    Migrate(LocalVolumeMigrate),
    Convert(LocalVolumeConvert),
    Expand(LocalVolumeExpand),
}

impl AnyOperation {
    pub fn row(&self) -> OperationRow {
        match self {
            AnyOperation::Migrate(o) => o.row(),
            AnyOperation::Convert(o) => o.row(),
            AnyOperation::Expand(o) => o.row(),
        }
    }

    pub fn kind(&self) -> OperationKind {
        match self {
            AnyOperation::Migrate(_) => OperationKind::Migrate,
            AnyOperation::Convert(_) => OperationKind::Convert,
            AnyOperation::Expand(_) => OperationKind::Expand,
        }
    }

    /// Whether the controller can still undo it, asked of the state machine it runs: `Ok`
    /// when an abort stops it cleanly, the reason when it is past that point (it then
    /// completes). Only meaningful while it runs; `volume` is its volume as read now.
    pub fn abortable(&self, volume: &LocalVolume) -> Result<(), String> {
        let row = self.row();
        let status = match self {
            AnyOperation::Migrate(o) => o.status.clone(),
            AnyOperation::Convert(o) => o.status.clone(),
            AnyOperation::Expand(o) => o.status.clone(),
        }
        .unwrap_or_default();
        let op = core_op::Op {
            kind: self.kind(),
            name: &row.name,
            uid: &row.uid,
            generation: None,
            abort: true,
            deleting: false,
            has_finalizer: true,
            ttl_seconds: core_op::DEFAULT_TTL_SECONDS,
            status: &status,
        };
        match self {
            AnyOperation::Migrate(o) => {
                core_op::migrate::Migrate { spec: &o.spec }.abortable(&op, volume)
            }
            AnyOperation::Convert(o) => {
                core_op::convert::Convert { spec: &o.spec }.abortable(&op, volume)
            }
            AnyOperation::Expand(o) => core_op::expand::Expand {
                required_capacity_bytes: o.spec.required_capacity_bytes,
            }
            .abortable(&op, volume),
        }
    }
}

/// The operation kinds a user may name in `kind/name`.
pub fn parse_kind(s: &str) -> Option<OperationKind> {
    match s.to_ascii_lowercase().as_str() {
        "migrate" | "lvmigrate" | "localvolumemigrate" | "localvolumemigrates" => {
            Some(OperationKind::Migrate)
        }
        "convert" | "lvconvert" | "localvolumeconvert" | "localvolumeconverts" => {
            Some(OperationKind::Convert)
        }
        "expand" | "lvexpand" | "localvolumeexpand" | "localvolumeexpands" => {
            Some(OperationKind::Expand)
        }
        _ => None,
    }
}

/// Lists every object of one operation kind (optionally by label selector); a resource the
/// server does not serve means the operation CRDs are not installed.
pub async fn list_kind<K: OperationResource>(
    cluster: &Cluster,
    selector: Option<&str>,
) -> Result<Vec<K>, AdminError> {
    let api: Api<K> = Api::all(cluster.client.clone());
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    match api.list(&lp).await {
        Ok(l) => Ok(l.items),
        Err(e) if is_not_found(&e) => {
            // Either nothing of HwameiStor, or an installation older than the operations.
            crate::admin::lookup::ensure_installed(cluster).await?;
            Err(AdminError::OperationsNotInstalled)
        }
        Err(e) => Err(AdminError::api(format!("listing {}", K::plural(&())), e)),
    }
}

/// Every operation of the three kinds, as rows.
pub async fn list_rows(
    cluster: &Cluster,
    selector: Option<&str>,
) -> Result<Vec<OperationRow>, AdminError> {
    let mut rows: Vec<OperationRow> = Vec::new();
    rows.extend(
        list_kind::<LocalVolumeMigrate>(cluster, selector)
            .await?
            .iter()
            .map(|o| o.row()),
    );
    rows.extend(
        list_kind::<LocalVolumeConvert>(cluster, selector)
            .await?
            .iter()
            .map(|o| o.row()),
    );
    rows.extend(
        list_kind::<LocalVolumeExpand>(cluster, selector)
            .await?
            .iter()
            .map(|o| o.row()),
    );
    Ok(rows)
}

/// `operation list`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationList {
    pub items: Vec<OperationRow>,
}

/// Oldest first, like an operation log; the name breaks ties.
fn sort_rows(rows: &mut [OperationRow]) {
    rows.sort_by(|a, b| {
        a.created
            .as_deref()
            .and_then(|c| c.parse::<jiff::Timestamp>().ok())
            .cmp(
                &b.created
                    .as_deref()
                    .and_then(|c| c.parse::<jiff::Timestamp>().ok()),
            )
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// The table of operations; `wide` adds the message (or what it waits for) and the abort
/// flag.
pub fn operations_table(rows: &[OperationRow], wide: bool) -> TableView {
    let mut headers = vec![
        "KIND", "NAME", "VOLUME", "CHANGE", "PHASE", "STEP", "PROGRESS", "AGE",
    ];
    if wide {
        headers.extend(["ABORT", "MESSAGE"]);
    }
    let now = jiff::Timestamp::now();
    let mut t = TableView::new(&headers);
    for r in rows {
        let mut row = vec![
            r.kind.as_str().to_string(),
            r.name.clone(),
            r.volume.clone(),
            r.change_cell(),
            r.phase_cell(),
            or_dash(r.step.as_deref()),
            r.progress_cell(),
            r.age_cell(now),
        ];
        if wide {
            row.push(r.abort.to_string());
            row.push(or_dash(r.message.as_deref().or(r.waiting.as_deref())));
        }
        t.push(row);
    }
    t
}

impl Render for OperationList {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        vec![operations_table(&self.items, wide)]
    }

    fn empty_note(&self) -> Option<String> {
        self.items
            .is_empty()
            .then(|| "No volume operations found.".to_string())
    }
}

/// `operation list [--volume V] [-l SELECTOR]`. `volume` may be `NAMESPACE/PVC` (resolved
/// to its volume); a plain name is taken as it is, so the history of a deleted volume
/// still lists.
pub async fn list_operations(
    cluster: &Cluster,
    volume: Option<&str>,
    selector: Option<&str>,
) -> Result<OperationList, AdminError> {
    let volume = match volume {
        Some(v) if v.contains('/') => Some(
            crate::admin::volumes::require_volume(cluster, v)
                .await?
                .name_any(),
        ),
        other => other.map(str::to_string),
    };
    let mut items: Vec<OperationRow> = list_rows(cluster, selector)
        .await?
        .into_iter()
        .filter(|r| volume.as_ref().is_none_or(|v| &r.volume == v))
        .collect();
    sort_rows(&mut items);
    Ok(OperationList { items })
}

async fn get_kind<K: OperationResource>(
    cluster: &Cluster,
    name: &str,
) -> Result<Option<K>, AdminError> {
    let api: Api<K> = Api::all(cluster.client.clone());
    match api.get_opt(name).await {
        Ok(o) => Ok(o),
        Err(e) => Err(AdminError::api(
            format!("reading {} {name}", K::kind(&())),
            e,
        )),
    }
}

/// Finds an operation by `name` (any kind) or `kind/name`; an unknown one fails naming
/// those that exist, a name two kinds share asks which.
pub async fn find_operation(cluster: &Cluster, key: &str) -> Result<AnyOperation, AdminError> {
    let (kind, name) = match key.split_once('/') {
        Some((k, n)) => match parse_kind(k) {
            Some(kind) => (Some(kind), n),
            None => {
                return Err(AdminError::InvalidArgument(format!(
                    "{k:?} is not an operation kind: use migrate/NAME, convert/NAME or expand/NAME (or the name alone)"
                )))
            }
        },
        None => (None, key),
    };
    let wants = |k: OperationKind| kind.is_none_or(|x| x == k);
    let mut found: Vec<AnyOperation> = Vec::new();
    if wants(OperationKind::Migrate) {
        if let Some(o) = get_kind::<LocalVolumeMigrate>(cluster, name).await? {
            found.push(AnyOperation::Migrate(o));
        }
    }
    if wants(OperationKind::Convert) {
        if let Some(o) = get_kind::<LocalVolumeConvert>(cluster, name).await? {
            found.push(AnyOperation::Convert(o));
        }
    }
    if wants(OperationKind::Expand) {
        if let Some(o) = get_kind::<LocalVolumeExpand>(cluster, name).await? {
            found.push(AnyOperation::Expand(o));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            // Tells "not installed" apart from "no such operation", and names those there are.
            let mut known: Vec<String> = list_rows(cluster, None)
                .await?
                .into_iter()
                .filter(|r| wants(r.kind))
                .map(|r| r.name)
                .collect();
            known.sort();
            Err(AdminError::UnknownOperation {
                name: key.to_string(),
                known,
            })
        }
        _ => Err(AdminError::AmbiguousOperation {
            name: name.to_string(),
            kinds: found
                .iter()
                .map(|o| o.kind().as_str().to_string())
                .collect(),
        }),
    }
}

/// `operation get NAME`: the operation, its conditions, and what can be done about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationDetail {
    pub operation: OperationRow,
    pub notes: Vec<String>,
}

/// What to tell about an operation as it stands. Pure.
pub fn detail_notes(r: &OperationRow) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(p) = r.progress_text() {
        notes.push(format!("progress: {p}"));
    }
    if let Some(lead) = &r.group_lead {
        notes.push(format!(
            "made by {lead}, which takes its volume's group to one node: it ends once this one ended; to stop the whole group abort {lead} (deleted, this one is made again while {lead} runs)"
        ));
    }
    if !r.group_volumes.is_empty() {
        notes.push(format!(
            "its volume's group goes with it: {} (by operations it made, labelled hwameistor.io/group-operation={}); it ends once they all ended",
            r.group_volumes.join(", "),
            r.name
        ));
    }
    if let Some(w) = &r.waiting {
        if r.message.as_deref() != Some(w.as_str()) {
            notes.push(format!("waiting: {w}"));
        }
    }
    match r.phase {
        Some(p) if p.is_final() => notes.push(format!(
            "it ended ({p:?}) and is kept as history until its time-to-live passes; remove it now with `kubectl hwameistor operation delete {}`",
            r.reference()
        )),
        Some(OperationPhase::Aborting) => notes.push(
            "aborting: the controller undoes its changes; the volume stays usable with its data where it was".into(),
        ),
        _ if r.abort => notes.push(
            "an abort was requested: it stops at the next safe point (or, past the point of no return, completes; the message says so)".into(),
        ),
        _ => notes.push(format!(
            "stop it with `kubectl hwameistor operation abort {}`",
            r.reference()
        )),
    }
    notes
}

impl Render for OperationDetail {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        let r = &self.operation;
        let mut d = TableView::new(&["FIELD", "VALUE"]).titled("Details:");
        let mut kv = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                d.push(vec![k.to_string(), v]);
            }
        };
        kv("volume", Some(r.volume.clone()));
        kv("source node", r.source_node.clone());
        kv(
            "target nodes asked",
            (!r.target_nodes.is_empty()).then(|| r.target_nodes.join(", ")),
        );
        kv("target node", r.target_node.clone());
        kv("replicas", r.replica_number.map(|n| n.to_string()));
        kv("capacity asked", r.required_capacity_bytes.map(format_size));
        kv(
            "capacity before",
            r.original_capacity_bytes.map(format_size),
        );
        kv(
            "capacity allocated",
            r.allocated_capacity_bytes.map(format_size),
        );
        kv(
            "bandwidth limit",
            r.bandwidth_limit_bytes_per_second
                .map(|b| format!("{}/s", format_size(b))),
        );
        kv("drain of node", r.drain_node.clone());
        kv(
            "group volumes along",
            (!r.group_volumes.is_empty()).then(|| r.group_volumes.join(", ")),
        );
        kv(
            "made by",
            r.group_lead
                .as_ref()
                .map(|l| format!("{l} (its volume's group's operation)")),
        );
        kv("abort requested", Some(r.abort.to_string()));
        kv("phase", Some(r.phase_cell()));
        kv("step", r.step.clone());
        kv("message", r.message.clone());
        kv("progress", r.progress_text());
        kv("created", r.created.clone());
        kv("started", r.start_time.clone());
        kv("completed", r.completion_time.clone());
        let mut c =
            TableView::new(&["TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"]).titled("Conditions:");
        for x in &r.conditions {
            c.push(vec![
                x.type_.clone(),
                x.status.clone(),
                or_dash(Some(&x.reason)),
                or_dash(Some(&x.message)),
                x.last_transition_time.clone(),
            ]);
        }
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in &self.notes {
            notes.push(vec![n.clone()]);
        }
        vec![operations_table(std::slice::from_ref(r), wide), d, c, notes]
    }
}

pub async fn get_operation(cluster: &Cluster, key: &str) -> Result<OperationDetail, AdminError> {
    let row = find_operation(cluster, key).await?.row();
    Ok(OperationDetail {
        notes: detail_notes(&row),
        operation: row,
    })
}

/// What `operation abort` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortReport {
    pub kind: OperationKind,
    pub name: String,
    pub volume: String,
    pub phase: Option<OperationPhase>,
    pub dry_run: bool,
    /// `spec.abort` was set by this command.
    pub written: bool,
    pub notes: Vec<String>,
}

impl Render for AbortReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let result = if self.dry_run && self.written {
            "dry run: not changed"
        } else if self.written {
            "abort requested"
        } else {
            "nothing to do"
        };
        let mut t = TableView::new(&["KIND", "NAME", "VOLUME", "PHASE", "RESULT"]);
        t.push(vec![
            self.kind.as_str().into(),
            self.name.clone(),
            self.volume.clone(),
            self.phase.map_or_else(|| "-".into(), |p| format!("{p:?}")),
            result.into(),
        ]);
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in &self.notes {
            notes.push(vec![n.clone()]);
        }
        vec![t, notes]
    }
}

/// Whether to write an abort of `op`, with the note saying what follows, or why the
/// controller would refuse it (`volume`: its volume now, None when gone). `(false, note)`:
/// nothing to abort (it ended, aborts already, or an abort was asked already). Pure.
pub fn abort_decision(
    op: &AnyOperation,
    volume: Option<&LocalVolume>,
) -> Result<(bool, String), AdminError> {
    let r = op.row();
    let phase = r.phase;
    if let Some(p) = phase.filter(|p| p.is_final()) {
        let when = r
            .completion_time
            .as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        let msg = r
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        return Ok((
            false,
            format!(
                "{} {} already ended ({p:?}{when}{msg}); there is nothing to abort",
                r.kind, r.name
            ),
        ));
    }
    if phase == Some(OperationPhase::Aborting) {
        return Ok((
            false,
            format!(
                "{} {} is aborting already: the controller is undoing its changes",
                r.kind, r.name
            ),
        ));
    }
    if r.abort {
        return Ok((
            false,
            format!(
                "an abort of {} {} was requested already; it stops at the next safe point{}",
                r.kind,
                r.name,
                r.message
                    .as_deref()
                    .map(|m| format!(" (now: {m})"))
                    .unwrap_or_default()
            ),
        ));
    }
    match phase {
        Some(OperationPhase::Running) => {
            if let Some(v) = volume {
                op.abortable(v).map_err(|reason| AdminError::AbortRefused {
                    kind: r.kind.to_string(),
                    name: r.name.clone(),
                    reason,
                })?;
            }
            Ok((
                true,
                format!(
                    "{} {} stops at the next safe point and undoes what it changed (phase Aborting, then Aborted); volume {} stays usable with its data where it was",
                    r.kind, r.name, r.volume
                ),
            ))
        }
        _ => Ok((
            true,
            format!(
                "{} {} has not started: it ends Aborted without changing volume {}",
                r.kind, r.name, r.volume
            ),
        )),
    }
}

/// `operation abort NAME`: sets `spec.abort` (merge patch) unless it ended, is aborting, or
/// is past the point where the controller can undo it (then refused with the reason).
pub async fn abort_operation(
    cluster: &Cluster,
    key: &str,
    dry_run: bool,
) -> Result<AbortReport, AdminError> {
    let op = find_operation(cluster, key).await?;
    let r = op.row();
    let volume: Option<LocalVolume> =
        crate::admin::lookup::get_opt::<LocalVolume>(cluster, &r.volume).await?;
    let (write, note) = abort_decision(&op, volume.as_ref())?;
    let mut report = AbortReport {
        kind: r.kind,
        name: r.name.clone(),
        volume: r.volume.clone(),
        phase: r.phase,
        dry_run,
        written: false,
        notes: vec![note],
    };
    if !write {
        return Ok(report);
    }
    let patch = serde_json::json!({"spec": {"abort": true}});
    let params = PatchParams {
        dry_run,
        ..Default::default()
    };
    let res = match &op {
        AnyOperation::Migrate(_) => Api::<LocalVolumeMigrate>::all(cluster.client.clone())
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        AnyOperation::Convert(_) => Api::<LocalVolumeConvert>::all(cluster.client.clone())
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        AnyOperation::Expand(_) => Api::<LocalVolumeExpand>::all(cluster.client.clone())
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    res.map_err(|e| AdminError::api(format!("setting spec.abort of {} {}", r.kind, r.name), e))?;
    report.written = true;
    report.notes.push(if dry_run {
        "dry run: the server accepted spec.abort=true; nothing was written".into()
    } else {
        format!(
            "follow it with `kubectl hwameistor operation get {}`",
            r.reference()
        )
    });
    Ok(report)
}

/// What `operation delete` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReport {
    pub kind: OperationKind,
    pub name: String,
    pub phase: Option<OperationPhase>,
    pub dry_run: bool,
}

impl Render for DeleteReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["KIND", "NAME", "PHASE", "RESULT"]);
        t.push(vec![
            self.kind.as_str().into(),
            self.name.clone(),
            self.phase.map_or_else(|| "-".into(), |p| format!("{p:?}")),
            if self.dry_run {
                "dry run: not deleted".into()
            } else {
                "deleted".into()
            },
        ]);
        vec![t]
    }
}

/// `operation delete NAME`: removes an ended operation from the history. One that has not
/// ended is refused: deleting it would leave the controller nothing to finish or undo.
pub async fn delete_operation(
    cluster: &Cluster,
    key: &str,
    dry_run: bool,
) -> Result<DeleteReport, AdminError> {
    let op = find_operation(cluster, key).await?;
    let r = op.row();
    if !r.is_final() {
        return Err(AdminError::OperationNotEnded {
            kind: r.kind.to_string(),
            name: r.name,
            phase: r
                .phase
                .map_or_else(|| "not started".into(), |p| format!("{p:?}")),
        });
    }
    let dp = DeleteParams {
        dry_run,
        ..Default::default()
    };
    let res = match &op {
        AnyOperation::Migrate(_) => Api::<LocalVolumeMigrate>::all(cluster.client.clone())
            .delete(&r.name, &dp)
            .await
            .map(|_| ()),
        AnyOperation::Convert(_) => Api::<LocalVolumeConvert>::all(cluster.client.clone())
            .delete(&r.name, &dp)
            .await
            .map(|_| ()),
        AnyOperation::Expand(_) => Api::<LocalVolumeExpand>::all(cluster.client.clone())
            .delete(&r.name, &dp)
            .await
            .map(|_| ()),
    };
    match res {
        Ok(()) => {}
        // Gone meanwhile (its time-to-live passed): what was asked is done.
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            return Err(AdminError::api(
                format!("deleting {} {}", r.kind, r.name),
                e,
            ))
        }
    }
    Ok(DeleteReport {
        kind: r.kind,
        name: r.name,
        phase: r.phase,
        dry_run,
    })
}

/// Five random characters of `[a-z0-9]`. The standard library's hasher keys are seeded from
/// the operating system's randomness, which is all a name suffix needs.
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut x = h.finish();
    let mut s = String::with_capacity(5);
    for _ in 0..5 {
        s.push(ALPHABET[(x % 36) as usize] as char);
        x /= 36;
    }
    s
}

/// `<volume>-<what>-<suffix>`, the volume part cut so the whole stays a valid name.
pub fn operation_name(volume: &str, what: &str, suffix: &str) -> String {
    let tail = format!("-{what}-{suffix}");
    let room = MAX_NAME.saturating_sub(tail.len());
    let mut head: String = volume.chars().take(room).collect();
    // A name must end (and so its parts be joined) with an alphanumeric character.
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}{tail}")
}

/// Creates an operation named by `build(name)` under a fresh `<volume>-<what>-<suffix>`
/// name (another suffix when a name is taken). A dry run has the server validate it and
/// keeps nothing.
pub async fn create_operation<K: OperationResource>(
    cluster: &Cluster,
    volume: &str,
    what: &str,
    dry_run: bool,
    build: impl Fn(&str) -> K,
) -> Result<K, AdminError> {
    let api: Api<K> = Api::all(cluster.client.clone());
    let pp = PostParams {
        dry_run,
        ..Default::default()
    };
    let mut attempts = 0;
    loop {
        let name = operation_name(volume, what, &random_suffix());
        match api.create(&pp, &build(&name)).await {
            Ok(o) => return Ok(o),
            Err(kube::Error::Api(s)) if s.code == 409 && attempts < 3 => attempts += 1,
            Err(e) if is_not_found(&e) => {
                crate::admin::lookup::ensure_installed(cluster).await?;
                return Err(AdminError::OperationsNotInstalled);
            }
            Err(e) => {
                return Err(AdminError::api(
                    format!("creating {} {name}", K::kind(&())),
                    e,
                ))
            }
        }
    }
}

/// How following a set of operations ended.
#[derive(Clone, Debug, Default)]
pub struct FollowOutcome {
    /// Every followed operation as last seen; None when it was deleted (or never seen).
    pub rows: BTreeMap<String, Option<OperationRow>>,
    /// The deadline passed before every one ended.
    pub timed_out: bool,
    pub waited: Duration,
}

/// Follows the operations `names` of kind `K` with one watch until each ended (or was
/// deleted), showing each one's phase, step, message and progress as a bar of its own;
/// returns what each was last seen as, also when `timeout` passes first. Watch errors are
/// retried with backoff: a dropped connection is no reason to stop following.
pub async fn follow_operations<K: OperationResource>(
    cluster: &Cluster,
    names: &BTreeSet<String>,
    timeout: Duration,
    progress: &Progress,
) -> Result<FollowOutcome, AdminError> {
    let mut out = FollowOutcome::default();
    if names.is_empty() {
        return Ok(out);
    }
    let api: Api<K> = Api::all(cluster.client.clone());
    let mut config = watcher::Config::default().timeout(cluster.watch_timeout_secs());
    if names.len() == 1 {
        if let Some(n) = names.iter().next() {
            config = config.fields(&format!("metadata.name={n}"));
        }
    }
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let start = Instant::now();
    // Operations seen in the current (re)list: one missing from a complete list is gone.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    let finish_one = |name: &str, row: Option<&OperationRow>, ended: &mut BTreeSet<String>| {
        if ended.insert(name.to_string()) {
            let text = match row {
                Some(r) => r.status_line(),
                None => "deleted before it ended".to_string(),
            };
            progress.track_done(name, &text);
        }
    };
    loop {
        if ended.len() == names.len() {
            out.waited = start.elapsed();
            return Ok(out);
        }
        let remaining = timeout.saturating_sub(start.elapsed());
        let event = match tokio::time::timeout(remaining, stream.next()).await {
            Err(_) | Ok(None) => {
                out.timed_out = true;
                out.waited = start.elapsed();
                return Ok(out);
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "watch error, retrying");
                continue;
            }
            Ok(Some(Ok(ev))) => ev,
        };
        match event {
            Event::Init => seen.clear(),
            Event::Apply(o) | Event::InitApply(o) => {
                let name = o.name_any();
                if !names.contains(&name) {
                    continue;
                }
                seen.insert(name.clone());
                let row = o.row();
                if row.is_final() {
                    finish_one(&name, Some(&row), &mut ended);
                } else if !ended.contains(&name) {
                    progress.track(&name, &row.track_view());
                }
                out.rows.insert(name, Some(row));
            }
            Event::Delete(o) => {
                let name = o.name_any();
                if names.contains(&name) {
                    let last = out.rows.get(&name).cloned().flatten();
                    // An ended operation deleted (its time-to-live passed) keeps its end.
                    if !last.as_ref().is_some_and(|r| r.is_final()) {
                        out.rows.insert(name.clone(), None);
                    }
                    finish_one(&name, last.as_ref().filter(|r| r.is_final()), &mut ended);
                }
            }
            Event::InitDone => {
                for name in names {
                    if !seen.contains(name) && !ended.contains(name) {
                        // Absent from a complete list: deleted (or never created).
                        let last = out.rows.get(name).cloned().flatten();
                        if !last.as_ref().is_some_and(|r| r.is_final()) {
                            out.rows.insert(name.clone(), None);
                        }
                        finish_one(name, last.as_ref().filter(|r| r.is_final()), &mut ended);
                    }
                }
            }
        }
    }
}

/// Follows one operation to its end; a deadline passing is an error saying it goes on.
pub async fn follow_one<K: OperationResource>(
    cluster: &Cluster,
    obj: &K,
    timeout: Duration,
    progress: &Progress,
) -> Result<OperationRow, AdminError> {
    let row = obj.row();
    let names = BTreeSet::from([row.name.clone()]);
    let outcome = follow_operations::<K>(cluster, &names, timeout, progress).await?;
    progress.finish();
    let last = outcome.rows.get(&row.name).cloned().flatten();
    if outcome.timed_out {
        let detail = last.as_ref().unwrap_or(&row).status_line();
        return Err(AdminError::Timeout {
            what: format!("{} {} to end", row.kind, row.name),
            waited: outcome.waited,
            detail: format!(
                "{detail}; it goes on without this command: `kubectl hwameistor operation get {}` shows it, `kubectl hwameistor operation abort {}` stops it",
                row.reference(),
                row.reference()
            ),
        });
    }
    last.ok_or_else(|| AdminError::OperationDeleted {
        kind: row.kind.to_string(),
        name: row.name.clone(),
        volume: row.volume.clone(),
    })
}

/// What a command that started an operation (migrate, convert, expand) did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationReport {
    pub operation: OperationRow,
    pub dry_run: bool,
    /// The operation was created (not a dry run).
    pub created: bool,
    /// Followed to its end.
    pub followed: bool,
    pub notes: Vec<String>,
}

impl OperationReport {
    /// 0 unless it was followed and did not succeed.
    pub fn exit_code(&self) -> i32 {
        if self.followed {
            self.operation.exit_code()
        } else {
            0
        }
    }
}

impl Render for OperationReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let r = &self.operation;
        let result = if self.dry_run {
            "dry run: not created".to_string()
        } else if self.followed {
            r.phase_cell()
        } else {
            "created".to_string()
        };
        let mut t = TableView::new(&[
            "KIND", "NAME", "VOLUME", "CHANGE", "RESULT", "STEP", "MESSAGE",
        ]);
        t.push(vec![
            r.kind.as_str().into(),
            r.name.clone(),
            r.volume.clone(),
            r.change_cell(),
            result,
            or_dash(r.step.as_deref()),
            or_dash(r.message.as_deref()),
        ]);
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in &self.notes {
            notes.push(vec![n.clone()]);
        }
        vec![t, notes]
    }
}

/// Completes a report after the operation was created: followed to its end (`follow`:
/// its deadline), or a note saying how to follow it.
pub async fn finish_report<K: OperationResource>(
    cluster: &Cluster,
    created: &K,
    mut report: OperationReport,
    follow: Option<Duration>,
    progress: &Progress,
) -> Result<OperationReport, AdminError> {
    let Some(timeout) = follow else {
        report.notes.push(format!(
            "not followed (--no-wait): `kubectl hwameistor operation get {}` shows how far it is",
            report.operation.reference()
        ));
        return Ok(report);
    };
    let row = follow_one(cluster, created, timeout, progress).await?;
    report.followed = true;
    if !row.is_final() {
        return Ok(report);
    }
    match row.phase {
        Some(OperationPhase::Succeeded) => {}
        Some(p) => report.notes.push(format!(
            "{} {} ended {p:?}: {}",
            row.kind,
            row.name,
            row.message.as_deref().unwrap_or("no message")
        )),
        None => {}
    }
    report.operation = row;
    Ok(report)
}

/// The non-final operations of `volume` among `rows`.
pub fn active_on<'a>(rows: &'a [OperationRow], volume: &str) -> Vec<&'a OperationRow> {
    rows.iter()
        .filter(|r| r.volume == volume && !r.is_final())
        .collect()
}

/// The refusal for a volume another operation holds or waits to change, naming it.
pub fn busy_error(volume: &LocalVolume, rows: &[OperationRow]) -> Option<AdminError> {
    let name = volume.name_any();
    let holder = volume.spec.operation.as_ref();
    let active = active_on(rows, &name);
    // The holder first (it changes the volume now), then any queued one.
    let pick = holder
        .and_then(|h| active.iter().find(|r| r.name == h.name).copied())
        .or_else(|| active.first().copied());
    match (pick, holder) {
        (Some(r), _) => Some(AdminError::OperationInProgress {
            volume: name,
            kind: r.kind.to_string(),
            name: r.name.clone(),
            phase: r
                .phase
                .map_or_else(|| "not started".into(), |p| format!("{p:?}")),
        }),
        (None, Some(h)) => Some(AdminError::OperationInProgress {
            volume: name,
            kind: h.kind.map_or_else(|| "operation".into(), |k| k.to_string()),
            name: h.name.clone(),
            phase: "holding the volume".into(),
        }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::LocalVolumeMigrateSpec;

    fn migrate(name: &str, phase: Option<OperationPhase>) -> LocalVolumeMigrate {
        let mut m = LocalVolumeMigrate::new(
            name,
            LocalVolumeMigrateSpec {
                volume_name: "pvc-1".into(),
                source_node: "a".into(),
                target_nodes: vec![],
                migrate_all_volumes: true,
                bandwidth_limit_bytes_per_second: None,
                abort: false,
                ttl_seconds_after_finished: None,
            },
        );
        m.status = Some(OperationStatus {
            phase,
            ..Default::default()
        });
        m
    }

    #[test]
    fn names_stay_valid_and_carry_the_volume() {
        assert_eq!(
            operation_name("pvc-1", "migrate", "ab1c2"),
            "pvc-1-migrate-ab1c2"
        );
        let long = "v".repeat(300);
        let n = operation_name(&long, "migrate", "ab1c2");
        assert_eq!(n.len(), 253);
        assert!(n.ends_with("v-migrate-ab1c2"));
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(
            random_suffix(),
            random_suffix(),
            "two draws in a row differ"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(45), "45s");
        assert_eq!(age(200), "3m20s");
        assert_eq!(age(42 * 60), "42m");
        assert_eq!(age(5 * 3600 + 600), "5h10m");
        assert_eq!(age(30 * 3600), "30h");
        assert_eq!(age(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(age(12 * 86400), "12d");
    }

    #[test]
    fn a_row_says_where_it_stands() {
        let mut m = migrate("m1", Some(OperationPhase::Running));
        let st = m.status.as_mut().unwrap();
        st.step = Some("Copy".into());
        st.target_node = Some("b".into());
        st.message = Some("copying".into());
        st.progress = Some(core_op::progress(4 << 30, 10 << 30, Some(50 << 20)));
        let r = m.row();
        assert_eq!(r.change_cell(), "a->b");
        assert_eq!(r.progress_cell(), "40%");
        assert_eq!(
            r.status_line(),
            "Running Copy 4Gi/10Gi, 50Mi/s, ETA 2m3s: copying"
        );
        assert_eq!(r.track_view().position, Some((4 << 30, 10 << 30)));
        let fresh = migrate("m2", None).row();
        assert_eq!(fresh.change_cell(), "a->?");
        assert_eq!(fresh.phase_cell(), "-");
        assert!(fresh.status_line().starts_with("created"));
    }

    #[test]
    fn a_group_operation_and_its_members_say_how_they_belong_together() {
        let mut lead = migrate("m1", Some(OperationPhase::Running));
        lead.status.as_mut().unwrap().group_volumes = vec!["pvc-2".into()];
        let r = lead.row();
        let notes = detail_notes(&r).join("\n");
        assert!(
            notes.contains("its volume's group goes with it: pvc-2"),
            "{notes}"
        );
        let mut member = migrate("m1-pvc-2", Some(OperationPhase::Pending));
        member.metadata.labels =
            Some([(LABEL_GROUP_OPERATION.to_string(), "m1".to_string())].into());
        let r = member.row();
        assert_eq!(r.group_lead.as_deref(), Some("m1"));
        let detail = OperationDetail {
            notes: detail_notes(&r),
            operation: r,
        };
        let text = crate::output::render_tables(&detail.tables(false), false);
        assert!(
            text.contains("m1 (its volume's group's operation)"),
            "{text}"
        );
        assert!(text.contains("to stop the whole group abort m1"), "{text}");
    }

    #[test]
    fn abort_is_refused_past_the_point_of_no_return_and_a_no_op_after_the_end() {
        use hwameistor_api::{ReplicaAssignment, VolumeConfig};
        let mut m = migrate("m1", Some(OperationPhase::Running));
        m.status.as_mut().unwrap().target_node = Some("b".into());
        let mut v: LocalVolume = serde_json::from_value(serde_json::json!({
            "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume",
            "metadata": {"name": "pvc-1"},
            "spec": {"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1073741824, "replicaNumber": 1}
        }))
        .unwrap();
        let config = |nodes: &[&str]| VolumeConfig {
            version: 2,
            required_capacity_bytes: 1 << 30,
            resource_id: -1,
            replicas: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| ReplicaAssignment {
                    id: i as i64 + 1,
                    hostname: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            initial: false,
        };
        v.spec.config = Some(config(&["a", "b"]));
        let op = AnyOperation::Migrate(m.clone());
        let (write, note) = abort_decision(&op, Some(&v)).unwrap();
        assert!(write);
        assert!(note.contains("stops at the next safe point"), "{note}");
        // The source left the placement: the migration completes.
        v.spec.config = Some(config(&["b"]));
        let e = abort_decision(&op, Some(&v)).unwrap_err();
        assert!(matches!(e, AdminError::AbortRefused { .. }), "{e}");
        assert!(e.to_string().contains("left the placement"), "{e}");
        let done = AnyOperation::Migrate(migrate("m1", Some(OperationPhase::Succeeded)));
        let (write, note) = abort_decision(&done, Some(&v)).unwrap();
        assert!(!write);
        assert!(note.contains("already ended (Succeeded"), "{note}");
        let pending = AnyOperation::Migrate(migrate("m1", None));
        let (write, note) = abort_decision(&pending, None).unwrap();
        assert!(write);
        assert!(note.contains("has not started"), "{note}");
    }

    #[test]
    fn kinds_parse_by_every_name() {
        for k in ["migrate", "lvmigrate", "LocalVolumeMigrate"] {
            assert_eq!(parse_kind(k), Some(OperationKind::Migrate));
        }
        assert_eq!(parse_kind("expand"), Some(OperationKind::Expand));
        assert_eq!(parse_kind("convert"), Some(OperationKind::Convert));
        assert_eq!(parse_kind("move"), None);
    }
}
