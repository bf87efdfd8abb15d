//! Test doubles and helpers shared by HwameiStor's tests. Only ever a dev-dependency: no
//! shipped binary contains a fake.
//!
//! - [`lvm::FakeLvm`]: a stateful in-memory LVM implementing the agent's LVM boundary;
//! - [`executor::FakeExecutor`]: a scripted command runner for testing command lines.

pub mod executor;
pub mod lvm;

pub use executor::FakeExecutor;
pub use lvm::{FakeLvm, OpKind};
