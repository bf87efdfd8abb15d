//! A stateful in-memory DRBD 8.4 for two-node resources, behaving like the kernel module and
//! drbd-utils in everything the node agent's and the controller's logic depends on.
//!
//! [`FakeDrbdNet`] is the cluster: its nodes and the links between them. [`FakeDrbd`] is one
//! node's kernel and userland and implements the agent's [`Drbd`] boundary. Tests drive the
//! world around the agent through the net: cut and heal links, crash and boot nodes, open
//! devices, write on primaries, register the node's handler program, pace resyncs.
//!
//! What is modelled, and how (DRBD 8.4 as its source code decides it):
//!
//! - **Files and metadata.** Config files per node ([`ResourceConfig`] by name); `drbdadm`
//!   commands need the file and need it to name this node and at most one peer, otherwise
//!   they fail ([`DrbdError::NoSuchResource`] when the node is not in it). A file naming
//!   only this node is a resource on one node: `up` attaches it StandAlone, `adjust` drops
//!   a connection it no longer names, `connect`/`disconnect` fail as drbdadm does (no
//!   peer to name), and `resize` grows it only when told to assume the peer has room. Metadata (on the
//!   external metadata device) holds the data generation — DRBD's UUID set: current,
//!   bitmap and two history UUIDs — the out-of-sync bitmap (a byte count), the disk flags
//!   (consistent, was-up-to-date, peer-outdated) and the last agreed size. It survives
//!   `down` and crashes; the kernel state does not.
//! - **Attach** (`up`): the disk comes up Inconsistent (never consistent), Outdated, or
//!   Consistent (was UpToDate: not UpToDate until connected, or until the peer is known
//!   outdated, exactly as DRBD with fencing). The device size is the last agreed size, or
//!   the backing size for a new resource.
//! - **Connecting**: both sides up, wanting to connect, configs naming each other with
//!   matching addresses and port, both nodes booted and the link up. The handshake follows
//!   `drbd_uuid_compare` and `drbd_sync_handshake`: equal generations connect without sync
//!   (Consistent/Outdated become UpToDate); a side whose bitmap UUID is the other's current
//!   generation is SyncSource (bitmap-based: the bytes written meanwhile); a brand-new side
//!   (UUID "just created") against one with data gets a full sync; one Inconsistent side
//!   against one with data is SyncTarget; two diverged generations (both were primary while
//!   apart) are split brain: both go StandAlone and both run the `split-brain` handler,
//!   unless exactly one side connected with `discard_my_data` (it becomes SyncTarget);
//!   unrelated generations go StandAlone; a primary that would have to become SyncTarget
//!   refuses (StandAlone, the peer keeps waiting); a side with data refuses a peer whose
//!   disk is smaller than its device ("The peer's disk size is too small!").
//! - **Losing the connection** (link cut, peer crash): the peer disk becomes DUnknown
//!   unless it was Inconsistent/Outdated. A Primary whose peer disk became DUnknown freezes
//!   I/O (`fencing resource-and-stonith`) and runs the `fence-peer` handler: exit 3 → peer
//!   Inconsistent, 4 or 7 → peer Outdated, 5 → peer Outdated only if the local disk is
//!   UpToDate; the freeze lifts once the peer disk is Inconsistent/Outdated. Any other
//!   code, no registered helper, or no handler in the config → frozen until `resume_io` or
//!   until the connection comes back (then the handler's late answer is ignored, as DRBD
//!   8.4.x does). A primary that loses an UpToDate peer starts a new generation (deferred
//!   while frozen). A **clean** `disconnect`/`down` between a primary and a secondary is
//!   negotiated: the secondary outdates itself, the primary records its peer Outdated and
//!   does not freeze; between two secondaries nothing is outdated.
//! - **Roles.** `primary` is refused with PeerIsPrimary when the connected peer is
//!   primary; it needs access to UpToDate data — the local disk, or (as DRBD allows a
//!   SyncTarget to be primary) a connected UpToDate peer — else NotUpToDate, except that a
//!   Consistent disk without peer runs `fence-peer` and is UpToDate if that outdates the
//!   peer. Without a connection and with the peer disk unknown, promotion runs `fence-peer`
//!   and is refused ("Refusing to be Primary while peer is not outdated", an untyped
//!   error) unless it succeeds. `force` makes an Inconsistent/Outdated/Consistent disk
//!   UpToDate with a new generation and, without a fenced peer, forces the split; connected
//!   to an Inconsistent peer it starts the full initial sync. `secondary`/`down` refuse
//!   InUse while the device is open ([`FakeDrbdNet::set_open`]).
//! - **Other commands.** `outdate` is refused while primary or connected and for a disk
//!   below Outdated; on a resource that is down it outdates the metadata (drbdmeta).
//!   `skip_initial_sync` (`new-current-uuid --clear-bitmap`) makes both sides UpToDate only
//!   while connected, idle and both never held data; otherwise it only starts a new local
//!   generation, as DRBD does. `connect` refuses a resource that is not StandAlone;
//!   `disconnect` of a StandAlone one and `down` of one that is not up succeed. `adjust`
//!   brings a down resource up, reconnects a StandAlone one and follows a changed peer
//!   address or port (never the minor of a running resource). `wipe_metadata` refuses
//!   while up. Untyped refusals carry drbdsetup's wording in the error's stderr.
//! - **Writes** ([`FakeDrbdNet::write`]) on a primary: refused while I/O is frozen; while
//!   connected they land on both (protocol C); while apart they grow the local bitmap.
//!   Each write makes a new data version ([`FakeDrbdNet::data`]) so tests can check which
//!   data a disk holds.
//! - **Resync**: finishes at once, or, for a held resource ([`FakeDrbdNet::hold_sync`]),
//!   runs until [`FakeDrbdNet::advance_sync`] has moved all its bytes. Interrupted syncs
//!   resume bitmap-based on reconnect (the sync UUID scheme of `drbd_gen_and_send_sync_uuid`).
//! - **Sizes**: a backing disk's size is the one set with [`FakeDrbdNet::set_disk_size`],
//!   else the size of the logical volume at that path in the node's [`FakeLvm`] when one
//!   is attached ([`FakeDrbdNet::attach_lvm`]; a missing volume fails the attach), else
//!   [`DEFAULT_DISK_BYTES`]. The metadata device, when its size is known, caps the device
//!   at what its bitmap covers. `resize` grows the device to the smaller backing size of
//!   both sides and resyncs the new area from the primary; it needs a connection to grow
//!   (apart, DRBD keeps the last agreed size), is refused during a resync and when both
//!   sides are secondary.
//! - **Helpers** ([`FakeDrbdNet::set_helper`]) stand for the handler program named in the
//!   config: DRBD runs it only when the config has handlers. Calls made on connection
//!   events run as Tokio tasks, as the kernel runs them asynchronously; wait for them with
//!   [`FakeDrbdNet::settle`]. The call made by `primary` is awaited inside it, as
//!   `drbdsetup primary` waits. Every call is recorded ([`FakeDrbdNet::helper_calls`]).
//!   A node without a registered helper runs a handler that fails. Operations that start
//!   handler runs need a Tokio runtime (any `#[tokio::test]`).
//! - **Faults, gates and the call log** per node, as [`FakeLvm`] has them. A call made
//!   before its node crashed fails (the process that made it died with the node).
//!
//! Not modelled: detach/diskless, dual-primary, the activity-log resync of a crashed
//! primary (DRBD's "crashed primary" rule: equal generations connect without sync here),
//! verify, Ahead/Behind, more than two hosts. The out-of-sync union of two bitmaps is
//! approximated by the sum of what each side wrote apart (exact when they wrote
//! different blocks), on top of what a previous interrupted resync left.

use crate::lvm::FakeLvm;
use async_trait::async_trait;
use futures::future::BoxFuture;
use hwameistor_core::drbd::{ConnState, DiskState, Host, ResourceConfig, ResourceStatus, Role};
use hwameistor_hostexec::drbd::{Drbd, DrbdError, KernelDrbd};
use hwameistor_hostexec::ExecError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The DRBD version a node reports unless the test says otherwise.
pub const KERNEL_VERSION: &str = "8.4.11";
/// Size of a backing disk the test gave no size for (and no [`FakeLvm`] to look it up in).
pub const DEFAULT_DISK_BYTES: u64 = 1 << 30;
/// DRBD's current UUID of metadata that never held data.
const JUST_CREATED: u64 = 4;
/// DRBD's `UUID_NEW_BM_OFFSET`: a resync's sync UUID is the bitmap UUID plus this.
const NEW_BM_OFFSET: u64 = 1 << 48;
/// Bytes of external metadata before the bitmap: 4 KiB superblock, 32 KiB activity log
/// (as `hwameistor_core::drbd::meta_bytes` counts them).
const MD_RESERVED_BYTES: u64 = 36 * 1024;

/// The kinds of calls, for counting, faults and gates (one per [`Drbd`] operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DrbdOp {
    Kernel,
    WriteConfig,
    RemoveConfig,
    HasMetadata,
    CreateMetadata,
    WipeMetadata,
    Up,
    Adjust,
    Connect,
    Disconnect,
    Primary,
    Secondary,
    Outdate,
    ResumeIo,
    SkipInitialSync,
    Resize,
    Down,
    Status,
}

/// One call a node's fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub op: DrbdOp,
    /// The resource (empty for `kernel` and `status`).
    pub resource: String,
    /// `primary`'s `force` or `connect`'s `discard_my_data`; `false` for other operations.
    pub force: bool,
}

/// One run of a node's handler program, as DRBD starts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperCall {
    pub node: String,
    /// `fence-peer` or `split-brain`.
    pub command: String,
    pub resource: String,
    pub minor: u32,
}

/// Why [`FakeDrbdNet::write`] did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The node is crashed.
    NodeDown,
    /// The resource is not up on the node.
    NotUp,
    /// Only a primary's device accepts writes.
    NotPrimary,
    /// I/O is frozen (fencing): the write would block.
    Suspended,
    /// No UpToDate data reachable (an Inconsistent primary without its peer): I/O error.
    NoUpToDateData,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteError::NodeDown => "the node is down",
            WriteError::NotUp => "the resource is not up",
            WriteError::NotPrimary => "the resource is not primary",
            WriteError::Suspended => "I/O is suspended",
            WriteError::NoUpToDateData => "no access to UpToDate data",
        })
    }
}

impl std::error::Error for WriteError {}

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

type Helper = Arc<dyn Fn(HelperCall) -> BoxFuture<'static, i32> + Send + Sync>;

/// A handler run DRBD started, with what to do with its exit code.
struct Job {
    call: HelperCall,
    helper: Option<Helper>,
    /// For `fence-peer` after a lost connection: the resource instance and connection
    /// epoch it was started for (its answer is ignored once either changed).
    fence: Option<(u64, u64)>,
}

struct Fault {
    op: DrbdOp,
    /// Only calls whose resource contains this.
    target: String,
    error: DrbdError,
    /// How many more calls fail; `None` for all of them.
    remaining: Option<usize>,
}

/// What the metadata device holds.
#[derive(Clone, Debug)]
struct Meta {
    meta_disk: String,
    current: u64,
    bitmap: u64,
    history: [u64; 2],
    /// Out-of-sync bytes both sides know of (what an interrupted resync left).
    shared_oos: u64,
    /// Out-of-sync bytes written here while apart.
    own_oos: u64,
    consistent: bool,
    was_up_to_date: bool,
    peer_outdated: bool,
    /// Last agreed device size (0: never attached).
    la_size: u64,
    /// Version of the data on the disk.
    data: u64,
}

impl Meta {
    fn new(meta_disk: &str) -> Self {
        Meta {
            meta_disk: meta_disk.to_string(),
            current: JUST_CREATED,
            bitmap: 0,
            history: [0, 0],
            shared_oos: 0,
            own_oos: 0,
            consistent: false,
            was_up_to_date: false,
            peer_outdated: false,
            la_size: 0,
            data: 0,
        }
    }

    fn oos(&self, size: u64) -> u64 {
        self.shared_oos.saturating_add(self.own_oos).min(size)
    }

    /// `drbd_uuid_new_current`: the current generation becomes the bitmap UUID.
    fn new_current(&mut self, uuid: u64) {
        self.bitmap = self.current;
        self.current = uuid;
    }

    /// `drbd_uuid_set_bm(0)`: the bitmap UUID moves to history.
    fn clear_bitmap_uuid(&mut self) {
        if self.bitmap != 0 {
            self.history = [self.bitmap, self.history[0]];
            self.bitmap = 0;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

/// A resource as the kernel has it.
#[derive(Clone, Debug)]
struct Res {
    /// The configuration applied by `up`/`adjust`/`connect`.
    cfg: ResourceConfig,
    /// Unique per `up`: answers of handlers started for an earlier instance are ignored.
    instance: u64,
    role: Role,
    disk: DiskState,
    /// The peer's disk as last known while not connected.
    pdsk: DiskState,
    /// Has a network configuration (WFConnection or connected); `false`: StandAlone.
    want_connect: bool,
    connected: bool,
    /// Changes whenever the connection is made or lost.
    epoch: u64,
    /// Resync in progress: this side's part and the bytes it started with.
    sync: Option<(Side, u64)>,
    discard: bool,
    suspended: bool,
    /// A new generation is due once frozen I/O resumes (DRBD's NEW_CUR_UUID).
    new_cur_pending: bool,
    size: u64,
}

struct Node {
    booted: bool,
    /// Increases on every crash.
    boots: u64,
    kernel: Option<String>,
    files: BTreeMap<String, ResourceConfig>,
    meta: BTreeMap<String, Meta>,
    res: BTreeMap<String, Res>,
    open: BTreeSet<String>,
    sizes: BTreeMap<String, u64>,
    lvm: Option<FakeLvm>,
    helper: Option<Helper>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    gates: Vec<(DrbdOp, String, watch::Receiver<bool>)>,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            booted: true,
            boots: 0,
            kernel: Some(KERNEL_VERSION.to_string()),
            files: BTreeMap::new(),
            meta: BTreeMap::new(),
            res: BTreeMap::new(),
            open: BTreeSet::new(),
            sizes: BTreeMap::new(),
            lvm: None,
            helper: None,
            calls: Vec::new(),
            faults: Vec::new(),
            gates: Vec::new(),
        }
    }
}

impl Node {
    fn take_fault(&mut self, op: DrbdOp, target: &str) -> Option<DrbdError> {
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

    /// Size of the logical volume at `path` in the attached [`FakeLvm`], if any.
    fn lv_size(&self, path: &str) -> Option<u64> {
        let lvm = self.lvm.as_ref()?;
        lvm.snapshot()
            .lvs
            .iter()
            .find(|l| l.path == path)
            .map(|l| l.size.max(0) as u64)
    }
}

#[derive(Default)]
struct NetState {
    nodes: BTreeMap<String, Node>,
    /// Cut links, each as (smaller name, larger name).
    cut: BTreeSet<(String, String)>,
    held: BTreeSet<String>,
    helper_calls: Vec<HelperCall>,
    counter: u64,
}

fn link(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// DRBD's order of disk states (`enum drbd_disk_state`).
fn rank(d: DiskState) -> u8 {
    use DiskState::*;
    match d {
        Diskless => 0,
        Attaching => 1,
        Failed => 2,
        Negotiating => 3,
        Inconsistent => 4,
        Outdated => 5,
        DUnknown => 6,
        Consistent => 7,
        UpToDate => 8,
    }
}

fn own_host<'a>(cfg: &'a ResourceConfig, node: &str) -> Option<&'a Host> {
    cfg.hosts.iter().find(|h| h.hostname == node)
}

fn peer_host<'a>(cfg: &'a ResourceConfig, node: &str) -> Option<&'a Host> {
    cfg.hosts.iter().find(|h| h.hostname != node)
}

