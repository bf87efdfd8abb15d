//! Reading DRBD state: `drbdsetup events2 --now --statistics` into
//! [`ResourceStatus`], and the module version from `/proc/drbd`.
//!
//! Why events2 and not /proc/drbd: with drbd-utils 9.x on the 8.4 kernel (checked in VMs,
//! kernel 8.4.11, drbd-utils 9.22), `drbdsetup events2 --now --statistics` works (it is
//! served by `drbdsetup-84`) and is the one source that names each resource next to its
//! minor, role, disk states, suspension and out-of-sync amount. /proc/drbd lists minors
//! only, and `drbdsetup sh-status` has names but no out-of-sync amount;
//! `drbdsetup status --json` is refused by the 8.4 backend ("unrecognized option '--json'").
//!
//! events2 speaks DRBD 9's vocabulary even on 8.4; the 8.4 connection state (`cs:` in
//! /proc/drbd) is spread over two fields, observed on real transitions:
//!
//! | /proc/drbd `cs:`         | events2 `connection:` | events2 `replication:`   |
//! |--------------------------|-----------------------|--------------------------|
//! | StandAlone, Unconnected, | the same word         | `Off`                    |
//! | NetworkFailure, ...      |                       |                          |
//! | WFConnection             | `Connecting`          | `Off`                    |
//! | WFReportParams           | `Connected`           | `Off` (handshake)        |
//! | Connected                | `Connected`           | `Established`            |
//! | SyncSource, WFBitMapT... | `Connected`           | the 8.4 word itself      |
//!
//! Sizes and `out-of-sync` are KiB. The resource's `suspended:` is `no`, or why I/O is
//! frozen (`fencing` while the fence-peer handler has not answered that the peer is
//! outdated, `user` after `suspend-io`); /proc/drbd shows the same as an `s` flag.

use hwameistor_core::drbd::{ConnState, DiskState, ResourceStatus, Role};
use std::collections::BTreeMap;

/// Why a state listing could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct StatusError(pub String);

#[derive(Default)]
struct Resource {
    role: Option<String>,
    suspended: Option<String>,
}

#[derive(Default)]
struct Connection {
    connection: Option<String>,
    peer_role: Option<String>,
}

#[derive(Default)]
struct Device {
    minor: Option<String>,
    disk: Option<String>,
    size_kib: Option<String>,
}

#[derive(Default)]
struct PeerDevice {
    replication: Option<String>,
    peer_disk: Option<String>,
    out_of_sync_kib: Option<String>,
}

#[derive(Default)]
struct State {
    resources: BTreeMap<String, Resource>,
    connections: BTreeMap<String, Connection>,
    /// Keyed by (resource, volume).
    devices: BTreeMap<(String, String), Device>,
    peer_devices: BTreeMap<(String, String), PeerDevice>,
}

fn set(slot: &mut Option<String>, v: Option<&str>) {
    if let Some(v) = v {
        *slot = Some(v.to_string());
    }
}

