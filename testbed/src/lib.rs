//! Throwaway QEMU node VMs for node-level tests of HwameiStor.
//!
//! The host kernel of a test machine has no device-mapper and cannot load modules, so anything
//! touching LVM or DRBD runs in VMs: a Debian kernel, a busybox initramfs with the storage
//! userland from the host's Debian packages, virtio disks with chosen serials, user-mode
//! networking to reach the host's loopback (at 10.0.2.2), and a private L2 segment between the
//! VMs (192.168.77.0/24). A small exec daemon in each guest runs commands for the test.
//!
//! For failover tests: [`Vm::crash`] cuts a VM's power (SIGKILL of QEMU) and [`Vm::power_on`]
//! boots it again with its disks; [`Testbed::partition`] cuts the private segment between two
//! VMs (both keep the host) until [`Testbed::heal`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), hwameistor_testbed::Error> {
//! use hwameistor_testbed::{BinarySpec, Testbed, TestbedAssets, VmSpec};
//! let assets = tokio::task::spawn_blocking(|| {
//!     TestbedAssets::build(&[BinarySpec::new("/path/to/agent", "/usr/local/bin/agent")])
//! })
//! .await
//! .expect("asset build panicked")?;
//! let tb = Testbed::start(&assets, vec![VmSpec::new("node1").disk("DISK1", 1 << 30)]).await?;
//! let out = tb.vm("node1").exec_ok("ls /dev/disk/by-id/").await?;
//! assert!(out.contains("virtio-DISK1"));
//! tb.shutdown().await?;
//! # Ok(()) }
//! ```

mod assets;
mod error;
mod guest_conn;
mod guest_files;
mod hub;
mod initramfs;
mod kernel;
pub mod protocol;
mod qemu;
mod spec;
mod testbed;
mod util;
mod vm;

pub use assets::{AssetOptions, BinarySpec, TestbedAssets};
pub use error::Error;
pub use guest_files::GUEST_DAEMON_PATH;
pub use spec::{DiskSpec, TestbedOptions, VmSpec};
pub use testbed::Testbed;
pub use vm::{
    ExecOutput, ProcessState, Vm, DEFAULT_BOOT_TIMEOUT, DEFAULT_EXEC_TIMEOUT, HOST_ADDR_FROM_GUEST,
    PRIVATE_NET_PREFIX,
};
