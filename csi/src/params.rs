//! StorageClass parameters of `lvm.hwameistor.io`, parsed into typed values.
//!
//! Every key is checked: a typo in a StorageClass (`poolclass`, `replicas`) must fail the
//! first CreateVolume with a message naming the key, not silently fall back to a default.
//! The `csi.storage.k8s.io/` keys belong to the CSI sidecars and are ignored, except the
//! PVC name and namespace that `--extra-create-metadata` adds (recorded on the LocalVolume)
//! and the filesystem type, which is validated.

use hwameistor_api::volume::MAX_REPLICAS;
use hwameistor_api::PoolClass;
use thiserror::Error;

pub const PARAM_POOL_CLASS: &str = "poolClass";
pub const PARAM_REPLICA_NUMBER: &str = "replicaNumber";
pub const PARAM_CONVERTIBLE: &str = "convertible";
pub const PARAM_THIN: &str = "thin";
pub const PARAM_FS_TYPE: &str = "csi.storage.k8s.io/fstype";
pub const PARAM_PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const PARAM_PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
/// Keys the CSI sidecars own.
const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";

pub use hwameistor_core::sizing::FsType;

/// How many copies of the data a volume keeps. The types model N copies; only one is
/// served until replication lands, and the parser says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaCount(u32);

impl ReplicaCount {
    pub const ONE: ReplicaCount = ReplicaCount(1);

    pub fn get(self) -> u32 {
        self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeParams {
    pub pool_class: PoolClass,
    pub replicas: ReplicaCount,
    /// A single-replica volume created with DRBD on its one node, so that a later
    /// conversion to HA runs online (while the volume is in use).
    pub convertible: bool,
    /// Carved from the pool's thin pool (allocated as written, over-provisioned up to the
    /// node's ratio).
    pub thin: bool,
    /// Set only when the StorageClass names a filesystem (the provisioner usually moves it
    /// into the volume capability instead).
    pub fs_type: Option<FsType>,
    pub pvc_name: Option<String>,
    pub pvc_namespace: Option<String>,
}

impl Default for VolumeParams {
    fn default() -> Self {
        VolumeParams {
            pool_class: PoolClass::Hdd,
            replicas: ReplicaCount::ONE,
            convertible: false,
            thin: false,
            fs_type: None,
            pvc_name: None,
            pvc_namespace: None,
        }
    }
}

/// A parameter problem; every variant names the parameter.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParamError {
    #[error("unknown StorageClass parameter {name:?}; known parameters: poolClass, replicaNumber, convertible, thin, csi.storage.k8s.io/fstype")]
    Unknown { name: String },
    #[error("StorageClass parameter {name}={value:?} is invalid: expected {expected}")]
    BadValue {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("StorageClass parameter {name}={value:?} is not supported: {reason}")]
    Unsupported {
        name: String,
        value: String,
        reason: &'static str,
    },
}

impl ParamError {
    /// The parameter the error is about.
    pub fn parameter(&self) -> &str {
        match self {
            ParamError::Unknown { name }
            | ParamError::BadValue { name, .. }
            | ParamError::Unsupported { name, .. } => name,
        }
    }
}

fn bad(name: &str, value: &str, expected: &'static str) -> ParamError {
    ParamError::BadValue {
        name: name.to_string(),
        value: value.to_string(),
        expected,
    }
}

/// Parses CreateVolume (or GetCapacity) parameters: any map of them (the CSI messages carry
/// a `HashMap`, a StorageClass a `BTreeMap`).
pub fn parse<'a>(
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<VolumeParams, ParamError> {
    let mut out = VolumeParams::default();
    // Sorted, so a request with several bad keys always names the same one.
    let mut pairs: Vec<(&String, &String)> = params.into_iter().collect();
    pairs.sort();
    for (key, value) in pairs {
        match key.as_str() {
            PARAM_POOL_CLASS => {
                out.pool_class = PoolClass::parse(value)
                    .ok_or_else(|| bad(key, value, "one of HDD, SSD, NVMe"))?;
            }
            PARAM_REPLICA_NUMBER => {
                let n: u32 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_REPLICAS as u32).contains(n))
                    .ok_or_else(|| bad(key, value, "a whole number from 1 to 4"))?;
                if n > 2 {
                    return Err(ParamError::Unsupported {
                        name: key.clone(),
                        value: value.clone(),
                        reason: "DRBD 8.4 replicates between two nodes; use replicaNumber \"1\" or \"2\" (HA)",
                    });
                }
                out.replicas = ReplicaCount(n);
            }
            PARAM_CONVERTIBLE => out.convertible = flag(key, value)?,
            PARAM_THIN => out.thin = flag(key, value)?,
            PARAM_FS_TYPE => {
                out.fs_type =
                    Some(FsType::parse(value).ok_or_else(|| bad(key, value, "xfs or ext4"))?);
            }
            PARAM_PVC_NAME => out.pvc_name = Some(value.clone()).filter(|v| !v.is_empty()),
            PARAM_PVC_NAMESPACE => {
                out.pvc_namespace = Some(value.clone()).filter(|v| !v.is_empty())
            }
            k if k.starts_with(SIDECAR_PREFIX) => {}
            _ => return Err(ParamError::Unknown { name: key.clone() }),
        }
    }
    if out.convertible && out.replicas.get() > 1 {
        return Err(ParamError::Unsupported {
            name: PARAM_CONVERTIBLE.into(),
            value: "true".into(),
            reason: "convertible applies to single-replica volumes (replicaNumber \"1\"); a volume with replicaNumber \"2\" is replicated already",
        });
    }
    if out.thin && (out.convertible || out.replicas.get() > 1) {
        return Err(ParamError::Unsupported {
            name: PARAM_THIN.into(),
            value: "true".into(),
            reason: hwameistor_core::ha::THIN_NOT_REPLICATED,
        });
    }
    Ok(out)
}

