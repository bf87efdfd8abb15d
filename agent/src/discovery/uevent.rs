//! Kernel uevents for block devices, read from a `NETLINK_KOBJECT_UEVENT` socket.
//!
//! The agent uses them only as a trigger to rescan (debounced), so this module keeps the
//! parsing small and never blocks on a slow consumer: when the channel is full the event
//! is dropped, because a rescan is already pending.

use std::os::fd::{AsRawFd, OwnedFd};
use std::thread;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};
use serde::Serialize;
use tokio::sync::mpsc;

use super::DiscoveryError;

/// Kernel multicast group of kobject uevents (group 2 is udevd's re-broadcast).
const KERNEL_GROUP: u32 = 1;
/// Events queued for the consumer before new ones are dropped.
const CHANNEL_CAPACITY: usize = 256;
/// Kernel socket buffer; a burst (e.g. many partitions appearing) must not overflow it.
const RECV_BUFFER: usize = 4 * 1024 * 1024;
/// How often the reader wakes up to see whether the receiver was dropped.
const POLL_INTERVAL_SECS: i64 = 1;
/// Action of the synthetic event sent when the kernel reported lost events (ENOBUFS).
pub const OVERFLOW_ACTION: &str = "overflow";

/// One kernel uevent for a block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UEvent {
    /// "add", "remove", "change", "move", "online", "offline", ... or [`OVERFLOW_ACTION`]
    /// when the kernel dropped events and the consumer should simply rescan.
    pub action: String,
    /// sysfs path without /sys, e.g. "/devices/virtual/block/loop0".
    pub devpath: String,
    /// "block" for every event this module delivers.
    pub subsystem: String,
    /// Node name relative to /dev, e.g. "loop0" or "nvme0n1p1".
    pub devname: Option<String>,
    /// "disk" or "partition".
    pub devtype: Option<String>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub seqnum: Option<u64>,
}

impl UEvent {
    /// Parses one kernel uevent datagram: `ACTION@DEVPATH\0KEY=VALUE\0...`.
    /// Returns `None` for anything else (e.g. udevd's "libudev" binary format).
    pub fn parse(datagram: &[u8]) -> Option<UEvent> {
        let mut parts = datagram.split(|b| *b == 0).filter(|p| !p.is_empty());
        let header = std::str::from_utf8(parts.next()?).ok()?;
        let (header_action, header_path) = header.split_once('@')?;
        let mut event = UEvent {
            action: header_action.to_string(),
            devpath: header_path.to_string(),
            subsystem: String::new(),
            devname: None,
            devtype: None,
            major: None,
            minor: None,
            seqnum: None,
        };
        for part in parts {
            let Ok(text) = std::str::from_utf8(part) else {
                continue;
            };
            let Some((key, value)) = text.split_once('=') else {
                continue;
            };
            match key {
                "ACTION" => event.action = value.to_string(),
                "DEVPATH" => event.devpath = value.to_string(),
                "SUBSYSTEM" => event.subsystem = value.to_string(),
                "DEVNAME" => event.devname = Some(value.to_string()),
                "DEVTYPE" => event.devtype = Some(value.to_string()),
                "MAJOR" => event.major = value.parse().ok(),
                "MINOR" => event.minor = value.parse().ok(),
                "SEQNUM" => event.seqnum = value.parse().ok(),
                _ => {}
            }
        }
        Some(event)
    }

    fn overflow() -> UEvent {
        UEvent {
            action: OVERFLOW_ACTION.to_string(),
            devpath: String::new(),
            subsystem: "block".to_string(),
            devname: None,
            devtype: None,
            major: None,
            minor: None,
            seqnum: None,
        }
    }
}

