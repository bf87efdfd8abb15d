//! Volumes restored from a snapshot (a PVC's dataSource; a clone is restored from a
//! snapshot taken for it): whether a request can be served, where the restored replica's
//! data comes from, and when the restore is over. Pure.
//!
//! The restored volume's one replica is placed on the snapshot's node when it has room
//! (its assignment's `copyFrom` names that node): there, a thin snapshot becomes a thin
//! volume by LVM alone; anywhere else, and for a thick snapshot, the block mover copies the
//! snapshot's device into the new volume and verifies the digest of both ends. The replica
//! is not Ready, and the volume not usable, before. Once it is, the controller clears the
//! assignment's `copyFrom`, and removes a snapshot that was taken only for a clone.

use crate::replica::copy_done;
use hwameistor_api::{
    CopySource, LocalVolume, LocalVolumeReplica, LocalVolumeSnapshot, LocalVolumeSpec,
    SnapshotState, VolumeConfig, VolumeDataSource,
};

/// Why a restore cannot be served as asked; each maps to its CSI code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreRefusal {
    /// The request contradicts the source (INVALID_ARGUMENT).
    Invalid(String),
    /// The volume asked for is smaller than the data (OUT_OF_RANGE).
    TooSmall(String),
    /// The snapshot is not readable yet, or any more (UNAVAILABLE: the CO retries).
    NotReady(String),
}

/// Why a volume of `spec` cannot be restored into, whatever the source: only one-replica
/// volumes are (an HA volume's second replica would need the data before its initial
/// sync, which is not built).
pub fn check_spec(spec: &LocalVolumeSpec) -> Result<(), String> {
    if spec.replica_number > 1 {
        return Err(format!(
            "restoring into a volume of {} replicas is not built yet: restore into a one-replica convertible volume, then convert it (kubectl hwameistor volume convert)",
            spec.replica_number
        ));
    }
    Ok(())
}

/// The data source a volume of `spec` restored from snapshot `s` records, or why it cannot
/// be made. `source` is the volume the snapshot was taken of, when it still exists (it
/// tells the filesystem); `clone_of` names the volume cloned when the snapshot was taken
/// for a clone.
pub fn data_source(
    spec: &LocalVolumeSpec,
    s: &LocalVolumeSnapshot,
    source: Option<&LocalVolume>,
    clone_of: Option<&str>,
) -> Result<VolumeDataSource, RestoreRefusal> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let status = s.status.clone().unwrap_or_default();
    if s.metadata.deletion_timestamp.is_some() {
        return Err(RestoreRefusal::NotReady(format!(
            "snapshot {name} is being deleted"
        )));
    }
    if status.state == Some(SnapshotState::Failed) {
        return Err(RestoreRefusal::Invalid(format!(
            "snapshot {name} failed ({}); it cannot be restored",
            status.message.unwrap_or_default()
        )));
    }
    if !status.ready_to_use {
        return Err(RestoreRefusal::NotReady(format!(
            "snapshot {name} is not ready to use yet"
        )));
    }
    check_spec(spec).map_err(RestoreRefusal::Invalid)?;
    if spec.required_capacity_bytes < s.spec.source_capacity_bytes {
        return Err(RestoreRefusal::TooSmall(format!(
            "snapshot {name} holds {} bytes; the volume asked for is {} bytes (a restore may be equal or larger)",
            s.spec.source_capacity_bytes, spec.required_capacity_bytes
        )));
    }
    if let Some(v) = source {
        if v.spec.fs_type != spec.fs_type {
            let what = |fs: &Option<String>| match fs {
                Some(f) => format!("an {f} filesystem"),
                None => "a raw block volume".to_string(),
            };
            return Err(RestoreRefusal::Invalid(format!(
                "snapshot {name} holds {} (volume {}); the volume asked for is {}",
                what(&v.spec.fs_type),
                s.spec.source_volume,
                what(&spec.fs_type)
            )));
        }
    }
    Ok(VolumeDataSource {
        snapshot: name,
        snapshot_uid: s.metadata.uid.clone().unwrap_or_default(),
        node: s.spec.node_name.clone(),
        pool_name: s.spec.pool_name.clone(),
        bytes: s.spec.source_capacity_bytes,
        thin: s.spec.cow_capacity_bytes.is_none(),
        clone_of: clone_of.map(str::to_string),
    })
}

