//! Pools and logical volumes, through lvm2.
//!
//! Every operation reads LVM's state first and only runs the commands still needed to reach
//! the goal, so an operation interrupted at any point (the agent killed, the node rebooted)
//! is finished by simply running it again.

pub mod report;

use crate::exec::{ExecError, Executor, HostCommand};
pub use report::{Lv, LvmState, Pv, Vg};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LvmError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("cannot read the report of `{command}`: {reason}")]
    Report { command: String, reason: String },
    #[error("{device} is a physical volume of volume group {vg}; it cannot join {want}")]
    ForeignVg {
        device: String,
        vg: String,
        want: String,
    },
    #[error("volume group {vg} has {free} bytes free but {need} more are needed")]
    InsufficientSpace { vg: String, free: i64, need: i64 },
    #[error("volume group {0} does not exist")]
    NoSuchVg(String),
    #[error("{0:?} is not a valid logical volume name (1-127 characters of a-z A-Z 0-9 + _ . -, not starting with - or named . or ..)")]
    InvalidName(String),
    #[error("logical volume {vg}/{lv} is open; refusing to remove it while it is in use")]
    LvInUse { vg: String, lv: String },
    #[error("logical volume {vg}/{lv} is {have} bytes, larger than the {want} requested; shrinking is not supported")]
    Shrink {
        vg: String,
        lv: String,
        have: i64,
        want: i64,
    },
}

/// What happened when an operation was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Commands ran to reach the goal.
    Changed,
    /// The goal already held; nothing ran.
    AlreadyDone,
}

/// LVM, through an [`Executor`].
#[derive(Clone)]
pub struct Lvm {
    exec: Arc<dyn Executor>,
}

pub use hwameistor_core::lvm::round_up_to_extent;

/// lvm2's rules for LV names (the shared rule), as this module's error.
pub fn validate_lv_name(name: &str) -> Result<(), LvmError> {
    hwameistor_core::lvm::validate_lv_name(name).map_err(|e| LvmError::InvalidName(e.0))
}

impl Lvm {
    pub fn new(exec: Arc<dyn Executor>) -> Self {
        Lvm { exec }
    }

    async fn report(
        &self,
        tool: &str,
        fields: &str,
        target: Option<&str>,
    ) -> Result<String, LvmError> {
        let cmd = HostCommand::new(tool).args([
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
        ]);
        let cmd = match target {
            Some(t) => cmd.arg(t),
            None => cmd,
        };
        Ok(self.exec.run(&cmd).await?.stdout)
    }

    /// Reads physical volumes, volume groups and logical volumes.
    pub async fn state(&self) -> Result<LvmState, LvmError> {
        let parse_err = |command: &str| {
            let command = command.to_string();
            move |e: report::ReportError| LvmError::Report {
                command,
                reason: e.0,
            }
        };
        // Two processes, not three: each LVM command rescans devices, which dominates its cost.
        let pv_json = self.report("pvs", report::PV_FIELDS, None).await?;
        let pvs = report::parse_pvs(&pv_json).map_err(parse_err("pvs"))?;
        let vgs = report::vgs_from_pvs(&pv_json).map_err(parse_err("pvs"))?;
        let lvs = report::parse_lvs(&self.report("lvs", report::LV_FIELDS, None).await?)
            .map_err(parse_err("lvs"))?;
        Ok(LvmState { pvs, vgs, lvs })
    }

