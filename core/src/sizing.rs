//! The volume size rule: what size a capacity range turns into.
//!
//! 1. `required_bytes` and `limit_bytes` must not be negative, and a set limit must not be
//!    below the requirement (InvalidArgument).
//! 2. The floor is the smallest volume the access type can use: xfs 300 MiB (current
//!    `mkfs.xfs` refuses anything smaller), ext4 and raw block 4 MiB (one LVM extent, the
//!    smallest logical volume).
//! 3. The size is `max(required, floor)` (the floor when nothing is required), rounded up
//!    to a multiple of 4 MiB, the default LVM extent, so the capacity reported is what the
//!    logical volume really gets.
//! 4. If that exceeds a set `limit_bytes`, the request fails with OutOfRange and a message
//!    naming the floor — never an opaque mkfs failure on the node later.

use crate::lvm::{checked_round_up, DEFAULT_EXTENT_BYTES};
use hwameistor_api::quantity::format_size;
use hwameistor_api::volume::MIN_VOLUME_BYTES;
use std::fmt;
use thiserror::Error;

/// Filesystems the node service creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsType {
    #[default]
    Xfs,
    Ext4,
}

impl FsType {
    pub fn parse(s: &str) -> Option<FsType> {
        match s {
            "xfs" => Some(FsType::Xfs),
            "ext4" => Some(FsType::Ext4),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Xfs => "xfs",
            FsType::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `mkfs.xfs` refuses smaller filesystems.
pub const XFS_MIN_BYTES: i64 = 300 << 20;
/// ext4 formats fine on the smallest logical volume.
pub const EXT4_MIN_BYTES: i64 = MIN_VOLUME_BYTES;
/// Sizes are multiples of the default LVM extent.
pub const ALIGN_BYTES: i64 = DEFAULT_EXTENT_BYTES;

/// How the volume is consumed: decides the floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeAccess {
    Block,
    Filesystem(FsType),
}

impl VolumeAccess {
    pub fn min_bytes(self) -> i64 {
        match self {
            VolumeAccess::Block => MIN_VOLUME_BYTES,
            VolumeAccess::Filesystem(FsType::Xfs) => XFS_MIN_BYTES,
            VolumeAccess::Filesystem(FsType::Ext4) => EXT4_MIN_BYTES,
        }
    }

    fn describe(self) -> String {
        match self {
            VolumeAccess::Block => "a raw block volume".to_string(),
            VolumeAccess::Filesystem(fs) => format!("an {fs} volume"),
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SizeError {
    #[error("capacity range is invalid: {0}")]
    Invalid(String),
    #[error("{what} needs at least {min} ({min_bytes} bytes){why}, but the limit is {limit} ({limit_bytes} bytes)")]
    BelowMinimum {
        what: String,
        min: String,
        min_bytes: i64,
        why: &'static str,
        limit: String,
        limit_bytes: i64,
    },
}

/// The size of a volume asked for with `required` and `limit` (0 = unset), per the rule
/// in the module docs.
pub fn volume_size(required: i64, limit: i64, access: VolumeAccess) -> Result<i64, SizeError> {
    if required < 0 || limit < 0 {
        return Err(SizeError::Invalid(format!(
            "required_bytes {required} and limit_bytes {limit} must not be negative"
        )));
    }
    if limit > 0 && required > limit {
        return Err(SizeError::Invalid(format!(
            "required_bytes {required} is above limit_bytes {limit}"
        )));
    }
    let floor = access.min_bytes();
    let size = checked_round_up(required.max(floor), ALIGN_BYTES)
        .ok_or_else(|| SizeError::Invalid(format!("required_bytes {required} is too large")))?;
    if limit > 0 && size > limit {
        // Rounding to an extent may overshoot a limit that is not extent-aligned; a limit
        // at or above the floor but below the rounded size is still unsatisfiable.
        let min = floor.max(checked_round_up(required, ALIGN_BYTES).unwrap_or(i64::MAX));
        return Err(SizeError::BelowMinimum {
            what: access.describe(),
            min: format_size(min),
            min_bytes: min,
            why: if matches!(access, VolumeAccess::Filesystem(FsType::Xfs)) && min == XFS_MIN_BYTES
            {
                " (mkfs.xfs refuses smaller filesystems)"
            } else {
                " (volumes are whole 4 MiB extents)"
            },
            limit: format_size(limit),
            limit_bytes: limit,
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    const MI: i64 = 1 << 20;
    const XFS: VolumeAccess = VolumeAccess::Filesystem(FsType::Xfs);
    const EXT4: VolumeAccess = VolumeAccess::Filesystem(FsType::Ext4);

    #[test]
    fn small_requests_round_up_to_the_filesystem_floor() {
        assert_eq!(volume_size(MI, 0, XFS), Ok(300 * MI));
        assert_eq!(volume_size(0, 0, XFS), Ok(300 * MI));
        assert_eq!(volume_size(MI, 0, EXT4), Ok(4 * MI));
        assert_eq!(volume_size(1, 0, VolumeAccess::Block), Ok(4 * MI));
        // A limit at the floor still allows the round-up.
        assert_eq!(volume_size(10 * MI, 300 * MI, XFS), Ok(300 * MI));
    }

    #[test]
    fn sizes_are_whole_extents() {
        assert_eq!(volume_size(301 * MI, 0, XFS), Ok(304 * MI));
        assert_eq!(volume_size(1 << 30, 0, XFS), Ok(1 << 30));
        assert_eq!(volume_size(5 * MI + 1, 0, EXT4), Ok(8 * MI));
    }

    #[test]
    fn a_limit_below_the_floor_is_out_of_range_with_the_reason() {
        let err = volume_size(100 * MI, 200 * MI, XFS).expect_err("below xfs floor");
        assert_eq!(
            err.to_string(),
            "an xfs volume needs at least 300Mi (314572800 bytes) (mkfs.xfs refuses smaller filesystems), but the limit is 200Mi (209715200 bytes)"
        );
        // The same request as ext4 fits.
        assert_eq!(volume_size(100 * MI, 200 * MI, EXT4), Ok(100 * MI));
        // Rounding past an unaligned limit is refused too.
        let err = volume_size(5 * MI, 6 * MI, EXT4).expect_err("8Mi > 6Mi");
        assert!(
            matches!(err, SizeError::BelowMinimum { min_bytes, .. } if min_bytes == 8 * MI),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_ranges_are_invalid() {
        assert!(matches!(
            volume_size(-1, 0, XFS),
            Err(SizeError::Invalid(_))
        ));
        assert!(matches!(
            volume_size(0, -1, XFS),
            Err(SizeError::Invalid(_))
        ));
        assert!(matches!(
            volume_size(400 * MI, 300 * MI, XFS),
            Err(SizeError::Invalid(_))
        ));
        assert!(matches!(
            volume_size(i64::MAX, 0, XFS),
            Err(SizeError::Invalid(_))
        ));
    }
}
