//! The LocalDiskVolume reconciler: binds a whole disk to each raw-disk volume and gives it
//! back once its agent wiped it (decisions in [`hwameistor_core::disk_volume`]).
//!
//! A disk is bound by a compare-and-swap on the LocalDisk (its resourceVersion as read), so
//! two volumes, or a volume and a pool's claim, never both get it: the loser reads again and
//! chooses another disk.

use crate::volume_reconciler::Context;
use futures::StreamExt;
use hwameistor_api::{LocalDisk, LocalDiskVolume, ObjectRef, FINALIZER_DISK_VOLUME};
use hwameistor_core::disk_volume::{awaits_disk, controller_step, waiting_needs, BindStep};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef as Ref;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DiskVolumeError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
}

/// How often a volume waiting for a disk looks again (a new disk also wakes it).
const PENDING_RETRY: Duration = Duration::from_secs(30);

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

/// Brings one volume a step at a time to where it should be.
pub async fn reconcile(
    v: Arc<LocalDiskVolume>,
    ctx: Arc<Context>,
) -> Result<Action, DiskVolumeError> {
    let api: Api<LocalDiskVolume> = Api::all(ctx.client.clone());
    let disks_api: Api<LocalDisk> = Api::all(ctx.client.clone());
    let name = v.name_any();
    for _ in 0..8 {
        let Some(v) = api.get_opt(&name).await? else {
            return Ok(Action::await_change());
        };
        if let Some(nodes) = ctx.scoped_nodes().await? {
            if !nodes.contains(&v.spec.node_name) {
                return Ok(Action::await_change());
            }
        }
        let on_node = ListParams::default().fields(&format!("spec.nodeName={}", v.spec.node_name));
        let disks = disks_api.list(&on_node).await?.items;
        // Only a volume still to be bound needs to know who else waits on its node.
        let waiting = if awaits_disk(&v, &disks) {
            waiting_needs(&v, &api.list(&on_node).await?.items, &disks)
        } else {
            Vec::new()
        };
        let step = controller_step(&v, &disks, &waiting);
        tracing::debug!(volume = %name, ?step, "disk volume step");
        let done = match step {
            BindStep::Wait => {
                let pending = v.status.as_ref().and_then(|s| s.state)
                    == Some(hwameistor_api::DiskVolumeState::Pending);
                return Ok(if pending {
                    Action::requeue(PENDING_RETRY)
                } else {
                    Action::await_change()
                });
            }
            BindStep::AddFinalizer | BindStep::RemoveFinalizer => {
                let mut f: Vec<String> = v
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER_DISK_VOLUME)
                    .cloned()
                    .collect();
                let remove = step == BindStep::RemoveFinalizer;
                if !remove {
                    f.push(FINALIZER_DISK_VOLUME.into());
                }
                let patch = serde_json::json!({ "metadata": { "finalizers": f, "resourceVersion": v.metadata.resource_version } });
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                remove
            }
            BindStep::Bind(disk) => {
                let Some(d) = disks.iter().find(|d| d.name_any() == disk) else {
                    continue;
                };
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": d.metadata.resource_version },
                    "spec": { "volumeRef": ObjectRef { name: name.clone(), uid: v.uid().unwrap_or_default() } },
                });
                match disks_api
                    .patch(&disk, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(volume = %name, %disk, "disk bound to volume");
                        ctx.event(&v, false, "DiskBound", "Bind", format!("disk {disk} bound"))
                            .await;
                    }
                    // Changed since read (another volume or a claim took it): choose again.
                    Err(e) if conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                false
            }
            BindStep::Status(st) => {
                let mut next = v.clone();
                next.status = Some(*st);
                match api
                    .replace_status(&name, &PostParams::default(), &next)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                false
            }
            BindStep::Release(disk) => {
                let Some(d) = disks.iter().find(|d| d.name_any() == disk) else {
                    continue;
                };
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": d.metadata.resource_version },
                    "spec": { "volumeRef": null },
                });
                match disks_api
                    .patch(&disk, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(volume = %name, %disk, "wiped disk given back");
                        ctx.event(
                            &v,
                            false,
                            "DiskReleased",
                            "Release",
                            format!("disk {disk} wiped and given back"),
                        )
                        .await;
                    }
                    Err(e) if conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                false
            }
        };
        if done {
            return Ok(Action::await_change());
        }
    }
    Ok(Action::requeue(Duration::from_millis(200)))
}

fn error_policy(v: Arc<LocalDiskVolume>, err: &DiskVolumeError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(volume = %v.name_any(), error = %err, "disk volume reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs until the future is dropped. A change of a disk wakes the volume it is bound to and
/// the volumes of its node still waiting for one.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<LocalDiskVolume> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(
            Api::<LocalDisk>::all(ctx.client.clone()),
            watcher::Config::default(),
            move |d: LocalDisk| {
                let bound = d.spec.volume_ref.as_ref().map(|r| r.name.clone());
                let node = d.spec.node_name.clone();
                store
                    .state()
                    .into_iter()
                    .filter(|v| {
                        Some(v.name_any()) == bound
                            || (v.spec.node_name == node
                                && v.status
                                    .as_ref()
                                    .and_then(|s| s.local_disk_name.as_ref())
                                    .is_none())
                    })
                    .map(|v| Ref::from_obj(v.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "disk volume controller event");
            }
        })
        .await;
}
