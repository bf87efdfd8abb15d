//! The evictor: when a node is cordoned (`kubectl drain`, `kubectl cordon`), every volume
//! with a replica there gets a LocalVolumeMigrate off it; when it is uncordoned, the
//! evictor's unfinished migrations are aborted. Decisions in
//! [`hwameistor_core::operation::evict`]; what could not move, and why, is reported as
//! Events on the Node (each time the report changes) and in the migrations' status.
//!
//! Volumes whose pods still run on the node wait in their migration (Pending, "in use on
//! ...") until the drain evicts the pods; the migrations then move them.

use crate::volume_reconciler::Context;
use hwameistor_api::{LocalVolume, LocalVolumeMigrate};
use hwameistor_core::operation::evict::{self, EvictStep, Report};
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One pass over every node. Returns the reports of the cordoned nodes.
pub async fn check_once(ctx: &Context) -> Result<Vec<(String, Report)>, kube::Error> {
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let in_scope = ctx.scoped_nodes().await?;
    let volumes = Api::<LocalVolume>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let migrations_api: Api<LocalVolumeMigrate> = Api::all(ctx.client.clone());
    let migrations = migrations_api.list(&ListParams::default()).await?.items;
    let mut reports = Vec::new();
    for n in &nodes {
        let name = n.name_any();
        if in_scope.as_ref().is_some_and(|s| !s.contains(&name)) {
            continue;
        }
        let view = evict::NodeView {
            name: name.clone(),
            unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true),
            labels: n.labels().clone(),
        };
        let mut made = Vec::new();
        for step in evict::plan(&view, &volumes, &migrations) {
            match step {
                EvictStep::Create(m) => {
                    match migrations_api.create(&PostParams::default(), &m).await {
                        Ok(created) => {
                            made.push(created);
                            tracing::info!(node = %name, volume = %m.spec.volume_name, "node cordoned: migrating its replica off");
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                EvictStep::Abort(op) => {
                    let patch = serde_json::json!({ "spec": { "abort": true } });
                    match migrations_api
                        .patch(&op, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(node = %name, operation = %op, "node schedulable again: aborting its migration")
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if view.unschedulable {
            let all: Vec<LocalVolumeMigrate> = migrations.iter().cloned().chain(made).collect();
            reports.push((name.clone(), evict::report(&name, &volumes, &all)));
        }
    }
    Ok(reports)
}

fn describe(r: &Report) -> String {
    let mut parts = vec![format!("{} moved", r.moved)];
    if !r.moving.is_empty() {
        parts.push(format!(
            "{} moving ({})",
            r.moving.len(),
            r.moving
                .iter()
                .map(|(m, s)| format!("{m}: {s}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !r.stuck.is_empty() {
        parts.push(format!(
            "{} could not be moved ({})",
            r.stuck.len(),
            r.stuck
                .iter()
                .map(|(m, s)| format!("{m}: {s}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    parts.join(", ")
}

/// Runs the evictor every `tick` until the future is dropped.
pub async fn run(ctx: Arc<Context>, tick: Duration) {
    let mut last: HashMap<String, Report> = HashMap::new();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    loop {
        match check_once(&ctx).await {
            Ok(reports) => {
                for (node, r) in reports {
                    if last.get(&node) == Some(&r) {
                        continue;
                    }
                    let note = describe(&r);
                    tracing::info!(node = %node, report = %note, "evictor");
                    if let Ok(Some(n)) = nodes.get_opt(&node).await {
                        let ev = Event {
                            type_: if r.stuck.is_empty() {
                                EventType::Normal
                            } else {
                                EventType::Warning
                            },
                            reason: "VolumeEviction".into(),
                            note: Some(note.chars().take(1000).collect()),
                            action: "Migrate".into(),
                            secondary: None,
                        };
                        if let Err(e) = ctx.recorder.publish(&ev, &n.object_ref(&())).await {
                            tracing::debug!(error = %e, "could not publish event");
                        }
                    }
                    last.insert(node, r);
                }
            }
            Err(e) => tracing::warn!(error = %e, "evictor pass failed; retrying"),
        }
        tokio::time::sleep(tick).await;
    }
}
