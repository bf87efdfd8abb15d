//! Volume capabilities: which access types and modes the driver serves.
//!
//! Local volumes live on one node, so only single-node access modes are served. A volume
//! is either a filesystem (xfs or ext4) or a raw block device.

use crate::csi::volume_capability::{access_mode::Mode, AccessType};
use crate::csi::VolumeCapability;
use crate::params::FsType;
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Block,
    /// `fs` is `None` when the capability leaves the filesystem to the driver.
    Mount {
        fs: Option<FsType>,
        flags: Vec<String>,
    },
}

/// A capability the driver can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    pub access: Access,
    pub read_only: bool,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CapabilityError {
    #[error("volume capability is missing")]
    Missing,
    #[error("volume capability has no access type (block or mount)")]
    NoAccessType,
    #[error("volume capability has no access mode")]
    NoAccessMode,
    #[error("access mode {0} is not supported: a local volume is reachable from one node only (use SINGLE_NODE_WRITER or SINGLE_NODE_READER_ONLY)")]
    Mode(String),
    #[error("filesystem type {0:?} is not supported (use xfs or ext4)")]
    FsType(String),
    #[error(
        "a volume is either a raw block device or a filesystem; the capabilities ask for both"
    )]
    Mixed,
    /// The driver does not offer VOLUME_MOUNT_GROUP: a group it would silently ignore
    /// would leave the workload without the ownership it asked for.
    #[error(
        "volume_mount_group {0:?} is not supported: the driver does not change volume ownership"
    )]
    MountGroup(String),
}

fn mode_name(mode: i32) -> String {
    Mode::try_from(mode)
        .map(|m| format!("{m:?}"))
        .unwrap_or_else(|_| format!("#{mode}"))
}

/// Checks one capability.
pub fn check(cap: Option<&VolumeCapability>) -> Result<Requested, CapabilityError> {
    let cap = cap.ok_or(CapabilityError::Missing)?;
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or(CapabilityError::NoAccessMode)?
        .mode;
    let read_only = match Mode::try_from(mode) {
        Ok(Mode::SingleNodeWriter) => false,
        Ok(Mode::SingleNodeReaderOnly) => true,
        _ => return Err(CapabilityError::Mode(mode_name(mode))),
    };
    let access = match cap
        .access_type
        .as_ref()
        .ok_or(CapabilityError::NoAccessType)?
    {
        AccessType::Block(_) => Access::Block,
        AccessType::Mount(m) => {
            if !m.volume_mount_group.is_empty() {
                return Err(CapabilityError::MountGroup(m.volume_mount_group.clone()));
            }
            let fs = match m.fs_type.as_str() {
                "" => None,
                other => Some(
                    FsType::parse(other)
                        .ok_or_else(|| CapabilityError::FsType(other.to_string()))?,
                ),
            };
            Access::Mount {
                fs,
                flags: m.mount_flags.clone(),
            }
        }
    };
    Ok(Requested { access, read_only })
}

/// Checks a set of capabilities a volume must satisfy at once and returns the access type
/// they agree on (`fs` filled in when any of them names one).
pub fn check_all(caps: &[VolumeCapability]) -> Result<Access, CapabilityError> {
    let mut agreed: Option<Access> = None;
    for cap in caps {
        let got = check(Some(cap))?.access;
        agreed = Some(match (agreed, got) {
            (None, a) => a,
            (Some(Access::Block), Access::Block) => Access::Block,
            (Some(Access::Mount { fs: a, flags }), Access::Mount { fs: b, .. }) => match (a, b) {
                (Some(x), Some(y)) if x != y => {
                    return Err(CapabilityError::FsType(format!("{x} and {y}")))
                }
                (x, y) => Access::Mount { fs: x.or(y), flags },
            },
            _ => return Err(CapabilityError::Mixed),
        });
    }
    agreed.ok_or(CapabilityError::Missing)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    pub(crate) fn mount_cap(fs: &str, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            })),
        }
    }

    pub(crate) fn block_cap(mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(AccessType::Block(BlockVolume {})),
        }
    }

    #[test]
    fn single_node_modes_are_served() {
        assert_eq!(
            check(Some(&mount_cap("xfs", Mode::SingleNodeWriter))),
            Ok(Requested {
                access: Access::Mount {
                    fs: Some(FsType::Xfs),
                    flags: vec![]
                },
                read_only: false
            })
        );
        assert_eq!(
            check(Some(&block_cap(Mode::SingleNodeReaderOnly))),
            Ok(Requested {
                access: Access::Block,
                read_only: true
            })
        );
        assert_eq!(
            check(Some(&mount_cap("", Mode::SingleNodeWriter))).map(|r| r.access),
            Ok(Access::Mount {
                fs: None,
                flags: vec![]
            })
        );
    }

    #[test]
    fn unsupported_capabilities_say_why() {
        assert_eq!(check(None), Err(CapabilityError::Missing));
        let err =
            check(Some(&mount_cap("xfs", Mode::MultiNodeMultiWriter))).expect_err("multi-node");
        assert_eq!(err, CapabilityError::Mode("MultiNodeMultiWriter".into()));
        assert_eq!(
            check(Some(&mount_cap("btrfs", Mode::SingleNodeWriter))),
            Err(CapabilityError::FsType("btrfs".into()))
        );
        let mut no_mode = mount_cap("xfs", Mode::SingleNodeWriter);
        no_mode.access_mode = None;
        assert_eq!(check(Some(&no_mode)), Err(CapabilityError::NoAccessMode));
        let mut no_type = mount_cap("xfs", Mode::SingleNodeWriter);
        no_type.access_type = None;
        assert_eq!(check(Some(&no_type)), Err(CapabilityError::NoAccessType));
        let mut grouped = mount_cap("xfs", Mode::SingleNodeWriter);
        if let Some(AccessType::Mount(m)) = grouped.access_type.as_mut() {
            m.volume_mount_group = "1000".into();
        }
        assert_eq!(
            check(Some(&grouped)),
            Err(CapabilityError::MountGroup("1000".into()))
        );
    }

    #[test]
    fn capability_sets_must_agree() {
        let w = Mode::SingleNodeWriter;
        assert_eq!(check_all(&[]), Err(CapabilityError::Missing));
        assert_eq!(
            check_all(&[mount_cap("", w), block_cap(w)]),
            Err(CapabilityError::Mixed)
        );
        assert_eq!(
            check_all(&[mount_cap("", w), mount_cap("ext4", w)]),
            Ok(Access::Mount {
                fs: Some(FsType::Ext4),
                flags: vec![]
            })
        );
        assert!(matches!(
            check_all(&[mount_cap("xfs", w), mount_cap("ext4", w)]),
            Err(CapabilityError::FsType(_))
        ));
        assert_eq!(
            check_all(&[block_cap(w), block_cap(Mode::SingleNodeReaderOnly)]),
            Ok(Access::Block)
        );
    }
}
