//! CSI snapshots (CreateSnapshot, DeleteSnapshot, ListSnapshots) as LocalVolumeSnapshot
//! objects: the service writes the object and waits for the snapshot's node agent to take
//! it; it never touches a node.
//!
//! A snapshot's id is its object's name: [`volume_object_name`] of the CSI name (the
//! external-snapshotter's `snapshot-<uid>` names start with a prefix LVM reserves, so they
//! map to a readable prefix and a hash), the CSI name kept in [`ANNOTATION_CSI_NAME`] so
//! two names never share one snapshot. A volume with snapshots is not deleted
//! (FAILED_PRECONDITION): its snapshots live beside it and would go with it.

use crate::controller::{deadline, require};
use crate::csi::*;
use crate::errors::{invalid, kube_status, missing, not_found, precondition};
use hwameistor_api::snapshot::ANNOTATION_VOLUME_SNAPSHOT;
use hwameistor_api::volume::ANNOTATION_CSI_NAME;
use hwameistor_api::{LocalVolume, LocalVolumeSnapshot, LocalVolumeSnapshotSpec, SnapshotState};
use hwameistor_core::naming::{is_plain_volume_name, volume_object_name};
use hwameistor_core::snapshot::{cow_bytes, source_node};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// VolumeSnapshotClass parameter: copy-on-write space of a thick volume's snapshot, a
/// percentage (`"25%"`) of the space that never overflows (the volume's size and the
/// snapshot's bookkeeping, the default) or a size (`"2Gi"`).
pub const PARAM_COW_SIZE: &str = "cowSize";
/// Keys the CSI sidecars own (`--extra-create-metadata` adds the VolumeSnapshot's name).
const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";

/// The csi-snapshotter's parameters naming the VolumeSnapshot a snapshot is taken for.
const PARAM_VS_NAME: &str = "csi.storage.k8s.io/volumesnapshot/name";
const PARAM_VS_NAMESPACE: &str = "csi.storage.k8s.io/volumesnapshot/namespace";

/// The VolumeSnapshot (`namespace/name`) a CreateSnapshot is for, when the sidecar says.
pub fn volume_snapshot_of(params: &HashMap<String, String>) -> Option<String> {
    Some(format!(
        "{}/{}",
        params.get(PARAM_VS_NAMESPACE)?,
        params.get(PARAM_VS_NAME)?
    ))
}

/// The snapshot parameters: only `cowSize`, and the sidecars' own keys (ignored).
pub fn parse_params(params: &HashMap<String, String>) -> Result<Option<String>, Status> {
    let mut cow = None;
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    for k in keys {
        match k.as_str() {
            PARAM_COW_SIZE => cow = Some(params[k].clone()),
            k if k.starts_with(SIDECAR_PREFIX) => {}
            _ => {
                return Err(invalid(format!(
                "unknown VolumeSnapshotClass parameter {k:?}; known parameters: {PARAM_COW_SIZE}"
            )))
            }
        }
    }
    Ok(cow)
}

/// The CSI answer for snapshot object `s`.
pub fn snapshot_message(s: &LocalVolumeSnapshot) -> Snapshot {
    let st = s.status.clone().unwrap_or_default();
    Snapshot {
        size_bytes: s.spec.source_capacity_bytes,
        snapshot_id: s.name_any(),
        source_volume_id: s.spec.source_volume.clone(),
        creation_time: st
            .creation_time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| prost_types::Timestamp {
                seconds: t.as_second(),
                nanos: t.subsec_nanosecond(),
            }),
        ready_to_use: st.ready_to_use,
        group_snapshot_id: String::new(),
    }
}

fn csi_name_of(s: &LocalVolumeSnapshot) -> String {
    s.annotations()
        .get(ANNOTATION_CSI_NAME)
        .cloned()
        .unwrap_or_else(|| s.name_any())
}