/// Kernel uevents for block devices, from a NETLINK_KOBJECT_UEVENT socket (kernel group
/// 1). Runs on its own blocking thread, which exits once the receiver is dropped (within
/// about a second). Needs no tokio runtime to be called. If the socket cannot be opened
/// (no privilege, not in the host network namespace on old kernels), returns an error
/// and the agent falls back to periodic scans.
pub fn watch_block_uevents() -> Result<mpsc::Receiver<UEvent>, DiscoveryError> {
    let fd = open_socket()?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    thread::Builder::new()
        .name("block-uevents".to_string())
        .spawn(move || read_loop(fd, tx))
        .map_err(|source| DiscoveryError::Netlink {
            op: "spawn reader thread",
            source,
        })?;
    Ok(rx)
}

fn netlink_err(op: &'static str) -> impl FnOnce(Errno) -> DiscoveryError {
    move |errno| DiscoveryError::Netlink {
        op,
        source: std::io::Error::from(errno),
    }
}

fn open_socket() -> Result<OwnedFd, DiscoveryError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(netlink_err("socket"))?;
    // Bigger buffer first with the privileged option, else as large as rmem_max allows;
    // a small buffer only means more overflow events, so failure is not fatal.
    if setsockopt(&fd, sockopt::RcvBufForce, &RECV_BUFFER).is_err() {
        if let Err(err) = setsockopt(&fd, sockopt::RcvBuf, &RECV_BUFFER) {
            tracing::debug!(error = %err, "cannot enlarge uevent socket buffer");
        }
    }
    // A receive timeout lets the reader notice a dropped receiver without an event.
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::seconds(POLL_INTERVAL_SECS),
    )
    .map_err(netlink_err("set receive timeout"))?;
    // pid 0: let the kernel assign our port id.
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP)).map_err(netlink_err("bind"))?;
    Ok(fd)
}

fn read_loop(fd: OwnedFd, tx: mpsc::Sender<UEvent>) {
    // Kernel uevents are at most 2 KiB (UEVENT_BUFFER_SIZE); leave room.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if tx.is_closed() {
            return;
        }
        let event = match recvfrom::<NetlinkAddr>(fd.as_raw_fd(), &mut buf) {
            Ok((len, sender)) => {
                // Only the kernel (port id 0) sends real uevents; anything else on the
                // group is a userspace process and is ignored.
                if sender.is_some_and(|addr| addr.pid() != 0) {
                    continue;
                }
                match buf.get(..len).and_then(UEvent::parse) {
                    Some(event) if event.subsystem == "block" => event,
                    _ => continue,
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(Errno::ENOBUFS) => {
                tracing::debug!("uevent socket overflowed; events were lost");
                UEvent::overflow()
            }
            Err(err) => {
                tracing::warn!(error = %err, "uevent socket failed; stopping uevent watch");
                return;
            }
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::trace!("uevent channel full; a rescan is already pending");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_datagram() {
        let raw =
            b"add@/devices/virtual/block/loop8\0ACTION=add\0DEVPATH=/devices/virtual/block/loop8\0\
SUBSYSTEM=block\0MAJOR=7\0MINOR=8\0DEVNAME=loop8\0DEVTYPE=disk\0DISKSEQ=20\0SEQNUM=4321\0";
        let event = UEvent::parse(raw).expect("parse");
        assert_eq!(event.action, "add");
        assert_eq!(event.devpath, "/devices/virtual/block/loop8");
        assert_eq!(event.subsystem, "block");
        assert_eq!(event.devname.as_deref(), Some("loop8"));
        assert_eq!(event.devtype.as_deref(), Some("disk"));
        assert_eq!((event.major, event.minor), (Some(7), Some(8)));
        assert_eq!(event.seqnum, Some(4321));
    }

    #[test]
    fn rejects_non_uevents() {
        assert_eq!(UEvent::parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(UEvent::parse(b""), None);
        let header_only = UEvent::parse(b"remove@/devices/x").expect("header only");
        assert_eq!(header_only.action, "remove");
        assert_eq!(header_only.subsystem, "");
    }
}