fn flag(key: &str, value: &str) -> Result<bool, ParamError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(key, value, "\"true\" or \"false\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn p(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_when_empty() {
        assert_eq!(parse(&p(&[])), Ok(VolumeParams::default()));
        assert_eq!(VolumeParams::default().pool_class, PoolClass::Hdd);
    }

    #[test]
    fn parses_every_known_key() {
        let got = parse(&p(&[
            ("poolClass", "nvme"),
            ("replicaNumber", "1"),
            ("convertible", "true"),
            ("thin", "false"),
            ("csi.storage.k8s.io/fstype", "ext4"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "apps"),
            ("csi.storage.k8s.io/pv/name", "pvc-1"),
        ]))
        .expect("valid");
        assert_eq!(
            got,
            VolumeParams {
                pool_class: PoolClass::Nvme,
                replicas: ReplicaCount::ONE,
                convertible: true,
                thin: false,
                fs_type: Some(FsType::Ext4),
                pvc_name: Some("data".into()),
                pvc_namespace: Some("apps".into()),
            }
        );
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        let cases: &[(&str, &str)] = &[
            ("poolClass", "tape"),
            ("poolClass", ""),
            ("replicaNumber", "0"),
            ("replicaNumber", "5"),
            ("replicaNumber", "two"),
            ("replicaNumber", "-1"),
            ("convertible", "yes"),
            ("convertible", "True"),
            ("thin", "yes"),
            ("thin", "1"),
            ("csi.storage.k8s.io/fstype", "btrfs"),
            ("csi.storage.k8s.io/fstype", "XFS"),
        ];
        for (k, v) in cases {
            let err = parse(&p(&[(k, v)])).expect_err(&format!("{k}={v} must be rejected"));
            assert!(
                matches!(err, ParamError::BadValue { .. }),
                "{k}={v}: {err:?}"
            );
            assert_eq!(err.parameter(), *k);
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn two_replicas_are_ha_and_more_are_refused_with_a_reason() {
        assert_eq!(
            parse(&p(&[("replicaNumber", "2")]))
                .expect("HA")
                .replicas
                .get(),
            2
        );
        for n in ["3", "4"] {
            let err = parse(&p(&[("replicaNumber", n)])).expect_err("more than two");
            assert_eq!(err.parameter(), "replicaNumber");
            assert!(err.to_string().contains("two nodes"), "{err}");
        }
    }

    #[test]
    fn convertible_is_for_single_replica_volumes() {
        assert!(
            !parse(&p(&[("convertible", "false")]))
                .expect("ok")
                .convertible
        );
        let err =
            parse(&p(&[("convertible", "true"), ("replicaNumber", "2")])).expect_err("HA already");
        assert_eq!(err.parameter(), "convertible");
        assert!(err.to_string().contains("replicated already"), "{err}");
    }

    #[test]
    fn thin_volumes_keep_one_replica() {
        assert!(parse(&p(&[("thin", "true")])).expect("thin").thin);
        assert!(
            parse(&p(&[("thin", "true"), ("replicaNumber", "1")]))
                .expect("thin, one replica")
                .thin
        );
        for extra in [("replicaNumber", "2"), ("convertible", "true")] {
            let err = parse(&p(&[("thin", "true"), extra])).expect_err("thin and replicated");
            assert_eq!(err.parameter(), "thin", "{extra:?}");
            assert!(err.to_string().contains("initial sync"), "{err}");
        }
        // A thick volume may be anything.
        assert!(parse(&p(&[("thin", "false"), ("replicaNumber", "2")])).is_ok());
    }

    #[test]
    fn unknown_keys_are_refused_but_sidecar_keys_ignored() {
        let err = parse(&p(&[("poolclass", "HDD")])).expect_err("typo");
        assert_eq!(
            err,
            ParamError::Unknown {
                name: "poolclass".into()
            }
        );
        assert!(err.to_string().contains("\"poolclass\""));
        let err = parse(&p(&[("volumeKind", "LVM")])).expect_err("not ours");
        assert_eq!(err.parameter(), "volumeKind");
        assert!(parse(&p(&[("csi.storage.k8s.io/provisioner-secret-name", "x")])).is_ok());
    }
}