/// Device bytes the bitmap of a flexible external metadata device of `bytes` covers
/// (one bit per 4 KiB: a 512-byte bitmap sector covers 16 MiB).
fn meta_capacity(bytes: u64) -> u64 {
    (bytes.saturating_sub(MD_RESERVED_BYTES) / 512).saturating_mul(16 << 20)
}

/// `drbd_uuid_compare` (DRBD 8.4) from `s`'s side: 0 no sync, 1/-1 bitmap-based sync
/// source/target, 2/-2 full sync source/target, 100/-100 split brain, -1000 unrelated.
/// Rules 51 and 71 (old-protocol fix-ups) and the crashed-primary rule are left out.
fn compare(s: &Meta, p: &Meta) -> i32 {
    let (sc, pc) = (s.current, p.current);
    if sc == JUST_CREATED && pc == JUST_CREATED {
        return 0;
    }
    if (sc == JUST_CREATED || sc == 0) && pc != JUST_CREATED {
        return -2;
    }
    if sc != JUST_CREATED && (pc == JUST_CREATED || pc == 0) {
        return 2;
    }
    if sc == pc {
        // A resync that finished on one side only (its bitmap UUID not yet cleared).
        if p.bitmap == 0 && s.bitmap != 0 {
            return 1;
        }
        if s.bitmap == 0 && p.bitmap != 0 {
            return -1;
        }
        return 0;
    }
    if p.bitmap != 0 && sc == p.bitmap {
        return -1;
    }
    if p.history.contains(&sc) {
        return -2;
    }
    if s.bitmap != 0 && s.bitmap == pc {
        return 1;
    }
    if s.history.contains(&pc) {
        return 2;
    }
    if s.bitmap != 0 && s.bitmap == p.bitmap {
        return 100;
    }
    if s.history.iter().any(|h| *h != 0 && p.history.contains(h)) {
        return -100;
    }
    -1000
}

fn failed(command: &str, code: i32, stderr: impl Into<String>) -> DrbdError {
    DrbdError::Exec(ExecError::Failed {
        command: command.to_string(),
        code: Some(code),
        stdout: String::new(),
        stderr: stderr.into(),
    })
}

/// The command line the real implementation runs for an operation (for error messages).
fn command(op: DrbdOp, name: &str, force: bool) -> String {
    match op {
        DrbdOp::Kernel => "modprobe drbd".into(),
        DrbdOp::WriteConfig | DrbdOp::RemoveConfig => format!("/etc/drbd.d/{name}.res"),
        DrbdOp::HasMetadata => format!("drbdadm dump-md {name}"),
        DrbdOp::CreateMetadata => format!("drbdadm create-md {name}"),
        DrbdOp::WipeMetadata => format!("drbdadm wipe-md {name}"),
        DrbdOp::Up => format!("drbdadm up {name}"),
        DrbdOp::Adjust => format!("drbdadm adjust {name}"),
        DrbdOp::Connect if force => format!("drbdadm connect --discard-my-data {name}"),
        DrbdOp::Connect => format!("drbdadm connect {name}"),
        DrbdOp::Disconnect => format!("drbdadm disconnect {name}"),
        DrbdOp::Primary if force => format!("drbdadm primary --force {name}"),
        DrbdOp::Primary => format!("drbdadm primary {name}"),
        DrbdOp::Secondary => format!("drbdadm secondary {name}"),
        DrbdOp::Outdate => format!("drbdadm outdate {name}"),
        DrbdOp::ResumeIo => format!("drbdadm resume-io {name}"),
        DrbdOp::SkipInitialSync => format!("drbdadm new-current-uuid --clear-bitmap {name}"),
        DrbdOp::Resize if force => format!("drbdadm -- --assume-peer-has-space resize {name}"),
        DrbdOp::Resize => format!("drbdadm resize {name}"),
        DrbdOp::Down => format!("drbdadm down {name}"),
        DrbdOp::Status => "cat /proc/drbd".into(),
    }
}

/// What `primary` does next.
enum Promote {
    Done(Vec<Job>),
    /// Run `fence-peer` (for the resource instance given), then decide again.
    Fence(Job, u64),
}

impl NetState {
    /// A fresh UUID, instance or epoch number: never 0 or "just created", low bits clear
    /// (DRBD ignores a UUID's lowest bit).
    fn fresh(&mut self) -> u64 {
        self.counter += 1;
        self.counter << 8
    }

    fn node_mut(&mut self, n: &str) -> &mut Node {
        self.nodes.entry(n.to_string()).or_default()
    }

    fn res(&self, n: &str, name: &str) -> Option<&Res> {
        self.nodes.get(n)?.res.get(name)
    }

    fn res_mut(&mut self, n: &str, name: &str) -> Option<&mut Res> {
        self.nodes.get_mut(n)?.res.get_mut(name)
    }

    fn meta(&self, n: &str, name: &str) -> Option<&Meta> {
        self.nodes.get(n)?.meta.get(name)
    }

    fn meta_mut(&mut self, n: &str, name: &str) -> Option<&mut Meta> {
        self.nodes.get_mut(n)?.meta.get_mut(name)
    }

    fn linked(&self, a: &str, b: &str) -> bool {
        !self.cut.contains(&link(a, b))
    }

    /// The node `n`'s resource `name` is connected to.
    fn peer(&self, n: &str, name: &str) -> Option<String> {
        let r = self.res(n, name)?;
        if !r.connected {
            return None;
        }
        peer_host(&r.cfg, n).map(|h| h.hostname.clone())
    }

    fn peer_res(&self, n: &str, name: &str) -> Option<&Res> {
        let p = self.peer(n, name)?;
        self.res(&p, name)
    }

    fn kernel_ok(&self, n: &str) -> Result<(), DrbdError> {
        match self.nodes.get(n).and_then(|node| node.kernel.as_deref()) {
            None => Err(DrbdError::NotLoaded {
                detail: "modprobe: FATAL: Module drbd not found".into(),
            }),
            Some(v) if v.starts_with("8.4.") => Ok(()),
            Some(v) => Err(DrbdError::UnsupportedVersion { found: v.into() }),
        }
    }

    /// The resource file as `drbdadm` reads it: it must exist and name this node and one
    /// peer.
    fn cfg_for(&self, n: &str, name: &str, cmd: &str) -> Result<ResourceConfig, DrbdError> {
        let cfg = self
            .nodes
            .get(n)
            .and_then(|node| node.files.get(name))
            .ok_or_else(|| DrbdError::NoSuchResource(name.into()))?;
        if own_host(cfg, n).is_none() {
            return Err(DrbdError::NoSuchResource(name.into()));
        }
        if cfg.hosts.len() > 2 {
            return Err(failed(
                cmd,
                10,
                format!(
                    "/etc/drbd.d/{name}.res: resource {name}: {} 'on' sections; DRBD 8.4 needs this host and at most one peer",
                    cfg.hosts.len()
                ),
            ));
        }
        Ok(cfg.clone())
    }

    /// drbdadm's refusal of a network command for a file that names no peer.
    fn no_peer(cmd: &str, name: &str) -> DrbdError {
        failed(
            cmd,
            1,
            format!("resource {name}: cannot configure network without knowing my peer."),
        )
    }

    fn up_res(&self, n: &str, name: &str) -> Result<&Res, DrbdError> {
        self.res(n, name)
            .ok_or_else(|| DrbdError::NoSuchResource(name.into()))
    }

    /// Whether the metadata is there; with a [`FakeLvm`] attached, metadata whose device
    /// was removed is gone (a new volume at that path starts zeroed).
    fn meta_present(&mut self, n: &str, name: &str) -> bool {
        let Some(node) = self.nodes.get_mut(n) else {
            return false;
        };
        let Some(m) = node.meta.get(name) else {
            return false;
        };
        if node.lvm.is_some()
            && !node.res.contains_key(name)
            && !node.sizes.contains_key(&m.meta_disk)
            && node.lv_size(&m.meta_disk).is_none()
        {
            node.meta.remove(name);
            return false;
        }
        true
    }

    /// The size DRBD can use on node `n` for `cfg`: its backing disk, capped by what the
    /// metadata device covers.
    fn usable(&self, n: &str, cfg: &ResourceConfig) -> Result<u64, String> {
        let node = self.nodes.get(n).ok_or("no such node")?;
        let host = own_host(cfg, n).ok_or("not defined for this host")?;
        let data = match node.sizes.get(&host.disk) {
            Some(s) => *s,
            None if node.lvm.is_some() => node
                .lv_size(&host.disk)
                .ok_or("Failure: (104) Can not open backing device.")?,
            None => DEFAULT_DISK_BYTES,
        };
        let meta = match node.sizes.get(&host.meta_disk) {
            Some(s) => Some(*s),
            None if node.lvm.is_some() => Some(
                node.lv_size(&host.meta_disk)
                    .ok_or("Failure: (105) Can not open meta device.")?,
            ),
            None => None,
        };
        Ok(meta.map_or(data, |m| data.min(meta_capacity(m))))
    }

    /// Records and prepares a handler run, when the resource's config names a handler
    /// (otherwise `drbdadm` runs nothing).
    fn job(&mut self, n: &str, name: &str, cmd: &str, fence: bool) -> Option<Job> {
        let node = self.nodes.get(n)?;
        let r = node.res.get(name)?;
        r.cfg.handler.as_ref()?;
        let call = HelperCall {
            node: n.to_string(),
            command: cmd.to_string(),
            resource: name.to_string(),
            minor: r.cfg.minor,
        };
        let fence = fence.then_some((r.instance, r.epoch));
        let helper = node.helper.clone();
        self.helper_calls.push(call.clone());
        Some(Job {
            call,
            helper,
            fence,
        })
    }

    /// Node `n`'s side of `name` loses its connection. `os_pdsk`: the peer's disk while
    /// connected; `ns_pdsk`: the peer's disk agreed in a clean disconnect (`None`: the
    /// link just broke).
    fn lose(
        &mut self,
        n: &str,
        name: &str,
        os_pdsk: DiskState,
        ns_pdsk: Option<DiskState>,
        jobs: &mut Vec<Job>,
    ) {
        let epoch = self.fresh();
        let uuid = self.fresh();
        let bitmap_clear = self.meta(n, name).is_some_and(|m| m.bitmap == 0);
        let Some(r) = self.res_mut(n, name) else {
            return;
        };
        if !r.connected {
            return;
        }
        r.connected = false;
        r.sync = None;
        r.epoch = epoch;
        r.pdsk = match ns_pdsk.unwrap_or(os_pdsk) {
            d @ (DiskState::Inconsistent | DiskState::Outdated) => d,
            _ => DiskState::DUnknown,
        };
        let primary = r.role == Role::Primary;
        let fence = primary && r.pdsk == DiskState::DUnknown;
        if fence {
            r.suspended = true;
        }
        // after_state_ch: a primary that lost its peer's copy of the data starts a new
        // generation (deferred while I/O is frozen, dropped if the peer comes back).
        let lost = matches!(
            os_pdsk,
            DiskState::Inconsistent | DiskState::Consistent | DiskState::UpToDate
        ) && matches!(r.pdsk, DiskState::DUnknown | DiskState::Outdated);
        let mut new_now = false;
        if lost && primary && r.disk == DiskState::UpToDate && bitmap_clear {
            if r.suspended {
                r.new_cur_pending = true;
            } else {
                new_now = true;
            }
        }
        if new_now {
            if let Some(m) = self.meta_mut(n, name) {
                m.new_current(uuid);
            }
        }
        if fence {
            if let Some(j) = self.job(n, name, "fence-peer", true) {
                jobs.push(j);
            }
        }
    }

    /// The link under a connected resource breaks (both sides notice).
    fn break_link(&mut self, a: &str, name: &str, jobs: &mut Vec<Job>) {
        let Some(b) = self.peer(a, name) else {
            return;
        };
        let da = self.res(a, name).map_or(DiskState::DUnknown, |r| r.disk);
        let db = self.res(&b, name).map_or(DiskState::DUnknown, |r| r.disk);
        self.lose(a, name, db, None, jobs);
        self.lose(&b, name, da, None, jobs);
    }

    /// `x` disconnects cleanly: against a primary the secondary outdates itself (DRBD's
    /// `conn_try_disconnect` retries with the secondary Outdated), so nobody freezes.
    fn clean_disconnect(&mut self, x: &str, name: &str, jobs: &mut Vec<Job>) {
        let Some(y) = self.peer(x, name) else {
            return;
        };
        let (Some(rx), Some(ry)) = (self.res(x, name), self.res(&y, name)) else {
            return;
        };
        let (xr, xd, yr, yd) = (rx.role, rx.disk, ry.role, ry.disk);
        let outdate = |d: DiskState| {
            if matches!(d, DiskState::UpToDate | DiskState::Consistent) {
                DiskState::Outdated
            } else {
                d
            }
        };
        let x_new = if yr == Role::Primary { outdate(xd) } else { xd };
        let y_new = if xr == Role::Primary { outdate(yd) } else { yd };
        if let Some(r) = self.res_mut(x, name) {
            r.disk = x_new;
        }
        if let Some(r) = self.res_mut(&y, name) {
            r.disk = y_new;
        }
        self.lose(x, name, yd, (xr == Role::Primary).then_some(y_new), jobs);
        self.lose(&y, name, xd, (yr == Role::Primary).then_some(x_new), jobs);
    }