/// The name of the snapshot taken to clone volume `target` (the new volume's object
/// name): one per clone, so a repeated CreateVolume finds it again.
pub fn clone_snapshot_name(target: &str) -> String {
    format!("clone-{target}")
}

/// The nodes placement should try first for volume `spec`: the snapshot's, where a thin
/// restore needs no copy and a thick one no network.
pub fn preferred_nodes(spec: &LocalVolumeSpec) -> Vec<String> {
    spec.data_source.iter().map(|d| d.node.clone()).collect()
}

/// Where the block mover fills the replica on `node` of restored volume `v` from: the
/// assignment names the snapshot's node as its copy source and no operation holds the
/// volume (an operation's copy is the operation's).
pub fn copy_source(v: &LocalVolume, config: &VolumeConfig, node: &str) -> Option<CopySource> {
    if v.spec.operation.is_some() {
        return None;
    }
    let ds = v.spec.data_source.as_ref()?;
    let a = config.replicas.iter().find(|a| a.hostname == node)?;
    (a.copy_from.as_deref() == Some(ds.node.as_str())).then(|| CopySource {
        node: ds.node.clone(),
        operation: ds.snapshot.clone(),
        operation_uid: ds.snapshot_uid.clone(),
        bandwidth_limit_bytes_per_second: None,
        snapshot: Some(ds.snapshot.clone()),
    })
}

/// The placement once restored volume `v`'s replica holds the snapshot's data (its copy
/// verified, or made by LVM): the copy source cleared. `None` while it does not, or when
/// nothing is left to clear.
pub fn finished(
    v: &LocalVolume,
    config: &VolumeConfig,
    replicas: &[LocalVolumeReplica],
) -> Option<VolumeConfig> {
    let src = v.spec.data_source.as_ref()?;
    if v.spec.operation.is_some() {
        return None;
    }
    let mut next = config.clone();
    let mut changed = false;
    for a in next
        .replicas
        .iter_mut()
        .filter(|a| a.copy_from.as_deref() == Some(src.node.as_str()))
    {
        let filled = replicas.iter().any(|r| {
            r.spec.node_name == a.hostname
                && r.metadata.deletion_timestamp.is_none()
                && r.spec
                    .copy_from
                    .as_ref()
                    .and_then(|c| c.snapshot.as_deref())
                    == Some(src.snapshot.as_str())
                && copy_done(r)
        });
        if !filled {
            return None;
        }
        a.copy_from = None;
        changed = true;
    }
    changed.then(|| {
        next.version += 1;
        next
    })
}

