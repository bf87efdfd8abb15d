//! The HwameiStor cluster controller.
//!
//! It places LocalVolumes on nodes ([`placement`], pure), drives them through their life
//! ([`volume_state`], pure) by creating, growing and deleting their LocalVolumeReplicas
//! ([`volume_reconciler`]), takes a Lease so only one instance acts at a time ([`leader`]),
//! and reports what it does ([`metrics`], Kubernetes Events). The binary also serves the
//! CSI identity and controller services from `hwameistor-csi`.

pub mod leader;
pub mod metrics;
pub mod placement;
pub mod volume_reconciler;
pub mod volume_state;