    /// Writes the state-derived flags to the metadata, as DRBD does on every state change
    /// (read back only at the next attach).
    fn persist(&mut self, n: &str, name: &str) {
        let Some(r) = self.res(n, name) else {
            return;
        };
        let pd = if r.connected {
            self.peer_res(n, name)
                .map_or(DiskState::DUnknown, |p| p.disk)
        } else {
            r.pdsk
        };
        let (disk, size) = (r.disk, r.size);
        if let Some(m) = self.meta_mut(n, name) {
            m.consistent = rank(disk) > rank(DiskState::Inconsistent);
            m.was_up_to_date = rank(disk) > rank(DiskState::Outdated);
            m.peer_outdated = matches!(pd, DiskState::Inconsistent | DiskState::Outdated);
            m.la_size = size;
        }
    }

    /// The peer node `a`'s resource `name` can connect to now, if any.
    fn connectable(&self, a: &str, name: &str) -> Option<String> {
        let na = self.nodes.get(a)?;
        let ra = na.res.get(name)?;
        if !na.booted || !ra.want_connect || ra.connected {
            return None;
        }
        let pa = peer_host(&ra.cfg, a)?;
        let b = pa.hostname.as_str();
        let nb = self.nodes.get(b)?;
        let rb = nb.res.get(name)?;
        if !nb.booted || !rb.want_connect || rb.connected || !self.linked(a, b) {
            return None;
        }
        let pb = peer_host(&rb.cfg, b)?;
        let (ma, mb) = (own_host(&ra.cfg, a)?, own_host(&rb.cfg, b)?);
        let agree = pb.hostname == a
            && ra.cfg.port == rb.cfg.port
            && pa.address == mb.address
            && pb.address == ma.address;
        agree.then(|| b.to_string())
    }

    /// Connects every pair that can connect (each handshake connects both sides or makes
    /// at least one StandAlone, so this ends).
    fn reconcile(&mut self, jobs: &mut Vec<Job>) {
        loop {
            let mut found = None;
            'all: for (n, node) in &self.nodes {
                for name in node.res.keys() {
                    if let Some(b) = self.connectable(n, name) {
                        found = Some((n.clone(), b, name.clone()));
                        break 'all;
                    }
                }
            }
            let Some((a, b, name)) = found else {
                break;
            };
            self.handshake(&a, &b, &name, jobs);
        }
    }

    fn standalone(&mut self, n: &str, name: &str) {
        if let Some(r) = self.res_mut(n, name) {
            r.want_connect = false;
            r.discard = false;
        }
    }

    /// `drbd_sync_handshake` between `a` and `b` (both waiting for each other).
    fn handshake(&mut self, a: &str, b: &str, name: &str, jobs: &mut Vec<Job>) {
        let (Some(ra), Some(rb)) = (self.res(a, name).cloned(), self.res(b, name).cloned()) else {
            return;
        };
        let (Some(ma), Some(mb)) = (self.meta(a, name).cloned(), self.meta(b, name).cloned())
        else {
            self.standalone(a, name);
            self.standalone(b, name);
            return;
        };
        let ua = self.usable(a, &ra.cfg).unwrap_or(ra.size);
        let ub = self.usable(b, &rb.cfg).unwrap_or(rb.size);
        let size = ua.min(ub);
        // "The peer's disk size is too small!": a side with data never shrinks.
        for (x, rx) in [(a, &ra), (b, &rb)] {
            if rank(rx.disk) >= rank(DiskState::Outdated) && rx.size > size {
                self.standalone(x, name);
                return;
            }
        }
        let (da, db) = (ra.disk, rb.disk);
        let inc = rank(DiskState::Inconsistent);
        let mut hg = compare(&ma, &mb);
        if hg == -1000 {
            // "Unrelated data, aborting!"
            self.standalone(a, name);
            self.standalone(b, name);
            return;
        }
        if (rank(da) == inc && rank(db) > inc) || (rank(db) == inc && rank(da) > inc) {
            // "Becoming sync source/target due to disk states."
            let full = hg == -100 || hg.abs() == 2;
            hg = if rank(da) > inc { 1 } else { -1 };
            if full {
                hg *= 2;
            }
        }
        if hg == 100 {
            // after-sb-0pri/1pri/2pri disconnect: never resolved automatically.
            hg = -100;
        }
        if hg == -100 {
            if ra.discard && !rb.discard {
                hg = -1;
            } else if !ra.discard && rb.discard {
                hg = 1;
            }
        }
        if hg == -100 {
            // "Split-Brain detected but unresolved, dropping connection!" on both sides.
            self.standalone(a, name);
            self.standalone(b, name);
            for x in [a, b] {
                if let Some(j) = self.job(x, name, "split-brain", false) {
                    jobs.push(j);
                }
            }
            return;
        }
        // "I shall become SyncSource, but I am inconsistent!"
        if hg > 0 && rank(da) <= inc {
            self.standalone(a, name);
            return;
        }
        if hg < 0 && rank(db) <= inc {
            self.standalone(b, name);
            return;
        }
        // "I shall become SyncTarget, but I am primary!"
        let cons = rank(DiskState::Consistent);
        if hg < 0 && ra.role == Role::Primary && rank(da) >= cons {
            self.standalone(a, name);
            return;
        }
        if hg > 0 && rb.role == Role::Primary && rank(db) >= cons {
            self.standalone(b, name);
            return;
        }
        if ra.role == Role::Primary && rb.role == Role::Primary {
            // No allow-two-primaries.
            self.standalone(a, name);
            self.standalone(b, name);
            return;
        }
        let old = ra.size.min(rb.size);
        let both_data = rank(da) > inc && rank(db) > inc;
        for x in [a, b] {
            let epoch = self.fresh();
            if let Some(r) = self.res_mut(x, name) {
                r.connected = true;
                r.epoch = epoch;
                r.discard = false;
                r.sync = None;
                r.size = size;
                // Frozen I/O resumes when the connection is back; no new generation then.
                r.suspended = false;
                r.new_cur_pending = false;
            }
            if let Some(m) = self.meta_mut(x, name) {
                m.la_size = size;
            }
        }
        let grown = if both_data {
            size.saturating_sub(old)
        } else {
            0
        };
        match hg {
            0 => {
                for x in [a, b] {
                    if let Some(r) = self.res_mut(x, name) {
                        // "D_CONSISTENT and D_OUTDATED vanish when we get connected."
                        if matches!(r.disk, DiskState::Consistent | DiskState::Outdated) {
                            r.disk = DiskState::UpToDate;
                        }
                    }
                    if let Some(m) = self.meta_mut(x, name) {
                        m.shared_oos = 0;
                        m.own_oos = 0;
                    }
                }
                if grown > 0 {
                    // Resync of the new area after growing, from the primary.
                    let (src, tgt) = if rb.role == Role::Primary {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    self.start_sync(src, tgt, name, grown);
                }
            }
            _ => {
                let (src, tgt) = if hg > 0 { (a, b) } else { (b, a) };
                let amount = if hg.abs() == 2 {
                    size
                } else {
                    ma.shared_oos
                        .max(mb.shared_oos)
                        .saturating_add(ma.own_oos)
                        .saturating_add(mb.own_oos)
                        .saturating_add(grown)
                        .min(size)
                };
                self.start_sync(src, tgt, name, amount);
            }
        }
    }

    /// Starts a resync of `amount` bytes (the sync UUID handshake of DRBD 8.4).
    fn start_sync(&mut self, src: &str, tgt: &str, name: &str, amount: u64) {
        let fresh = self.fresh();
        let Some(ms) = self.meta_mut(src, name) else {
            return;
        };
        let sync_uuid = if ms.bitmap != 0 && ms.bitmap != JUST_CREATED {
            ms.bitmap.wrapping_add(NEW_BM_OFFSET)
        } else {
            fresh
        };
        if ms.bitmap != 0 {
            ms.history = [ms.bitmap, ms.history[0]];
        }
        ms.bitmap = sync_uuid;
        ms.shared_oos = amount;
        ms.own_oos = 0;
        if let Some(mt) = self.meta_mut(tgt, name) {
            mt.current = sync_uuid;
            mt.bitmap = 0;
            mt.shared_oos = amount;
            mt.own_oos = 0;
        }
        if let Some(r) = self.res_mut(src, name) {
            r.sync = Some((Side::Source, amount));
            r.disk = DiskState::UpToDate;
        }
        if let Some(r) = self.res_mut(tgt, name) {
            r.sync = Some((Side::Target, amount));
            r.disk = DiskState::Inconsistent;
        }
        if amount == 0 || !self.held.contains(name) {
            self.finish_sync(src, tgt, name);
        }
    }

    /// `drbd_resync_finished`: the target takes the source's generation and data.
    fn finish_sync(&mut self, src: &str, tgt: &str, name: &str) {
        let Some(ms) = self.meta_mut(src, name) else {
            return;
        };
        ms.clear_bitmap_uuid();
        ms.shared_oos = 0;
        ms.own_oos = 0;
        let (current, history, data) = (ms.current, ms.history, ms.data);
        if let Some(mt) = self.meta_mut(tgt, name) {
            mt.current = current;
            mt.bitmap = 0;
            mt.history = history;
            mt.shared_oos = 0;
            mt.own_oos = 0;
            mt.data = data;
        }
        for x in [src, tgt] {
            if let Some(r) = self.res_mut(x, name) {
                r.sync = None;
                r.disk = DiskState::UpToDate;
            }
        }
    }

    /// (source, target) of every resync of `name` in progress.
    fn syncs(&self, name: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (n, node) in &self.nodes {
            if let Some(r) = node.res.get(name) {
                if matches!(r.sync, Some((Side::Source, _))) {
                    if let Some(p) = self.peer(n, name) {
                        out.push((n.clone(), p));
                    }
                }
            }
        }
        out
    }

    /// The answer of a `fence-peer` run (`conn_try_outdate_peer`); resumes frozen I/O once
    /// the peer is known Inconsistent/Outdated.
    fn apply_fence(&mut self, n: &str, name: &str, code: Option<i32>) {
        let uuid = self.fresh();
        let mut new_now = false;
        let Some(r) = self.res_mut(n, name) else {
            return;
        };
        match code {
            Some(3) => r.pdsk = DiskState::Inconsistent,
            Some(4) | Some(7) => r.pdsk = DiskState::Outdated,
            Some(5) if r.disk == DiskState::UpToDate => r.pdsk = DiskState::Outdated,
            // "Peer is primary, outdating myself" (refused for a primary).
            Some(6) if r.role != Role::Primary => r.disk = DiskState::Outdated,
            _ => {}
        }
        if r.suspended && matches!(r.pdsk, DiskState::Inconsistent | DiskState::Outdated) {
            r.suspended = false;
            new_now = std::mem::take(&mut r.new_cur_pending);
        }
        if new_now {
            if let Some(m) = self.meta_mut(n, name) {
                m.new_current(uuid);
            }
        }
    }

    fn status(&self, n: &str) -> Vec<ResourceStatus> {
        let Some(node) = self.nodes.get(n) else {
            return Vec::new();
        };
        let mut out: Vec<ResourceStatus> = node
            .res
            .iter()
            .map(|(name, r)| {
                let peer = if r.connected {
                    self.peer_res(n, name)
                } else {
                    None
                };
                let connection = match (r.connected, r.sync) {
                    (true, Some((Side::Source, _))) => ConnState::SyncSource,
                    (true, Some((Side::Target, _))) => ConnState::SyncTarget,
                    (true, None) => ConnState::Connected,
                    (false, _) if r.want_connect => ConnState::WFConnection,
                    (false, _) => ConnState::StandAlone,
                };
                let oos = node.meta.get(name).map_or(0, |m| m.oos(r.size));
                // /proc/drbd prints the progress with one decimal.
                let sync_percent = r.sync.map(|(_, total)| {
                    if total == 0 {
                        100.0
                    } else {
                        let done = total.saturating_sub(oos) as f64 * 100.0 / total as f64;
                        (done * 10.0).floor() / 10.0
                    }
                });
                ResourceStatus {
                    name: name.clone(),
                    minor: r.cfg.minor,
                    role: r.role,
                    peer_role: peer.map_or(Role::Unknown, |p| p.role),
                    connection,
                    disk: r.disk,
                    peer_disk: peer.map_or(r.pdsk, |p| p.disk),
                    out_of_sync_bytes: oos,
                    sync_percent,
                    suspended: r.suspended,
                    size_bytes: r.size,
                }
            })
            .collect();
        out.sort_by_key(|s| s.minor);
        out
    }

    fn crash(&mut self, n: &str) -> Vec<Job> {
        let mut jobs = Vec::new();
        let Some(node) = self.nodes.get(n) else {
            return jobs;
        };
        if !node.booted {
            return jobs;
        }
        let names: Vec<String> = node.res.keys().cloned().collect();
        for name in &names {
            self.persist(n, name);
            if let Some(p) = self.peer(n, name) {
                let d = self.res(n, name).map_or(DiskState::DUnknown, |r| r.disk);
                self.lose(&p, name, d, None, &mut jobs);
            }
        }
        let node = self.node_mut(n);
        node.res.clear();
        node.open.clear();
        node.booted = false;
        node.boots += 1;
        jobs
    }

    /// `drbdadm up`: attach (disk state from the metadata flags) and connect.
    fn bring_up(
        &mut self,
        n: &str,
        name: &str,
        cfg: ResourceConfig,
        cmd: &str,
    ) -> Result<Vec<Job>, DrbdError> {
        if self.res(n, name).is_some() {
            return Err(failed(
                cmd,
                10,
                format!(
                    "{}: Failure: (161) Minor or volume exists already (delete it first)",
                    cfg.minor
                ),
            ));
        }
        if !self.meta_present(n, name) {
            return Err(failed(
                cmd,
                10,
                format!("{}: Failure: (119) No valid meta-data signature found.\n\n\t==> Use 'drbdadm create-md {name}' to initialize meta-data area. <==", cfg.minor),
            ));
        }
        let taken = self
            .nodes
            .get(n)
            .is_some_and(|node| node.res.values().any(|r| r.cfg.minor == cfg.minor));
        if taken {
            return Err(failed(
                cmd,
                10,
                format!(
                    "{}: Failure: (161) Minor or volume exists already (delete it first)",
                    cfg.minor
                ),
            ));
        }
        let usable = self
            .usable(n, &cfg)
            .map_err(|e| failed(cmd, 10, format!("{}: {e}", cfg.minor)))?;
        let Some(m) = self.meta(n, name) else {
            return Err(DrbdError::NoSuchResource(name.into()));
        };
        if m.consistent && usable < m.la_size {
            // "refusing to truncate a consistent device"
            return Err(failed(
                cmd,
                10,
                format!(
                    "{}: Failure: (111) Low.dev. smaller than requested DRBD-dev. size.",
                    cfg.minor
                ),
            ));
        }
        let mut disk = if !m.consistent {
            DiskState::Inconsistent
        } else if m.was_up_to_date {
            DiskState::Consistent
        } else {
            DiskState::Outdated
        };
        let pdsk = if m.peer_outdated {
            DiskState::Outdated
        } else {
            DiskState::DUnknown
        };
        if disk == DiskState::Consistent && pdsk == DiskState::Outdated {
            disk = DiskState::UpToDate;
        }
        let size = if m.la_size > 0 {
            m.la_size.min(usable)
        } else {
            usable
        };
        if let Some(m) = self.meta_mut(n, name) {
            m.la_size = size;
        }
        let instance = self.fresh();
        let epoch = self.fresh();
        let want_connect = peer_host(&cfg, n).is_some();
        self.node_mut(n).res.insert(
            name.to_string(),
            Res {
                cfg,
                instance,
                role: Role::Secondary,
                disk,
                pdsk,
                want_connect,
                connected: false,
                epoch,
                sync: None,
                discard: false,
                suspended: false,
                new_cur_pending: false,
                size,
            },
        );
        let mut jobs = Vec::new();
        self.reconcile(&mut jobs);
        Ok(jobs)
    }

    /// One step of `drbd_set_role(Primary)`. `fenced`: `fence-peer` already ran.
    fn promote(
        &mut self,
        n: &str,
        name: &str,
        force: bool,
        fenced: bool,
        cmd: &str,
    ) -> Result<Promote, DrbdError> {
        let peer = self.peer(n, name);
        let peer_state = self.peer_res(n, name).map(|p| (p.role, p.disk));
        let r = self.up_res(n, name)?;
        if r.role == Role::Primary {
            return Ok(Promote::Done(Vec::new()));
        }
        if peer_state.is_some_and(|(role, _)| role == Role::Primary) {
            return Err(DrbdError::PeerIsPrimary(name.into()));
        }
        let connected = peer.is_some();
        let (minor, instance) = (r.cfg.minor, r.instance);
        let pdsk = peer_state.map_or(r.pdsk, |(_, d)| d);
        let mut disk = r.disk;
        let mut forced = false;
        let access = disk == DiskState::UpToDate || (connected && pdsk == DiskState::UpToDate);
        if !access {
            let target = matches!(r.sync, Some((Side::Target, _)));
            if force && rank(disk) >= rank(DiskState::Inconsistent) && !target {
                forced = true;
                disk = DiskState::UpToDate;
            } else if disk == DiskState::Consistent
                && !connected
                && pdsk == DiskState::DUnknown
                && !fenced
            {
                return match self.job(n, name, "fence-peer", false) {
                    Some(j) => Ok(Promote::Fence(j, instance)),
                    None => Err(DrbdError::NotUpToDate(name.into())),
                };
            } else {
                return Err(DrbdError::NotUpToDate(name.into()));
            }
        }
        let mut new_pdsk = pdsk;
        if !connected && pdsk == DiskState::DUnknown {
            if !fenced {
                if let Some(j) = self.job(n, name, "fence-peer", false) {
                    return Ok(Promote::Fence(j, instance));
                }
            }
            if force {
                // "Forced into split brain situation!"
                new_pdsk = DiskState::Outdated;
            } else {
                return Err(failed(
                    cmd,
                    11,
                    format!(
                        "{minor}: State change failed: (-7) Refusing to be Primary while peer is not outdated"
                    ),
                ));
            }
        }
        let uuid = self.fresh();
        let bitmap_clear = self.meta(n, name).is_some_and(|m| m.bitmap == 0);
        if let Some(r) = self.res_mut(n, name) {
            r.role = Role::Primary;
            r.disk = disk;
            if !connected {
                r.pdsk = new_pdsk;
            }
        }
        if (!connected && bitmap_clear) || forced {
            if let Some(m) = self.meta_mut(n, name) {
                m.new_current(uuid);
            }
        }
        if forced {
            // The initial full sync to a connected Inconsistent peer.
            if let (Some(p), Some((_, DiskState::Inconsistent))) = (peer, peer_state) {
                let size = self.res(n, name).map_or(0, |r| r.size);
                self.start_sync(n, &p, name, size);
            }
        }
        Ok(Promote::Done(Vec::new()))
    }
}