/// One page of `all` (sorted by id) from `starting_token` (an index handed out by an
/// earlier page), at most `max_entries` (0: all); the next token, empty at the end.
pub fn page<T: Clone>(
    all: &[T],
    starting_token: &str,
    max_entries: i32,
) -> Result<(Vec<T>, String), Status> {
    let start: usize = if starting_token.is_empty() {
        0
    } else {
        starting_token
            .parse()
            .ok()
            .filter(|i| *i <= all.len())
            .ok_or_else(|| {
                Status::new(
                    Code::Aborted,
                    format!("starting_token {starting_token:?} is not one this driver handed out (or the list shrank); list again from the start"),
                )
            })?
    };
    if max_entries < 0 {
        return Err(invalid("max_entries must not be negative"));
    }
    let end = if max_entries == 0 {
        all.len()
    } else {
        (start + max_entries as usize).min(all.len())
    };
    let next = if end < all.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((all[start..end].to_vec(), next))
}

/// The snapshot RPCs of the controller service.
pub struct Snapshots {
    client: Client,
    timeout: Duration,
}

impl Snapshots {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Snapshots { client, timeout }
    }

    fn api(&self) -> Api<LocalVolumeSnapshot> {
        Api::all(self.client.clone())
    }

    /// Snapshot `id` (its object's name), if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<LocalVolumeSnapshot>, Status> {
        if !is_plain_volume_name(id) {
            return Ok(None);
        }
        self.api()
            .get_opt(id)
            .await
            .map_err(|e| kube_status("reading LocalVolumeSnapshot", e))
    }

    /// The snapshots of volume `volume` (by its id).
    pub async fn of_volume(&self, volume: &str) -> Result<Vec<LocalVolumeSnapshot>, Status> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|s| s.spec.source_volume == volume)
            .collect())
    }

    async fn list(&self) -> Result<Vec<LocalVolumeSnapshot>, Status> {
        let mut all = self
            .api()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_status("listing LocalVolumeSnapshots", e))?
            .items;
        all.sort_by_key(|s| s.name_any());
        Ok(all)
    }

    pub async fn create(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let limit = deadline(&request, self.timeout);
        let req = request.into_inner();
        require("name", &req.name)?;
        require("source_volume_id", &req.source_volume_id)?;
        let cow_param = parse_params(&req.parameters)?;
        let done = self
            .take(
                &req.name,
                &req.source_volume_id,
                cow_param,
                volume_snapshot_of(&req.parameters),
                limit,
            )
            .await?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_message(&done)),
        }))
    }

    /// Takes snapshot `name` (a CSI name) of volume `source` and waits until its node's
    /// agent took it (`limit`): the snapshot, ready to use. A repeated call finds it again;
    /// a failed one is removed (FAILED_PRECONDITION with the agent's reason).
    /// `volume_snapshot` (`namespace/name`) is recorded on it for the scheduler extender.
    pub async fn take(
        &self,
        name: &str,
        source: &str,
        cow_param: Option<String>,
        volume_snapshot: Option<String>,
        limit: Duration,
    ) -> Result<LocalVolumeSnapshot, Status> {
        let req = CreateSnapshotRequest {
            name: name.to_string(),
            source_volume_id: source.to_string(),
            ..Default::default()
        };
        let object = volume_object_name(&req.name);
        let api = self.api();
        let existing = api
            .get_opt(&object)
            .await
            .map_err(|e| kube_status("reading LocalVolumeSnapshot", e))?;
        let snap = match existing {
            Some(s) => {
                if csi_name_of(&s) != req.name || s.spec.source_volume != req.source_volume_id {
                    return Err(Status::new(
                        Code::AlreadyExists,
                        format!(
                            "snapshot name {:?} is taken by a snapshot of volume {} (named {:?})",
                            req.name,
                            s.spec.source_volume,
                            csi_name_of(&s)
                        ),
                    ));
                }
                s
            }
            None => {
                let volume = self.source(&req.source_volume_id).await?;
                let node = source_node(&volume).map_err(precondition)?;
                let bytes = volume.spec.required_capacity_bytes;
                let cow = if volume.spec.thin {
                    if cow_param.is_some() {
                        return Err(invalid(format!(
                            "volume {} is thin: its snapshots share its thin pool and take no {PARAM_COW_SIZE}; use a VolumeSnapshotClass without it",
                            req.source_volume_id
                        )));
                    }
                    None
                } else {
                    Some(cow_bytes(bytes, cow_param.as_deref()).map_err(invalid)?)
                };
                let mut s = LocalVolumeSnapshot::new(
                    &object,
                    LocalVolumeSnapshotSpec {
                        source_volume: req.source_volume_id.clone(),
                        node_name: node,
                        pool_name: volume.spec.pool_name.clone(),
                        source_capacity_bytes: bytes,
                        cow_capacity_bytes: cow,
                    },
                );
                let mut notes = BTreeMap::new();
                if object != req.name {
                    notes.insert(ANNOTATION_CSI_NAME.to_string(), req.name.clone());
                }
                if let Some(vs) = &volume_snapshot {
                    notes.insert(ANNOTATION_VOLUME_SNAPSHOT.to_string(), vs.clone());
                }
                if !notes.is_empty() {
                    s.metadata.annotations = Some(notes);
                }
                match api.create(&PostParams::default(), &s).await {
                    Ok(s) => {
                        tracing::info!(snapshot = %object, volume = %req.source_volume_id, "LocalVolumeSnapshot created");
                        s
                    }
                    // A concurrent call made it: judge that one on the next call.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Err(Status::new(
                            Code::Aborted,
                            format!("snapshot {object} is being created by another call; retry"),
                        ))
                    }
                    Err(e) => return Err(kube_status("creating LocalVolumeSnapshot", e)),
                }
            }
        };
        let settled = |s: Option<&LocalVolumeSnapshot>| {
            s.is_none_or(|s| {
                let st = s.status.as_ref();
                st.is_some_and(|st| st.ready_to_use || st.state == Some(SnapshotState::Failed))
                    || s.metadata.deletion_timestamp.is_some()
            })
        };
        let done = match tokio::time::timeout(limit, await_condition(api.clone(), &object, settled))
            .await
        {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => {
                return Err(Status::new(
                    Code::Aborted,
                    format!("snapshot {object} was deleted while being taken"),
                ))
            }
            Ok(Err(e)) => {
                return Err(Status::new(
                    Code::Unavailable,
                    format!("watching LocalVolumeSnapshot {object}: {e}"),
                ))
            }
            Err(_) => {
                // Not taken yet: say so (the sidecar asks again); what the agent said, if
                // anything, is the reason.
                let now = api.get_opt(&object).await.ok().flatten().unwrap_or(snap);
                let why = now
                    .status
                    .and_then(|s| s.message)
                    .unwrap_or_else(|| "its node's agent has not taken it yet".into());
                return Err(Status::new(
                    Code::DeadlineExceeded,
                    format!("snapshot {object} is not taken after {limit:?}: {why}"),
                ));
            }
        };
        if done.metadata.deletion_timestamp.is_some() {
            return Err(Status::new(
                Code::Aborted,
                format!("snapshot {object} is being deleted"),
            ));
        }
        let st = done.status.clone().unwrap_or_default();
        if st.state == Some(SnapshotState::Failed) {
            // A failed snapshot holds nothing usable: remove it so a retry starts afresh.
            let why = st.message.unwrap_or_default();
            self.delete_and_wait(&done, limit).await?;
            return Err(precondition(format!(
                "snapshot of {} failed: {why}",
                req.source_volume_id
            )));
        }
        Ok(done)
    }

    async fn source(&self, id: &str) -> Result<LocalVolume, Status> {
        let missing_volume = || not_found(format!("volume {id} does not exist"));
        if !is_plain_volume_name(id) {
            return Err(missing_volume());
        }
        Api::<LocalVolume>::all(self.client.clone())
            .get_opt(id)
            .await
            .map_err(|e| kube_status("reading LocalVolume", e))?
            .ok_or_else(missing_volume)
    }

    async fn delete_and_wait(
        &self,
        s: &LocalVolumeSnapshot,
        limit: Duration,
    ) -> Result<(), Status> {
        let name = s.name_any();
        let api = self.api();
        if s.metadata.deletion_timestamp.is_none() {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(kube_status("deleting LocalVolumeSnapshot", e)),
            }
        }
        let uid = s.metadata.uid.clone().unwrap_or_default();
        match tokio::time::timeout(limit, await_condition(api, &name, conditions::is_deleted(&uid))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Status::new(Code::Unavailable, format!("watching LocalVolumeSnapshot {name}: {e}"))),
            Err(_) => Err(Status::new(
                Code::DeadlineExceeded,
                format!("snapshot {name} is still being deleted after {limit:?} (its node's agent removes it)"),
            )),
        }
    }

    pub async fn delete(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let limit = deadline(&request, self.timeout);
        let req = request.into_inner();
        if req.snapshot_id.is_empty() {
            return Err(missing("snapshot_id"));
        }
        // Every id handed out is a plain name: any other names nothing (deleted already).
        if !is_plain_volume_name(&req.snapshot_id) {
            return Ok(Response::new(DeleteSnapshotResponse {}));
        }
        let found = self
            .api()
            .get_opt(&req.snapshot_id)
            .await
            .map_err(|e| kube_status("reading LocalVolumeSnapshot", e))?;
        if let Some(s) = found {
            self.delete_and_wait(&s, limit).await?;
            tracing::info!(snapshot = %req.snapshot_id, "LocalVolumeSnapshot deleted");
        }
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    pub async fn list_rpc(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        let all: Vec<Snapshot> = self
            .list()
            .await?
            .iter()
            .filter(|s| req.snapshot_id.is_empty() || s.name_any() == req.snapshot_id)
            .filter(|s| {
                req.source_volume_id.is_empty() || s.spec.source_volume == req.source_volume_id
            })
            .map(snapshot_message)
            .collect();
        let (entries, next_token) = page(&all, &req.starting_token, req.max_entries)?;
        Ok(Response::new(ListSnapshotsResponse {
            entries: entries
                .into_iter()
                .map(|s| list_snapshots_response::Entry { snapshot: Some(s) })
                .collect(),
            next_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_their_tokens_to_the_end() {
        let all: Vec<i32> = (0..5).collect();
        assert_eq!(page(&all, "", 2).unwrap(), (vec![0, 1], "2".into()));
        assert_eq!(page(&all, "2", 2).unwrap(), (vec![2, 3], "4".into()));
        assert_eq!(page(&all, "4", 2).unwrap(), (vec![4], String::new()));
        assert_eq!(page(&all, "", 0).unwrap(), (all.clone(), String::new()));
        assert_eq!(page(&all, "5", 3).unwrap(), (vec![], String::new()));
        assert_eq!(page(&all, "6", 1).unwrap_err().code(), Code::Aborted);
        assert_eq!(page(&all, "x", 1).unwrap_err().code(), Code::Aborted);
        assert_eq!(
            page(&all, "", -1).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn only_cow_size_and_the_sidecars_keys_are_parameters() {
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(parse_params(&p(&[])).unwrap(), None);
        assert_eq!(
            parse_params(&p(&[
                ("cowSize", "25%"),
                ("csi.storage.k8s.io/volumesnapshot/name", "s")
            ]))
            .unwrap(),
            Some("25%".into())
        );
        let e = parse_params(&p(&[("snapsize", "1Gi")])).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("\"snapsize\""), "{e}");
    }
}
