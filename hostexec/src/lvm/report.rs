//! Parsing of lvm2's JSON reports (`--reportformat json --units b --nosuffix`).

use serde::Deserialize;
use std::collections::BTreeMap;

pub use hwameistor_core::lvm::{Lv, LvmState, Pv, Vg};

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
struct VgSection {
    #[serde(default)]
    vg: Vec<BTreeMap<String, String>>,
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
pub const VG_FIELDS: &str = "vg_name,vg_size,vg_free,vg_extent_size,lv_count,pv_count";
pub const LV_FIELDS: &str = "lv_name,vg_name,lv_size,lv_attr,lv_path,devices";

pub fn parse_pvs(json: &str) -> Result<Vec<Pv>, ReportError> {
    let r: Report<PvSection> =
        serde_json::from_str(json).map_err(|e| ReportError(e.to_string()))?;
    let mut out = Vec::new();
    for row in r.report.iter().flat_map(|s| &s.pv) {
        out.push(Pv {
            name: field(row, "pv_name")?.to_string(),
            vg_name: field(row, "vg_name")?.to_string(),
            size: int(row, "pv_size")?,
            free: int(row, "pv_free")?,
        });
    }
    Ok(out)
}

/// Volume groups from a `pvs` report made with [`PV_FIELDS`], one per group.
pub fn vgs_from_pvs(json: &str) -> Result<Vec<Vg>, ReportError> {
    let r: Report<PvSection> =
        serde_json::from_str(json).map_err(|e| ReportError(e.to_string()))?;
    let mut out: Vec<Vg> = Vec::new();
    for row in r.report.iter().flat_map(|s| &s.pv) {
        let name = field(row, "vg_name")?;
        if name.is_empty() || out.iter().any(|v| v.name == name) {
            continue;
        }
        out.push(Vg {
            name: name.to_string(),
            size: int(row, "vg_size")?,
            free: int(row, "vg_free")?,
            extent_size: int(row, "vg_extent_size")?,
            lv_count: int(row, "lv_count")?,
            pv_count: int(row, "pv_count")?,
        });
    }
    Ok(out)
}

pub fn parse_vgs(json: &str) -> Result<Vec<Vg>, ReportError> {
    let r: Report<VgSection> =
        serde_json::from_str(json).map_err(|e| ReportError(e.to_string()))?;
    let mut out = Vec::new();
    for row in r.report.iter().flat_map(|s| &s.vg) {
        out.push(Vg {
            name: field(row, "vg_name")?.to_string(),
            size: int(row, "vg_size")?,
            free: int(row, "vg_free")?,
            extent_size: int(row, "vg_extent_size")?,
            lv_count: int(row, "lv_count")?,
            pv_count: int(row, "pv_count")?,
        });
    }
    Ok(out)
}

pub fn parse_lvs(json: &str) -> Result<Vec<Lv>, ReportError> {
    let r: Report<LvSection> =
        serde_json::from_str(json).map_err(|e| ReportError(e.to_string()))?;
    let mut out = Vec::new();
    for row in r.report.iter().flat_map(|s| &s.lv) {
        // `devices` reads like "/dev/vdb(0),/dev/vdc(256)": strip the extent offsets.
        let devices = field(row, "devices")?
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.split('(').next().unwrap_or(d).to_string())
            .collect();
        out.push(Lv {
            name: field(row, "lv_name")?.to_string(),
            vg_name: field(row, "vg_name")?.to_string(),
            size: int(row, "lv_size")?,
            attr: field(row, "lv_attr")?.to_string(),
            path: field(row, "lv_path")?.to_string(),
            devices,
        });
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
                  {"pv_name":"/dev/vdb", "vg_name":"LocalStorage_PoolHDD", "pv_size":"1069547520", "pv_free":"1027604480"},
                  {"pv_name":"/dev/vdc", "vg_name":"", "pv_size":"2147483648", "pv_free":"2147483648"}
              ]
          }
      ]
  }"#;
        let p = parse_pvs(pvs).expect("pvs");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].vg_name, "");
        assert_eq!(p[0].free, 1027604480);

        let vgs = r#"{"report":[{"vg":[{"vg_name":"LocalStorage_PoolHDD","vg_size":"1069547520","vg_free":"1027604480","vg_extent_size":"4194304","lv_count":"1","pv_count":"1"}]}]}"#;
        let v = parse_vgs(vgs).expect("vgs");
        assert_eq!(v[0].extent_size, 4 << 20);

        let lvs = r#"{"report":[{"lv":[{"lv_name":"pvc-1","vg_name":"LocalStorage_PoolHDD","lv_size":"41943040","lv_attr":"-wi-ao----","lv_path":"/dev/LocalStorage_PoolHDD/pvc-1","devices":"/dev/vdb(0),/dev/vdc(10)"}]}]}"#;
        let l = parse_lvs(lvs).expect("lvs");
        assert_eq!(l[0].devices, vec!["/dev/vdb", "/dev/vdc"]);
        assert!(l[0].active() && l[0].open());
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(parse_pvs("not json").is_err());
        let bad = r#"{"report":[{"vg":[{"vg_name":"x","vg_size":"12MB","vg_free":"0","vg_extent_size":"1","lv_count":"0","pv_count":"1"}]}]}"#;
        let e = parse_vgs(bad).expect_err("bad size");
        assert!(e.0.contains("vg_size"), "{e}");
    }
}
