//! Test doubles and helpers shared by HwameiStor's tests. Only ever a dev-dependency: no
//! shipped binary contains a fake.
//!
//! - [`lvm::FakeLvm`]: a stateful in-memory LVM implementing the agent's LVM boundary;
//! - [`drbd::FakeDrbdNet`] and [`drbd::FakeDrbd`]: a stateful in-memory DRBD 8.4 cluster
//!   (links, crashes, fencing handlers, resyncs) whose nodes implement the DRBD boundary;
//! - [`executor::FakeExecutor`]: a scripted command runner for testing command lines.

pub mod disk;
pub mod drbd;
pub mod executor;
pub mod lvm;

pub use disk::FakeWipe;
pub use drbd::{DrbdOp, FakeDrbd, FakeDrbdNet};
pub use executor::FakeExecutor;
pub use lvm::{FakeLvm, OpKind};
