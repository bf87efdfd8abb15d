//! The HwameiStor node agent.
//!
//! It runs on every storage node and is the only component that touches the node's disks:
//! it discovers disks and publishes them as LocalDisks, binds disks to LocalDiskClaims and
//! grows the node's pools, executes LocalVolumeReplicas as logical volumes, and reports its
//! pools in the node's LocalStorageNode. Decisions are pure functions ([`disks`] here; claims,
//! replicas and pools in `hwameistor-core`); host commands go through [`exec`]; the
//! reconcilers glue the two.

pub mod claim_controller;
pub mod context;
pub mod crash;
pub mod discovery;
pub mod disk_publish;
pub mod disk_volume_controller;
pub mod disks;
pub mod ha;
pub mod heartbeat;
pub mod helper_socket;
pub use hwameistor_hostexec as exec;
pub mod lvm;
pub mod mover;
pub mod replica_controller;
pub mod scanner;
pub mod snapshot_controller;
