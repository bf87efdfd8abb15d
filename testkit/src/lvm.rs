//! A stateful in-memory LVM that behaves like lvm2 for the operations the agent uses.
//!
//! Devices have sizes and may carry a foreign signature; physical volumes lose 1 MiB to
//! metadata and are cut into extents; logical volumes are allocated extent by extent from
//! the group's physical volumes in order (so a volume larger than one disk spans two and
//! is reported with both); a full group refuses; an open volume cannot be removed; a
//! created volume shows up in the next report. A thin pool takes its data and twice its
//! metadata (LVM keeps a spare) from the group; thin volumes take nothing until written,
//! and tests say how much is written ([`FakeLvm::write_thin`]), which the pool's data use
//! reports. Tests can also make an operation fail, hold
//! it at a gate (to show what runs while it is slow), change things behind the agent's back
//! as an administrator would, and read the log of every call.

use async_trait::async_trait;
use hwameistor_core::lvm::{Lv, LvmState, Pv, ThinUsage, Vg, DEFAULT_EXTENT_BYTES};
use hwameistor_hostexec::lvm::{Lvm, LvmError};
use hwameistor_hostexec::ExecError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Bytes of every physical volume lvm2 keeps for its metadata.
pub const PV_METADATA_BYTES: i64 = 1 << 20;

/// The kinds of calls, for counting and for faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Report,
    CreatePv,
    CreateVg,
    ExtendVg,
    CreateLv,
    ExtendLv,
    ActivateLv,
    RemoveLv,
    CreateThinPool,
    ExtendThinMetadata,
    CreateThinLv,
    CreateSnapshot,
    CloneThin,
}

/// One call the fake received, with its main argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub op: OpKind,
    /// The device, group or `group/volume` the call was about (empty for reports).
    pub target: String,
}

#[derive(Clone, Debug)]
struct Device {
    size: i64,
    signature: Option<String>,
    pv: bool,
    vg: Option<String>,
}

#[derive(Clone, Debug)]
struct Segment {
    device: String,
    start: i64,
    count: i64,
}

#[derive(Clone, Debug)]
struct Volume {
    vg: String,
    name: String,
    segments: Vec<Segment>,
    active: bool,
    open: bool,
    kind: Kind,
    /// The volume a snapshot was taken of.
    origin: Option<String>,
}

/// What a logical volume is.
#[derive(Clone, Debug, Default, PartialEq)]
enum Kind {
    #[default]
    Thick,
    /// A thin pool: its segments hold `data` bytes of data and twice `metadata` (the
    /// metadata and its spare).
    Pool {
        data: i64,
        metadata: i64,
        /// Metadata in use, in basis points (tests set it).
        metadata_bp: i64,
    },
    /// A thin volume of `size` virtual bytes, `written` of them allocated in `pool`.
    Thin {
        pool: String,
        size: i64,
        written: i64,
    },
    /// A copy-on-write snapshot: its segments hold its space, `used` bytes of which hold
    /// the origin's blocks changed since; past its space it is invalid.
    Cow { used: i64 },
}

#[derive(Clone, Debug)]
struct Group {
    extent: i64,
    /// Physical volumes in the order they joined.
    pvs: Vec<String>,
}

struct Fault {
    op: OpKind,
    /// Only calls whose target contains this.
    target: String,
    error: LvmError,
    /// How many more calls fail; `None` for all of them.
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<String, Device>,
    groups: BTreeMap<String, Group>,
    volumes: Vec<Volume>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    gates: Vec<(OpKind, String, watch::Receiver<bool>)>,
    extent: Option<i64>,
}

/// The fake LVM. Clones share one state (one "node").
#[derive(Clone, Default)]
pub struct FakeLvm {
    state: Arc<Mutex<State>>,
}

/// A held gate: calls it matches wait until it is released (or dropped).
pub struct Gate {
    tx: watch::Sender<bool>,
}

impl Gate {
    pub fn release(self) {
        let _ = self.tx.send(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.tx.send(true);
    }
}

fn failed(command: String, stderr: &str) -> LvmError {
    LvmError::Exec(ExecError::Failed {
        command,
        code: Some(5),
        stdout: String::new(),
        stderr: stderr.to_string(),
    })
}

impl State {
    fn extent_of(&self, vg: &str) -> i64 {
        self.groups
            .get(vg)
            .map(|g| g.extent)
            .unwrap_or(DEFAULT_EXTENT_BYTES)
    }

    fn pe_count(&self, device: &str, extent: i64) -> i64 {
        self.devices
            .get(device)
            .map(|d| ((d.size - PV_METADATA_BYTES) / extent).max(0))
            .unwrap_or(0)
    }

    /// Extents of `device` in use, as (start, count) ranges sorted by start.
    fn used(&self, device: &str) -> Vec<(i64, i64)> {
        let mut used: Vec<(i64, i64)> = self
            .volumes
            .iter()
            .flat_map(|v| v.segments.iter())
            .filter(|s| s.device == device)
            .map(|s| (s.start, s.count))
            .collect();
        used.sort();
        used
    }

    fn free_extents(&self, device: &str, extent: i64) -> i64 {
        self.pe_count(device, extent) - self.used(device).iter().map(|u| u.1).sum::<i64>()
    }

    fn group_free(&self, vg: &str) -> i64 {
        let Some(g) = self.groups.get(vg) else {
            return 0;
        };
        g.pvs.iter().map(|p| self.free_extents(p, g.extent)).sum()
    }