    /// Reads one logical volume.
    pub async fn lv(&self, vg: &str, name: &str) -> Result<Option<Lv>, LvmError> {
        let target = format!("{vg}/{name}");
        match self.report("lvs", report::LV_FIELDS, Some(&target)).await {
            Ok(json) => Ok(report::parse_lvs(&json)
                .map_err(|e| LvmError::Report {
                    command: format!("lvs {target}"),
                    reason: e.0,
                })?
                .into_iter()
                .next()),
            // lvs fails for a missing LV; tell that apart from LVM itself failing.
            Err(LvmError::Exec(ExecError::Failed { stderr, .. }))
                if stderr.contains("Failed to find logical volume")
                    || stderr.contains("not found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn run(&self, cmd: HostCommand) -> Result<(), LvmError> {
        self.exec.run(&cmd).await?;
        Ok(())
    }

    /// Makes `devices` physical volumes of volume group `vg`, creating the group if needed.
    ///
    /// `pvcreate` runs without `--yes` or `--force`: LVM then refuses a device that carries
    /// any signature, so a disk that gained data since it was checked is never wiped.
    pub async fn ensure_vg(&self, vg: &str, devices: &[String]) -> Result<Outcome, LvmError> {
        let state = self.state().await?;
        let mut to_add = Vec::new();
        for dev in devices {
            match state.pv(dev) {
                Some(pv) if pv.vg_name == vg => {}
                Some(pv) if !pv.vg_name.is_empty() => {
                    return Err(LvmError::ForeignVg {
                        device: dev.clone(),
                        vg: pv.vg_name.clone(),
                        want: vg.to_string(),
                    })
                }
                Some(_) => to_add.push(dev.clone()),
                None => {
                    self.run(HostCommand::new("pvcreate").arg(dev)).await?;
                    crate::crash::point("lvm-after-pvcreate");
                    to_add.push(dev.clone());
                }
            }
        }
        if to_add.is_empty() {
            return Ok(if state.vg(vg).is_some() || devices.is_empty() {
                Outcome::AlreadyDone
            } else {
                Outcome::Changed
            });
        }
        let tool = if state.vg(vg).is_some() {
            "vgextend"
        } else {
            "vgcreate"
        };
        self.run(HostCommand::new(tool).arg(vg).args(to_add))
            .await?;
        Ok(Outcome::Changed)
    }

    /// Creates logical volume `name` of at least `bytes` in `vg`; grows it if it exists
    /// smaller; activates it if it exists inactive.
    pub async fn ensure_lv(
        &self,
        vg: &str,
        name: &str,
        bytes: i64,
    ) -> Result<(Outcome, Lv), LvmError> {
        validate_lv_name(name)?;
        let state = self.state().await?;
        self.ensure_lv_in(&state, vg, name, bytes).await
    }

    /// [`Lvm::ensure_lv`] starting from an LVM state the caller read (under its host lock),
    /// saving the report commands on the provisioning path.
    pub async fn ensure_lv_in(
        &self,
        state: &LvmState,
        vg: &str,
        name: &str,
        bytes: i64,
    ) -> Result<(Outcome, Lv), LvmError> {
        validate_lv_name(name)?;
        let group = state
            .vg(vg)
            .ok_or_else(|| LvmError::NoSuchVg(vg.to_string()))?;
        let want = round_up_to_extent(bytes, group.extent_size);
        let mut outcome = Outcome::AlreadyDone;
        match state.lv(vg, name) {
            None => {
                if group.free < want {
                    return Err(LvmError::InsufficientSpace {
                        vg: vg.into(),
                        free: group.free,
                        need: want,
                    });
                }
                // -W/-Z: a new LV may land on extents holding an old volume's data; wipe
                // signatures and zero its start so no stale filesystem shows through.
                self.run(HostCommand::new("lvcreate").args([
                    "--yes",
                    "-W",
                    "y",
                    "-Z",
                    "y",
                    "--addtag",
                    "hwameistor",
                    "-n",
                    name,
                    "-L",
                    &format!("{want}b"),
                    vg,
                ]))
                .await?;
                crate::crash::point("lvm-after-lvcreate");
                outcome = Outcome::Changed;
            }
            Some(lv) => {
                if lv.size < want {
                    let need = want - lv.size;
                    if group.free < need {
                        return Err(LvmError::InsufficientSpace {
                            vg: vg.into(),
                            free: group.free,
                            need,
                        });
                    }
                    self.run(HostCommand::new("lvextend").args([
                        "-L",
                        &format!("{want}b"),
                        &format!("{vg}/{name}"),
                    ]))
                    .await?;
                    outcome = Outcome::Changed;
                }
                if !lv.active() {
                    self.run(HostCommand::new("lvchange").args([
                        "-a",
                        "y",
                        &format!("{vg}/{name}"),
                    ]))
                    .await?;
                    outcome = Outcome::Changed;
                }
            }
        }
        let lv = if outcome == Outcome::Changed {
            self.lv(vg, name).await?
        } else {
            state.lv(vg, name).cloned()
        };
        lv.map(|lv| (outcome, lv)).ok_or_else(|| LvmError::Report {
            command: "lvs".into(),
            reason: format!("{vg}/{name} missing right after it was created"),
        })
    }

    /// Grows `vg/name` to at least `bytes`. Never shrinks.
    pub async fn extend_lv(
        &self,
        vg: &str,
        name: &str,
        bytes: i64,
    ) -> Result<(Outcome, Lv), LvmError> {
        let state = self.state().await?;
        if let Some(lv) = state.lv(vg, name) {
            let extent = state.vg(vg).map(|g| g.extent_size).unwrap_or(0);
            if lv.size > round_up_to_extent(bytes, extent) {
                // Asked for less than it has: fine, it is already large enough.
                return Ok((Outcome::AlreadyDone, lv.clone()));
            }
        }
        self.ensure_lv(vg, name, bytes).await
    }

    /// Removes `vg/name`. Removing an LV that does not exist succeeds.
    pub async fn remove_lv(&self, vg: &str, name: &str) -> Result<Outcome, LvmError> {
        let state = self.state().await?;
        self.remove_lv_in(&state, vg, name).await
    }

    /// [`Lvm::remove_lv`] starting from an LVM state the caller read.
    pub async fn remove_lv_in(
        &self,
        state: &LvmState,
        vg: &str,
        name: &str,
    ) -> Result<Outcome, LvmError> {
        match state.lv(vg, name) {
            None => Ok(Outcome::AlreadyDone),
            Some(lv) if lv.open() => Err(LvmError::LvInUse {
                vg: vg.into(),
                lv: name.into(),
            }),
            Some(_) => {
                self.run(HostCommand::new("lvremove").args(["--yes", &format!("{vg}/{name}")]))
                    .await?;
                crate::crash::point("lvm-after-lvremove");
                Ok(Outcome::Changed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::FakeExecutor;

    fn pvs(rows: &[String]) -> String {
        format!(r#"{{"report":[{{"pv":[{}]}}]}}"#, rows.join(","))
    }
    /// A PV row; VG fields as a real `pvs -o` with VG columns prints them.
    fn pv(name: &str, vg: &str, vg_size: i64, vg_free: i64) -> String {
        format!(
            r#"{{"pv_name":"{name}","vg_name":"{vg}","pv_size":"1073741824","pv_free":"1073741824","vg_size":"{vg_size}","vg_free":"{vg_free}","vg_extent_size":"4194304","lv_count":"0","pv_count":"1"}}"#
        )
    }
    const NO_LVS: &str = r#"{"report":[{"lv":[]}]}"#;
    const HDD: &str = "LocalStorage_PoolHDD";

    fn non_report(fake: &FakeExecutor) -> Vec<String> {
        fake.commands()
            .into_iter()
            .filter(|c| !c.contains("--reportformat"))
            .collect()
    }

    #[tokio::test]
    async fn state_reads_groups_from_the_pv_report_in_two_commands() {
        let fake = FakeExecutor::new();
        fake.ok(
            "pvs",
            &pvs(&[
                pv("/dev/vdb", HDD, 100, 60),
                pv("/dev/vdc", HDD, 100, 60),
                pv("/dev/vdd", "", 0, 0),
            ]),
        )
        .ok("lvs", NO_LVS);
        let st = Lvm::new(Arc::new(fake.clone()))
            .state()
            .await
            .expect("state");
        assert_eq!(st.pvs.len(), 3);
        assert_eq!(st.vgs.len(), 1);
        assert_eq!((st.vgs[0].size, st.vgs[0].free), (100, 60));
        assert_eq!(fake.commands().len(), 2);
    }

    #[tokio::test]
    async fn ensure_vg_creates_pvs_then_the_group() {
        let fake = FakeExecutor::new();
        fake.ok("pvs", &pvs(&[]))
            .ok("lvs", NO_LVS)
            .ok("pvcreate", "")
            .ok("vgcreate", "");
        let lvm = Lvm::new(Arc::new(fake.clone()));
        let out = lvm
            .ensure_vg(HDD, &["/dev/vdb".into(), "/dev/vdc".into()])
            .await;
        assert_eq!(out, Ok(Outcome::Changed));
        assert_eq!(
            non_report(&fake),
            [
                "pvcreate /dev/vdb",
                "pvcreate /dev/vdc",
                "vgcreate LocalStorage_PoolHDD /dev/vdb /dev/vdc"
            ]
        );
    }

    #[tokio::test]
    async fn ensure_vg_resumes_after_a_crash_between_pvcreate_and_vgextend() {
        let fake = FakeExecutor::new();
        fake.ok(
            "pvs",
            &pvs(&[pv("/dev/vdb", HDD, 100, 100), pv("/dev/vdc", "", 0, 0)]),
        )
        .ok("lvs", NO_LVS)
        .ok("vgextend", "");
        let lvm = Lvm::new(Arc::new(fake.clone()));
        let out = lvm
            .ensure_vg(HDD, &["/dev/vdb".into(), "/dev/vdc".into()])
            .await;
        assert_eq!(out, Ok(Outcome::Changed));
        assert_eq!(
            non_report(&fake),
            ["vgextend LocalStorage_PoolHDD /dev/vdc"]
        );
        // Everything done: a repeat runs nothing.
        let done = FakeExecutor::new();
        done.ok(
            "pvs",
            &pvs(&[pv("/dev/vdb", HDD, 100, 100), pv("/dev/vdc", HDD, 100, 100)]),
        )
        .ok("lvs", NO_LVS);
        let lvm = Lvm::new(Arc::new(done.clone()));
        assert_eq!(
            lvm.ensure_vg(HDD, &["/dev/vdb".into(), "/dev/vdc".into()])
                .await,
            Ok(Outcome::AlreadyDone)
        );
        assert!(non_report(&done).is_empty());
    }

    #[tokio::test]
    async fn ensure_vg_refuses_a_foreign_group() {
        let fake = FakeExecutor::new();
        fake.ok("pvs", &pvs(&[pv("/dev/vdb", "data", 100, 0)]))
            .ok("lvs", NO_LVS);
        let lvm = Lvm::new(Arc::new(fake.clone()));
        let out = lvm.ensure_vg(HDD, &["/dev/vdb".into()]).await;
        assert!(
            matches!(out, Err(LvmError::ForeignVg { ref vg, .. }) if vg == "data"),
            "{out:?}"
        );
        assert!(non_report(&fake).is_empty());
    }

    #[tokio::test]
    async fn ensure_lv_rounds_to_extents_and_checks_space() {
        let fake = FakeExecutor::new();
        fake.ok("pvs", &pvs(&[pv("/dev/vdb", HDD, 1 << 30, 1 << 30)]))
            .ok("lvs", NO_LVS)
            .ok("lvcreate", "");
        let lvm = Lvm::new(Arc::new(fake.clone()));
        // The fake keeps answering "no LVs", so the re-read after create fails loudly.
        let out = lvm.ensure_lv(HDD, "pvc-1", 5 << 20).await;
        assert!(matches!(out, Err(LvmError::Report { .. })), "{out:?}");
        assert!(fake
            .commands()
            .iter()
            .any(|c| c.starts_with("lvcreate") && c.contains("-L 8388608b")));
        let too_big = lvm.ensure_lv(HDD, "pvc-2", 2 << 30).await;
        assert!(
            matches!(too_big, Err(LvmError::InsufficientSpace { .. })),
            "{too_big:?}"
        );
        let bad = lvm.ensure_lv(HDD, "-x", 1).await;
        assert!(matches!(bad, Err(LvmError::InvalidName(_))));
        let missing = lvm.ensure_lv("LocalStorage_PoolSSD", "pvc-3", 1).await;
        assert_eq!(
            missing.err(),
            Some(LvmError::NoSuchVg("LocalStorage_PoolSSD".into()))
        );
    }

    #[tokio::test]
    async fn remove_lv_is_idempotent_and_refuses_open_volumes() {
        let fake = FakeExecutor::new();
        fake.ok("pvs", &pvs(&[pv("/dev/vdb", HDD, 100, 100)])).ok(
            "lvs",
            r#"{"report":[{"lv":[{"lv_name":"busy","vg_name":"LocalStorage_PoolHDD","lv_size":"4194304","lv_attr":"-wi-ao----","lv_path":"/dev/x/busy","devices":"/dev/vdb(0)"}]}]}"#,
        );
        let lvm = Lvm::new(Arc::new(fake.clone()));
        assert_eq!(lvm.remove_lv(HDD, "gone").await, Ok(Outcome::AlreadyDone));
        assert!(matches!(
            lvm.remove_lv(HDD, "busy").await,
            Err(LvmError::LvInUse { .. })
        ));
        assert!(non_report(&fake).is_empty());
    }

    #[tokio::test]
    async fn a_missing_lv_reads_as_none_but_lvm_failures_are_errors() {
        let fake = FakeExecutor::new();
        fake.fail("lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_size,lv_attr,lv_path,devices LocalStorage_PoolHDD/x", "Failed to find logical volume \"LocalStorage_PoolHDD/x\"\n  LocalStorage_PoolHDD/x: not found");
        fake.fail("lvs", "  Locking failed");
        let lvm = Lvm::new(Arc::new(fake.clone()));
        assert_eq!(lvm.lv(HDD, "x").await, Ok(None));
        assert!(matches!(lvm.lv(HDD, "y").await, Err(LvmError::Exec(_))));
    }
}
