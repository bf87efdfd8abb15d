//! `volume list|get|expand`.

use super::{cluster, emit, parse_size_arg, GlobalArgs, OutputArgs, WaitArgs};
use crate::admin::volumes;
use crate::errors::AdminError;
use crate::progress::Progress;
use clap::Subcommand;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes with their replicas.
    #[command(visible_alias = "ls")]
    List(OutputArgs),
    /// Show one volume (by name, or by PVC as NAMESPACE/NAME) and its replicas.
    Get {
        volume: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Grow a volume to SIZE (e.g. 20Gi) and wait until it is allocated. Volumes never shrink.
    Expand {
        volume: String,
        #[arg(value_parser = parse_size_arg)]
        size: i64,
        /// Check and validate on the server; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(g: &GlobalArgs, c: VolumeCommand, out: &mut dyn Write) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    match c {
        VolumeCommand::List(o) => emit(out, &volumes::list_volumes(&cluster).await?, o.options())?,
        VolumeCommand::Get { volume, output } => emit(
            out,
            &volumes::get_volume(&cluster, &volume).await?,
            output.options(),
        )?,
        VolumeCommand::Expand {
            volume,
            size,
            dry_run,
            wait,
            output,
        } => {
            let progress = Progress::auto(g.quiet);
            let follow = (!wait.no_wait).then_some(wait.timeout);
            let report =
                volumes::expand_volume(&cluster, &volume, size, dry_run, follow, &progress).await?;
            drop(progress);
            emit(out, &report, output.options())?
        }
    }
    Ok(0)
}
