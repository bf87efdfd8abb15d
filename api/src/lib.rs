//! Custom resources shared by every HwameiStor component.
//!
//! The resources are the only contract between the parts of the system: the node agent, the
//! controller, the CSI driver and the `kubectl hwameistor` plugin all read and write these types
//! and never talk to each other directly. Every resource is cluster-scoped, lives in group
//! `hwameistor.io` version `v1alpha1` and has a status subresource, so that what a user or the
//! controller wants (spec) is kept apart from what an agent observed (status).

pub mod claim;
#[cfg(feature = "client")]
pub mod client;
pub mod common;
pub mod crds;
pub mod disk;
pub mod disk_volume;
pub mod duration;
pub mod group;
pub mod node;
pub mod operation;
pub mod quantity;
pub mod replica;
pub mod snapshot;
pub mod volume;

pub use claim::{
    disk_unavailability, ClaimPhase, DiskSelector, LocalDiskClaim, LocalDiskClaimSpec,
    LocalDiskClaimStatus,
};
pub use common::*;
pub use disk::{
    DiskPhase, DiskPresence, DiskType, IdentitySource, LocalDisk, LocalDiskSpec, LocalDiskStatus,
    PartitionInfo,
};
pub use disk_volume::{
    DiskVolumeState, LocalDiskVolume, LocalDiskVolumeSpec, LocalDiskVolumeStatus, WipePolicy,
};
pub use group::{
    GroupMember, GroupState, LocalVolumeGroup, LocalVolumeGroupSpec, LocalVolumeGroupStatus,
    LABEL_VOLUME_GROUP,
};
pub use node::{
    LocalStorageNode, LocalStorageNodeSpec, LocalStorageNodeStatus, MoverEndpoint, NodeState,
    PoolDisk, PoolStatus, ThinPoolStatus,
};
pub use operation::{
    LocalVolumeConvert, LocalVolumeConvertSpec, LocalVolumeExpand, LocalVolumeExpandSpec,
    LocalVolumeMigrate, LocalVolumeMigrateSpec, OperationKind, OperationPhase, OperationProgress,
    OperationRef, OperationStatus, LABEL_GROUP_OPERATION,
};
pub use replica::{
    CopySource, CopyStatus, LocalVolumeReplica, LocalVolumeReplicaSpec, LocalVolumeReplicaStatus,
    ReplicaState, ReplicationPeer, ReplicationSpec, ReplicationStatus,
};
pub use snapshot::{
    LocalVolumeSnapshot, LocalVolumeSnapshotSpec, LocalVolumeSnapshotStatus, SnapshotState,
    FINALIZER_SNAPSHOT,
};
pub use volume::{
    Accessibility, HaState, LocalVolume, LocalVolumeSpec, LocalVolumeStatus, ReplicaAssignment,
    SplitBrainResolution, VolumeConfig, VolumeDataSource, VolumeKind, VolumeState,
};
