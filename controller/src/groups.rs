//! Volume groups, maintained from the pods and the volumes' claims (see
//! [`hwameistor_core::group`]): one LocalVolumeGroup per set of volumes pods use together,
//! its members labelled with it, its state saying whether they are placed together. A pass
//! runs every `--group-interval` while this controller leads.

use crate::volume_reconciler::Context;
use hwameistor_api::{LocalVolume, LocalVolumeGroup, LABEL_VOLUME_GROUP};
use hwameistor_core::group::{desired_groups, label_changes};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Label on the groups this controller maintains (with the scope's value when scoped), so a
/// controller removes only groups it made.
pub const LABEL_MANAGED: &str = "hwameistor.io/group-managed-by";

fn managed_value(ctx: &Context) -> String {
    ctx.scope
        .as_ref()
        .map(|s| s.selector())
        .map(|s| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(63)
                .collect::<String>()
                .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "controller".into())
}

/// What one pass changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub relabelled: usize,
}

/// One pass: groups created, updated and removed, volumes (re)labelled.
pub async fn reconcile_once(ctx: &Context) -> Result<Pass, kube::Error> {
    let client = ctx.client.clone();
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut volumes = Api::<LocalVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    if let Some(nodes) = ctx.scoped_nodes().await? {
        // A scoped controller groups only volumes on its own nodes.
        volumes.retain(|v| {
            v.spec.accessibility.nodes.iter().any(|n| nodes.contains(n))
                || v.spec
                    .config
                    .iter()
                    .flat_map(|c| c.replicas.iter())
                    .any(|a| nodes.contains(&a.hostname))
        });
    }
    let managed = managed_value(ctx);
    let mut want = desired_groups(&pods, &volumes);
    for g in &mut want {
        g.metadata.labels = Some([(LABEL_MANAGED.to_string(), managed.clone())].into());
    }
    let api: Api<LocalVolumeGroup> = Api::all(client.clone());
    let have = api
        .list(&ListParams::default().labels(&format!("{LABEL_MANAGED}={managed}")))
        .await?
        .items;
    let mut pass = Pass::default();
    let wanted: BTreeSet<String> = want.iter().map(|g| g.name_any()).collect();
    for g in &want {
        let name = g.name_any();
        match have.iter().find(|h| h.name_any() == name) {
            None => {
                api.create(&PostParams::default(), g).await?;
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "status": g.status })),
                )
                .await?;
                tracing::info!(group = %name, volumes = g.spec.volumes.len(), "volume group created");
                pass.created += 1;
            }
            Some(h) => {
                let mut changed = false;
                if h.spec != g.spec {
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "spec": g.spec })),
                    )
                    .await?;
                    changed = true;
                }
                if h.status != g.status {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "status": g.status })),
                    )
                    .await?;
                    changed = true;
                }
                pass.updated += usize::from(changed);
            }
        }
    }
    for h in have.iter().filter(|h| !wanted.contains(&h.name_any())) {
        match api.delete(&h.name_any(), &DeleteParams::default()).await {
            Ok(_) => pass.deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let volumes_api: Api<LocalVolume> = Api::all(client);
    for (volume, label) in label_changes(&volumes, &want) {
        let patch = serde_json::json!({ "metadata": { "labels": { LABEL_VOLUME_GROUP: label } } });
        match volumes_api
            .patch(&volume, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => pass.relabelled += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pass)
}

/// Keeps the groups up to date every `every`, for as long as it runs.
pub async fn run(ctx: Arc<Context>, every: Duration) {
    loop {
        match reconcile_once(&ctx).await {
            Ok(p) if p != Pass::default() => tracing::debug!(?p, "volume groups updated"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "volume groups pass failed; retrying"),
        }
        tokio::time::sleep(every).await;
    }
}
