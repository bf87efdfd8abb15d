//! [`Lvm`] over lvm2's command-line tools.

use super::report::{self, ReportError, LV_FIELDS, PV_FIELDS};
use super::{Lvm, LvmError};
use crate::{ExecError, Executor, HostCommand};
use async_trait::async_trait;
use hwameistor_core::lvm::LvmState;
use std::sync::Arc;

/// LVM through lvm2's commands, run by an [`Executor`].
#[derive(Clone)]
pub struct LvmCli {
    exec: Arc<dyn Executor>,
}

/// Which operation failed, for reading its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op<'a> {
    Device(&'a str),
    Group(&'a str),
    Volume(&'a str, &'a str),
}

/// Turns a failed command into the typed error its stderr describes, when lvm2 says
/// something a caller acts on; otherwise keeps the command's own error.
fn classify(op: Op<'_>, e: ExecError, need: i64) -> LvmError {
    let stderr = e.stderr().to_string();
    let lower = stderr.to_ascii_lowercase();
    match op {
        Op::Volume(vg, lv) => {
            if lower.contains("already exists") {
                LvmError::LvExists {
                    vg: vg.into(),
                    lv: lv.into(),
                }
            } else if lower.contains("insufficient free space")
                || lower.contains("insufficient suitable")
            {
                LvmError::InsufficientSpace {
                    vg: vg.into(),
                    need,
                    detail: stderr,
                }
            } else if lower.contains("failed to find logical volume") {
                LvmError::NoSuchLv {
                    vg: vg.into(),
                    lv: lv.into(),
                }
            } else if lower.contains(&format!(
                "volume group \"{}\" not found",
                vg.to_ascii_lowercase()
            )) {
                LvmError::NoSuchVg(vg.into())
            } else if lower.contains("in use") || lower.contains("open logical volume") {
                LvmError::LvInUse {
                    vg: vg.into(),
                    lv: lv.into(),
                }
            } else {
                LvmError::Exec(e)
            }
        }
        Op::Group(vg)
            if lower.contains(&format!(
                "volume group \"{}\" not found",
                vg.to_ascii_lowercase()
            )) =>
        {
            LvmError::NoSuchVg(vg.into())
        }
        Op::Device(device) | Op::Group(device) => {
            // pvcreate without --yes answers its own "wipe it?" prompt with no (stdin is
            // closed); vgcreate/vgextend refuse devices that are in use or in another group.
            let refused = [
                "signature",
                "aborted",
                "exclusively",
                "excluded by a filter",
                "already in volume group",
                "is used by",
                "not usable",
                "without -ff",
                "of volume group",
            ];
            if matches!(e, ExecError::Failed { .. }) && refused.iter().any(|r| lower.contains(r)) {
                LvmError::DeviceRefused {
                    device: device.into(),
                    reason: stderr,
                }
            } else {
                LvmError::Exec(e)
            }
        }
    }
}

impl LvmCli {
    pub fn new(exec: Arc<dyn Executor>) -> Self {
        LvmCli { exec }
    }

    async fn report_json(&self, tool: &str, fields: &str) -> Result<String, LvmError> {
        let cmd = HostCommand::new(tool).args([
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
        ]);
        Ok(self.exec.run(&cmd).await?.stdout)
    }

    async fn run(&self, cmd: HostCommand, op: Op<'_>, need: i64) -> Result<(), LvmError> {
        self.exec
            .run(&cmd)
            .await
            .map(drop)
            .map_err(|e| classify(op, e, need))
    }
}

fn report_err(command: &str) -> impl FnOnce(ReportError) -> LvmError + '_ {
    move |e| LvmError::Report {
        command: command.to_string(),
        reason: e.0,
    }
}

#[async_trait]
impl Lvm for LvmCli {
    async fn report(&self) -> Result<LvmState, LvmError> {
        // Two processes, not three: each LVM command rescans devices, which dominates its cost.
        let (pvs, vgs) = report::parse_pvs(&self.report_json("pvs", PV_FIELDS).await?)
            .map_err(report_err("pvs"))?;
        let lvs = report::parse_lvs(&self.report_json("lvs", LV_FIELDS).await?)
            .map_err(report_err("lvs"))?;
        Ok(LvmState { pvs, vgs, lvs })
    }

    async fn create_pv(&self, device: &str) -> Result<(), LvmError> {
        self.run(
            HostCommand::new("pvcreate").arg(device),
            Op::Device(device),
            0,
        )
        .await
    }

    async fn create_vg(&self, vg: &str, devices: &[String]) -> Result<(), LvmError> {
        let first = devices.first().map(String::as_str).unwrap_or(vg);
        self.run(
            HostCommand::new("vgcreate").arg(vg).args(devices),
            Op::Group(first),
            0,
        )
        .await
    }

