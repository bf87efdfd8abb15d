//! The HwameiStor scheduler extender: kube-scheduler (the `hwameistor-scheduler` profile)
//! asks it which nodes a pod with HwameiStor volumes may run on and how well each suits it.
//!
//! - [`protocol`]: the upstream extender wire types.
//! - [`cache`]: watch caches of the objects the decisions read.
//! - [`claims`]: what a pod asks of storage.
//! - [`extender`]: `filter` / `prioritize` / `bind`, and the room held for pods
//!   (decisions in `hwameistor_core::scheduling`).
//! - [`admission`]: the admission webhook (pods get the hwameistor-scheduler; cross-field
//!   checks of HwameiStor's resources).
//! - [`server`]: the HTTP(S) endpoint of both.

pub mod admission;
pub mod cache;
pub mod claims;
pub mod extender;
pub mod protocol;
pub mod server;
