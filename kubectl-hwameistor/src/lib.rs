//! `kubectl hwameistor`: the admin library behind the plugin.
//!
//! The plugin talks only to the Kubernetes API, never to nodes: it reads and writes the
//! HwameiStor custom resources and the objects it installs, and the node agents and the
//! controller do the rest. [`admin`] holds the operations, [`output`] renders their
//! results as tables, JSON or YAML, and [`cli`] is the thin clap layer of the binary.

pub mod admin;
pub mod cli;
pub mod client;
pub mod confirm;
pub mod errors;
pub mod output;
pub mod progress;

pub use client::{Cluster, ConnectOptions};
pub use errors::AdminError;
