//! The model of a DRBD (8.4) resource: what a node's replication layer looks like, what its
//! configuration says, and the sizes it needs. Pure: the host boundary (`hostexec::drbd`)
//! reads and drives the real thing into and out of these types, and tests fake it with them.
//!
//! The data logical volume is never touched by DRBD's metadata: metadata lives on its own
//! small logical volume ("external metadata"), so a volume made without replication can be
//! put under DRBD later with its data where it is, and taken out again.

use std::fmt;

/// Lowest TCP port of replication links; a resource's port is this plus its resource id.
pub const DEFAULT_PORT_BASE: i64 = 43001;
/// Highest DRBD minor the controller hands out (DRBD 8.4 allows up to 2^20 - 1; the
/// default `minor-count` module parameter grows as needed).
pub const MAX_MINOR: i64 = 65535;
/// Suffix of the metadata logical volume beside a volume's data logical volume.
pub const META_LV_SUFFIX: &str = "_drbdmeta";

/// Declares a state enum once: its variants, the names DRBD prints (the variants' own),
/// and parsing them back.
macro_rules! drbd_states {
    ($(#[$doc:meta])* $name:ident { $($v:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($v,)* }

        impl $name {
            /// The name DRBD prints.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => stringify!($v),)* }
            }
            /// Parses the name DRBD prints; `None` for anything else.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $(stringify!($v) => Some(Self::$v),)* _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

drbd_states!(
    /// The role of one side of a resource.
    Role { Primary, Secondary, Unknown }
);

drbd_states!(
    /// DRBD 8.4's connection states (`cs:` in /proc/drbd).
    ConnState {
        StandAlone,
        Disconnecting,
        Unconnected,
        Timeout,
        BrokenPipe,
        NetworkFailure,
        ProtocolError,
        TearDown,
        WFConnection,
        WFReportParams,
        Connected,
        StartingSyncS,
        StartingSyncT,
        WFBitMapS,
        WFBitMapT,
        WFSyncUUID,
        SyncSource,
        SyncTarget,
        PausedSyncS,
        PausedSyncT,
        VerifyS,
        VerifyT,
        Ahead,
        Behind,
    }
);

drbd_states!(
    /// DRBD's disk states (`ds:` in /proc/drbd).
    DiskState {
        Diskless,
        Attaching,
        Failed,
        Negotiating,
        Inconsistent,
        Outdated,
        DUnknown,
        Consistent,
        UpToDate,
    }
);

impl ConnState {
    /// A link to the peer exists (a replication or resync relation is established).
    pub fn connected(self) -> bool {
        use ConnState::*;
        matches!(
            self,
            Connected
                | StartingSyncS
                | StartingSyncT
                | WFBitMapS
                | WFBitMapT
                | WFSyncUUID
                | SyncSource
                | SyncTarget
                | PausedSyncS
                | PausedSyncT
                | VerifyS
                | VerifyT
                | Ahead
                | Behind
        )
    }

    /// Resynchronising (either direction).
    pub fn syncing(self) -> bool {
        use ConnState::*;
        matches!(
            self,
            StartingSyncS
                | StartingSyncT
                | WFBitMapS
                | WFBitMapT
                | WFSyncUUID
                | SyncSource
                | SyncTarget
                | PausedSyncS
                | PausedSyncT
        )
    }
}

/// What the kernel reports about one resource (one volume, one peer: DRBD 8.4).
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceStatus {
    pub name: String,
    pub minor: u32,
    pub role: Role,
    pub peer_role: Role,
    pub connection: ConnState,
    pub disk: DiskState,
    pub peer_disk: DiskState,
    /// Data known to differ from the peer (`oos:` KiB in /proc/drbd, here in bytes).
    pub out_of_sync_bytes: u64,
    /// Resync progress in percent while one runs.
    pub sync_percent: Option<f64>,
    /// I/O is frozen (waiting for fencing, or suspended by hand).
    pub suspended: bool,
    /// Size of the device applications see (the size both sides agreed on).
    pub size_bytes: u64,
}

impl ResourceStatus {
    /// The local disk holds the newest data DRBD knows of.
    pub fn up_to_date(&self) -> bool {
        self.disk == DiskState::UpToDate
    }
}

/// One side of a resource in its configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The node (its Kubernetes name); DRBD itself matches sections by address.
    pub hostname: String,
    /// Replication address (IPv4 or IPv6 literal) on which this side listens.
    pub address: String,
    /// The data device (the volume's logical volume).
    pub disk: String,
    /// The external metadata device.
    pub meta_disk: String,
}

/// Everything a resource file says. Rendered by [`ResourceConfig::render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceConfig {
    pub name: String,
    pub minor: u32,
    pub port: u16,
    pub hosts: Vec<Host>,
    /// Program (and arguments) DRBD runs when it must fence the peer or meets split brain;
    /// `None` leaves the handlers out (fencing then freezes I/O until someone resumes it).
    pub handler: Option<String>,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn address(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("ipv6 [{ip}]:{port}")
    } else {
        format!("ipv4 {ip}:{port}")
    }
}

impl ResourceConfig {
    /// The device applications use.
    pub fn device(&self) -> String {
        device_path(self.minor)
    }

    /// The resource file's text.
    ///
    /// Protocol C (a write completes only once both disks have it). `fencing
    /// resource-and-stonith`: a primary that loses its peer freezes I/O and runs the
    /// fence-peer handler, and resumes only when the handler says the peer is outdated, so
    /// it never writes what the survivor cannot have unless that was recorded. Split brain
    /// is never resolved automatically (`disconnect` on every after-sb policy): the
    /// operator chooses which data survives.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# Written by the HwameiStor node agent; changes are overwritten.\n");
        s.push_str(&format!("resource {} {{\n", quote(&self.name)));
        s.push_str("  net {\n    protocol C;\n");
        s.push_str("    after-sb-0pri disconnect;\n    after-sb-1pri disconnect;\n    after-sb-2pri disconnect;\n");
        s.push_str("  }\n");
        // c-min-rate 0: DRBD 8.4 otherwise throttles a resync to its minimum rate as soon
        // as the backing device sees other I/O (observed at 250-370 KiB/s in VMs).
        s.push_str("  disk {\n    fencing resource-and-stonith;\n    on-io-error detach;\n    c-min-rate 0;\n  }\n");
        if let Some(h) = &self.handler {
            s.push_str("  handlers {\n");
            s.push_str(&format!(
                "    fence-peer {};\n",
                quote(&format!("{h} fence-peer"))
            ));
            s.push_str(&format!(
                "    split-brain {};\n",
                quote(&format!("{h} split-brain"))
            ));
            s.push_str("  }\n");
        }
        // `floating` sections: drbdadm picks the one whose address is on this host, so the
        // node's hostname (which need not be its Kubernetes name, and under nsenter is the
        // host's) plays no part. The node's name is a comment for whoever reads the file.
        for h in &self.hosts {
            let comment: String = h.hostname.chars().filter(|c| !c.is_control()).collect();
            s.push_str(&format!("  # {comment}\n"));
            s.push_str(&format!(
                "  floating {} {{\n",
                address(&h.address, self.port)
            ));
            s.push_str(&format!(
                "    device /dev/drbd{} minor {};\n",
                self.minor, self.minor
            ));
            s.push_str(&format!("    disk {};\n", quote(&h.disk)));
            s.push_str(&format!("    meta-disk {};\n", quote(&h.meta_disk)));
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        s
    }
}

/// The block device of minor `minor`.
pub fn device_path(minor: u32) -> String {
    format!("/dev/drbd{minor}")
}

/// The name of the metadata logical volume of the data logical volume `lv`.
pub fn meta_lv_name(lv: &str) -> String {
    format!("{lv}{META_LV_SUFFIX}")
}

/// Bytes of external ("flexible") metadata DRBD 8.4 needs for `data_bytes` of data: a 4 KiB
/// superblock and activity log area of 32 KiB plus a bitmap of one bit per 4 KiB, rounded
/// as drbdmeta rounds it (the bitmap in 4 KiB pages). Callers round up to extents.
pub fn meta_bytes(data_bytes: i64) -> i64 {
    let data = data_bytes.max(0) as u64;
    // One bit per 4 KiB block, whole 4 KiB bitmap pages (32768 blocks = 128 MiB each).
    let blocks = data.div_ceil(4096);
    let bitmap = blocks.div_ceil(8).div_ceil(4096) * 4096;
    (bitmap + 36 * 1024) as i64
}

/// The TCP port of resource `id` above `base`.
pub fn port_for(base: i64, id: i64) -> i64 {
    base + id
}

/// The lowest resource id not in `used` (ids start at 0), or `None` when all up to
/// [`MAX_MINOR`] are taken. Ids are minors: a free list rebuilt from the volumes that exist.
pub fn free_resource_id(used: impl IntoIterator<Item = i64>) -> Option<i64> {
    let mut taken: Vec<i64> = used.into_iter().filter(|&i| i >= 0).collect();
    taken.sort_unstable();
    taken.dedup();
    let mut want = 0;
    for t in taken {
        if t > want {
            break;
        }
        if t == want {
            want += 1;
        }
    }
    (want <= MAX_MINOR).then_some(want)
}

/// The DRBD resource name of a volume: the volume's name when DRBD accepts it as it is
/// (letters, digits, `-`, `_`, `.`; at most 63 characters), otherwise `r<id>`.
pub fn resource_name(volume: &str, id: i64) -> String {
    let ok = !volume.is_empty()
        && volume.len() <= 63
        && volume
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        volume.to_string()
    } else {
        format!("r{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [
            ConnState::StandAlone,
            ConnState::WFConnection,
            ConnState::SyncTarget,
            ConnState::Behind,
        ] {
            assert_eq!(ConnState::parse(c.as_str()), Some(c));
        }
        assert_eq!(DiskState::parse("UpToDate"), Some(DiskState::UpToDate));
        assert_eq!(DiskState::parse("uptodate"), None);
        assert_eq!(Role::parse("Primary"), Some(Role::Primary));
    }

    #[test]
    fn connected_and_syncing() {
        assert!(ConnState::SyncSource.connected() && ConnState::SyncSource.syncing());
        assert!(ConnState::Connected.connected() && !ConnState::Connected.syncing());
        assert!(!ConnState::WFConnection.connected());
        assert!(!ConnState::StandAlone.connected());
    }

    #[test]
    fn metadata_size_follows_drbdmeta() {
        // 1 GiB: 262144 blocks -> 32 KiB of bitmap, plus 36 KiB.
        assert_eq!(meta_bytes(1 << 30), 32 * 1024 + 36 * 1024);
        // 1 TiB: 32 MiB of bitmap.
        assert_eq!(meta_bytes(1 << 40), (32 << 20) + 36 * 1024);
        // A tiny volume still gets a whole bitmap page.
        assert_eq!(meta_bytes(4 << 20), 4096 + 36 * 1024);
        assert!(meta_bytes(0) >= 36 * 1024);
    }

    #[test]
    fn free_ids_fill_holes_first() {
        assert_eq!(free_resource_id([]), Some(0));
        assert_eq!(free_resource_id([0, 1, 2]), Some(3));
        assert_eq!(free_resource_id([0, 2, 3]), Some(1));
        assert_eq!(free_resource_id([-1, -1, 1]), Some(0));
        assert_eq!(free_resource_id([3, 3, 0, 0]), Some(1));
        assert_eq!(free_resource_id(0..=MAX_MINOR), None);
    }

    #[test]
    fn resource_names_are_safe() {
        assert_eq!(resource_name("pvc-1a2b", 7), "pvc-1a2b");
        assert_eq!(resource_name(&"x".repeat(64), 7), "r7");
        assert_eq!(resource_name("a b", 7), "r7");
        assert_eq!(resource_name("vol\"}", 3), "r3");
    }

    #[test]
    fn config_renders_fencing_protocol_c_and_both_hosts() {
        let c = ResourceConfig {
            name: "pvc-1".into(),
            minor: 3,
            port: 43004,
            hosts: vec![
                Host {
                    hostname: "n1".into(),
                    address: "192.168.77.11".into(),
                    disk: "/dev/LocalStorage_PoolHDD/pvc-1".into(),
                    meta_disk: "/dev/LocalStorage_PoolHDD/pvc-1_drbdmeta".into(),
                },
                Host {
                    hostname: "n2".into(),
                    address: "fd00::2".into(),
                    disk: "/dev/LocalStorage_PoolHDD/pvc-1".into(),
                    meta_disk: "/dev/LocalStorage_PoolHDD/pvc-1_drbdmeta".into(),
                },
            ],
            handler: Some("/usr/local/bin/hwameistor-agent drbd-handler".into()),
        };
        let t = c.render();
        assert!(t.contains("protocol C;"), "{t}");
        assert!(t.contains("fencing resource-and-stonith;"), "{t}");
        assert!(t.contains("after-sb-2pri disconnect;"), "{t}");
        assert!(t.contains("floating ipv4 192.168.77.11:43004 {"), "{t}");
        assert!(t.contains("floating ipv6 [fd00::2]:43004 {"), "{t}");
        assert!(t.contains("c-min-rate 0;"), "{t}");
        assert!(t.contains("device /dev/drbd3 minor 3;"), "{t}");
        assert!(
            t.contains("fence-peer \"/usr/local/bin/hwameistor-agent drbd-handler fence-peer\";"),
            "{t}"
        );
        assert_eq!(t.matches("  floating ").count(), 2);
        assert_eq!(c.device(), "/dev/drbd3");
        let no_handlers = ResourceConfig {
            handler: None,
            ..c.clone()
        };
        assert!(!no_handlers.render().contains("handlers"));
    }
}
