//! From a CSI volume name to the name of its LocalVolume.
//!
//! The CSI spec allows any string as a volume name (upper case, 128 characters, spaces);
//! a LocalVolume's name must be a valid object name, and it is also the logical volume's
//! name on the node and the value of the `hwameistor.io/volume` label on its replicas. So a
//! name is used as it is only when it satisfies all three (a lower-case DNS label-like name
//! of at most 63 characters that LVM accepts); any other name maps to a readable, sanitised
//! prefix and a hash of the whole name. The mapping is deterministic, so a repeated
//! CreateVolume finds the object the first call made; the original name is kept on the
//! object (see [`hwameistor_api::volume::ANNOTATION_CSI_NAME`]) so two names that would ever
//! map to one object are told apart.

use crate::lvm::validate_lv_name;
use sha2::{Digest, Sha256};

/// Longest object name used as it is: the limit of a label value.
pub const MAX_PLAIN_LEN: usize = 63;
/// Longest readable prefix kept before the hash.
const PREFIX_LEN: usize = 40;

/// Whether `name` can be a LocalVolume, logical volume and label value as it is.
pub fn is_plain_volume_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= MAX_PLAIN_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && validate_lv_name(name).is_ok()
}

/// The LocalVolume name for CSI volume name `csi_name`.
pub fn volume_object_name(csi_name: &str) -> String {
    if is_plain_volume_name(csi_name) {
        return csi_name.to_string();
    }
    let mut prefix = String::new();
    for c in csi_name.chars() {
        if prefix.len() >= PREFIX_LEN {
            break;
        }
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            prefix.push(c);
        } else if !prefix.is_empty() && !prefix.ends_with('-') {
            prefix.push('-');
        }
    }
    let prefix = prefix.trim_end_matches('-');
    // LVM reserves these prefixes; so does an empty one.
    let prefix =
        if prefix.is_empty() || prefix.starts_with("snapshot") || prefix.starts_with("pvmove") {
            format!("v-{prefix}")
        } else {
            prefix.to_string()
        };
    let digest = Sha256::digest(csi_name.as_bytes());
    let hash: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}", prefix.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_kept() {
        for n in ["pvc-0a1b2c3d-4e5f-6789-abcd-ef0123456789", "a", "vol.1"] {
            assert_eq!(volume_object_name(n), n);
        }
    }

    #[test]
    fn any_csi_name_maps_to_a_valid_deterministic_name() {
        let long = "X".repeat(128);
        let cases = [
            "Sanity-CreateVolume-ABC",
            long.as_str(),
            "with space/and:colons",
            "snapshot-like",
            "-leading",
            "ÄÖÜ",
            "",
            "UPPER",
            &"a".repeat(64),
        ];
        for n in cases {
            let m = volume_object_name(n);
            assert!(is_plain_volume_name(&m), "{n:?} -> {m:?}");
            assert_eq!(m, volume_object_name(n), "deterministic");
        }
        assert_ne!(volume_object_name("UPPER"), volume_object_name("Upper"));
        assert!(
            volume_object_name("Sanity-CreateVolume-ABC").starts_with("sanity-createvolume-abc-")
        );
    }
}
