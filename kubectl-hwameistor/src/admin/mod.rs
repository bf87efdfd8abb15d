//! The admin operations behind each command. Every operation takes a [`crate::client::Cluster`]
//! and returns a typed, renderable result; none prints to stdout, so the same functions
//! serve the CLI, tests and any other front end.

pub mod apply;
pub mod claims;
pub mod customize;
pub mod diagnose;
pub mod disks;
pub mod drain;
pub mod follow;
pub mod install;
pub mod lookup;
pub mod manifests;
pub mod migrate;
pub mod nodes;
pub mod operations;
pub mod pools;
pub mod readiness;
pub mod serving_certs;
pub mod snapshots;
pub mod split_brain;
pub mod uninstall;
pub mod volumes;
pub mod workloads;