/// Parses the output of `drbdsetup events2 --now --statistics` (also the `create`,
/// `change` and `destroy` lines of a running `drbdsetup events2`, applied in order). One
/// [`ResourceStatus`] per device (an 8.4 resource of ours has one volume), ordered by minor.
/// Lines it does not know are skipped; a state word it does not know is an error (a
/// misread state is worse than none). Never panics.
pub fn parse_events2(text: &str) -> Result<Vec<ResourceStatus>, StatusError> {
    let mut st = State::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(verb), Some(object)) = (words.next(), words.next()) else {
            continue;
        };
        if !matches!(verb, "exists" | "create" | "change" | "destroy") {
            continue; // `call`/`response` (helpers) and anything newer
        }
        let fields: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once(':')).collect();
        // No name: the closing `exists -`. An empty one names nothing either.
        let Some(name) = fields.get("name").copied().filter(|n| !n.is_empty()) else {
            continue;
        };
        let get = |k: &str| fields.get(k).copied();
        let volume = get("volume").unwrap_or("0").to_string();
        let destroy = verb == "destroy";
        match object {
            "resource" if destroy => {
                st.resources.remove(name);
                st.connections.remove(name);
                st.devices.retain(|(r, _), _| r != name);
                st.peer_devices.retain(|(r, _), _| r != name);
            }
            "resource" => {
                let r = st.resources.entry(name.to_string()).or_default();
                set(&mut r.role, get("role"));
                set(&mut r.suspended, get("suspended"));
            }
            "connection" if destroy => {
                st.connections.remove(name);
            }
            "connection" => {
                let c = st.connections.entry(name.to_string()).or_default();
                set(&mut c.connection, get("connection"));
                set(&mut c.peer_role, get("role"));
            }
            "device" if destroy => {
                st.devices.remove(&(name.to_string(), volume));
            }
            "device" => {
                let d = st.devices.entry((name.to_string(), volume)).or_default();
                set(&mut d.minor, get("minor"));
                set(&mut d.disk, get("disk"));
                set(&mut d.size_kib, get("size"));
            }
            "peer-device" if destroy => {
                st.peer_devices.remove(&(name.to_string(), volume));
            }
            "peer-device" => {
                let p = st
                    .peer_devices
                    .entry((name.to_string(), volume))
                    .or_default();
                set(&mut p.replication, get("replication"));
                set(&mut p.peer_disk, get("peer-disk"));
                set(&mut p.out_of_sync_kib, get("out-of-sync"));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for ((name, volume), dev) in &st.devices {
        out.push(status_of(&st, name, volume, dev)?);
    }
    out.sort_by(|a, b| (a.minor, &a.name).cmp(&(b.minor, &b.name)));
    Ok(out)
}

fn status_of(
    st: &State,
    name: &str,
    volume: &str,
    dev: &Device,
) -> Result<ResourceStatus, StatusError> {
    let res = st.resources.get(name);
    let conn = st.connections.get(name);
    let peer = st.peer_devices.get(&(name.to_string(), volume.to_string()));
    let minor = dev
        .minor
        .as_deref()
        .ok_or_else(|| StatusError(format!("device of resource {name} has no minor")))?;
    let minor: u32 = number(name, "minor", minor)?;
    let role = parse_role(name, res.and_then(|r| r.role.as_deref()))?;
    let peer_role = parse_role(name, conn.and_then(|c| c.peer_role.as_deref()))?;
    let disk = parse_disk(name, dev.disk.as_deref())?;
    let peer_disk = parse_disk(name, peer.and_then(|p| p.peer_disk.as_deref()))?;
    let connection = conn_state(
        name,
        conn.and_then(|c| c.connection.as_deref()),
        peer.and_then(|p| p.replication.as_deref()),
    )?;
    let size_kib: u64 = match dev.size_kib.as_deref() {
        Some(s) => number(name, "size", s)?,
        None => 0,
    };
    let oos_kib: u64 = match peer.and_then(|p| p.out_of_sync_kib.as_deref()) {
        Some(s) => number(name, "out-of-sync", s)?,
        None => 0,
    };
    // What `drbdsetup status` prints as `done:` on 9.x: the share of the device that is in
    // sync. (/proc/drbd's `sync'ed:` is relative to the amount this resync started with.)
    let sync_percent = (connection.syncing() && size_kib > 0).then(|| {
        let left = oos_kib.min(size_kib) as f64;
        (100.0 * (1.0 - left / size_kib as f64)).clamp(0.0, 100.0)
    });
    let suspended = res
        .and_then(|r| r.suspended.as_deref())
        .is_some_and(|s| s != "no");
    Ok(ResourceStatus {
        name: name.to_string(),
        minor,
        role,
        peer_role,
        connection,
        disk,
        peer_disk,
        out_of_sync_bytes: oos_kib.saturating_mul(1024),
        sync_percent,
        suspended,
        size_bytes: size_kib.saturating_mul(1024),
    })
}

fn number<T: std::str::FromStr>(name: &str, field: &str, v: &str) -> Result<T, StatusError> {
    v.parse()
        .map_err(|_| StatusError(format!("resource {name}: {field} is not a number: {v:?}")))
}

fn parse_role(name: &str, v: Option<&str>) -> Result<Role, StatusError> {
    match v {
        None => Ok(Role::Unknown),
        Some(v) => Role::parse(v)
            .ok_or_else(|| StatusError(format!("resource {name}: unknown role {v:?}"))),
    }
}

fn parse_disk(name: &str, v: Option<&str>) -> Result<DiskState, StatusError> {
    match v {
        None => Ok(DiskState::DUnknown),
        Some(v) => DiskState::parse(v)
            .ok_or_else(|| StatusError(format!("resource {name}: unknown disk state {v:?}"))),
    }
}

/// The 8.4 connection state from events2's two fields (see the module docs).
fn conn_state(
    name: &str,
    connection: Option<&str>,
    replication: Option<&str>,
) -> Result<ConnState, StatusError> {
    let unknown = |v: &str| StatusError(format!("resource {name}: unknown connection state {v:?}"));
    match (connection, replication) {
        // No connection object: nothing configured to connect to.
        (None, _) => Ok(ConnState::StandAlone),
        (Some("Connecting"), _) => Ok(ConnState::WFConnection),
        (Some("Connected"), None | Some("Off")) => Ok(ConnState::WFReportParams),
        (Some("Connected"), Some("Established")) => Ok(ConnState::Connected),
        (Some("Connected"), Some(r)) => ConnState::parse(r).ok_or_else(|| unknown(r)),
        (Some(c), _) => ConnState::parse(c).ok_or_else(|| unknown(c)),
    }
}

/// The module version from /proc/drbd's first line (`version: 8.4.11 (api:1/proto:86-101)`).
pub fn parse_proc_version(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix("version:")?
            .split_whitespace()
            .next()?;
        (!v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every sample below is real output of `drbdsetup events2 --now --statistics` (drbd-utils
    // 9.22 on the in-tree 8.4.11 module, two VMs), with the matching /proc/drbd line as a
    // comment where it was captured.

    // cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate
    const CONNECTED: &str = "\
exists resource name:r0 role:Primary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:20 written:20 al-writes:13 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate resync-suspended:no received:0 sent:20 out-of-sync:0 pending:0 unacked:0
exists -
";

    // Two resources on one node: r0 connected, r1 waiting for its peer
    // (cs:WFConnection ro:Secondary/Unknown ds:UpToDate/DUnknown).
    const TWO: &str = "\
exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Primary congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:65283 written:139763 al-writes:10 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate resync-suspended:no received:20 sent:0 out-of-sync:0 pending:0 unacked:0
exists resource name:r1 role:Secondary suspended:no write-ordering:flush
exists connection name:r1 peer-node-id:0 conn-name:peer connection:Connecting role:Unknown congested:no
exists device name:r1 volume:0 minor:1 disk:UpToDate size:49152 read:0 written:49152 al-writes:16 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r1 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:DUnknown resync-suspended:no received:49152 sent:0 out-of-sync:0 pending:0 unacked:0
exists -
";

    // Both sides new: cs:Connected ro:Secondary/Secondary ds:Inconsistent/Inconsistent oos:65280
    const NEW: &str = "\
exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary congested:no
exists device name:r0 volume:0 minor:0 disk:Inconsistent size:65536 read:0 written:0 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:Inconsistent resync-suspended:no received:0 sent:0 out-of-sync:65280 pending:0 unacked:0
exists -
";

    // After `primary --force`: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent
    // oos:59920, "sync'ed: 17.7%" in /proc/drbd.
    const SYNC_SOURCE: &str = "\
exists resource name:r0 role:Primary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:5616 written:0 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:2 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:SyncSource peer-disk:Inconsistent resync-suspended:no received:0 sent:5824 out-of-sync:59920 pending:2 unacked:0
exists -
";

    // The other side: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate
    const SYNC_TARGET: &str = "\
exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Primary congested:no
exists device name:r0 volume:0 minor:0 disk:Inconsistent size:65536 read:0 written:6240 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:SyncTarget peer-disk:UpToDate resync-suspended:no received:6240 sent:0 out-of-sync:59296 pending:0 unacked:0
exists -
";

    // `drbdadm disconnect` on the primary: cs:StandAlone ro:Primary/Unknown
    // ds:UpToDate/Outdated (with fencing the peer outdates itself on a clean disconnect).
    const STANDALONE: &str = "\
exists resource name:r0 role:Primary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 connection:StandAlone role:Unknown congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:65536 written:0 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 volume:0 replication:Off peer-disk:Outdated resync-suspended:no received:0 sent:65536 out-of-sync:0 pending:0 unacked:0
exists -
";

    // Its peer at the same time: cs:WFConnection ro:Secondary/Unknown ds:Outdated/DUnknown
    const WF_CONNECTION_OUTDATED: &str = "\
exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connecting role:Unknown congested:no
exists device name:r0 volume:0 minor:0 disk:Outdated size:65536 read:0 written:65536 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:DUnknown resync-suspended:no received:65536 sent:0 out-of-sync:0 pending:0 unacked:0
exists -
";

    // The primary lost its link and the fence-peer handler exited 1 ("broken"): I/O frozen.
    // cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C s-----
    const FROZEN: &str = "\
exists resource name:r0 role:Primary suspended:fencing write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connecting role:Unknown congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:65536 written:0 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:upper
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:DUnknown resync-suspended:no received:0 sent:0 out-of-sync:0 pending:0 unacked:0
exists -
";

    // Same loss with the handler exiting 4 (peer outdated): I/O resumed, peer Outdated.
    // cs:WFConnection ro:Primary/Unknown ds:UpToDate/Outdated C r-----
    const FENCED: &str = "\
exists resource name:r0 role:Primary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connecting role:Unknown congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:65536 written:0 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:Outdated resync-suspended:no received:0 sent:0 out-of-sync:0 pending:0 unacked:0
exists -
";

    // `drbdadm detach` under a mounted primary: cs:Connected ro:Primary/Secondary
    // ds:Diskless/UpToDate; and what the peer saw (peer-disk Diskless, bits marked).
    const DISKLESS: &str = "\
exists resource name:r0 role:Primary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary congested:no
exists device name:r0 volume:0 minor:0 disk:Diskless size:65536 read:65932 written:70066 al-writes:10 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate resync-suspended:no received:3 sent:361 out-of-sync:0 pending:0 unacked:0
exists -
";
    const PEER_DISKLESS: &str = "\
exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Primary congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:3 written:138691 al-writes:9 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:Diskless resync-suspended:no received:361 sent:3 out-of-sync:3072 pending:0 unacked:0
exists -
";

    // Both sides primary while cut off, then reconnected: "Split-Brain detected but
    // unresolved, dropping connection!" -> cs:StandAlone ro:Primary/Unknown
    // ds:UpToDate/Outdated oos:40 on both.
    const SPLIT_BRAIN: &str = "\
exists resource name:r0 role:Primary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 connection:StandAlone role:Unknown congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536 read:65540 written:44 al-writes:9 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
exists peer-device name:r0 peer-node-id:0 volume:0 replication:Off peer-disk:Outdated resync-suspended:no received:0 sent:4 out-of-sync:40 pending:0 unacked:0
exists -
";

    // A running `drbdsetup events2 all` while `connect` resolved that split brain (without
    // --statistics): the handshake shows as connection:Connected with replication still Off.
    const STREAM: &str = "\
exists resource name:r0 role:Primary suspended:no
exists connection name:r0 peer-node-id:0 connection:StandAlone role:Unknown
exists device name:r0 volume:0 minor:0 disk:UpToDate
exists peer-device name:r0 peer-node-id:0 volume:0 replication:Off peer-disk:Outdated resync-suspended:no
exists -
create connection name:r0 peer-node-id:0 conn-name:peer connection:StandAlone role:Unknown
create peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:Outdated resync-suspended:no
change connection name:r0 peer-node-id:0 conn-name:peer connection:Unconnected
change connection name:r0 peer-node-id:0 conn-name:peer connection:Connecting
change connection name:r0 peer-node-id:0 conn-name:peer connection:Connected
call helper name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 helper:initial-split-brain
response helper name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 helper:initial-split-brain status:0
";

    pub(crate) const SAMPLES: &[&str] = &[
        CONNECTED,
        TWO,
        NEW,
        SYNC_SOURCE,
        SYNC_TARGET,
        STANDALONE,
        WF_CONNECTION_OUTDATED,
        FROZEN,
        FENCED,
        DISKLESS,
        PEER_DISKLESS,
        SPLIT_BRAIN,
        STREAM,
    ];

    fn one(text: &str) -> ResourceStatus {
        let mut v = parse_events2(text).expect("parses");
        assert_eq!(v.len(), 1, "{v:#?}");
        v.remove(0)
    }

    #[test]
    fn connected() {
        let s = one(CONNECTED);
        assert_eq!(
            s,
            ResourceStatus {
                name: "r0".into(),
                minor: 0,
                role: Role::Primary,
                peer_role: Role::Secondary,
                connection: ConnState::Connected,
                disk: DiskState::UpToDate,
                peer_disk: DiskState::UpToDate,
                out_of_sync_bytes: 0,
                sync_percent: None,
                suspended: false,
                size_bytes: 64 << 20,
            }
        );
    }

    #[test]
    fn several_resources_in_minor_order() {
        let v = parse_events2(TWO).expect("parses");
        let names: Vec<_> = v.iter().map(|s| (s.name.as_str(), s.minor)).collect();
        assert_eq!(names, [("r0", 0), ("r1", 1)]);
        assert_eq!(v[0].connection, ConnState::Connected);
        assert_eq!(v[0].peer_role, Role::Primary);
        assert_eq!(v[1].connection, ConnState::WFConnection);
        assert_eq!(
            (v[1].peer_role, v[1].peer_disk),
            (Role::Unknown, DiskState::DUnknown)
        );
    }

    #[test]
    fn new_resource_is_inconsistent_everywhere_and_all_out_of_sync() {
        let s = one(NEW);
        assert_eq!(s.connection, ConnState::Connected);
        assert_eq!(
            (s.disk, s.peer_disk),
            (DiskState::Inconsistent, DiskState::Inconsistent)
        );
        assert_eq!(s.out_of_sync_bytes, 65280 * 1024);
        assert_eq!(s.sync_percent, None, "connected, not syncing");
    }

    #[test]
    fn syncing_reports_progress_on_both_sides() {
        let src = one(SYNC_SOURCE);
        assert_eq!(src.connection, ConnState::SyncSource);
        assert!(src.connection.syncing());
        assert_eq!(src.out_of_sync_bytes, 59920 * 1024);
        let p = src.sync_percent.expect("percent");
        assert!((p - 8.569).abs() < 0.01, "{p}");
        let tgt = one(SYNC_TARGET);
        assert_eq!(tgt.connection, ConnState::SyncTarget);
        assert_eq!(
            (tgt.role, tgt.peer_role, tgt.disk),
            (Role::Secondary, Role::Primary, DiskState::Inconsistent)
        );
        assert!(tgt.sync_percent.expect("percent") > p);
    }

    #[test]
    fn standalone_and_waiting_peer() {
        let s = one(STANDALONE);
        assert_eq!(s.connection, ConnState::StandAlone);
        assert_eq!(
            (s.role, s.peer_role, s.peer_disk),
            (Role::Primary, Role::Unknown, DiskState::Outdated)
        );
        let w = one(WF_CONNECTION_OUTDATED);
        assert_eq!(w.connection, ConnState::WFConnection);
        assert_eq!(w.disk, DiskState::Outdated);
        assert!(!w.up_to_date());
    }

    #[test]
    fn frozen_io_is_suspended_until_fenced() {
        let f = one(FROZEN);
        assert!(f.suspended);
        assert_eq!(f.peer_disk, DiskState::DUnknown);
        let ok = one(FENCED);
        assert!(!ok.suspended);
        assert_eq!(ok.peer_disk, DiskState::Outdated);
        // Any reason other than `no` is a suspension (9.x words, combinations).
        for why in ["user", "no-data", "fencing,user", "quorum"] {
            let t = FROZEN.replace("suspended:fencing", &format!("suspended:{why}"));
            assert!(one(&t).suspended, "{why}");
        }
    }

    #[test]
    fn diskless_either_side() {
        let d = one(DISKLESS);
        assert_eq!(
            (d.disk, d.peer_disk),
            (DiskState::Diskless, DiskState::UpToDate)
        );
        let p = one(PEER_DISKLESS);
        assert_eq!(p.peer_disk, DiskState::Diskless);
        assert_eq!(p.out_of_sync_bytes, 3072 * 1024);
    }

    #[test]
    fn split_brain_leaves_standalone_with_unsynced_data() {
        let s = one(SPLIT_BRAIN);
        assert_eq!(s.connection, ConnState::StandAlone);
        assert_eq!(s.role, Role::Primary);
        assert_eq!(s.out_of_sync_bytes, 40 * 1024);
    }

    #[test]
    fn event_stream_is_applied_in_order() {
        let s = one(STREAM);
        assert_eq!(s.connection, ConnState::WFReportParams);
        let after = format!(
            "{STREAM}change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:WFBitMapS peer-disk:Consistent\n"
        );
        let s = one(&after);
        assert_eq!(
            (s.connection, s.peer_disk),
            (ConnState::WFBitMapS, DiskState::Consistent)
        );
        let done = format!(
            "{after}change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate\n"
        );
        assert_eq!(one(&done).connection, ConnState::Connected);
        let gone = format!("{done}destroy resource name:r0\n");
        assert_eq!(parse_events2(&gone), Ok(vec![]));
    }

    #[test]
    fn nothing_configured_is_an_empty_list() {
        assert_eq!(parse_events2("exists -\n"), Ok(vec![]));
        assert_eq!(parse_events2(""), Ok(vec![]));
        // Found by the fuzz test: objects with an empty name are no resource.
        assert_eq!(
            parse_events2(&CONNECTED.replace("name:r0", "name:")),
            Ok(vec![])
        );
    }

    #[test]
    fn unknown_words_and_bad_numbers_are_errors_naming_them() {
        let e = parse_events2(&CONNECTED.replace("disk:UpToDate size", "disk:Detaching size"))
            .expect_err("unknown disk state");
        assert!(e.0.contains("Detaching"), "{e}");
        let e = parse_events2(&CONNECTED.replace("minor:0", "minor:x")).expect_err("minor");
        assert!(e.0.contains("minor"), "{e}");
        let e = parse_events2(&CONNECTED.replace("replication:Established", "replication:Odd"))
            .expect_err("replication");
        assert!(e.0.contains("Odd"), "{e}");
        let e = parse_events2(&CONNECTED.replace(" minor:0", "")).expect_err("no minor");
        assert!(e.0.contains("no minor"), "{e}");
    }

    #[test]
    fn kernel_version_from_proc() {
        let proc = "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: F73C670A7EC572DB9CF3E5B \n 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n";
        assert_eq!(parse_proc_version(proc).as_deref(), Some("8.4.11"));
        assert_eq!(
            parse_proc_version("version: 9.2.12 (api:2/proto:86-122)\n").as_deref(),
            Some("9.2.12")
        );
        assert_eq!(parse_proc_version(""), None);
        assert_eq!(parse_proc_version("version:\n"), None);
    }
}

#[cfg(test)]
mod fuzz {
    use super::tests::SAMPLES;
    use super::*;
    use proptest::prelude::*;

    /// What every successful parse must satisfy, whatever it was fed.
    fn sane(v: &[ResourceStatus]) {
        for s in v {
            assert!(!s.name.is_empty());
            assert_eq!(s.out_of_sync_bytes % 1024, 0, "{s:?}");
            if let Some(p) = s.sync_percent {
                assert!(s.connection.syncing(), "{s:?}");
                assert!(p.is_finite() && (0.0..=100.0).contains(&p), "{s:?}");
            }
        }
        assert!(
            v.windows(2)
                .all(|w| (w[0].minor, &w[0].name) <= (w[1].minor, &w[1].name)),
            "ordered by minor"
        );
    }

    /// One edit of a sample: characters cut, text spliced in, a field's value replaced,
    /// lines dropped, duplicated or reordered.
    #[derive(Clone, Debug)]
    enum Edit {
        Cut(usize, usize),
        Insert(usize, String),
        Value(usize, String),
        DropLine(usize),
        DupLine(usize),
        Swap(usize, usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let words = prop_oneof![
            Just(String::new()),
            Just("-".to_string()),
            Just("18446744073709551616".to_string()),
            Just("4294967296".to_string()),
            Just("Established".to_string()),
            Just("SyncTarget".to_string()),
            Just("Connected".to_string()),
            Just("UpToDate".to_string()),
            Just("no".to_string()),
            "[a-zA-Z0-9:_ -]{0,12}",
            any::<String>(),
        ];
        prop_oneof![
            (any::<usize>(), 0usize..40).prop_map(|(a, n)| Edit::Cut(a, n)),
            (any::<usize>(), any::<String>()).prop_map(|(a, t)| Edit::Insert(a, t)),
            (any::<usize>(), words).prop_map(|(a, w)| Edit::Value(a, w)),
            any::<usize>().prop_map(Edit::DropLine),
            any::<usize>().prop_map(Edit::DupLine),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        ]
    }

    fn apply(text: &str, e: &Edit) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        match e {
            Edit::Cut(a, n) => {
                if !chars.is_empty() {
                    let a = a % chars.len();
                    let b = (a + n).min(chars.len());
                    chars.drain(a..b);
                }
                chars.into_iter().collect()
            }
            Edit::Insert(a, t) => {
                let a = a % (chars.len() + 1);
                chars.splice(a..a, t.chars());
                chars.into_iter().collect()
            }
            Edit::Value(a, w) => {
                // Replace the value of the a-th `key:value` word.
                let mut n = 0;
                let mut out = Vec::new();
                let count: usize = text.split(' ').filter(|x| x.contains(':')).count();
                let target = if count == 0 { 0 } else { a % count };
                for word in text.split(' ') {
                    match word.split_once(':') {
                        Some((k, _)) if n == target => {
                            n += 1;
                            out.push(format!("{k}:{w}"));
                        }
                        Some(_) => {
                            n += 1;
                            out.push(word.to_string());
                        }
                        None => out.push(word.to_string()),
                    }
                }
                out.join(" ")
            }
            Edit::DropLine(a) => {
                if !lines.is_empty() {
                    let i = a % lines.len();
                    lines.remove(i);
                }
                lines.join("\n")
            }
            Edit::DupLine(a) => {
                if !lines.is_empty() {
                    let i = a % lines.len();
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                lines.join("\n")
            }
            Edit::Swap(a, b) => {
                if !lines.is_empty() {
                    let n = lines.len();
                    lines.swap(a % n, b % n);
                }
                lines.join("\n")
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Ok(v) = parse_events2(&text) {
                sane(&v);
            }
            let _ = parse_proc_version(&text);
        }

        #[test]
        fn event_shaped_text_never_panics(
            lines in proptest::collection::vec(
                "(exists|change|create|destroy|call) (resource|connection|device|peer-device|helper)( [a-z-]{1,12}:[A-Za-z0-9,-]{0,12}){0,8}",
                0..12,
            )
        ) {
            if let Ok(v) = parse_events2(&lines.join("\n")) {
                sane(&v);
            }
        }

        #[test]
        fn mutated_real_samples_never_panic(
            i in 0..SAMPLES.len(),
            edits in proptest::collection::vec(edit(), 1..6),
        ) {
            let mut text = SAMPLES[i].to_string();
            for e in &edits {
                text = apply(&text, e);
            }
            if let Ok(v) = parse_events2(&text) {
                sane(&v);
            }
        }
    }

    #[test]
    fn every_real_sample_parses_sanely() {
        for s in SAMPLES {
            let v = parse_events2(s).unwrap_or_else(|e| panic!("{e}: {s}"));
            assert!(!v.is_empty());
            sane(&v);
        }
    }
}
