//! `snapshot list|get|delete`: the LocalVolumeSnapshots behind VolumeSnapshots of
//! HwameiStor volumes.

use super::{cluster, emit, GlobalArgs, OutputArgs};
use crate::admin::snapshots;
use crate::confirm::Confirmation;
use crate::errors::AdminError;
use clap::Subcommand;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots: volume, kind (thin, or copy-on-write with space of its own), how full
    /// a copy-on-write one is (LVM invalidates a full one), readiness. `-o wide` adds node,
    /// pool, CSI name and message.
    #[command(visible_alias = "ls")]
    List {
        /// Only the snapshots of this volume.
        #[arg(long, value_name = "VOLUME")]
        volume: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one snapshot (by name, or by the CSI name its VolumeSnapshotContent shows) and
    /// what to know about it.
    Get {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a snapshot and its data (asks first). One taken through a VolumeSnapshot is
    /// better deleted as that VolumeSnapshot.
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Have the server check the deletion; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation; needed without a terminal.
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(
    g: &GlobalArgs,
    c: SnapshotCommand,
    out: &mut dyn Write,
) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    match c {
        SnapshotCommand::List { volume, output } => emit(
            out,
            &snapshots::list_snapshots(&cluster, volume.as_deref()).await?,
            output.options(),
        )?,
        SnapshotCommand::Get { name, output } => emit(
            out,
            &snapshots::get_snapshot(&cluster, &name).await?,
            output.options(),
        )?,
        SnapshotCommand::Delete {
            name,
            dry_run,
            yes,
            output,
        } => {
            let row = snapshots::delete_plan(&cluster, &name).await?;
            if !dry_run {
                Confirmation::from_flags(yes).confirm(
                    &format!("delete snapshot {}", row.name),
                    &snapshots::delete_warning(&row),
                )?;
            }
            emit(
                out,
                &snapshots::delete_snapshot(&cluster, &row, dry_run).await?,
                output.options(),
            )?
        }
    }
    Ok(0)
}