    /// Takes `need` extents from the group's physical volumes in order, lowest free
    /// extents first (lvm2's normal policy, close enough for the agent's purposes).
    fn allocate(&self, vg: &str, mut need: i64) -> Vec<Segment> {
        let mut out = Vec::new();
        let Some(g) = self.groups.get(vg) else {
            return out;
        };
        for dev in &g.pvs {
            let total = self.pe_count(dev, g.extent);
            let mut at = 0;
            let mut ranges = self.used(dev);
            ranges.push((total, 0));
            for (start, count) in ranges {
                if need == 0 {
                    break;
                }
                if start > at {
                    let take = (start - at).min(need);
                    out.push(Segment {
                        device: dev.clone(),
                        start: at,
                        count: take,
                    });
                    need -= take;
                }
                at = at.max(start + count);
            }
        }
        out
    }

    fn volume(&self, vg: &str, name: &str) -> Option<usize> {
        self.volumes
            .iter()
            .position(|v| v.vg == vg && v.name == name)
    }

    fn report(&self) -> LvmState {
        let mut pvs = Vec::new();
        for (name, d) in &self.devices {
            if !d.pv {
                continue;
            }
            let (size, free) = match &d.vg {
                Some(vg) => {
                    let e = self.extent_of(vg);
                    (self.pe_count(name, e) * e, self.free_extents(name, e) * e)
                }
                None => (d.size - PV_METADATA_BYTES, d.size - PV_METADATA_BYTES),
            };
            pvs.push(Pv {
                name: name.clone(),
                vg_name: d.vg.clone().unwrap_or_default(),
                size,
                free,
            });
        }
        let vgs = self
            .groups
            .iter()
            .map(|(name, g)| Vg {
                name: name.clone(),
                size: g
                    .pvs
                    .iter()
                    .map(|p| self.pe_count(p, g.extent))
                    .sum::<i64>()
                    * g.extent,
                free: self.group_free(name) * g.extent,
                extent_size: g.extent,
                lv_count: self.volumes.iter().filter(|v| &v.vg == name).count() as i64,
                pv_count: g.pvs.len() as i64,
            })
            .collect();
        let lvs = self
            .volumes
            .iter()
            .map(|v| {
                let e = self.extent_of(&v.vg);
                let mut devices: Vec<String> = Vec::new();
                for s in &v.segments {
                    if !devices.contains(&s.device) {
                        devices.push(s.device.clone());
                    }
                }
                let flags = format!(
                    "{}{}",
                    if v.active { 'a' } else { '-' },
                    if v.open { 'o' } else { '-' }
                );
                let bp = |part: i64, whole: i64| {
                    if whole > 0 {
                        part * 10_000 / whole
                    } else {
                        0
                    }
                };
                let lv = match &v.kind {
                    Kind::Thick => Lv {
                        name: v.name.clone(),
                        vg_name: v.vg.clone(),
                        size: v.segments.iter().map(|s| s.count).sum::<i64>() * e,
                        attr: format!("-wi-{flags}----"),
                        path: format!("/dev/{}/{}", v.vg, v.name),
                        devices,
                        ..Default::default()
                    },
                    Kind::Cow { used } => {
                        let size = v.segments.iter().map(|s| s.count).sum::<i64>() * e;
                        let invalid = *used > size;
                        Lv {
                            name: v.name.clone(),
                            vg_name: v.vg.clone(),
                            size,
                            attr: if invalid {
                                "sri-I-s---".to_string()
                            } else {
                                format!("sri-{flags}s---")
                            },
                            path: format!("/dev/{}/{}", v.vg, v.name),
                            devices,
                            cow_used_bp: Some(bp((*used).min(size), size)),
                            ..Default::default()
                        }
                    }
                    Kind::Pool {
                        data,
                        metadata,
                        metadata_bp,
                    } => Lv {
                        name: v.name.clone(),
                        vg_name: v.vg.clone(),
                        size: *data,
                        attr: format!("twi-{flags}tz--"),
                        path: String::new(),
                        devices: Vec::new(),
                        pool_lv: None,
                        thin: Some(ThinUsage {
                            data_bp: bp(self.pool_written(&v.vg, &v.name), *data),
                            metadata_bp: *metadata_bp,
                            metadata_bytes: *metadata,
                        }),
                        cow_used_bp: None,
                        origin: None,
                    },
                    Kind::Thin {
                        pool,
                        size,
                        written,
                    } => Lv {
                        name: v.name.clone(),
                        vg_name: v.vg.clone(),
                        size: *size,
                        attr: format!("Vwi-{flags}tz--"),
                        path: format!("/dev/{}/{}", v.vg, v.name),
                        devices: Vec::new(),
                        pool_lv: Some(pool.clone()),
                        thin: Some(ThinUsage {
                            data_bp: bp(*written, *size),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                };
                Lv {
                    origin: v.origin.clone(),
                    ..lv
                }
            })
            .collect();
        LvmState { pvs, vgs, lvs }
    }

    /// Bytes written to the thin volumes of pool `vg/pool`.
    fn pool_written(&self, vg: &str, pool: &str) -> i64 {
        self.volumes
            .iter()
            .filter(|v| v.vg == vg)
            .map(|v| match &v.kind {
                Kind::Thin {
                    pool: p, written, ..
                } if p == pool => *written,
                _ => 0,
            })
            .sum()
    }

    /// Takes `bytes` (whole extents) more from the group for volume `i`, or says why not.
    fn grow(&mut self, i: usize, bytes: i64, command: &str) -> Result<(), LvmError> {
        let vg = self.volumes[i].vg.clone();
        let extent = self.extent_of(&vg);
        let need = (bytes + extent - 1) / extent;
        let free = self.group_free(&vg);
        if free < need {
            return Err(LvmError::InsufficientSpace {
                vg: vg.clone(),
                need: bytes,
                detail: format!(
                    "{command}: Insufficient free space: {need} extents needed, but only {free} available"
                ),
            });
        }
        let more = self.allocate(&vg, need);
        self.volumes[i].segments.extend(more);
        Ok(())
    }

    fn take_fault(&mut self, op: OpKind, target: &str) -> Option<LvmError> {
        let i = self
            .faults
            .iter()
            .position(|f| f.op == op && target.contains(&f.target))?;
        let f = &mut self.faults[i];
        let e = f.error.clone();
        match &mut f.remaining {
            Some(1) => {
                self.faults.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(e)
    }

    /// A device that may become a physical volume, or why not (what pvcreate would say).
    fn check_device(&self, device: &str) -> Result<(), LvmError> {
        let Some(d) = self.devices.get(device) else {
            return Err(failed(
                format!("pvcreate {device}"),
                &format!("No device found for {device}."),
            ));
        };
        if let Some(vg) = &d.vg {
            return Err(LvmError::DeviceRefused {
                device: device.into(),
                reason: format!(
                    "Can't initialize physical volume \"{device}\" of volume group \"{vg}\" without -ff"
                ),
            });
        }
        if let Some(sig) = d.signature.as_ref().filter(|_| !d.pv) {
            return Err(LvmError::DeviceRefused {
                device: device.into(),
                reason: format!("WARNING: {sig} signature detected on {device}. Wipe it? [y/n]: [n]\n  Aborted wiping of {sig}."),
            });
        }
        Ok(())
    }

    fn join(&mut self, vg: &str, devices: &[String]) -> Result<(), LvmError> {
        for dev in devices {
            self.check_device(dev)?;
        }
        for dev in devices {
            if let Some(d) = self.devices.get_mut(dev) {
                d.pv = true;
                d.vg = Some(vg.to_string());
            }
        }
        let extent = self.extent.unwrap_or(DEFAULT_EXTENT_BYTES);
        let g = self.groups.entry(vg.to_string()).or_insert(Group {
            extent,
            pvs: Vec::new(),
        });
        g.pvs.extend(devices.iter().cloned());
        Ok(())
    }
}

impl FakeLvm {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock poisoned it; the state is still the
        // best description of the "node", so keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a blank device of `size` bytes.
    pub fn add_device(&self, path: &str, size: i64) -> &Self {
        self.lock().devices.insert(
            path.to_string(),
            Device {
                size,
                signature: None,
                pv: false,
                vg: None,
            },
        );
        self
    }

    /// Writes a foreign signature (e.g. `ext4`) on a device that is not a physical volume.
    pub fn set_signature(&self, path: &str, signature: &str) {
        if let Some(d) = self.lock().devices.get_mut(path) {
            d.signature = Some(signature.to_string());
        }
    }

    /// Whether `path` is a physical volume (a real probe would find an LVM2_member signature).
    pub fn is_pv(&self, path: &str) -> bool {
        self.lock().devices.get(path).is_some_and(|d| d.pv)
    }

    /// The signature a disk probe would find on `path`.
    pub fn signature(&self, path: &str) -> Option<String> {
        let s = self.lock();
        let d = s.devices.get(path)?;
        if d.pv {
            Some("LVM2_member".to_string())
        } else {
            d.signature.clone()
        }
    }

    /// Extent size of groups created from now on.
    pub fn set_extent(&self, bytes: i64) {
        self.lock().extent = Some(bytes);
    }

    /// Marks a volume open (mounted) or closed.
    pub fn set_open(&self, vg: &str, name: &str, open: bool) {
        let mut s = self.lock();
        if let Some(i) = s.volume(vg, name) {
            s.volumes[i].open = open;
        }
    }

    /// Deactivates a volume, as a reboot without auto-activation would.
    pub fn deactivate(&self, vg: &str, name: &str) {
        let mut s = self.lock();
        if let Some(i) = s.volume(vg, name) {
            s.volumes[i].active = false;
        }
    }

    /// Says `bytes` of thin volume `vg/name` are written (allocated in its pool); panics on
    /// a volume that is not thin, or more than its size.
    pub fn write_thin(&self, vg: &str, name: &str, bytes: i64) {
        let mut s = self.lock();
        let i = s.volume(vg, name).expect("no such volume");
        match &mut s.volumes[i].kind {
            Kind::Thin { size, written, .. } => {
                assert!(bytes <= *size, "{bytes} written to a thin volume of {size}");
                *written = bytes;
            }
            other => panic!("{vg}/{name} is not a thin volume: {other:?}"),
        }
    }

    /// Says `bytes` more of volume `vg/name` changed: each copy-on-write snapshot of it
    /// keeps that much more of its old blocks (and is invalid once past its space); thin
    /// snapshots share the pool and are unaffected.
    pub fn write_origin(&self, vg: &str, name: &str, bytes: i64) {
        let mut s = self.lock();
        for v in s
            .volumes
            .iter_mut()
            .filter(|v| v.vg == vg && v.origin.as_deref() == Some(name))
        {
            if let Kind::Cow { used } = &mut v.kind {
                *used += bytes;
            }
        }
    }

    /// Sets the metadata use of thin pool `vg/pool` (basis points).
    pub fn set_thin_metadata_use(&self, vg: &str, pool: &str, bp: i64) {
        let mut s = self.lock();
        let i = s.volume(vg, pool).expect("no such pool");
        match &mut s.volumes[i].kind {
            Kind::Pool { metadata_bp, .. } => *metadata_bp = bp,
            other => panic!("{vg}/{pool} is not a thin pool: {other:?}"),
        }
    }

    /// An administrator removes a volume behind the agent's back (not logged as a call).
    pub fn remove_behind_the_back(&self, vg: &str, name: &str) {
        let mut s = self.lock();
        if let Some(i) = s.volume(vg, name) {
            s.volumes.remove(i);
        }
    }

    /// Makes the next `times` calls of `op` whose target contains `target` fail with
    /// `error` (`None`: every such call, until [`FakeLvm::clear_faults`]).
    pub fn fail(&self, op: OpKind, target: &str, error: LvmError, times: Option<usize>) {
        self.lock().faults.push(Fault {
            op,
            target: target.to_string(),
            error,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Holds calls of `op` whose target contains `target` until the gate is released.
    pub fn gate(&self, op: OpKind, target: &str) -> Gate {
        let (tx, rx) = watch::channel(false);
        self.lock().gates.push((op, target.to_string(), rx));
        Gate { tx }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls of `op` so far.
    pub fn count(&self, op: OpKind) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// The state as the next report will show it.
    pub fn snapshot(&self) -> LvmState {
        self.lock().report()
    }

    /// Logs a call, waits at any gate it matches, then returns the fault it hits, if any.
    async fn enter(&self, op: OpKind, target: &str) -> Result<(), LvmError> {
        let gates: Vec<watch::Receiver<bool>> = {
            let mut s = self.lock();
            s.calls.push(Call {
                op,
                target: target.to_string(),
            });
            s.gates
                .iter()
                .filter(|(o, t, _)| *o == op && target.contains(t.as_str()))
                .map(|(_, _, rx)| rx.clone())
                .collect()
        };
        for mut rx in gates {
            let _ = rx.wait_for(|open| *open).await;
        }
        let mut s = self.lock();
        s.gates.retain(|(_, _, rx)| !*rx.borrow());
        match s.take_fault(op, target) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Lvm for FakeLvm {
    async fn report(&self) -> Result<LvmState, LvmError> {
        self.enter(OpKind::Report, "").await?;
        Ok(self.lock().report())
    }

    async fn create_pv(&self, device: &str) -> Result<(), LvmError> {
        self.enter(OpKind::CreatePv, device).await?;
        let mut s = self.lock();
        s.check_device(device)?;
        if let Some(d) = s.devices.get_mut(device) {
            d.pv = true;
        }
        Ok(())
    }

    async fn create_vg(&self, vg: &str, devices: &[String]) -> Result<(), LvmError> {
        self.enter(OpKind::CreateVg, vg).await?;
        let mut s = self.lock();
        if s.groups.contains_key(vg) {
            return Err(failed(
                format!("vgcreate {vg}"),
                &format!("A volume group called {vg} already exists."),
            ));
        }
        s.join(vg, devices)
    }

    async fn extend_vg(&self, vg: &str, devices: &[String]) -> Result<(), LvmError> {
        self.enter(OpKind::ExtendVg, vg).await?;
        let mut s = self.lock();
        if !s.groups.contains_key(vg) {
            return Err(LvmError::NoSuchVg(vg.into()));
        }
        s.join(vg, devices)
    }

    async fn create_lv(&self, vg: &str, name: &str, bytes: i64) -> Result<(), LvmError> {
        self.enter(OpKind::CreateLv, &format!("{vg}/{name}"))
            .await?;
        let mut s = self.lock();
        let Some(g) = s.groups.get(vg) else {
            return Err(LvmError::NoSuchVg(vg.into()));
        };
        if s.volume(vg, name).is_some() {
            return Err(LvmError::LvExists {
                vg: vg.into(),
                lv: name.into(),
            });
        }
        let need = (bytes + g.extent - 1) / g.extent;
        let free = s.group_free(vg);
        if free < need {
            return Err(LvmError::InsufficientSpace {
                vg: vg.into(),
                need: bytes,
                detail: format!(
                    "Volume group \"{vg}\" has insufficient free space ({free} extents): {need} required."
                ),
            });
        }
        let segments = s.allocate(vg, need);
        s.volumes.push(Volume {
            vg: vg.into(),
            name: name.into(),
            segments,
            active: true,
            open: false,
            kind: Kind::Thick,
            origin: None,
        });
        Ok(())
    }

    async fn extend_lv(&self, vg: &str, name: &str, bytes: i64) -> Result<(), LvmError> {
        self.enter(OpKind::ExtendLv, &format!("{vg}/{name}"))
            .await?;
        let mut s = self.lock();
        let Some(i) = s.volume(vg, name) else {
            return Err(LvmError::NoSuchLv {
                vg: vg.into(),
                lv: name.into(),
            });
        };
        let extent = s.extent_of(vg);
        let want_bytes = (bytes + extent - 1) / extent * extent;
        let not_larger = || {
            failed(
                format!("lvextend -L {bytes}b {vg}/{name}"),
                "New size given is not larger than existing size.",
            )
        };
        match s.volumes[i].kind.clone() {
            Kind::Thin {
                pool,
                written,
                size,
            } => {
                if want_bytes <= size {
                    return Err(not_larger());
                }
                s.volumes[i].kind = Kind::Thin {
                    pool,
                    written,
                    size: want_bytes,
                };
                return Ok(());
            }
            Kind::Pool {
                data,
                metadata,
                metadata_bp,
            } => {
                if want_bytes <= data {
                    return Err(not_larger());
                }
                s.grow(i, want_bytes - data, "lvextend")?;
                s.volumes[i].kind = Kind::Pool {
                    data: want_bytes,
                    metadata,
                    metadata_bp,
                };
                return Ok(());
            }
            Kind::Thick | Kind::Cow { .. } => {}
        }
        let have: i64 = s.volumes[i].segments.iter().map(|x| x.count).sum();
        let want = (bytes + extent - 1) / extent;
        if want <= have {
            return Err(failed(
                format!("lvextend -L {bytes}b {vg}/{name}"),
                "New size given is not larger than existing size.",
            ));
        }
        let free = s.group_free(vg);
        if free < want - have {
            return Err(LvmError::InsufficientSpace {
                vg: vg.into(),
                need: bytes,
                detail: format!(
                    "Insufficient free space: {} extents needed, but only {free} available",
                    want - have
                ),
            });
        }
        let more = s.allocate(vg, want - have);
        s.volumes[i].segments.extend(more);
        Ok(())
    }

    async fn activate_lv(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        self.enter(OpKind::ActivateLv, &format!("{vg}/{name}"))
            .await?;
        let mut s = self.lock();
        let Some(i) = s.volume(vg, name) else {
            return Err(LvmError::NoSuchLv {
                vg: vg.into(),
                lv: name.into(),
            });
        };
        s.volumes[i].active = true;
        Ok(())
    }

    async fn remove_lv(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        self.enter(OpKind::RemoveLv, &format!("{vg}/{name}"))
            .await?;
        let mut s = self.lock();
        let Some(i) = s.volume(vg, name) else {
            return Err(LvmError::NoSuchLv {
                vg: vg.into(),
                lv: name.into(),
            });
        };
        let pool_in_use = matches!(s.volumes[i].kind, Kind::Pool { .. })
            && s.volumes
                .iter()
                .any(|v| v.vg == vg && matches!(&v.kind, Kind::Thin { pool, .. } if pool == name));
        // lvm2 would remove a pool's thin volumes with it; the agent never asks that.
        if s.volumes[i].open || pool_in_use {
            return Err(LvmError::LvInUse {
                vg: vg.into(),
                lv: name.into(),
            });
        }
        s.volumes.remove(i);
        // `lvremove --yes` of an origin removes its copy-on-write snapshots with it, as lvm2
        // does; thin snapshots are volumes of their own and stay, without an origin.
        s.volumes.retain(|v| {
            !(v.vg == vg && v.origin.as_deref() == Some(name) && matches!(v.kind, Kind::Cow { .. }))
        });
        for v in s
            .volumes
            .iter_mut()
            .filter(|v| v.vg == vg && v.origin.as_deref() == Some(name))
        {
            v.origin = None;
        }
        Ok(())
    }

    async fn create_thin_pool(
        &self,
        vg: &str,
        pool: &str,
        data: i64,
        metadata: i64,
    ) -> Result<(), LvmError> {
        self.enter(OpKind::CreateThinPool, &format!("{vg}/{pool}"))
            .await?;
        let mut s = self.lock();
        if !s.groups.contains_key(vg) {
            return Err(LvmError::NoSuchVg(vg.into()));
        }
        if s.volume(vg, pool).is_some() {
            return Err(LvmError::LvExists {
                vg: vg.into(),
                lv: pool.into(),
            });
        }
        let extent = s.extent_of(vg);
        let round = |b: i64| (b + extent - 1) / extent * extent;
        let (data, metadata) = (round(data), round(metadata));
        s.volumes.push(Volume {
            vg: vg.into(),
            name: pool.into(),
            segments: Vec::new(),
            active: true,
            open: false,
            kind: Kind::Pool {
                data,
                metadata,
                metadata_bp: 0,
            },
            origin: None,
        });
        let i = s.volumes.len() - 1;
        if let Err(e) = s.grow(i, data + 2 * metadata, "lvcreate") {
            s.volumes.pop();
            return Err(e);
        }
        Ok(())
    }

    async fn extend_thin_metadata(
        &self,
        vg: &str,
        pool: &str,
        metadata: i64,
    ) -> Result<(), LvmError> {
        self.enter(OpKind::ExtendThinMetadata, &format!("{vg}/{pool}"))
            .await?;
        let mut s = self.lock();
        let Some(i) = s.volume(vg, pool) else {
            return Err(LvmError::NoSuchLv {
                vg: vg.into(),
                lv: pool.into(),
            });
        };
        let Kind::Pool {
            data,
            metadata: have,
            metadata_bp,
        } = s.volumes[i].kind.clone()
        else {
            return Err(failed(
                format!("lvextend --poolmetadatasize {metadata}b {vg}/{pool}"),
                &format!("Logical volume {vg}/{pool} is not a thin pool."),
            ));
        };
        let extent = s.extent_of(vg);
        let want = (metadata + extent - 1) / extent * extent;
        if want <= have {
            return Err(failed(
                format!("lvextend --poolmetadatasize {metadata}b {vg}/{pool}"),
                "New size given is not larger than existing size.",
            ));
        }
        // The spare grows with it.
        s.grow(i, 2 * (want - have), "lvextend")?;
        s.volumes[i].kind = Kind::Pool {
            data,
            metadata: want,
            // The same metadata in a larger device.
            metadata_bp: metadata_bp * have / want,
        };
        Ok(())
    }

    async fn create_thin_lv(
        &self,
        vg: &str,
        pool: &str,
        name: &str,
        bytes: i64,
    ) -> Result<(), LvmError> {
        self.enter(OpKind::CreateThinLv, &format!("{vg}/{name}"))
            .await?;
        let mut s = self.lock();
        if !s.groups.contains_key(vg) {
            return Err(LvmError::NoSuchVg(vg.into()));
        }
        if !s
            .volume(vg, pool)
            .is_some_and(|i| matches!(s.volumes[i].kind, Kind::Pool { .. }))
        {
            return Err(failed(
                format!("lvcreate --type thin --thinpool {pool} {vg}"),
                &format!("Thin pool {vg}/{pool} not found."),
            ));
        }
        if s.volume(vg, name).is_some() {
            return Err(LvmError::LvExists {
                vg: vg.into(),
                lv: name.into(),
            });
        }
        let extent = s.extent_of(vg);
        s.volumes.push(Volume {
            vg: vg.into(),
            name: name.into(),
            segments: Vec::new(),
            active: true,
            open: false,
            kind: Kind::Thin {
                pool: pool.into(),
                size: (bytes + extent - 1) / extent * extent,
                written: 0,
            },
            origin: None,
        });
        Ok(())
    }

    async fn clone_thin(&self, vg: &str, source: &str, name: &str) -> Result<(), LvmError> {
        self.enter(OpKind::CloneThin, &format!("{vg}/{name}"))
            .await?;
        // A thin snapshot made writable: the fake models no permissions.
        self.add_snapshot(vg, source, name, None)
    }

    async fn create_snapshot(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        cow: Option<i64>,
    ) -> Result<(), LvmError> {
        self.enter(OpKind::CreateSnapshot, &format!("{vg}/{name}"))
            .await?;
        self.add_snapshot(vg, origin, name, cow)
    }
}

impl FakeLvm {
    /// Adds `vg/name`, a snapshot of `vg/origin`: thin (`cow` `None`, of a thin origin) or
    /// copy-on-write with `cow` bytes of the group's space.
    fn add_snapshot(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        cow: Option<i64>,
    ) -> Result<(), LvmError> {
        let mut s = self.lock();
        if !s.groups.contains_key(vg) {
            return Err(LvmError::NoSuchVg(vg.into()));
        }
        let Some(o) = s.volume(vg, origin) else {
            return Err(LvmError::NoSuchLv {
                vg: vg.into(),
                lv: origin.into(),
            });
        };
        if s.volume(vg, name).is_some() {
            return Err(LvmError::LvExists {
                vg: vg.into(),
                lv: name.into(),
            });
        }
        let (segments, kind) = match (cow, s.volumes[o].kind.clone()) {
            (None, Kind::Thin { pool, size, .. }) => (
                Vec::new(),
                Kind::Thin {
                    pool,
                    size,
                    written: 0,
                },
            ),
            (None, _) => {
                return Err(failed(
                    format!("lvcreate --snapshot {vg}/{origin}"),
                    "Please specify either size or extents with snapshots.",
                ))
            }
            (Some(bytes), _) => {
                let extent = s.extent_of(vg);
                let need = (bytes + extent - 1) / extent;
                let free = s.group_free(vg);
                if free < need {
                    return Err(LvmError::InsufficientSpace {
                        vg: vg.into(),
                        need: bytes,
                        detail: format!(
                            "Volume group \"{vg}\" has insufficient free space ({free} extents): {need} required."
                        ),
                    });
                }
                (s.allocate(vg, need), Kind::Cow { used: 0 })
            }
        };
        s.volumes.push(Volume {
            vg: vg.into(),
            name: name.into(),
            segments,
            active: true,
            open: false,
            kind,
            origin: Some(origin.into()),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MI: i64 = 1 << 20;
    const HDD: &str = "LocalStorage_PoolHDD";

    fn two_disks() -> FakeLvm {
        let f = FakeLvm::new();
        f.add_device("/dev/vdb", 101 * MI)
            .add_device("/dev/vdc", 201 * MI);
        f
    }

    async fn pool(f: &FakeLvm) {
        f.create_pv("/dev/vdb").await.expect("pv b");
        f.create_pv("/dev/vdc").await.expect("pv c");
        f.create_vg(HDD, &["/dev/vdb".into(), "/dev/vdc".into()])
            .await
            .expect("vg");
    }

    #[tokio::test]
    async fn snapshots_take_cow_space_overflow_and_go_with_their_origin() {
        let f = two_disks();
        pool(&f).await;
        f.create_lv(HDD, "data", 40 * MI).await.expect("origin");
        f.create_snapshot(HDD, "data", "snap_a", Some(8 * MI))
            .await
            .expect("cow");
        assert!(matches!(
            f.create_snapshot(HDD, "data", "snap_b", None).await,
            Err(LvmError::Exec(_))
        ));
        let free = |st: &LvmState| st.vg(HDD).expect("vg").free;
        let st = f.report().await.expect("report");
        assert_eq!(free(&st), 300 * MI - 48 * MI);
        let snap = st.lv(HDD, "snap_a").expect("snap").clone();
        assert_eq!((snap.origin.as_deref(), snap.size), (Some("data"), 8 * MI));
        assert!(snap.is_cow_snapshot() && !snap.snapshot_invalid());
        f.write_origin(HDD, "data", 6 * MI);
        let st = f.report().await.expect("report");
        assert_eq!(st.lv(HDD, "snap_a").expect("snap").cow_used_bp, Some(7500));
        f.write_origin(HDD, "data", 3 * MI);
        assert!(f
            .snapshot()
            .lv(HDD, "snap_a")
            .expect("snap")
            .snapshot_invalid());
        // lvremove --yes of the origin takes its snapshot with it.
        f.remove_lv(HDD, "data").await.expect("remove");
        assert!(f.snapshot().lvs.is_empty());
        // A thin volume's snapshot is thin, of the origin's size, and takes nothing.
        f.create_thin_pool(HDD, "pool", 100 * MI, 4 * MI)
            .await
            .expect("pool");
        f.create_thin_lv(HDD, "pool", "t", 200 * MI)
            .await
            .expect("thin");
        f.create_snapshot(HDD, "t", "snap_t", None)
            .await
            .expect("thin snapshot");
        let t = f.snapshot().lv(HDD, "snap_t").expect("snap").clone();
        assert_eq!(
            (t.origin.as_deref(), t.pool_lv.as_deref(), t.size),
            (Some("t"), Some("pool"), 200 * MI)
        );
    }

    #[tokio::test]
    async fn created_volumes_show_up_and_a_full_group_refuses() {
        let f = two_disks();
        pool(&f).await;
        let st = f.report().await.expect("report");
        let vg = st.vg(HDD).expect("vg");
        assert_eq!((vg.size, vg.free, vg.pv_count), (300 * MI, 300 * MI, 2));
        f.create_lv(HDD, "a", 8 * MI).await.expect("a");
        let st = f.report().await.expect("report");
        let a = st.lv(HDD, "a").expect("a listed");
        assert_eq!(
            (a.size, a.devices.clone()),
            (8 * MI, vec!["/dev/vdb".to_string()])
        );
        assert!(a.active());
        assert_eq!(st.vg(HDD).map(|g| g.free), Some(292 * MI));
        let full = f.create_lv(HDD, "huge", 293 * MI).await;
        assert!(
            matches!(full, Err(LvmError::InsufficientSpace { .. })),
            "{full:?}"
        );
        assert!(matches!(
            f.create_lv(HDD, "a", 4 * MI).await,
            Err(LvmError::LvExists { .. })
        ));
    }

    #[tokio::test]
    async fn a_volume_larger_than_one_disk_spans_two() {
        let f = two_disks();
        pool(&f).await;
        f.create_lv(HDD, "big", 150 * MI).await.expect("big");
        let st = f.report().await.expect("report");
        let big = st.lv(HDD, "big").expect("big");
        assert_eq!(
            big.devices,
            vec!["/dev/vdb".to_string(), "/dev/vdc".to_string()]
        );
        assert_eq!(big.size, 152 * MI, "rounded to 4 MiB extents");
        f.remove_lv(HDD, "big").await.expect("remove");
        assert_eq!(
            f.report().await.expect("r").vg(HDD).map(|g| g.free),
            Some(300 * MI)
        );
    }

    #[tokio::test]
    async fn pvcreate_refuses_signatures_and_groups_refuse_members() {
        let f = two_disks();
        f.set_signature("/dev/vdb", "ext4");
        assert!(matches!(
            f.create_pv("/dev/vdb").await,
            Err(LvmError::DeviceRefused { .. })
        ));
        pool_c_only(&f).await;
        assert!(matches!(
            f.create_pv("/dev/vdc").await,
            Err(LvmError::DeviceRefused { .. })
        ));
        assert!(matches!(
            f.extend_vg("nope", &["/dev/vdc".into()]).await,
            Err(LvmError::NoSuchVg(_))
        ));
        assert!(f.create_pv("/dev/nothing").await.is_err());
    }

    async fn pool_c_only(f: &FakeLvm) {
        f.create_pv("/dev/vdc").await.expect("pv");
        f.create_vg(HDD, &["/dev/vdc".into()]).await.expect("vg");
    }

    #[tokio::test]
    async fn open_volumes_stay_and_faults_fire_as_asked() {
        let f = two_disks();
        pool(&f).await;
        f.create_lv(HDD, "v", 4 * MI).await.expect("v");
        f.set_open(HDD, "v", true);
        assert!(matches!(
            f.remove_lv(HDD, "v").await,
            Err(LvmError::LvInUse { .. })
        ));
        f.set_open(HDD, "v", false);
        f.fail(
            OpKind::RemoveLv,
            "/v",
            LvmError::Report {
                command: "x".into(),
                reason: "boom".into(),
            },
            Some(1),
        );
        assert!(f.remove_lv(HDD, "v").await.is_err());
        f.remove_lv(HDD, "v").await.expect("second try");
        assert_eq!(f.count(OpKind::RemoveLv), 3);
    }

    #[tokio::test]
    async fn a_gate_holds_matching_calls_only() {
        let f = two_disks();
        pool(&f).await;
        let gate = f.gate(OpKind::CreateLv, "/slow");
        let held = tokio::spawn({
            let f = f.clone();
            async move { f.create_lv(HDD, "slow", 4 * MI).await }
        });
        f.create_lv(HDD, "fast", 4 * MI).await.expect("not held");
        tokio::task::yield_now().await;
        assert!(!held.is_finished());
        gate.release();
        held.await.expect("join").expect("slow created");
        assert_eq!(f.snapshot().lvs.len(), 2);
    }

    /// Carries out a thin plan of `hwameistor_core::thin` on the fake, as the agent does.
    async fn apply(f: &FakeLvm, vg: &str, name: &str, ops: Vec<hwameistor_core::thin::ThinOp>) {
        use hwameistor_core::thin::{ThinOp, THIN_POOL_LV};
        let pool = f.snapshot().lv(vg, THIN_POOL_LV).cloned();
        for op in ops {
            match op {
                ThinOp::CreatePool {
                    data_bytes,
                    metadata_bytes,
                } => f
                    .create_thin_pool(vg, THIN_POOL_LV, data_bytes, metadata_bytes)
                    .await
                    .expect("pool"),
                ThinOp::ExtendPool {
                    data_bytes,
                    metadata_bytes,
                } => {
                    let have = pool.clone().expect("a pool to grow");
                    if data_bytes > have.size {
                        f.extend_lv(vg, THIN_POOL_LV, data_bytes)
                            .await
                            .expect("data");
                    }
                    if metadata_bytes > have.thin.unwrap_or_default().metadata_bytes {
                        f.extend_thin_metadata(vg, THIN_POOL_LV, metadata_bytes)
                            .await
                            .expect("metadata");
                    }
                }
                ThinOp::CreateThin { bytes } => f
                    .create_thin_lv(vg, THIN_POOL_LV, name, bytes)
                    .await
                    .expect("thin"),
                ThinOp::ExtendThin { bytes } => f.extend_lv(vg, name, bytes).await.expect("grow"),
                ThinOp::Activate => f.activate_lv(vg, name).await.expect("activate"),
                ThinOp::CloneFrom { source } => {
                    f.clone_thin(vg, &source, name).await.expect("clone")
                }
            }
        }
    }

    #[tokio::test]
    async fn thin_pools_follow_their_plans_and_report_what_is_written() {
        use hwameistor_core::thin::{
            plan_ensure_thin_lv, plan_grow_pool, thin_pool, ThinOp, ThinPolicy, THIN_POOL_LV,
        };
        let f = FakeLvm::new();
        f.add_device("/dev/vdb", 2049 * MI);
        f.create_pv("/dev/vdb").await.expect("pv");
        f.create_vg(HDD, &["/dev/vdb".into()]).await.expect("vg");
        let policy = ThinPolicy {
            min_data_bytes: 512 * MI,
            ..Default::default()
        };
        for (name, size) in [("a", 600 * MI), ("b", 400 * MI)] {
            let ops = plan_ensure_thin_lv(&f.snapshot(), HDD, name, size, &policy).expect("plan");
            apply(&f, HDD, name, ops).await;
        }
        let st = f.snapshot();
        let p = thin_pool(&st, HDD).expect("pool");
        // 1000 MiB provisioned at a ratio of 2: the 512 MiB pool did.
        assert_eq!((p.data_bytes, p.metadata_bytes), (512 * MI, 8 * MI));
        assert_eq!((p.provisioned_bytes, p.volumes), (1000 * MI, 2));
        // The group gave the data and twice the metadata; the thin volumes took nothing.
        assert_eq!(st.vg(HDD).expect("vg").free, 2048 * MI - 512 * MI - 16 * MI);
        // 600 MiB more: the pool grows to 800 MiB so the ratio holds.
        let ops = plan_ensure_thin_lv(&st, HDD, "c", 600 * MI, &policy).expect("plan");
        assert_eq!(
            ops[0],
            ThinOp::ExtendPool {
                data_bytes: 800 * MI,
                metadata_bytes: 8 * MI
            }
        );
        apply(&f, HDD, "c", ops).await;
        // Written: the pool's use shows it; past 70% it is grown by a quarter.
        f.write_thin(HDD, "a", 500 * MI);
        f.write_thin(HDD, "c", 100 * MI);
        let st = f.snapshot();
        let p = thin_pool(&st, HDD).expect("pool");
        assert_eq!(p.data_percent, 75.0);
        let grow = plan_grow_pool(&st, HDD, &policy).expect("grows");
        assert_eq!(
            grow,
            ThinOp::ExtendPool {
                data_bytes: 1000 * MI,
                metadata_bytes: 8 * MI
            }
        );
        apply(&f, HDD, "", vec![grow]).await;
        f.set_thin_metadata_use(HDD, THIN_POOL_LV, 8_000);
        let st = f.snapshot();
        assert_eq!(thin_pool(&st, HDD).expect("pool").data_percent, 60.0);
        let grow = plan_grow_pool(&st, HDD, &policy).expect("metadata grows");
        apply(&f, HDD, "", vec![grow]).await;
        let p = thin_pool(&f.snapshot(), HDD).expect("pool");
        assert_eq!(p.metadata_bytes, 12 * MI);
        assert!(p.metadata_percent < 70.0, "{p:?}");
        // The pool is not removed under its volumes; a thin volume is.
        assert!(matches!(
            f.remove_lv(HDD, THIN_POOL_LV).await,
            Err(LvmError::LvInUse { .. })
        ));
        f.remove_lv(HDD, "b").await.expect("remove thin");
        assert_eq!(thin_pool(&f.snapshot(), HDD).expect("pool").volumes, 2);
    }
}