struct Inner {
    state: Mutex<NetState>,
    /// Handler runs not finished yet.
    inflight: watch::Sender<usize>,
}

/// The cluster: nodes, links, handler programs. Clones share one state.
#[derive(Clone)]
pub struct FakeDrbdNet {
    inner: Arc<Inner>,
}

impl Default for FakeDrbdNet {
    fn default() -> Self {
        FakeDrbdNet {
            inner: Arc::new(Inner {
                state: Mutex::new(NetState::default()),
                inflight: watch::channel(0).0,
            }),
        }
    }
}

/// Counts a handler run as finished however its task ends (a panicking helper included),
/// so [`FakeDrbdNet::settle`] never waits for a run that is gone.
struct Running(FakeDrbdNet);

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .inner
            .inflight
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl FakeDrbdNet {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // A test that panicked while holding the lock poisoned it; the state is still the
        // best description of the cluster, so keep using it.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Node `name`'s DRBD (the node is created, booted, with DRBD 8.4, if new).
    pub fn node(&self, name: &str) -> FakeDrbd {
        FakeDrbd::new(self, name)
    }

    /// Starts handler runs as tasks (DRBD runs them from kernel threads, not from the
    /// command that caused them).
    fn spawn(&self, jobs: Vec<Job>) {
        for job in jobs {
            self.inner.inflight.send_modify(|n| *n += 1);
            let running = Running(self.clone());
            tokio::spawn(async move {
                let code = match &job.helper {
                    Some(h) => Some(h(job.call.clone()).await),
                    None => None,
                };
                if let Some((instance, epoch)) = job.fence {
                    let net = &running.0;
                    let mut s = net.lock();
                    let (n, name) = (&job.call.node, &job.call.resource);
                    // "Ignoring fence-peer exit code": the resource went down, or the
                    // connection came back (or broke again) meanwhile.
                    let current = s
                        .res(n, name)
                        .is_some_and(|r| r.instance == instance && r.epoch == epoch);
                    if current {
                        s.apply_fence(n, name, code);
                    }
                }
                drop(running);
            });
        }
    }

    /// Waits until every handler run started so far has finished and been applied.
    pub async fn settle(&self) {
        let mut rx = self.inner.inflight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Cuts the link between `a` and `b`: connected resources lose their connection.
    pub fn cut(&self, a: &str, b: &str) {
        let jobs = {
            let mut s = self.lock();
            s.cut.insert(link(a, b));
            let mut jobs = Vec::new();
            let names: Vec<String> = s
                .nodes
                .get(a)
                .map(|n| n.res.keys().cloned().collect())
                .unwrap_or_default();
            for name in names {
                if s.peer(a, &name).as_deref() == Some(b) {
                    s.break_link(a, &name, &mut jobs);
                }
            }
            jobs
        };
        self.spawn(jobs);
    }

    /// Restores the link between `a` and `b`; waiting resources connect.
    pub fn heal(&self, a: &str, b: &str) {
        let jobs = {
            let mut s = self.lock();
            s.cut.remove(&link(a, b));
            let mut jobs = Vec::new();
            s.reconcile(&mut jobs);
            jobs
        };
        self.spawn(jobs);
    }

    /// The node dies: its kernel state (resources, roles, frozen I/O, open devices) is
    /// gone; files, metadata and data stay. Its peers lose their connections.
    pub fn crash(&self, node: &str) {
        let jobs = self.lock().crash(node);
        self.spawn(jobs);
    }

    /// The node is back, with no resource up (the agent brings them up).
    pub fn boot(&self, node: &str) {
        self.lock().node_mut(node).booted = true;
    }

    /// The DRBD version the node's kernel has; `None`: no DRBD module.
    pub fn set_kernel(&self, node: &str, version: Option<&str>) {
        self.lock().node_mut(node).kernel = version.map(str::to_string);
    }

    /// Marks the device of `res` on `node` open (mounted, used by a pod) or closed.
    pub fn set_open(&self, node: &str, res: &str, open: bool) {
        let mut s = self.lock();
        let n = s.node_mut(node);
        if open {
            n.open.insert(res.to_string());
        } else {
            n.open.remove(res);
        }
    }

    /// The node's handler program: receives each run and returns its exit code.
    pub fn set_helper<F, Fut>(&self, node: &str, f: F)
    where
        F: Fn(HelperCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = i32> + Send + 'static,
    {
        let helper: Helper = Arc::new(move |c| Box::pin(f(c)));
        self.lock().node_mut(node).helper = Some(helper);
    }

    /// Removes the node's handler program (runs then fail: I/O stays frozen).
    pub fn clear_helper(&self, node: &str) {
        self.lock().node_mut(node).helper = None;
    }

    /// Every handler run so far, in order.
    pub fn helper_calls(&self) -> Vec<HelperCall> {
        self.lock().helper_calls.clone()
    }

    /// Resyncs of `res` started from now on run until advanced or released.
    pub fn hold_sync(&self, res: &str) {
        self.lock().held.insert(res.to_string());
    }

    /// Moves `bytes` of every running resync of `res`; one that reaches 0 finishes.
    pub fn advance_sync(&self, res: &str, bytes: u64) {
        let mut s = self.lock();
        for (src, tgt) in s.syncs(res) {
            for n in [&src, &tgt] {
                if let Some(m) = s.meta_mut(n, res) {
                    m.shared_oos = m.shared_oos.saturating_sub(bytes);
                }
            }
            if s.meta(&src, res).is_none_or(|m| m.shared_oos == 0) {
                s.finish_sync(&src, &tgt, res);
            }
        }
    }

    /// Finishes the running resyncs of `res`; later ones finish at once again.
    pub fn release_sync(&self, res: &str) {
        let mut s = self.lock();
        s.held.remove(res);
        for (src, tgt) in s.syncs(res) {
            s.finish_sync(&src, &tgt, res);
        }
    }

    /// An application writes `bytes` to the device of `res` on `node`.
    pub fn write(&self, node: &str, res: &str, bytes: u64) -> Result<(), WriteError> {
        let mut s = self.lock();
        if !s.nodes.get(node).is_some_and(|n| n.booted) {
            return Err(WriteError::NodeDown);
        }
        let version = s.fresh();
        let uuid = s.fresh();
        let peer = s.peer(node, res);
        let r = s.res(node, res).ok_or(WriteError::NotUp)?;
        if r.role != Role::Primary {
            return Err(WriteError::NotPrimary);
        }
        if r.suspended {
            return Err(WriteError::Suspended);
        }
        let (size, sync, disk) = (r.size, r.sync, r.disk);
        match peer {
            Some(p) => {
                // Protocol C: on both disks; during a resync the target gets the data
                // with the resync.
                let to: Vec<&str> = match sync {
                    None => vec![node, &p],
                    Some((Side::Source, _)) => vec![node],
                    Some((Side::Target, _)) => vec![&p],
                };
                for n in to {
                    if let Some(m) = s.meta_mut(n, res) {
                        m.data = version;
                    }
                }
            }
            None => {
                if disk != DiskState::UpToDate {
                    return Err(WriteError::NoUpToDateData);
                }
                if let Some(m) = s.meta_mut(node, res) {
                    m.own_oos = m.own_oos.saturating_add(bytes).min(size);
                    if m.bitmap == 0 {
                        m.new_current(uuid);
                    }
                    m.data = version;
                }
            }
        }
        Ok(())
    }

    /// Sets the size of the block device at `path` on `node` (overrides a [`FakeLvm`]).
    pub fn set_disk_size(&self, node: &str, path: &str, bytes: u64) {
        self.lock()
            .node_mut(node)
            .sizes
            .insert(path.to_string(), bytes);
    }

    /// Reads the node's backing and metadata device sizes from its [`FakeLvm`] (by the
    /// logical volume's path, `/dev/<vg>/<lv>`); missing volumes fail attaches.
    pub fn attach_lvm(&self, node: &str, lvm: &FakeLvm) {
        self.lock().node_mut(node).lvm = Some(lvm.clone());
    }

    /// What `status` on `node` shows (not logged, no faults).
    pub fn status(&self, node: &str) -> Vec<ResourceStatus> {
        self.lock().status(node)
    }

    /// The status of one resource on `node`, if up.
    pub fn resource(&self, node: &str, res: &str) -> Option<ResourceStatus> {
        self.status(node).into_iter().find(|s| s.name == res)
    }

    /// The device size of `res` on `node`, if up.
    pub fn device_size(&self, node: &str, res: &str) -> Option<u64> {
        self.lock().res(node, res).map(|r| r.size)
    }

    /// The version of the data on `node`'s disk of `res` (0 before any write), if it has
    /// metadata. Equal versions: the same data.
    pub fn data(&self, node: &str, res: &str) -> Option<u64> {
        self.lock().meta(node, res).map(|m| m.data)
    }

    /// The current generation (UUID) of `res` on `node`, if it has metadata.
    pub fn generation(&self, node: &str, res: &str) -> Option<u64> {
        self.lock().meta(node, res).map(|m| m.current)
    }

    /// The resource file written on `node`.
    pub fn config(&self, node: &str, res: &str) -> Option<ResourceConfig> {
        self.lock()
            .nodes
            .get(node)
            .and_then(|n| n.files.get(res).cloned())
    }

    /// Whether `node` is booted.
    pub fn is_up(&self, node: &str) -> bool {
        self.lock().nodes.get(node).is_some_and(|n| n.booted)
    }
}

/// One node's DRBD. Clones share the node.
#[derive(Clone)]
pub struct FakeDrbd {
    net: FakeDrbdNet,
    node: String,
}

impl FakeDrbd {
    /// Node `node` of `net` (created, booted, with DRBD 8.4, if new).
    pub fn new(net: &FakeDrbdNet, node: &str) -> Self {
        net.lock().node_mut(node);
        FakeDrbd {
            net: net.clone(),
            node: node.to_string(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn net(&self) -> &FakeDrbdNet {
        &self.net
    }

    /// Makes the next `times` calls of `op` whose resource contains `resource` fail with
    /// `error` (`None`: every such call, until [`FakeDrbd::clear_faults`]). The call has
    /// no effect.
    pub fn fail(&self, op: DrbdOp, resource: &str, error: DrbdError, times: Option<usize>) {
        self.net.lock().node_mut(&self.node).faults.push(Fault {
            op,
            target: resource.to_string(),
            error,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.net.lock().node_mut(&self.node).faults.clear();
    }

    /// Holds calls of `op` whose resource contains `resource` until the gate is released.
    pub fn gate(&self, op: DrbdOp, resource: &str) -> Gate {
        let (tx, rx) = watch::channel(false);
        self.net
            .lock()
            .node_mut(&self.node)
            .gates
            .push((op, resource.to_string(), rx));
        Gate { tx }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.net
            .lock()
            .nodes
            .get(&self.node)
            .map(|n| n.calls.clone())
            .unwrap_or_default()
    }

    /// How many calls of `op` so far.
    pub fn count(&self, op: DrbdOp) -> usize {
        self.net
            .lock()
            .nodes
            .get(&self.node)
            .map_or(0, |n| n.calls.iter().filter(|c| c.op == op).count())
    }

    /// The state as the next `status` will show it.
    pub fn snapshot(&self) -> Vec<ResourceStatus> {
        self.net.status(&self.node)
    }

    /// Logs a call, waits at any gate it matches, then returns the fault it hits, if any;
    /// refuses when the node is down or crashed while the call waited.
    async fn enter(&self, op: DrbdOp, resource: &str, force: bool) -> Result<(), DrbdError> {
        let (gates, boots) = {
            let mut s = self.net.lock();
            let node = s.node_mut(&self.node);
            node.calls.push(Call {
                op,
                resource: resource.to_string(),
                force,
            });
            let gates: Vec<watch::Receiver<bool>> = node
                .gates
                .iter()
                .filter(|(o, t, _)| *o == op && resource.contains(t.as_str()))
                .map(|(_, _, rx)| rx.clone())
                .collect();
            (gates, node.boots)
        };
        for mut rx in gates {
            let _ = rx.wait_for(|open| *open).await;
        }
        let mut s = self.net.lock();
        let node = s.node_mut(&self.node);
        node.gates.retain(|(_, _, rx)| !*rx.borrow());
        if let Some(e) = node.take_fault(op, resource) {
            return Err(e);
        }
        if !node.booted || node.boots != boots {
            return Err(DrbdError::Exec(ExecError::Spawn {
                command: command(op, resource, force),
                reason: format!("node {} is down", self.node),
            }));
        }
        Ok(())
    }

    /// Runs `f` on the state under the lock, then starts the handler runs it caused.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut NetState, &str) -> Result<(T, Vec<Job>), DrbdError>,
    ) -> Result<T, DrbdError> {
        let (out, jobs) = {
            let mut s = self.net.lock();
            f(&mut s, &self.node)?
        };
        self.net.spawn(jobs);
        Ok(out)
    }
}

#[async_trait]
impl Drbd for FakeDrbd {
    async fn kernel(&self) -> Result<KernelDrbd, DrbdError> {
        self.enter(DrbdOp::Kernel, "", false).await?;
        let s = self.net.lock();
        s.kernel_ok(&self.node)?;
        let version = s
            .nodes
            .get(&self.node)
            .and_then(|n| n.kernel.clone())
            .unwrap_or_default();
        Ok(KernelDrbd { version })
    }

    async fn write_config(&self, cfg: &ResourceConfig) -> Result<bool, DrbdError> {
        self.enter(DrbdOp::WriteConfig, &cfg.name, false).await?;
        let mut s = self.net.lock();
        let old = s
            .node_mut(&self.node)
            .files
            .insert(cfg.name.clone(), cfg.clone());
        Ok(old.as_ref() != Some(cfg))
    }

    async fn remove_config(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::RemoveConfig, name, false).await?;
        self.net.lock().node_mut(&self.node).files.remove(name);
        Ok(())
    }

    async fn has_metadata(&self, name: &str) -> Result<bool, DrbdError> {
        self.enter(DrbdOp::HasMetadata, name, false).await?;
        let cmd = command(DrbdOp::HasMetadata, name, false);
        let mut s = self.net.lock();
        s.cfg_for(&self.node, name, &cmd)?;
        Ok(s.meta_present(&self.node, name))
    }

    async fn create_metadata(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::CreateMetadata, name, false).await?;
        let cmd = command(DrbdOp::CreateMetadata, name, false);
        let mut s = self.net.lock();
        let cfg = s.cfg_for(&self.node, name, &cmd)?;
        if s.meta_present(&self.node, name) {
            return Err(DrbdError::MetadataExists(name.into()));
        }
        let meta_disk = own_host(&cfg, &self.node)
            .map(|h| h.meta_disk.clone())
            .unwrap_or_default();
        let node = s.node_mut(&self.node);
        if node.lvm.is_some()
            && !node.sizes.contains_key(&meta_disk)
            && node.lv_size(&meta_disk).is_none()
        {
            return Err(failed(
                &cmd,
                20,
                format!("open({meta_disk}) failed: No such file or directory"),
            ));
        }
        node.meta.insert(name.to_string(), Meta::new(&meta_disk));
        Ok(())
    }

    async fn wipe_metadata(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::WipeMetadata, name, false).await?;
        let cmd = command(DrbdOp::WipeMetadata, name, false);
        let mut s = self.net.lock();
        let cfg = s.cfg_for(&self.node, name, &cmd)?;
        if s.res(&self.node, name).is_some() {
            return Err(failed(
                &cmd,
                20,
                format!("Device '{}' is configured!", cfg.minor),
            ));
        }
        s.node_mut(&self.node).meta.remove(name);
        Ok(())
    }

    async fn up(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Up, name, false).await?;
        let cmd = command(DrbdOp::Up, name, false);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            let cfg = s.cfg_for(n, name, &cmd)?;
            Ok(((), s.bring_up(n, name, cfg, &cmd)?))
        })
    }

    async fn adjust(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Adjust, name, false).await?;
        let cmd = command(DrbdOp::Adjust, name, false);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            let cfg = s.cfg_for(n, name, &cmd)?;
            let Some(r) = s.res(n, name) else {
                return Ok(((), s.bring_up(n, name, cfg, &cmd)?));
            };
            let endpoint = |c: &ResourceConfig| {
                (
                    c.port,
                    own_host(c, n).map(|h| h.address.clone()),
                    peer_host(c, n).map(|h| (h.hostname.clone(), h.address.clone())),
                )
            };
            let changed = endpoint(&r.cfg) != endpoint(&cfg);
            // The minor of a running resource does not change.
            let cfg = ResourceConfig {
                minor: r.cfg.minor,
                ..cfg
            };
            let mut jobs = Vec::new();
            if changed {
                s.clean_disconnect(n, name, &mut jobs);
            }
            let has_peer = peer_host(&cfg, n).is_some();
            if let Some(r) = s.res_mut(n, name) {
                r.cfg = cfg;
                r.want_connect = has_peer;
            }
            s.reconcile(&mut jobs);
            Ok(((), jobs))
        })
    }

    async fn connect(&self, name: &str, discard_my_data: bool) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Connect, name, discard_my_data).await?;
        let cmd = command(DrbdOp::Connect, name, discard_my_data);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            let cfg = s.cfg_for(n, name, &cmd)?;
            if peer_host(&cfg, n).is_none() {
                return Err(NetState::no_peer(&cmd, name));
            }
            let r = s.up_res(n, name)?;
            if r.want_connect {
                return Err(failed(
                    &cmd,
                    10,
                    format!(
                        "{}: Failure: (125) Device has a net-config (use disconnect first)",
                        r.cfg.minor
                    ),
                ));
            }
            if let Some(r) = s.res_mut(n, name) {
                r.cfg = ResourceConfig {
                    minor: r.cfg.minor,
                    ..cfg
                };
                r.want_connect = true;
                r.discard = discard_my_data;
            }
            let mut jobs = Vec::new();
            s.reconcile(&mut jobs);
            Ok(((), jobs))
        })
    }

    async fn disconnect(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Disconnect, name, false).await?;
        let cmd = command(DrbdOp::Disconnect, name, false);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            let cfg = s.cfg_for(n, name, &cmd)?;
            if peer_host(&cfg, n).is_none() {
                return Err(failed(&cmd, 20, "Missing connection endpoint argument"));
            }
            s.up_res(n, name)?;
            let mut jobs = Vec::new();
            s.clean_disconnect(n, name, &mut jobs);
            s.standalone(n, name);
            Ok(((), jobs))
        })
    }

    async fn primary(&self, name: &str, force: bool) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Primary, name, force).await?;
        let cmd = command(DrbdOp::Primary, name, force);
        let mut fenced = false;
        loop {
            let step = {
                let mut s = self.net.lock();
                s.kernel_ok(&self.node)?;
                s.cfg_for(&self.node, name, &cmd)?;
                s.promote(&self.node, name, force, fenced, &cmd)?
            };
            match step {
                Promote::Done(jobs) => {
                    self.net.spawn(jobs);
                    return Ok(());
                }
                Promote::Fence(job, instance) => {
                    // drbdsetup primary waits for the handler (conn_try_outdate_peer).
                    fenced = true;
                    let code = match &job.helper {
                        Some(h) => Some(h(job.call.clone()).await),
                        None => None,
                    };
                    let mut s = self.net.lock();
                    if s.res(&self.node, name)
                        .is_some_and(|r| r.instance == instance && !r.connected)
                    {
                        s.apply_fence(&self.node, name, code);
                        if let Some(r) = s.res_mut(&self.node, name) {
                            let peer_fenced =
                                matches!(r.pdsk, DiskState::Inconsistent | DiskState::Outdated);
                            if r.disk == DiskState::Consistent && peer_fenced {
                                r.disk = DiskState::UpToDate;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn secondary(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Secondary, name, false).await?;
        let cmd = command(DrbdOp::Secondary, name, false);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            s.cfg_for(n, name, &cmd)?;
            let r = s.up_res(n, name)?;
            if r.role == Role::Primary && s.nodes.get(n).is_some_and(|x| x.open.contains(name)) {
                return Err(DrbdError::InUse(name.into()));
            }
            if let Some(r) = s.res_mut(n, name) {
                r.role = Role::Secondary;
            }
            Ok(((), Vec::new()))
        })
    }

    async fn outdate(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Outdate, name, false).await?;
        let cmd = command(DrbdOp::Outdate, name, false);
        self.with(|s, n| {
            s.cfg_for(n, name, &cmd)?;
            let lower = |minor: u32| {
                failed(
                    &cmd,
                    17,
                    format!("{minor}: State change failed: (-?) Disk state is lower than outdated"),
                )
            };
            let Some(r) = s.res(n, name) else {
                // Not up: drbdadm outdates the metadata itself (drbdmeta outdate).
                if !s.meta_present(n, name) {
                    return Err(failed(&cmd, 10, "No valid meta data found"));
                }
                let minor = s
                    .nodes
                    .get(n)
                    .and_then(|x| x.files.get(name))
                    .map_or(0, |c| c.minor);
                let Some(m) = s.meta_mut(n, name) else {
                    return Err(DrbdError::NoSuchResource(name.into()));
                };
                if !m.consistent {
                    return Err(lower(minor));
                }
                m.was_up_to_date = false;
                return Ok(((), Vec::new()));
            };
            s.kernel_ok(n)?;
            let minor = r.cfg.minor;
            if r.role == Role::Primary {
                return Err(failed(
                    &cmd,
                    11,
                    format!("{minor}: State change failed: (-2) Need access to UpToDate data"),
                ));
            }
            if r.connected {
                return Err(failed(
                    &cmd,
                    11,
                    format!(
                        "{minor}: State change failed: (-15) Refusing to be Outdated while Connected"
                    ),
                ));
            }
            if rank(r.disk) < rank(DiskState::Outdated) {
                return Err(lower(minor));
            }
            if let Some(r) = s.res_mut(n, name) {
                r.disk = DiskState::Outdated;
            }
            Ok(((), Vec::new()))
        })
    }

    async fn resume_io(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::ResumeIo, name, false).await?;
        let cmd = command(DrbdOp::ResumeIo, name, false);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            s.cfg_for(n, name, &cmd)?;
            s.up_res(n, name)?;
            let uuid = s.fresh();
            let mut new_now = false;
            if let Some(r) = s.res_mut(n, name) {
                if r.suspended {
                    r.suspended = false;
                    new_now = std::mem::take(&mut r.new_cur_pending);
                }
            }
            if new_now {
                if let Some(m) = s.meta_mut(n, name) {
                    m.new_current(uuid);
                }
            }
            Ok(((), Vec::new()))
        })
    }

    async fn skip_initial_sync(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::SkipInitialSync, name, false).await?;
        let cmd = command(DrbdOp::SkipInitialSync, name, false);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            s.cfg_for(n, name, &cmd)?;
            let r = s.up_res(n, name)?;
            let idle = r.sync.is_none();
            let peer = s.peer(n, name);
            let uuid = s.fresh();
            let mine_new = s.meta(n, name).is_some_and(|m| m.current == JUST_CREATED);
            let peer_new = peer
                .as_deref()
                .and_then(|p| s.meta(p, name))
                .is_some_and(|m| m.current == JUST_CREATED);
            let data = s.meta(n, name).map_or(0, |m| m.data);
            if let Some(m) = s.meta_mut(n, name) {
                m.new_current(uuid);
                m.shared_oos = 0;
                m.own_oos = 0;
            }
            // The special case of `new-current-uuid --clear-bitmap`: connected, both sides
            // never held data. Otherwise only the local generation moves on.
            if let (Some(p), true, true, true) = (peer, idle, mine_new, peer_new) {
                if let Some(m) = s.meta_mut(n, name) {
                    m.bitmap = 0;
                }
                if let Some(m) = s.meta_mut(&p, name) {
                    m.current = uuid;
                    m.bitmap = 0;
                    m.shared_oos = 0;
                    m.own_oos = 0;
                    m.data = data;
                }
                for x in [n, p.as_str()] {
                    if let Some(r) = s.res_mut(x, name) {
                        r.disk = DiskState::UpToDate;
                    }
                }
            }
            Ok(((), Vec::new()))
        })
    }

    async fn resize(&self, name: &str, alone: bool) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Resize, name, alone).await?;
        let cmd = command(DrbdOp::Resize, name, alone);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            s.cfg_for(n, name, &cmd)?;
            let r = s.up_res(n, name)?.clone();
            if r.sync.is_some() {
                return Err(failed(
                    &cmd,
                    10,
                    format!(
                        "{}: Failure: (150) Resize not allowed during resync.",
                        r.cfg.minor
                    ),
                ));
            }
            let need_primary = || {
                failed(
                    &cmd,
                    10,
                    format!(
                        "{}: Failure: (131) Need one Primary node to resize.",
                        r.cfg.minor
                    ),
                )
            };
            let Some(p) = s.peer(n, name) else {
                if !alone {
                    // Apart, DRBD keeps the last agreed size.
                    return Ok(((), Vec::new()));
                }
                // --assume-peer-has-space: grown to this side's disk.
                if r.role != Role::Primary {
                    return Err(need_primary());
                }
                let new = s
                    .usable(n, &r.cfg)
                    .map_err(|e| failed(&cmd, 10, format!("{}: {e}", r.cfg.minor)))?;
                if new > r.size {
                    if let Some(x) = s.res_mut(n, name) {
                        x.size = new;
                    }
                    if let Some(m) = s.meta_mut(n, name) {
                        m.la_size = new;
                    }
                }
                return Ok(((), Vec::new()));
            };
            let Some(pr) = s.res(&p, name).cloned() else {
                return Ok(((), Vec::new()));
            };
            if r.role != Role::Primary && pr.role != Role::Primary {
                return Err(need_primary());
            }
            let mine = s
                .usable(n, &r.cfg)
                .map_err(|e| failed(&cmd, 10, format!("{}: {e}", r.cfg.minor)))?;
            let theirs = s
                .usable(&p, &pr.cfg)
                .map_err(|e| failed(&cmd, 10, format!("{}: {e}", r.cfg.minor)))?;
            let new = mine.min(theirs);
            if new <= r.size {
                return Ok(((), Vec::new()));
            }
            for x in [n, p.as_str()] {
                if let Some(r) = s.res_mut(x, name) {
                    r.size = new;
                }
                if let Some(m) = s.meta_mut(x, name) {
                    m.la_size = new;
                }
            }
            let (src, tgt) = if r.role == Role::Primary {
                (n, p.as_str())
            } else {
                (p.as_str(), n)
            };
            s.start_sync(src, tgt, name, new - r.size);
            Ok(((), Vec::new()))
        })
    }

    async fn down(&self, name: &str) -> Result<(), DrbdError> {
        self.enter(DrbdOp::Down, name, false).await?;
        let cmd = command(DrbdOp::Down, name, false);
        self.with(|s, n| {
            s.kernel_ok(n)?;
            s.cfg_for(n, name, &cmd)?;
            let Some(r) = s.res(n, name) else {
                return Ok(((), Vec::new()));
            };
            let open = s.nodes.get(n).is_some_and(|x| x.open.contains(name));
            if r.role == Role::Primary {
                if open {
                    return Err(DrbdError::InUse(name.into()));
                }
                if let Some(r) = s.res_mut(n, name) {
                    r.role = Role::Secondary;
                }
            }
            let mut jobs = Vec::new();
            s.clean_disconnect(n, name, &mut jobs);
            s.persist(n, name);
            s.node_mut(n).res.remove(name);
            Ok(((), jobs))
        })
    }

    async fn status(&self) -> Result<Vec<ResourceStatus>, DrbdError> {
        self.enter(DrbdOp::Status, "", false).await?;
        let s = self.net.lock();
        s.kernel_ok(&self.node)?;
        Ok(s.status(&self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_hostexec::lvm::Lvm;

    const R: &str = "r0";
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;

    fn cfg(handler: bool) -> ResourceConfig {
        let host = |n: &str, ip: &str| Host {
            hostname: n.into(),
            address: ip.into(),
            disk: format!("/dev/vg/{R}"),
            meta_disk: format!("/dev/vg/{R}_drbdmeta"),
        };
        ResourceConfig {
            name: R.into(),
            minor: 7,
            port: 43008,
            hosts: vec![host("a", "10.0.0.1"), host("b", "10.0.0.2")],
            handler: handler.then(|| "/usr/bin/handler".to_string()),
        }
    }

    /// A new resource configured, with metadata, up on both nodes (connected, both
    /// Inconsistent).
    async fn pair(handler: bool) -> (FakeDrbdNet, FakeDrbd, FakeDrbd) {
        let net = FakeDrbdNet::new();
        let (a, b) = (net.node("a"), net.node("b"));
        for d in [&a, &b] {
            assert!(d.write_config(&cfg(handler)).await.expect("config"));
            d.create_metadata(R).await.expect("create-md");
            d.up(R).await.expect("up");
        }
        (net, a, b)
    }

    /// A synced resource, primary on `a`.
    async fn replicated(handler: bool) -> (FakeDrbdNet, FakeDrbd, FakeDrbd) {
        let (net, a, b) = pair(handler).await;
        a.primary(R, true).await.expect("forced primary");
        net.settle().await;
        (net, a, b)
    }

    fn st(net: &FakeDrbdNet, node: &str) -> ResourceStatus {
        net.resource(node, R).expect("resource up")
    }

    fn conn(net: &FakeDrbdNet, node: &str) -> (ConnState, DiskState, DiskState) {
        let s = st(net, node);
        (s.connection, s.disk, s.peer_disk)
    }

    fn fence_calls(net: &FakeDrbdNet, node: &str) -> usize {
        net.helper_calls()
            .iter()
            .filter(|c| c.node == node && c.command == "fence-peer")
            .count()
    }

    fn exec_stderr(r: Result<(), DrbdError>) -> String {
        match r {
            Err(DrbdError::Exec(e)) => e.stderr().to_string(),
            other => panic!("expected a command failure, got {other:?}"),
        }
    }

    use ConnState::*;
    use DiskState::*;

    #[tokio::test]
    async fn kernel_is_84_unless_missing_or_another_version() {
        let net = FakeDrbdNet::new();
        let a = net.node("a");
        assert_eq!(a.kernel().await.expect("k").version, KERNEL_VERSION);
        net.set_kernel("a", None);
        assert!(matches!(a.kernel().await, Err(DrbdError::NotLoaded { .. })));
        assert!(matches!(a.status().await, Err(DrbdError::NotLoaded { .. })));
        net.set_kernel("a", Some("9.2.12"));
        assert!(matches!(
            a.kernel().await,
            Err(DrbdError::UnsupportedVersion { found }) if found == "9.2.12"
        ));
        a.write_config(&cfg(true))
            .await
            .expect("files need no kernel");
        a.create_metadata(R)
            .await
            .expect("drbdmeta needs no kernel");
        assert!(matches!(
            a.up(R).await,
            Err(DrbdError::UnsupportedVersion { .. })
        ));
    }

    #[tokio::test]
    async fn files_and_metadata_are_what_drbdadm_needs() {
        let net = FakeDrbdNet::new();
        let a = net.node("a");
        assert!(matches!(
            a.has_metadata(R).await,
            Err(DrbdError::NoSuchResource(_))
        ));
        assert!(a.write_config(&cfg(true)).await.expect("w"));
        assert!(!a.write_config(&cfg(true)).await.expect("same"));
        assert!(a.write_config(&cfg(false)).await.expect("changed"));
        assert_eq!(net.config("a", R), Some(cfg(false)));
        assert!(!a.has_metadata(R).await.expect("md?"));
        let no_md = exec_stderr(a.up(R).await);
        assert!(no_md.contains("No valid meta-data"), "{no_md}");
        a.create_metadata(R).await.expect("md");
        assert!(matches!(
            a.create_metadata(R).await,
            Err(DrbdError::MetadataExists(_))
        ));
        assert!(a.has_metadata(R).await.expect("md?"));
        a.up(R).await.expect("up");
        assert!(exec_stderr(a.up(R).await).contains("exists already"));
        assert!(exec_stderr(a.wipe_metadata(R).await).contains("is configured"));
        let s = st(&net, "a");
        assert_eq!(
            (
                s.minor,
                s.role,
                s.peer_role,
                s.connection,
                s.disk,
                s.peer_disk
            ),
            (
                7,
                Role::Secondary,
                Role::Unknown,
                WFConnection,
                Inconsistent,
                DUnknown
            )
        );
        a.down(R).await.expect("down");
        a.down(R).await.expect("down again is fine");
        assert!(a.status().await.expect("status").is_empty());
        a.wipe_metadata(R).await.expect("wipe");
        assert!(!a.has_metadata(R).await.expect("md?"));
        // A file that does not name this node, or names more than one peer.
        let mut other = cfg(true);
        other.hosts[0].hostname = "c".into();
        a.write_config(&other).await.expect("w");
        assert!(matches!(a.up(R).await, Err(DrbdError::NoSuchResource(_))));
        let mut crowded = cfg(true);
        let mut third = crowded.hosts[1].clone();
        third.hostname = "c".into();
        crowded.hosts.push(third);
        a.write_config(&crowded).await.expect("w");
        assert!(exec_stderr(a.create_metadata(R).await).contains("at most one peer"));
        a.remove_config(R).await.expect("rm");
        a.remove_config(R).await.expect("rm again");
        assert!(matches!(a.down(R).await, Err(DrbdError::NoSuchResource(_))));
    }

    #[tokio::test]
    async fn a_new_pair_syncs_fully_from_the_forced_primary() {
        let (net, a, b) = pair(true).await;
        assert_eq!(conn(&net, "a"), (Connected, Inconsistent, Inconsistent));
        assert!(matches!(
            a.primary(R, false).await,
            Err(DrbdError::NotUpToDate(_))
        ));
        net.hold_sync(R);
        a.primary(R, true).await.expect("forced");
        let (sa, sb) = (st(&net, "a"), st(&net, "b"));
        assert_eq!(
            (sa.role, sa.connection, sa.disk, sa.peer_disk),
            (Role::Primary, SyncSource, UpToDate, Inconsistent)
        );
        assert_eq!(
            (sb.peer_role, sb.connection, sb.disk),
            (Role::Primary, SyncTarget, Inconsistent)
        );
        assert_eq!(sa.out_of_sync_bytes, GI);
        assert_eq!(sb.sync_percent, Some(0.0));
        // Writes during the sync are mirrored; the target gets them with the sync.
        net.write("a", R, 4096).expect("write");
        net.advance_sync(R, GI / 4);
        let sb = st(&net, "b");
        assert_eq!(
            (sb.out_of_sync_bytes, sb.sync_percent),
            (3 * GI / 4, Some(25.0))
        );
        // b cannot be demoted into anything, and a connected SyncTarget may be promoted
        // only if the peer is not primary.
        assert!(matches!(
            b.primary(R, false).await,
            Err(DrbdError::PeerIsPrimary(_))
        ));
        net.advance_sync(R, 3 * GI / 4);
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
        assert_eq!(st(&net, "b").sync_percent, None);
        assert_eq!(net.generation("a", R), net.generation("b", R));
        assert_eq!(net.data("a", R), net.data("b", R));
        assert!(net.helper_calls().is_empty(), "nothing fenced");
        // Held syncs are released at once.
        a.secondary(R).await.expect("demote");
        net.release_sync(R);
    }

    #[tokio::test]
    async fn a_sync_target_may_be_promoted_while_its_up_to_date_peer_is_connected() {
        let (net, a, b) = pair(true).await;
        net.hold_sync(R);
        a.primary(R, true).await.expect("forced");
        a.secondary(R).await.expect("demote");
        b.primary(R, false).await.expect("DRBD serves b from a");
        assert_eq!(
            (st(&net, "b").role, st(&net, "b").disk),
            (Role::Primary, Inconsistent)
        );
        net.release_sync(R);
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
    }

    #[tokio::test]
    async fn skipping_the_initial_sync_needs_a_connected_new_pair() {
        let (net, a, _b) = pair(true).await;
        a.skip_initial_sync(R).await.expect("skip");
        assert_eq!(conn(&net, "a"), (Connected, UpToDate, UpToDate));
        assert_eq!(net.generation("a", R), net.generation("b", R));
        assert_eq!(st(&net, "b").out_of_sync_bytes, 0);

        // Apart it only moves this side's generation on: the disk stays Inconsistent and
        // the pair can no longer connect (this side would be a source without data).
        let net = FakeDrbdNet::new();
        let (a, b) = (net.node("a"), net.node("b"));
        for d in [&a, &b] {
            d.write_config(&cfg(true)).await.expect("config");
            d.create_metadata(R).await.expect("md");
        }
        a.up(R).await.expect("up");
        a.skip_initial_sync(R).await.expect("accepted");
        assert_eq!(st(&net, "a").disk, Inconsistent);
        b.up(R).await.expect("up");
        assert_eq!(st(&net, "a").connection, StandAlone);
        assert_eq!(st(&net, "b").connection, WFConnection);
    }

    #[tokio::test]
    async fn switchover_needs_the_old_primary_closed_and_demoted() {
        let (net, a, b) = replicated(true).await;
        let gen = net.generation("a", R);
        net.set_open("a", R, true);
        assert!(matches!(
            b.primary(R, false).await,
            Err(DrbdError::PeerIsPrimary(_))
        ));
        assert!(matches!(a.secondary(R).await, Err(DrbdError::InUse(_))));
        assert!(matches!(a.down(R).await, Err(DrbdError::InUse(_))));
        net.set_open("a", R, false);
        a.secondary(R).await.expect("demote");
        b.primary(R, false).await.expect("promote");
        let sb = st(&net, "b");
        assert_eq!(
            (sb.role, sb.peer_role, sb.connection),
            (Role::Primary, Role::Secondary, Connected)
        );
        assert_eq!(net.generation("b", R), gen, "connected: no new generation");
        net.write("b", R, MI).expect("write");
        assert!(matches!(net.write("a", R, MI), Err(WriteError::NotPrimary)));
        assert_eq!(net.data("a", R), net.data("b", R), "protocol C");
    }

    #[tokio::test]
    async fn a_cut_link_freezes_the_primary_until_fencing_outdates_the_peer() {
        let (net, _a, _b) = replicated(true).await;
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let wait = Arc::new(Mutex::new(Some(wait)));
        net.set_helper("a", move |_| {
            let wait = wait.lock().ok().and_then(|mut w| w.take());
            async move {
                if let Some(w) = wait {
                    let _ = w.await;
                }
                4
            }
        });
        let gen = net.generation("a", R);
        net.cut("a", "b");
        tokio::task::yield_now().await;
        let sa = st(&net, "a");
        assert!(sa.suspended, "frozen while the handler runs");
        assert_eq!(
            (sa.connection, sa.peer_role, sa.peer_disk),
            (WFConnection, Role::Unknown, DUnknown)
        );
        assert_eq!(net.write("a", R, MI), Err(WriteError::Suspended));
        assert_eq!(
            net.helper_calls(),
            vec![HelperCall {
                node: "a".into(),
                command: "fence-peer".into(),
                resource: R.into(),
                minor: 7,
            }]
        );
        let sb = st(&net, "b");
        assert_eq!(
            (sb.connection, sb.disk, sb.suspended),
            (WFConnection, UpToDate, false)
        );
        let _ = release.send(());
        net.settle().await;
        let sa = st(&net, "a");
        assert_eq!((sa.suspended, sa.peer_disk), (false, Outdated));
        assert_ne!(
            net.generation("a", R),
            gen,
            "a new generation after fencing"
        );
        net.write("a", R, 3 * MI).expect("write");
        assert_eq!(st(&net, "a").out_of_sync_bytes, 3 * MI);
        net.hold_sync(R);
        net.heal("a", "b");
        let sb = st(&net, "b");
        assert_eq!(
            (sb.connection, sb.disk, sb.out_of_sync_bytes),
            (SyncTarget, Inconsistent, 3 * MI)
        );
        net.release_sync(R);
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
        assert_eq!(net.data("a", R), net.data("b", R));
        assert_eq!(net.generation("a", R), net.generation("b", R));
    }

    #[tokio::test]
    async fn a_failed_fence_keeps_io_frozen_until_resumed_or_reconnected() {
        let (net, a, _b) = replicated(true).await;
        net.set_helper("a", |_| async { 1 });
        let gen = net.generation("a", R);
        net.cut("a", "b");
        net.settle().await;
        let sa = st(&net, "a");
        assert_eq!((sa.suspended, sa.peer_disk), (true, DUnknown));
        assert_eq!(fence_calls(&net, "a"), 1);
        // The link comes back: I/O resumes with no new generation and nothing to sync.
        net.heal("a", "b");
        let sa = st(&net, "a");
        assert_eq!((sa.suspended, sa.connection), (false, Connected));
        assert_eq!(net.generation("a", R), gen);
        // Again, and this time an operator resumes I/O by hand: a new generation starts.
        net.cut("a", "b");
        net.settle().await;
        assert!(st(&net, "a").suspended);
        a.resume_io(R).await.expect("resume");
        assert!(!st(&net, "a").suspended);
        assert_ne!(net.generation("a", R), gen);
        net.write("a", R, MI).expect("write after resume");
    }

    #[tokio::test]
    async fn fence_exit_5_resumes_an_up_to_date_primary() {
        let (net, _a, _b) = replicated(true).await;
        net.set_helper("a", |_| async { 5 });
        net.cut("a", "b");
        net.settle().await;
        let sa = st(&net, "a");
        assert_eq!((sa.suspended, sa.peer_disk), (false, Outdated));
    }

    #[tokio::test]
    async fn without_handlers_in_the_config_nothing_runs_and_io_stays_frozen() {
        let (net, a, _b) = replicated(false).await;
        net.set_helper("a", |_| async { 4 });
        net.cut("a", "b");
        net.settle().await;
        assert!(st(&net, "a").suspended);
        assert!(net.helper_calls().is_empty());
        a.resume_io(R).await.expect("resume");
        assert!(!st(&net, "a").suspended);
    }

    #[tokio::test]
    async fn a_crashed_secondary_is_fenced_and_resyncs_after_boot() {
        let (net, _a, b) = replicated(true).await;
        net.set_helper("a", |_| async { 7 });
        net.crash("b");
        assert!(!net.is_up("b"));
        assert!(net.status("b").is_empty());
        assert!(matches!(b.status().await, Err(DrbdError::Exec(_))));
        net.settle().await;
        assert_eq!(fence_calls(&net, "a"), 1);
        let sa = st(&net, "a");
        assert_eq!(
            (sa.suspended, sa.connection, sa.peer_disk),
            (false, WFConnection, Outdated)
        );
        net.write("a", R, 2 * MI).expect("write");
        net.boot("b");
        // While the link is down too, b comes back Consistent: it may have missed writes.
        net.cut("a", "b");
        b.up(R).await.expect("up");
        assert_eq!(conn(&net, "b"), (WFConnection, Consistent, DUnknown));
        assert!(matches!(
            b.primary(R, false).await,
            Err(DrbdError::NotUpToDate(_))
        ));
        net.hold_sync(R);
        net.heal("a", "b");
        let sb = st(&net, "b");
        assert_eq!((sb.connection, sb.out_of_sync_bytes), (SyncTarget, 2 * MI));
        net.release_sync(R);
        assert_eq!(net.data("a", R), net.data("b", R));
    }

    #[tokio::test]
    async fn a_crashed_primary_rejoins_as_sync_target_of_the_promoted_secondary() {
        let (net, a, b) = replicated(true).await;
        net.set_open("a", R, true);
        net.write("a", R, MI).expect("write");
        net.crash("a");
        net.settle().await;
        let sb = st(&net, "b");
        assert_eq!(
            (sb.connection, sb.disk, sb.peer_disk, sb.suspended),
            (WFConnection, UpToDate, DUnknown, false)
        );
        assert!(net.helper_calls().is_empty(), "a secondary does not fence");
        // Promotion without a fenced peer is refused...
        let e = exec_stderr(b.primary(R, false).await);
        assert!(e.contains("peer is not outdated"), "{e}");
        assert_eq!(
            fence_calls(&net, "b"),
            1,
            "b's handler ran (no helper: failed)"
        );
        // ...and allowed once the handler outdates (here: stonith) the peer.
        net.set_helper("b", |c| async move {
            assert_eq!(c.command, "fence-peer");
            7
        });
        b.primary(R, false).await.expect("promote");
        assert_eq!(fence_calls(&net, "b"), 2);
        assert_eq!(st(&net, "b").peer_disk, Outdated);
        net.write("b", R, 5 * MI).expect("write");
        net.boot("a");
        assert!(net.status("a").is_empty(), "nothing is up after a boot");
        net.hold_sync(R);
        a.up(R).await.expect("up");
        let sa = st(&net, "a");
        assert_eq!(
            (sa.role, sa.connection, sa.disk, sa.out_of_sync_bytes),
            (Role::Secondary, SyncTarget, Inconsistent, 5 * MI)
        );
        net.release_sync(R);
        assert_eq!(conn(&net, "a"), (Connected, UpToDate, UpToDate));
        assert_eq!(net.data("a", R), net.data("b", R));
        assert_eq!(net.generation("a", R), net.generation("b", R));
    }

    /// Both sides primary and written while apart.
    async fn split(handler: bool) -> (FakeDrbdNet, FakeDrbd, FakeDrbd) {
        let (net, a, b) = replicated(handler).await;
        // Both handlers claim the peer is outdated (say, a broken fencing setup).
        net.set_helper("a", |_| async { 4 });
        net.set_helper("b", |_| async { 4 });
        net.cut("a", "b");
        net.settle().await;
        b.primary(R, false).await.expect("b promoted");
        net.write("a", R, 2 * MI).expect("a writes");
        net.write("b", R, 3 * MI).expect("b writes");
        net.heal("a", "b");
        net.settle().await;
        (net, a, b)
    }

    #[tokio::test]
    async fn both_primaries_apart_is_split_brain_and_discarding_one_side_resolves_it() {
        let (net, a, b) = split(true).await;
        for n in ["a", "b"] {
            let s = st(&net, n);
            assert_eq!(
                (s.role, s.connection, s.peer_role),
                (Role::Primary, StandAlone, Role::Unknown)
            );
            assert!(net
                .helper_calls()
                .iter()
                .any(|c| c.node == n && c.command == "split-brain"));
        }
        let kept = net.data("a", R);
        // Connecting again without a decision meets the split brain again.
        a.connect(R, false).await.expect("connect a");
        assert_eq!(st(&net, "a").connection, WFConnection);
        b.connect(R, false).await.expect("connect b");
        net.settle().await;
        assert_eq!(st(&net, "a").connection, StandAlone);
        let sb_calls = |net: &FakeDrbdNet| {
            net.helper_calls()
                .iter()
                .filter(|c| c.command == "split-brain")
                .count()
        };
        assert_eq!(sb_calls(&net), 4);
        // b's changes are discarded: it must be secondary to become SyncTarget.
        b.secondary(R).await.expect("demote b");
        net.hold_sync(R);
        b.connect(R, true).await.expect("discard");
        assert_eq!(b.calls().last().map(|c| c.force), Some(true));
        a.connect(R, false).await.expect("connect a");
        let sb = st(&net, "b");
        assert_eq!(
            (sb.connection, sb.disk, sb.out_of_sync_bytes),
            (SyncTarget, Inconsistent, 5 * MI)
        );
        net.release_sync(R);
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
        assert_eq!(net.data("b", R), kept);
        assert_eq!(sb_calls(&net), 4);
    }

    #[tokio::test]
    async fn a_primary_cannot_discard_its_data() {
        let (net, a, b) = split(true).await;
        b.connect(R, true).await.expect("discard while primary");
        a.connect(R, false).await.expect("connect");
        // "I shall become SyncTarget, but I am primary!"
        assert_eq!(st(&net, "b").connection, StandAlone);
        assert_eq!(st(&net, "a").connection, WFConnection);
    }

    #[tokio::test]
    async fn a_clean_down_of_the_secondary_outdates_it_without_fencing() {
        let (net, a, b) = replicated(true).await;
        net.set_helper("a", |_| async { 1 });
        b.down(R).await.expect("down");
        net.settle().await;
        let sa = st(&net, "a");
        assert_eq!(
            (sa.connection, sa.peer_disk, sa.suspended),
            (WFConnection, Outdated, false)
        );
        assert!(net.helper_calls().is_empty());
        net.write("a", R, MI).expect("write");
        // b comes back Outdated: no promotion until it has resynced.
        net.cut("a", "b");
        b.up(R).await.expect("up");
        assert_eq!(conn(&net, "b"), (WFConnection, Outdated, DUnknown));
        assert!(matches!(
            b.primary(R, false).await,
            Err(DrbdError::NotUpToDate(_))
        ));
        net.heal("a", "b");
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
        assert_eq!(net.data("a", R), net.data("b", R));
        // A disconnect by the primary outdates the secondary the same way.
        a.disconnect(R).await.expect("disconnect");
        assert_eq!(conn(&net, "a"), (StandAlone, UpToDate, Outdated));
        assert_eq!(conn(&net, "b"), (WFConnection, Outdated, DUnknown));
        a.disconnect(R).await.expect("again: already StandAlone");
        assert!(exec_stderr(b.connect(R, false).await).contains("net-config"));
        a.adjust(R).await.expect("adjust reconnects");
        assert_eq!(conn(&net, "a"), (Connected, UpToDate, UpToDate));
    }

    #[tokio::test]
    async fn two_secondaries_part_without_outdating() {
        let (net, a, b) = replicated(true).await;
        a.secondary(R).await.expect("demote");
        b.down(R).await.expect("down");
        assert_eq!(conn(&net, "a"), (WFConnection, UpToDate, DUnknown));
        // A later promotion must fence: the peer may have been promoted meanwhile.
        net.set_helper("a", |_| async { 4 });
        a.primary(R, false).await.expect("promote");
        assert_eq!(fence_calls(&net, "a"), 1);
    }

    #[tokio::test]
    async fn outdate_follows_drbd() {
        let (net, a, b) = replicated(true).await;
        assert!(exec_stderr(a.outdate(R).await).contains("UpToDate data"));
        assert!(exec_stderr(b.outdate(R).await).contains("while Connected"));
        net.set_helper("a", |_| async { 4 });
        net.cut("a", "b");
        net.settle().await;
        b.outdate(R).await.expect("outdate");
        b.outdate(R).await.expect("again");
        assert_eq!(st(&net, "b").disk, Outdated);
        assert!(matches!(
            b.primary(R, false).await,
            Err(DrbdError::NotUpToDate(_))
        ));
        // A resource that is down is outdated in its metadata.
        b.down(R).await.expect("down");
        b.outdate(R).await.expect("outdate down");
        b.up(R).await.expect("up");
        assert_eq!(st(&net, "b").disk, Outdated);
        // force overrides it (and forces the split: the peer is not fenced here).
        b.primary(R, true).await.expect("forced");
        assert_eq!(st(&net, "b").disk, UpToDate);
        // An Inconsistent disk cannot be outdated.
        let c = FakeDrbdNet::new().node("a");
        c.write_config(&cfg(true)).await.expect("w");
        c.create_metadata(R).await.expect("md");
        assert!(exec_stderr(c.outdate(R).await).contains("lower than outdated"));
    }

    #[tokio::test]
    async fn a_consistent_disk_promotes_once_the_peer_is_fenced() {
        let (net, a, _b) = replicated(true).await;
        a.secondary(R).await.expect("demote");
        net.crash("a");
        net.boot("a");
        net.cut("a", "b");
        a.up(R).await.expect("up");
        assert_eq!(st(&net, "a").disk, Consistent);
        net.set_helper("a", |_| async { 1 });
        assert!(matches!(
            a.primary(R, false).await,
            Err(DrbdError::NotUpToDate(_))
        ));
        net.set_helper("a", |_| async { 4 });
        a.primary(R, false).await.expect("promote");
        let sa = st(&net, "a");
        assert_eq!((sa.disk, sa.peer_disk), (UpToDate, Outdated));
        assert_eq!(fence_calls(&net, "a"), 2);
    }

    #[tokio::test]
    async fn sides_forced_apart_are_split_brain_and_unrelated_data_never_connects() {
        // Two new sides each forced primary while apart: both generations descend from
        // "just created", which DRBD calls split brain.
        let net = FakeDrbdNet::new();
        let (a, b) = (net.node("a"), net.node("b"));
        net.cut("a", "b");
        for d in [&a, &b] {
            d.write_config(&cfg(true)).await.expect("config");
            d.create_metadata(R).await.expect("md");
            d.up(R).await.expect("up");
            d.primary(R, true).await.expect("forced");
            d.secondary(R).await.expect("demote");
        }
        net.heal("a", "b");
        net.settle().await;
        assert_eq!(st(&net, "a").connection, StandAlone);
        assert_eq!(st(&net, "b").connection, StandAlone);
        let split_brains = |net: &FakeDrbdNet| {
            net.helper_calls()
                .iter()
                .filter(|c| c.command == "split-brain")
                .count()
        };
        assert_eq!(split_brains(&net), 2);

        // A replica re-created and forced on its own shares no generation at all with the
        // old one: "Unrelated data, aborting!" (no split-brain handler).
        let (net, a, b) = replicated(true).await;
        a.secondary(R).await.expect("demote");
        b.down(R).await.expect("down");
        b.wipe_metadata(R).await.expect("wipe");
        b.create_metadata(R).await.expect("md");
        net.cut("a", "b");
        b.up(R).await.expect("up");
        b.primary(R, true).await.expect("forced");
        b.secondary(R).await.expect("demote");
        net.heal("a", "b");
        net.settle().await;
        assert_eq!(st(&net, "a").connection, StandAlone);
        assert_eq!(st(&net, "b").connection, StandAlone);
        assert_eq!(split_brains(&net), 0);
    }

    #[tokio::test]
    async fn an_interrupted_resync_resumes_where_it_stopped() {
        let (net, a, _b) = pair(true).await;
        net.hold_sync(R);
        a.primary(R, true).await.expect("forced");
        net.advance_sync(R, GI - 10 * MI);
        net.cut("a", "b");
        net.settle().await;
        let sa = st(&net, "a");
        // The peer was Inconsistent: nothing to fence.
        assert_eq!((sa.suspended, sa.peer_disk), (false, Inconsistent));
        assert_eq!(st(&net, "b").disk, Inconsistent);
        net.write("a", R, 2 * MI).expect("write");
        net.heal("a", "b");
        let sb = st(&net, "b");
        assert_eq!((sb.connection, sb.out_of_sync_bytes), (SyncTarget, 12 * MI));
        net.release_sync(R);
        assert_eq!(net.data("a", R), net.data("b", R));
    }

    #[tokio::test]
    async fn faults_gates_and_the_call_log() {
        let net = FakeDrbdNet::new();
        let a = net.node("a");
        a.write_config(&cfg(true)).await.expect("w");
        a.create_metadata(R).await.expect("md");
        a.fail(
            DrbdOp::Up,
            R,
            DrbdError::Parse {
                command: "x".into(),
                reason: "boom".into(),
            },
            Some(1),
        );
        assert!(matches!(a.up(R).await, Err(DrbdError::Parse { .. })));
        assert!(net.status("a").is_empty(), "a failed call does nothing");
        a.up(R).await.expect("second try");
        assert_eq!(a.count(DrbdOp::Up), 2);
        assert_eq!(
            a.calls().first(),
            Some(&Call {
                op: DrbdOp::WriteConfig,
                resource: R.into(),
                force: false
            })
        );
        // A call held at a gate, and the node crashing meanwhile: the call never lands.
        let gate = a.gate(DrbdOp::Primary, R);
        let held = tokio::spawn({
            let a = a.clone();
            async move { a.primary(R, true).await }
        });
        tokio::task::yield_now().await;
        assert!(!held.is_finished());
        a.status().await.expect("other calls pass");
        net.crash("a");
        net.boot("a");
        gate.release();
        let r = held.await.expect("join");
        assert!(
            matches!(r, Err(DrbdError::Exec(ExecError::Spawn { .. }))),
            "{r:?}"
        );
        a.fail(
            DrbdOp::Status,
            "",
            DrbdError::NoSuchResource("x".into()),
            None,
        );
        assert!(a.status().await.is_err());
        assert!(a.status().await.is_err());
        a.clear_faults();
        assert!(a.status().await.expect("status").is_empty());
    }

    #[tokio::test]
    async fn resize_grows_to_the_smaller_backing_disk_and_resyncs_the_new_area() {
        let (net, a, b) = pair(true).await;
        a.skip_initial_sync(R).await.expect("skip");
        let disk = format!("/dev/vg/{R}");
        net.set_disk_size("a", &disk, 2 * GI);
        net.set_disk_size("b", &disk, 3 * GI / 2);
        assert!(exec_stderr(a.resize(R, false).await).contains("Need one Primary"));
        a.primary(R, false).await.expect("promote");
        net.hold_sync(R);
        b.resize(R, false).await.expect("resize from the secondary");
        assert_eq!(net.device_size("a", R), Some(3 * GI / 2));
        assert_eq!(net.device_size("b", R), Some(3 * GI / 2));
        let sb = st(&net, "b");
        assert_eq!((sb.connection, sb.out_of_sync_bytes), (SyncTarget, GI / 2));
        assert!(exec_stderr(a.resize(R, false).await).contains("during resync"));
        net.release_sync(R);
        // Apart, the size stays the last agreed one.
        net.set_disk_size("b", &disk, 2 * GI);
        net.set_helper("a", |_| async { 4 });
        net.cut("a", "b");
        net.settle().await;
        a.resize(R, false).await.expect("resize apart");
        assert_eq!(net.device_size("a", R), Some(3 * GI / 2));
        // A consistent disk that shrank does not attach; a new replica on a disk smaller
        // than the device is refused by the side with the data.
        net.set_disk_size("b", &disk, GI);
        b.down(R).await.expect("down");
        assert!(exec_stderr(b.up(R).await).contains("smaller than requested"));
        b.wipe_metadata(R).await.expect("wipe");
        b.create_metadata(R).await.expect("md");
        b.up(R).await.expect("up");
        net.heal("a", "b");
        assert_eq!(st(&net, "a").connection, StandAlone);
        assert_eq!(st(&net, "b").connection, WFConnection);
    }

    #[tokio::test]
    async fn sizes_come_from_the_nodes_lvm() {
        let net = FakeDrbdNet::new();
        let mut lvms = Vec::new();
        for n in ["a", "b"] {
            let lvm = FakeLvm::new();
            lvm.add_device("/dev/vdb", (4 * GI + MI) as i64);
            lvm.create_pv("/dev/vdb").await.expect("pv");
            lvm.create_vg("vg", &["/dev/vdb".into()]).await.expect("vg");
            net.attach_lvm(n, &lvm);
            let d = net.node(n);
            d.write_config(&cfg(true)).await.expect("w");
            assert!(exec_stderr(d.create_metadata(R).await).contains("No such file"));
            lvm.create_lv("vg", &format!("{R}_drbdmeta"), 4 * MI as i64)
                .await
                .expect("meta lv");
            d.create_metadata(R).await.expect("md");
            assert!(exec_stderr(d.up(R).await).contains("backing device"));
            lvm.create_lv("vg", R, GI as i64).await.expect("data lv");
            d.up(R).await.expect("up");
            lvms.push(lvm);
        }
        let (a, b) = (net.node("a"), net.node("b"));
        a.primary(R, true).await.expect("forced");
        assert_eq!(net.device_size("a", R), Some(GI));
        for lvm in &lvms {
            lvm.extend_lv("vg", R, 2 * GI as i64).await.expect("grow");
        }
        b.resize(R, false).await.expect("resize");
        assert_eq!(net.device_size("b", R), Some(2 * GI));
        // The metadata volume's bitmap caps the device: 4 MiB covers ~127 GiB, 40 KiB
        // only 128 MiB.
        net.set_disk_size("a", &format!("/dev/vg/{R}_drbdmeta"), 40 * 1024);
        a.secondary(R).await.expect("demote");
        a.down(R).await.expect("down");
        assert!(exec_stderr(a.up(R).await).contains("smaller than requested"));
        // Metadata whose volume is removed is gone.
        b.down(R).await.expect("down");
        lvms[1]
            .remove_lv("vg", &format!("{R}_drbdmeta"))
            .await
            .expect("lvremove");
        assert!(!b.has_metadata(R).await.expect("md?"));
    }

    #[tokio::test]
    async fn adjust_brings_a_resource_up_and_follows_a_new_peer_address() {
        let (net, a, b) = replicated(true).await;
        net.crash("b");
        net.boot("b");
        b.adjust(R).await.expect("adjust = up");
        net.settle().await;
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
        // b moves to a new address: a connects only once its file says so too.
        let mut moved = cfg(true);
        moved.hosts[1].address = "10.0.0.9".into();
        b.write_config(&moved).await.expect("w");
        b.adjust(R).await.expect("adjust");
        assert_eq!(conn(&net, "b"), (WFConnection, Outdated, DUnknown));
        assert_eq!(st(&net, "a").peer_disk, Outdated, "negotiated: no fencing");
        a.write_config(&moved).await.expect("w");
        a.adjust(R).await.expect("adjust");
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
    }

    #[tokio::test]
    async fn a_resource_on_one_node_runs_alone_then_takes_a_peer_and_leaves_it() {
        let net = FakeDrbdNet::new();
        let (a, b) = (net.node("a"), net.node("b"));
        net.set_helper("a", |_| async { 4 });
        let mut alone = cfg(true);
        alone.hosts.truncate(1);
        a.write_config(&alone).await.expect("config");
        a.create_metadata(R).await.expect("create-md");
        a.up(R).await.expect("up alone");
        assert_eq!(conn(&net, "a"), (StandAlone, Inconsistent, DUnknown));
        assert!(exec_stderr(a.connect(R, false).await).contains("without knowing my peer"));
        assert!(exec_stderr(a.disconnect(R).await).contains("endpoint"));
        // Forced alone (the handler answers for the absent peer), then used and grown.
        a.primary(R, true).await.expect("forced");
        assert_eq!(st(&net, "a").disk, UpToDate);
        net.write("a", R, 4 * MI).expect("write");
        net.set_disk_size("a", &format!("/dev/vg/{R}"), 2 * GI);
        a.resize(R, false).await.expect("resize without assuming");
        assert_eq!(st(&net, "a").size_bytes, GI, "apart, DRBD keeps its size");
        a.resize(R, true).await.expect("resize alone");
        assert_eq!(st(&net, "a").size_bytes, 2 * GI);
        // A peer joins: full sync from the side with data, while it stays primary.
        net.set_disk_size("b", &format!("/dev/vg/{R}"), 2 * GI);
        for d in [&a, &b] {
            d.write_config(&cfg(true)).await.expect("paired");
        }
        b.create_metadata(R).await.expect("create-md b");
        b.up(R).await.expect("up b");
        a.adjust(R).await.expect("adjust connects");
        net.settle().await;
        assert_eq!(conn(&net, "b"), (Connected, UpToDate, UpToDate));
        assert_eq!(net.data("b", R), net.data("a", R));
        assert_eq!(st(&net, "a").role, Role::Primary);
        // The peer goes again: alone, no freeze, no connection attempt.
        b.down(R).await.expect("down b");
        a.write_config(&alone).await.expect("alone again");
        a.adjust(R).await.expect("adjust drops the peer");
        let s = st(&net, "a");
        assert_eq!((s.connection, s.suspended), (StandAlone, false));
    }

    #[tokio::test]
    async fn a_frozen_primary_never_diverges_and_rejoins_as_sync_target() {
        let (net, a, b) = replicated(true).await;
        net.set_helper("a", |_| async { 1 });
        net.set_helper("b", |_| async { 7 });
        net.set_open("a", R, true);
        net.cut("a", "b");
        net.settle().await;
        assert!(st(&net, "a").suspended);
        b.primary(R, false).await.expect("b promoted, a fenced");
        net.write("b", R, MI).expect("b writes");
        net.heal("a", "b");
        net.settle().await;
        // "I shall become SyncTarget, but I am primary!": a refuses, b keeps waiting; no
        // split brain, since a never wrote.
        let sa = st(&net, "a");
        assert_eq!(
            (sa.role, sa.connection, sa.suspended),
            (Role::Primary, StandAlone, true)
        );
        assert_eq!(st(&net, "b").connection, WFConnection);
        assert!(!net
            .helper_calls()
            .iter()
            .any(|c| c.command == "split-brain"));
        net.set_open("a", R, false);
        a.secondary(R).await.expect("demote while frozen");
        a.connect(R, false).await.expect("connect");
        let sa = st(&net, "a");
        assert_eq!(
            (sa.connection, sa.disk, sa.suspended),
            (Connected, UpToDate, false)
        );
        assert_eq!(net.data("a", R), net.data("b", R));
    }

    #[tokio::test]
    async fn a_late_fence_answer_for_an_earlier_connection_is_ignored() {
        let (net, _a, _b) = replicated(true).await;
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let wait = Arc::new(Mutex::new(Some(wait)));
        net.set_helper("a", move |_| {
            let first = wait.lock().ok().and_then(|mut w| w.take());
            async move {
                match first {
                    // The first run hangs, then says "outdated".
                    Some(w) => {
                        let _ = w.await;
                        4
                    }
                    None => 1,
                }
            }
        });
        net.cut("a", "b");
        tokio::task::yield_now().await;
        net.heal("a", "b");
        assert!(!st(&net, "a").suspended, "resumed by the reconnection");
        net.cut("a", "b");
        tokio::task::yield_now().await;
        assert!(st(&net, "a").suspended);
        let _ = release.send(());
        net.settle().await;
        assert_eq!(fence_calls(&net, "a"), 2);
        let sa = st(&net, "a");
        assert_eq!((sa.suspended, sa.peer_disk), (true, DUnknown));
    }

    #[tokio::test]
    async fn an_agent_dying_at_a_gate_leaves_nothing_done() {
        let net = FakeDrbdNet::new();
        let a = net.node("a");
        a.write_config(&cfg(true)).await.expect("w");
        a.create_metadata(R).await.expect("md");
        let gate = a.gate(DrbdOp::Up, R);
        let agent = tokio::spawn({
            let a = a.clone();
            async move { a.up(R).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(a.count(DrbdOp::Up), 1, "the call was made");
        agent.abort();
        let _ = agent.await;
        gate.release();
        assert!(net.status("a").is_empty());
        a.up(R).await.expect("a new agent brings it up");
    }
}
