//! A set of VMs on one private L2 segment, started in parallel and torn down together.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::assets::TestbedAssets;
use crate::error::{Error, IoContext};
use crate::hub::Hub;
use crate::qemu;
use crate::spec::{validate, TestbedOptions, VmSpec};
use crate::vm::{Vm, VmConfig, PRIVATE_NET_PREFIX};

/// A set of VMs sharing a private L2 segment. Dropping it kills every VM and removes its
/// directory (disk images included); [`Testbed::shutdown`] powers them off cleanly first.
pub struct Testbed {
    // Field order is drop order: VMs first (kill QEMU), then the hub, then the directory.
    vms: Vec<Vm>,
    hub: Hub,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("dir", &self.dir.path())
            .field("hub_ports", &self.hub.ports())
            .field("vms", &self.vms)
            .finish()
    }
}

impl Testbed {
    /// Boots all VMs in parallel and waits until each guest daemon answers.
    pub async fn start(assets: &TestbedAssets, specs: Vec<VmSpec>) -> Result<Self, Error> {
        Self::start_with(assets, specs, TestbedOptions::default()).await
    }

    pub async fn start_with(
        assets: &TestbedAssets,
        specs: Vec<VmSpec>,
        opts: TestbedOptions,
    ) -> Result<Self, Error> {
        validate(&specs)?;
        let qemu = qemu::qemu_binary()?;
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .ctx(|| "create testbed temp dir".into())?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .ctx(|| "write testbed owner file".into())?;
        // The testbed keeps its own link (or copy) of the initramfs: the cache prunes old ones,
        // and a VM reads it again at every reboot.
        let initrd = dir.path().join("initrd.img");
        if std::fs::hard_link(assets.initrd(), &initrd).is_err() {
            std::fs::copy(assets.initrd(), &initrd)
                .ctx(|| format!("copy {}", assets.initrd().display()))?;
        }
        let hub = Hub::start(specs.len()).await?;
        // MACs: locally administered QEMU prefix, a per-testbed nonce, then VM index and NIC, so
        // they are unique within the segment and unlikely to repeat across testbeds.
        let nonce = mac_nonce();
        let hosts: String = std::iter::once(crate::guest_files::HOSTS.to_string())
            .chain(
                specs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("{PRIVATE_NET_PREFIX}{} {}\n", i + 10, s.name)),
            )
            .collect();
        let mut vms = Vec::with_capacity(specs.len());
        for ((index, spec), &hub_port) in specs.into_iter().enumerate().zip(hub.ports()) {
            let vdir = dir.path().join(format!("vm{index}"));
            std::fs::create_dir_all(&vdir).ctx(|| format!("create {}", vdir.display()))?;
            let mut files = vec![("/etc/hosts".to_string(), hosts.clone().into_bytes())];
            files.extend(spec.files);
            let vm = Vm::new(VmConfig {
                name: spec.name,
                index,
                dir: vdir,
                qemu: qemu.clone(),
                kernel: assets.kernel().to_path_buf(),
                initrd: initrd.clone(),
                memory_mib: spec.memory_mib,
                cpus: spec.cpus,
                disks: spec.disks,
                hub_port,
                mac0: format!("52:54:00:{nonce:02x}:{index:02x}:00"),
                mac1: format!("52:54:00:{nonce:02x}:{index:02x}:01"),
                files,
                boot_timeout: opts.boot_timeout,
            })?;
            vms.push(vm);
        }
        let results = futures::future::join_all(vms.iter_mut().map(|vm| vm.boot())).await;
        // On failure `vms` is dropped here, which kills every VM that did start.
        for r in results {
            r?;
        }
        Ok(Testbed { vms, hub, dir })
    }

    /// The VM named `name`. Panics on an unknown name (a bug in the test).
    pub fn vm(&self, name: &str) -> &Vm {
        self.try_vm(name).unwrap_or_else(|| {
            panic!(
                "no VM named {name}; have {:?}",
                self.vms.iter().map(|v| v.name()).collect::<Vec<_>>()
            )
        })
    }

    pub fn try_vm(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.name() == name)
    }

    /// Mutable access, for [`Vm::reboot`] and disk hot-plug. Panics on an unknown name.
    pub fn vm_mut(&mut self, name: &str) -> &mut Vm {
        let names: Vec<String> = self.vms.iter().map(|v| v.name().to_string()).collect();
        match self.vms.iter_mut().find(|v| v.name() == name) {
            Some(v) => v,
            None => panic!("no VM named {name}; have {names:?}"),
        }
    }

    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    pub fn vms_mut(&mut self) -> &mut [Vm] {
        &mut self.vms
    }

    /// Cuts the private segment between VMs `a` and `b`: no frame passes between them, in
    /// either direction, until [`Testbed::heal`]. Nothing in the VMs changes (links stay up,
    /// addresses stay, connections just stop getting answers), every other pair still talks,
    /// and each VM keeps its user-mode NIC, so both still reach the host (a Kubernetes API
    /// server on host loopback, at [`crate::HOST_ADDR_FROM_GUEST`]). The cut belongs to the
    /// pair, not to a QEMU process: it outlasts [`Vm::reboot`], [`Vm::crash`] and
    /// [`Vm::power_on`]. Partitioning a pair twice is the same as once. Errors on an unknown
    /// name or `a == b`.
    pub fn partition(&self, a: &str, b: &str) -> Result<(), Error> {
        let (a, b) = self.pair(a, b)?;
        self.hub.set_blocked(a, b, true);
        Ok(())
    }

    /// Restores the private segment between `a` and `b` (a no-op when they were not cut).
    pub fn heal(&self, a: &str, b: &str) -> Result<(), Error> {
        let (a, b) = self.pair(a, b)?;
        self.hub.set_blocked(a, b, false);
        Ok(())
    }

    /// Restores every cut made by [`Testbed::partition`].
    pub fn heal_all(&self) {
        self.hub.unblock_all();
    }

    fn pair(&self, a: &str, b: &str) -> Result<(usize, usize), Error> {
        let index = |name: &str| {
            self.try_vm(name).map(Vm::index).ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "no VM named {name}; have {:?}",
                    self.vms.iter().map(Vm::name).collect::<Vec<_>>()
                ))
            })
        };
        let (ia, ib) = (index(a)?, index(b)?);
        if ia == ib {
            return Err(Error::InvalidSpec(format!(
                "cannot partition VM {a} from itself"
            )));
        }
        Ok((ia, ib))
    }

    /// The testbed's directory on the host (disk images, consoles, sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Powers every VM off cleanly (in parallel), then removes the directory. Every VM is
    /// stopped even when some fail; the first failure is returned.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let results = futures::future::join_all(self.vms.iter_mut().map(|vm| vm.stop())).await;
        results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        Ok(())
    }
}

const DIR_PREFIX: &str = "hwameistor-testbed-";
const OWNER_FILE: &str = "owner.pid";

/// Removes testbed directories left by processes that died without cleaning up (SIGKILL); their
/// VMs died with them (PR_SET_PDEATHSIG), but disk images can be large.
fn remove_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let is_ours = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(e.path().join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks for existence.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            tracing::info!(dir = %e.path().display(), pid, "removing stale testbed directory");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A byte that differs between testbeds of one process and, likely, between processes.
fn mac_nonce() -> u8 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = u64::from(std::process::id()).wrapping_mul(0x9e3779b97f4a7c15) ^ n.wrapping_mul(31);
    (mix >> 56) as u8 ^ (n as u8)
}