    async fn extend_vg(&self, vg: &str, devices: &[String]) -> Result<(), LvmError> {
        let first = devices.first().map(String::as_str).unwrap_or(vg);
        match self
            .run(
                HostCommand::new("vgextend").arg(vg).args(devices),
                Op::Group(first),
                0,
            )
            .await
        {
            // A missing group is reported about the group, not the device.
            Err(LvmError::Exec(e)) if e.stderr().contains(&format!("\"{vg}\" not found")) => {
                Err(LvmError::NoSuchVg(vg.into()))
            }
            other => other,
        }
    }

    async fn create_lv(&self, vg: &str, name: &str, bytes: i64) -> Result<(), LvmError> {
        // -W/-Z: a new LV may land on extents holding an old volume's data; wipe
        // signatures and zero its start so no stale filesystem shows through.
        self.run(
            HostCommand::new("lvcreate").args([
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
                &format!("{bytes}b"),
                vg,
            ]),
            Op::Volume(vg, name),
            bytes,
        )
        .await
    }

    async fn extend_lv(&self, vg: &str, name: &str, bytes: i64) -> Result<(), LvmError> {
        self.run(
            HostCommand::new("lvextend").args([
                "-L",
                &format!("{bytes}b"),
                &format!("{vg}/{name}"),
            ]),
            Op::Volume(vg, name),
            bytes,
        )
        .await
    }

    async fn activate_lv(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        self.run(
            HostCommand::new("lvchange").args(["-a", "y", &format!("{vg}/{name}")]),
            Op::Volume(vg, name),
            0,
        )
        .await
    }

    async fn remove_lv(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        self.run(
            HostCommand::new("lvremove").args(["--yes", &format!("{vg}/{name}")]),
            Op::Volume(vg, name),
            0,
        )
        .await
    }

    async fn create_thin_pool(
        &self,
        vg: &str,
        pool: &str,
        data: i64,
        metadata: i64,
    ) -> Result<(), LvmError> {
        self.run(
            HostCommand::new("lvcreate").args([
                "--yes",
                "--type",
                "thin-pool",
                "--zero",
                "y",
                "--addtag",
                "hwameistor",
                "-n",
                pool,
                "-L",
                &format!("{data}b"),
                "--poolmetadatasize",
                &format!("{metadata}b"),
                vg,
            ]),
            Op::Volume(vg, pool),
            data,
        )
        .await
    }

    async fn extend_thin_metadata(
        &self,
        vg: &str,
        pool: &str,
        metadata: i64,
    ) -> Result<(), LvmError> {
        self.run(
            HostCommand::new("lvextend").args([
                "--poolmetadatasize",
                &format!("{metadata}b"),
                &format!("{vg}/{pool}"),
            ]),
            Op::Volume(vg, pool),
            metadata,
        )
        .await
    }

    async fn create_thin_lv(
        &self,
        vg: &str,
        pool: &str,
        name: &str,
        bytes: i64,
    ) -> Result<(), LvmError> {
        self.run(
            HostCommand::new("lvcreate").args([
                "--yes",
                "--type",
                "thin",
                "--addtag",
                "hwameistor",
                "-n",
                name,
                "-V",
                &format!("{bytes}b"),
                "--thinpool",
                pool,
                vg,
            ]),
            Op::Volume(vg, name),
            bytes,
        )
        .await
    }

    async fn create_snapshot(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        cow: Option<i64>,
    ) -> Result<(), LvmError> {
        let mut args: Vec<String> = [
            "--yes",
            "--snapshot",
            "--permission",
            "r",
            "--addtag",
            "hwameistor",
            "-n",
            name,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        match cow {
            Some(bytes) => args.extend(["-L".to_string(), format!("{bytes}b")]),
            // A thin snapshot skips activation by default; ours are read (restored from,
            // copied), so they activate like any volume.
            None => args.extend(["--setactivationskip".to_string(), "n".to_string()]),
        }
        args.push(format!("{vg}/{origin}"));
        self.run(
            HostCommand::new("lvcreate").args(args),
            Op::Volume(vg, name),
            cow.unwrap_or(0),
        )
        .await
    }

    async fn clone_thin(&self, vg: &str, source: &str, name: &str) -> Result<(), LvmError> {
        // Writable (the source, a snapshot of ours, is read-only) and activated like any
        // volume (a thin snapshot skips activation by default).
        self.run(
            HostCommand::new("lvcreate").args([
                "--yes".to_string(),
                "--snapshot".to_string(),
                "--permission".to_string(),
                "rw".to_string(),
                "--setactivationskip".to_string(),
                "n".to_string(),
                "--addtag".to_string(),
                "hwameistor".to_string(),
                "-n".to_string(),
                name.to_string(),
                format!("{vg}/{source}"),
            ]),
            Op::Volume(vg, name),
            0,
        )
        .await
    }
}
