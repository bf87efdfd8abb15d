//! `operation list|get|abort|delete`: the volume operations (LocalVolumeMigrate,
//! LocalVolumeConvert, LocalVolumeExpand) of every kind together.

use super::{cluster, emit, GlobalArgs, OutputArgs};
use crate::admin::operations;
use crate::errors::AdminError;
use clap::Subcommand;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum OperationCommand {
    /// List migrations, conversions and expansions, running and ended (kept as history
    /// until their time-to-live passes), oldest first. `-o wide` adds the message.
    #[command(visible_alias = "ls")]
    List {
        /// Only the operations of this volume (by name, or by PVC as NAMESPACE/NAME).
        #[arg(long, value_name = "VOLUME")]
        volume: Option<String>,
        /// Only operations carrying these labels (e.g. hwameistor.io/drain=node-a).
        #[arg(short = 'l', long, value_name = "SELECTOR")]
        selector: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one operation: phase, step, progress, conditions, and what can be done about it.
    ///
    /// NAME alone finds it among the three kinds; KIND/NAME (migrate/NAME, convert/NAME,
    /// expand/NAME) names one kind.
    Get {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Stop an operation at its next safe point (sets spec.abort).
    ///
    /// The controller undoes what it changed and the volume stays usable with its data
    /// where it was. Possible until a migration's old replica left the placement, before a
    /// conversion set up DRBD, before an expansion wrote the new size; past that point the
    /// abort is refused with the reason (the operation completes). An operation that ended
    /// has nothing to abort.
    Abort {
        name: String,
        /// Have the server check the change; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove an ended operation from the history (one still running must be aborted first).
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Have the server check the deletion; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(
    g: &GlobalArgs,
    c: OperationCommand,
    out: &mut dyn Write,
) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    match c {
        OperationCommand::List {
            volume,
            selector,
            output,
        } => emit(
            out,
            &operations::list_operations(&cluster, volume.as_deref(), selector.as_deref()).await?,
            output.options(),
        )?,
        OperationCommand::Get { name, output } => emit(
            out,
            &operations::get_operation(&cluster, &name).await?,
            output.options(),
        )?,
        OperationCommand::Abort {
            name,
            dry_run,
            output,
        } => emit(
            out,
            &operations::abort_operation(&cluster, &name, dry_run).await?,
            output.options(),
        )?,
        OperationCommand::Delete {
            name,
            dry_run,
            output,
        } => emit(
            out,
            &operations::delete_operation(&cluster, &name, dry_run).await?,
            output.options(),
        )?,
    }
    Ok(0)
}
