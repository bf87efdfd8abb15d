//! Parsing of lvm2's JSON reports (`--reportformat json --units b --nosuffix`).

use hwameistor_core::lvm::{Lv, Pv, ThinUsage, Vg};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Deserialize)]
struct PvSection {
    #[serde(default)]
    pv: Vec<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct LvSection {
    #[serde(default)]
    lv: Vec<BTreeMap<String, String>>,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct ReportError(pub String);

fn field<'a>(row: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, ReportError> {
    row.get(key)
        .map(|s| s.trim())
        .ok_or_else(|| ReportError(format!("missing field {key}")))
}

fn int(row: &BTreeMap<String, String>, key: &str) -> Result<i64, ReportError> {
    let v = field(row, key)?;
    if v.is_empty() {
        return Ok(0);
    }
    v.parse::<i64>()
        .map_err(|_| ReportError(format!("field {key} is not a byte count: {v:?}")))
}

/// PV rows carry their VG's fields too, so one `pvs` call reads both (every VG has a PV).
pub const PV_FIELDS: &str =
    "pv_name,vg_name,pv_size,pv_free,vg_size,vg_free,vg_extent_size,lv_count,pv_count";
/// `devices` makes lvs print one row per segment; [`parse_lvs`] folds them back. The thin
/// fields are empty for thick volumes; `origin` names a snapshot's volume, and a
/// copy-on-write snapshot's `data_percent` is the use of its space.
pub const LV_FIELDS: &str =
    "lv_name,vg_name,lv_size,lv_attr,lv_path,devices,pool_lv,data_percent,metadata_percent,lv_metadata_size,origin";

/// A percentage as LVM prints it ("12.34", or empty) in hundredths of a percent.
fn basis_points(row: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>, ReportError> {
    let Some(v) = row.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let f: f64 = v
        .parse()
        .map_err(|_| ReportError(format!("field {key} is not a percentage: {v:?}")))?;
    Ok(Some((f * 100.0).round() as i64))
}

/// Physical volumes and, from the same rows, their volume groups (one per group).
pub fn parse_pvs(json: &str) -> Result<(Vec<Pv>, Vec<Vg>), ReportError> {
    let r: Report<PvSection> =
        serde_json::from_str(json).map_err(|e| ReportError(e.to_string()))?;
    let mut pvs = Vec::new();
    let mut vgs: Vec<Vg> = Vec::new();
    for row in r.report.iter().flat_map(|s| &s.pv) {
        let vg_name = field(row, "vg_name")?;
        pvs.push(Pv {
            name: field(row, "pv_name")?.to_string(),
            vg_name: vg_name.to_string(),
            size: int(row, "pv_size")?,
            free: int(row, "pv_free")?,
        });
        if vg_name.is_empty() || vgs.iter().any(|v| v.name == vg_name) {
            continue;
        }
        vgs.push(Vg {
            name: vg_name.to_string(),
            size: int(row, "vg_size")?,
            free: int(row, "vg_free")?,
            extent_size: int(row, "vg_extent_size")?,
            lv_count: int(row, "lv_count")?,
            pv_count: int(row, "pv_count")?,
        });
    }
    Ok((pvs, vgs))
}

/// Logical volumes, one per volume: lvs prints one row per segment when asked for
/// `devices`, so a volume spanning two disks comes as two rows that are folded into one
/// volume listing both disks (each once).
pub fn parse_lvs(json: &str) -> Result<Vec<Lv>, ReportError> {
    let r: Report<LvSection> =
        serde_json::from_str(json).map_err(|e| ReportError(e.to_string()))?;
    let mut out: Vec<Lv> = Vec::new();
    for row in r.report.iter().flat_map(|s| &s.lv) {
        let name = field(row, "lv_name")?;
        let vg_name = field(row, "vg_name")?;
        // `devices` reads like "/dev/vdb(0)" or, for a striped segment, "/dev/vdb(0),/dev/vdc(0)";
        // a thin pool's names its hidden data volume ("hwameistor-thin_tdata(0)"), not a disk.
        let devices = field(row, "devices")?
            .split(',')
            .filter(|d| d.starts_with('/'))
            .map(|d| d.split('(').next().unwrap_or(d).to_string());
        let lv = match out
            .iter_mut()
            .find(|l| l.name == name && l.vg_name == vg_name)
        {
            Some(lv) => lv,
            None => {
                let attr = field(row, "lv_attr")?.to_string();
                let pool_lv = row
                    .get("pool_lv")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                let data = basis_points(row, "data_percent")?;
                let origin = row
                    .get("origin")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                let cow = matches!(attr.chars().next(), Some('s' | 'S'));
                let thin = if attr.starts_with('t') || pool_lv.is_some() {
                    Some(ThinUsage {
                        data_bp: data.unwrap_or(0),
                        metadata_bp: basis_points(row, "metadata_percent")?.unwrap_or(0),
                        metadata_bytes: int(row, "lv_metadata_size")?,
                    })
                } else {
                    None
                };
                out.push(Lv {
                    name: name.to_string(),
                    vg_name: vg_name.to_string(),
                    size: int(row, "lv_size")?,
                    attr,
                    path: field(row, "lv_path")?.to_string(),
                    devices: Vec::new(),
                    pool_lv,
                    thin,
                    origin,
                    cow_used_bp: if cow { Some(data.unwrap_or(0)) } else { None },
                });
                out.last_mut()
                    .ok_or_else(|| ReportError("logical volume list empty after push".into()))?
            }
        };
        for d in devices {
            if !lv.devices.contains(&d) {
                lv.devices.push(d);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_lvm_reports() {
        let pvs = r#"  {
      "report": [
          {
              "pv": [
                  {"pv_name":"/dev/vdb", "vg_name":"LocalStorage_PoolHDD", "pv_size":"1069547520", "pv_free":"1027604480", "vg_size":"1069547520", "vg_free":"1027604480", "vg_extent_size":"4194304", "lv_count":"1", "pv_count":"1"},
                  {"pv_name":"/dev/vdc", "vg_name":"", "pv_size":"2147483648", "pv_free":"2147483648", "vg_size":"", "vg_free":"", "vg_extent_size":"", "lv_count":"", "pv_count":""}
              ]
          }
      ]
  }"#;
        let (p, v) = parse_pvs(pvs).expect("pvs");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].vg_name, "");
        assert_eq!(p[0].free, 1027604480);
        assert_eq!(v.len(), 1, "a PV outside any group makes no group");
        assert_eq!(v[0].extent_size, 4 << 20);

        let lvs = r#"{"report":[{"lv":[{"lv_name":"pvc-1","vg_name":"LocalStorage_PoolHDD","lv_size":"41943040","lv_attr":"-wi-ao----","lv_path":"/dev/LocalStorage_PoolHDD/pvc-1","devices":"/dev/vdb(0),/dev/vdc(10)"}]}]}"#;
        let l = parse_lvs(lvs).expect("lvs");
        assert_eq!(l[0].devices, vec!["/dev/vdb", "/dev/vdc"]);
        assert!(l[0].active() && l[0].open());
    }

    #[test]
    fn a_volume_of_several_segments_is_one_volume() {
        // What lvs prints for a volume larger than its first disk: one row per segment.
        let lvs = r#"{"report":[{"lv":[
            {"lv_name":"big","vg_name":"LocalStorage_PoolHDD","lv_size":"1501560832","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolHDD/big","devices":"/dev/vdb(0)"},
            {"lv_name":"big","vg_name":"LocalStorage_PoolHDD","lv_size":"1501560832","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolHDD/big","devices":"/dev/vdc(0)"},
            {"lv_name":"small","vg_name":"LocalStorage_PoolHDD","lv_size":"4194304","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolHDD/small","devices":"/dev/vdc(100)"},
            {"lv_name":"big","vg_name":"LocalStorage_PoolSSD","lv_size":"4194304","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolSSD/big","devices":"/dev/vdd(0)"},
            {"lv_name":"big","vg_name":"LocalStorage_PoolHDD","lv_size":"1501560832","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolHDD/big","devices":"/dev/vdb(200)"}
        ]}]}"#;
        let l = parse_lvs(lvs).expect("lvs");
        assert_eq!(l.len(), 3, "{l:#?}");
        assert_eq!(l[0].name, "big");
        assert_eq!(
            l[0].size, 1501560832,
            "the size of the volume, not a sum of rows"
        );
        assert_eq!(l[0].devices, vec!["/dev/vdb", "/dev/vdc"]);
        assert_eq!(
            (l[2].vg_name.as_str(), l[2].devices.len()),
            ("LocalStorage_PoolSSD", 1)
        );
    }

    #[test]
    fn snapshots_carry_their_origin_and_a_cow_snapshot_its_use() {
        // lvm2 2.03: an origin, a COW snapshot 42.5% used, an invalid (overflowed) one, and
        // a thin snapshot of a thin volume.
        let lvs = r#"{"report":[{"lv":[
            {"lv_name":"data","vg_name":"LocalStorage_PoolHDD","lv_size":"8388608","lv_attr":"owi-aos---","lv_path":"/dev/LocalStorage_PoolHDD/data","devices":"/dev/vdb(0)","pool_lv":"","data_percent":"","metadata_percent":"","lv_metadata_size":"","origin":""},
            {"lv_name":"snap_a","vg_name":"LocalStorage_PoolHDD","lv_size":"4194304","lv_attr":"sri-a-s---","lv_path":"/dev/LocalStorage_PoolHDD/snap_a","devices":"/dev/vdb(2)","pool_lv":"","data_percent":"42.50","metadata_percent":"","lv_metadata_size":"","origin":"data"},
            {"lv_name":"snap_b","vg_name":"LocalStorage_PoolHDD","lv_size":"4194304","lv_attr":"sri-I-s---","lv_path":"/dev/LocalStorage_PoolHDD/snap_b","devices":"/dev/vdb(3)","pool_lv":"","data_percent":"100.00","metadata_percent":"","lv_metadata_size":"","origin":"data"},
            {"lv_name":"snap_t","vg_name":"LocalStorage_PoolHDD","lv_size":"1073741824","lv_attr":"Vri-a-tz--","lv_path":"/dev/LocalStorage_PoolHDD/snap_t","devices":"","pool_lv":"hwameistor-thin","data_percent":"3.00","metadata_percent":"","lv_metadata_size":"","origin":"pvc-1"}
        ]}]}"#;
        let l = parse_lvs(lvs).expect("lvs");
        assert_eq!((l[0].origin.as_deref(), l[0].cow_used_bp), (None, None));
        assert_eq!(
            (l[1].origin.as_deref(), l[1].cow_used_bp),
            (Some("data"), Some(4250))
        );
        assert!(l[1].is_cow_snapshot() && !l[1].snapshot_invalid());
        assert!(l[2].snapshot_invalid());
        assert_eq!(
            (l[3].origin.as_deref(), l[3].cow_used_bp),
            (Some("pvc-1"), None)
        );
        assert!(!l[3].is_cow_snapshot());
    }

    #[test]
    fn thin_pools_and_thin_volumes_carry_their_use() {
        // What lvm2 2.03 prints for a pool and one of its volumes (the pool's devices name
        // its hidden data volume, a thin volume has none).
        let lvs = r#"{"report":[{"lv":[
            {"lv_name":"hwameistor-thin","vg_name":"LocalStorage_PoolHDD","lv_size":"536870912","lv_attr":"twi-aotz--","lv_path":"","devices":"hwameistor-thin_tdata(0)","pool_lv":"","data_percent":"12.50","metadata_percent":"10.94","lv_metadata_size":"8388608"},
            {"lv_name":"pvc-1","vg_name":"LocalStorage_PoolHDD","lv_size":"1073741824","lv_attr":"Vwi-a-tz--","lv_path":"/dev/LocalStorage_PoolHDD/pvc-1","devices":"","pool_lv":"hwameistor-thin","data_percent":"6.25","metadata_percent":"","lv_metadata_size":""},
            {"lv_name":"thick","vg_name":"LocalStorage_PoolHDD","lv_size":"4194304","lv_attr":"-wi-a-----","lv_path":"/dev/LocalStorage_PoolHDD/thick","devices":"/dev/vdb(300)","pool_lv":"","data_percent":"","metadata_percent":"","lv_metadata_size":""}
        ]}]}"#;
        let l = parse_lvs(lvs).expect("lvs");
        assert!(l[0].is_thin_pool() && l[0].devices.is_empty());
        assert_eq!(
            l[0].thin,
            Some(ThinUsage {
                data_bp: 1250,
                metadata_bp: 1094,
                metadata_bytes: 8 << 20
            })
        );
        assert_eq!(l[1].pool_lv.as_deref(), Some("hwameistor-thin"));
        assert_eq!(l[1].thin.map(|t| t.data_bp), Some(625));
        assert!(!l[2].is_thin_pool() && l[2].thin.is_none() && l[2].pool_lv.is_none());
        assert!(l
            .iter()
            .all(|v| v.origin.is_none() && v.cow_used_bp.is_none()));
        let bad = lvs.replace("12.50", "lots");
        assert!(parse_lvs(&bad)
            .expect_err("percent")
            .0
            .contains("data_percent"));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(parse_pvs("not json").is_err());
        let bad = r#"{"report":[{"pv":[{"pv_name":"/dev/x","vg_name":"x","pv_size":"12MB","pv_free":"0","vg_size":"1","vg_free":"0","vg_extent_size":"1","lv_count":"0","pv_count":"1"}]}]}"#;
        let e = parse_pvs(bad).expect_err("bad size");
        assert!(e.0.contains("pv_size"), "{e}");
        let missing = r#"{"report":[{"lv":[{"lv_name":"a"}]}]}"#;
        assert!(parse_lvs(missing)
            .expect_err("fields")
            .0
            .contains("missing field"));
    }
}
