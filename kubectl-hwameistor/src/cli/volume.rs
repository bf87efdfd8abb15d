//! `volume list|get|expand|resolve-split-brain`.

use super::{cluster, emit, parse_size_arg, GlobalArgs, OutputArgs, WaitArgs};
use crate::admin::{split_brain, volumes};
use crate::confirm::Confirmation;
use crate::errors::AdminError;
use crate::output::{render_tables, Render};
use crate::progress::Progress;
use clap::{Args, Subcommand};
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes with their replicas and, for HA volumes, their HA state.
    #[command(visible_alias = "ls")]
    List(OutputArgs),
    /// Show one volume (by name, or by PVC as NAMESPACE/NAME) and its replicas.
    ///
    /// For an HA volume also each replica's replication: what the volume's config assigns
    /// it (primary, secondary, outdated), its role, disk and connection state, its peer's,
    /// and a resync's progress; and what to do about a split brain.
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
    /// After a split brain of an HA volume: keep NODE's data, discard the other replica's.
    ///
    /// Both replicas were primary while disconnected and hold different data. The replica
    /// on NODE keeps its data; the other replica's changes since the split are DISCARDED
    /// (they cannot be recovered) and it resyncs from NODE. Its node must not be using the
    /// volume: stop the pod there first.
    ///
    /// Shows the plan, asks you to type the name of the node whose changes are discarded
    /// (--yes skips this), writes spec.splitBrainResolution only if the volume is unchanged
    /// since it was read, and follows the volume until the controller cleared the
    /// resolution and it is Healthy (--timeout bounds the wait, not the resync).
    #[command(name = "resolve-split-brain")]
    ResolveSplitBrain(ResolveArgs),
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The volume (by name, or by PVC as NAMESPACE/NAME).
    pub volume: String,
    /// The node whose replica's data is kept.
    #[arg(long, value_name = "NODE")]
    pub keep: String,
    /// Show the plan and have the server check the write; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (no node name to type); needed without a terminal.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
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
        VolumeCommand::ResolveSplitBrain(a) => resolve(g, &cluster, a, out).await?,
    }
    Ok(0)
}

async fn resolve(
    g: &GlobalArgs,
    cluster: &crate::Cluster,
    a: ResolveArgs,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let plan = split_brain::plan(cluster, &a.volume, &a.keep).await?;
    // The plan goes to stderr, so stdout keeps one result.
    eprint!("{}", render_tables(&plan.tables(false), false));
    if a.dry_run {
        let report = split_brain::write(cluster, &plan, true).await?;
        return emit(out, &report, a.output.options());
    }
    Confirmation::from_flags(a.yes).confirm_typed(
        &plan.confirmation_action(),
        "",
        &plan.confirmation_text(),
    )?;
    let mut report = split_brain::write(cluster, &plan, false).await?;
    if a.wait.no_wait {
        report.notes.push(format!(
            "not followed (--no-wait): `kubectl hwameistor volume get {}` shows how far it is",
            plan.volume
        ));
    } else {
        let progress = Progress::auto(g.quiet);
        split_brain::follow_resolution(cluster, &mut report, a.wait.timeout, &progress).await?;
    }
    emit(out, &report, a.output.options())
}