/// Whether volume `v` still needs snapshot `snapshot` (its replica is not filled from it
/// yet): the snapshot must not be removed before.
pub fn restoring_from(v: &LocalVolume, snapshot: &str) -> bool {
    let Some(ds) = v
        .spec
        .data_source
        .as_ref()
        .filter(|d| d.snapshot == snapshot)
    else {
        return false;
    };
    if v.metadata.deletion_timestamp.is_some() {
        return false;
    }
    match v.spec.config.as_ref() {
        // Not placed yet: it will read the snapshot.
        None => true,
        Some(c) => c
            .replicas
            .iter()
            .any(|a| a.copy_from.as_deref() == Some(ds.node.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{
        CopyStatus, LocalVolumeReplicaSpec, LocalVolumeReplicaStatus, LocalVolumeSnapshotSpec,
        LocalVolumeSnapshotStatus, OperationRef, ReplicaAssignment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const MI: i64 = 1 << 20;
    const HDD: &str = "LocalStorage_PoolHDD";

    fn snapshot(ready: bool, thin: bool) -> LocalVolumeSnapshot {
        let mut s = LocalVolumeSnapshot::new(
            "s1",
            LocalVolumeSnapshotSpec {
                source_volume: "v1".into(),
                node_name: "n1".into(),
                pool_name: HDD.into(),
                source_capacity_bytes: 256 * MI,
                cow_capacity_bytes: (!thin).then_some(262 * MI),
            },
        );
        s.metadata.uid = Some("uid-s1".into());
        s.status = Some(LocalVolumeSnapshotStatus {
            state: Some(if ready {
                SnapshotState::Ready
            } else {
                SnapshotState::Creating
            }),
            ready_to_use: ready,
            ..Default::default()
        });
        s
    }

    fn source_volume(fs: Option<&str>) -> LocalVolume {
        LocalVolume::new(
            "v1",
            LocalVolumeSpec {
                fs_type: fs.map(str::to_string),
                ..LocalVolumeSpec::single(HDD, 256 * MI)
            },
        )
    }

    fn request(bytes: i64, fs: Option<&str>) -> LocalVolumeSpec {
        LocalVolumeSpec {
            fs_type: fs.map(str::to_string),
            ..LocalVolumeSpec::single(HDD, bytes)
        }
    }

    #[test]
    fn a_restore_records_the_snapshot_its_node_and_its_size() {
        let ds = data_source(
            &request(512 * MI, Some("xfs")),
            &snapshot(true, false),
            Some(&source_volume(Some("xfs"))),
            None,
        )
        .expect("served");
        assert_eq!(
            ds,
            VolumeDataSource {
                snapshot: "s1".into(),
                snapshot_uid: "uid-s1".into(),
                node: "n1".into(),
                pool_name: HDD.into(),
                bytes: 256 * MI,
                thin: false,
                clone_of: None,
            }
        );
        // A clone says which volume it clones; a thin snapshot is recorded thin.
        let ds = data_source(
            &request(256 * MI, None),
            &snapshot(true, true),
            Some(&source_volume(None)),
            Some("v1"),
        )
        .expect("served");
        assert_eq!((ds.thin, ds.clone_of.as_deref()), (true, Some("v1")));
    }

    #[test]
    fn a_restore_is_refused_smaller_unready_failed_replicated_or_of_another_kind() {
        let src = source_volume(Some("xfs"));
        let xfs = request(256 * MI, Some("xfs"));
        let refused = |spec: &LocalVolumeSpec, s: &LocalVolumeSnapshot| {
            data_source(spec, s, Some(&src), None).unwrap_err()
        };
        assert!(matches!(
            refused(&request(128 * MI, Some("xfs")), &snapshot(true, false)),
            RestoreRefusal::TooSmall(m) if m.contains("equal or larger")
        ));
        assert!(matches!(
            refused(&xfs, &snapshot(false, false)),
            RestoreRefusal::NotReady(_)
        ));
        let mut failed = snapshot(false, false);
        if let Some(st) = failed.status.as_mut() {
            st.state = Some(SnapshotState::Failed);
            st.message = Some("invalidated".into());
        }
        assert!(matches!(
            refused(&xfs, &failed),
            RestoreRefusal::Invalid(m) if m.contains("invalidated")
        ));
        let mut going = snapshot(true, false);
        going.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(matches!(refused(&xfs, &going), RestoreRefusal::NotReady(_)));
        let ha = LocalVolumeSpec {
            replica_number: 2,
            ..xfs.clone()
        };
        assert!(matches!(
            refused(&ha, &snapshot(true, false)),
            RestoreRefusal::Invalid(m) if m.contains("convert")
        ));
        assert!(matches!(
            refused(&request(256 * MI, Some("ext4")), &snapshot(true, false)),
            RestoreRefusal::Invalid(m) if m.contains("an xfs filesystem")
        ));
        assert!(matches!(
            refused(&request(256 * MI, None), &snapshot(true, false)),
            RestoreRefusal::Invalid(m) if m.contains("a raw block volume")
        ));
        // The source volume gone: its filesystem is unknown, the restore goes on.
        assert!(data_source(&xfs, &snapshot(true, false), None, None).is_ok());
    }

    fn restored(copy_node: Option<&str>) -> LocalVolume {
        let ds = data_source(
            &request(256 * MI, None),
            &snapshot(true, false),
            Some(&source_volume(None)),
            None,
        )
        .expect("served");
        let mut v = LocalVolume::new(
            "v2",
            LocalVolumeSpec {
                data_source: Some(ds),
                ..request(256 * MI, None)
            },
        );
        v.spec.config = Some(VolumeConfig {
            version: 1,
            required_capacity_bytes: 256 * MI,
            resource_id: -1,
            replicas: vec![ReplicaAssignment {
                id: 1,
                hostname: "n2".into(),
                copy_from: copy_node.map(str::to_string),
                ..Default::default()
            }],
            initial: false,
        });
        v
    }

    fn replica(v: &LocalVolume, copy: Option<CopyStatus>) -> LocalVolumeReplica {
        let config = v.spec.config.clone().unwrap_or_default();
        let mut r = LocalVolumeReplica::new(
            "v2-n2",
            LocalVolumeReplicaSpec {
                volume_name: "v2".into(),
                pool_name: HDD.into(),
                node_name: "n2".into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 256 * MI,
                thin: false,
                replication: None,
                copy_from: copy_source(v, &config, "n2"),
            },
        );
        r.status = Some(LocalVolumeReplicaStatus {
            copy,
            ..Default::default()
        });
        r
    }

    #[test]
    fn the_restored_replica_copies_from_the_snapshot_until_verified_then_the_source_is_cleared() {
        let v = restored(Some("n1"));
        let config = v.spec.config.clone().unwrap_or_default();
        let src = copy_source(&v, &config, "n2").expect("a restore copy");
        assert_eq!(
            (
                src.node.as_str(),
                src.operation.as_str(),
                src.operation_uid.as_str(),
                src.snapshot.as_deref()
            ),
            ("n1", "s1", "uid-s1", Some("s1"))
        );
        assert!(restoring_from(&v, "s1"));
        assert!(!restoring_from(&v, "s2"));
        // Copying, or verified for another snapshot: not finished.
        let copying = CopyStatus {
            operation_uid: "uid-s1".into(),
            bytes_done: 10 * MI,
            bytes_total: 256 * MI,
            ..Default::default()
        };
        assert_eq!(
            finished(&v, &config, &[replica(&v, Some(copying.clone()))]),
            None
        );
        let other = CopyStatus {
            operation_uid: "uid-other".into(),
            verified: true,
            ..copying.clone()
        };
        assert_eq!(finished(&v, &config, &[replica(&v, Some(other))]), None);
        assert_eq!(finished(&v, &config, &[]), None);
        // Verified: the copy source goes, in a new version of the placement.
        let verified = CopyStatus {
            verified: true,
            ..copying
        };
        let next = finished(&v, &config, &[replica(&v, Some(verified.clone()))]).expect("done");
        assert_eq!(
            (next.version, next.replicas[0].copy_from.clone()),
            (2, None)
        );
        // Then nothing is left to do, and the snapshot is free to go.
        let mut done = v.clone();
        done.spec.config = Some(next.clone());
        assert_eq!(finished(&done, &next, &[replica(&v, Some(verified))]), None);
        assert!(!restoring_from(&done, "s1"));
        assert_eq!(copy_source(&done, &next, "n2"), None);
    }

    #[test]
    fn an_operation_owns_the_copy_while_it_holds_a_restored_volume() {
        let mut v = restored(Some("n1"));
        v.spec.operation = Some(OperationRef {
            kind: None,
            name: "m".into(),
            uid: "uid-m".into(),
            bandwidth_limit_bytes_per_second: None,
        });
        let config = v.spec.config.clone().unwrap_or_default();
        assert_eq!(copy_source(&v, &config, "n2"), None);
        assert_eq!(finished(&v, &config, &[]), None);
        // A volume not restored never gets a restore copy.
        let mut plain = restored(Some("n1"));
        plain.spec.data_source = None;
        assert_eq!(copy_source(&plain, &config, "n2"), None);
        assert!(!restoring_from(&plain, "s1"));
    }

    #[test]
    fn placement_prefers_the_snapshots_node() {
        assert_eq!(
            preferred_nodes(&restored(None).spec),
            vec!["n1".to_string()]
        );
        assert!(preferred_nodes(&request(MI, None)).is_empty());
        assert_eq!(clone_snapshot_name("pvc-1"), "clone-pvc-1");
    }
}
