//! The HwameiStor cluster controller.
//!
//! It places LocalVolumes on nodes and drives them through their life by the pure decisions
//! of `hwameistor-core` ([`hwameistor_core::placement`], [`hwameistor_core::volume`]),
//! creating, growing and deleting their LocalVolumeReplicas ([`volume_reconciler`]). It
//! takes a Lease so only one instance acts at a time ([`leader`]) and reports what it does ([`metrics`], Kubernetes Events). The binary also serves the
//! CSI identity and controller services from `hwameistor-csi`.

pub mod disk_volumes;
pub mod evictor;
pub mod failover;
pub mod groups;
pub mod leader;
pub mod metrics;
pub mod operations;
pub mod pool_metrics;
pub mod pv_affinity;
pub mod volume_reconciler;
