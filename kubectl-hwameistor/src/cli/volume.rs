//! `volume list|get|migrate|convert|expand|resolve-split-brain`.

use super::{cluster, emit, parse_size_arg, GlobalArgs, OutputArgs, WaitArgs};
use crate::admin::migrate::{self, ConvertRequest, MigrateRequest};
use crate::admin::operations::OperationReport;
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
    /// Move a volume's replica off a node (a LocalVolumeMigrate the controller runs).
    ///
    /// Shows the plan first: the volume, HA or plain, its size, the node it moves from, the
    /// node the controller would choose now (predicted: it decides when the migration
    /// starts), how the data moves and what the migration waits for. Refuses, before
    /// creating anything, what cannot be done: an unknown or unplaced volume, --from without
    /// a replica, a --to that is not a storage node or holds a replica, no node with room,
    /// another operation holding the volume.
    ///
    /// A volume without replication is copied by the nodes' block movers only while nothing
    /// uses it: its pod must stop, and publishing it is refused during the copy.
    ///
    /// An HA volume moves over DRBD. DRBD 8.4 replicates to one peer, so DURING THE MOVE THE
    /// VOLUME HAS A SINGLE COMPLETE COPY (the staying replica): the old replica is
    /// disconnected but kept intact until the new one is UpToDate, so a failure mid-move
    /// falls back to it. The volume must not be in use on --from.
    ///
    /// A volume created convertible (StorageClass parameter convertible: "true") that runs
    /// on one node moves over DRBD without that window: the new replica joins the old one
    /// as its peer, and the old one goes once the new one is UpToDate.
    ///
    /// Then asks (--yes skips), creates the migration and follows it with a progress bar
    /// until it ends; the exit code is non-zero when it failed or was aborted.
    Migrate(MigrateArgs),
    /// Turn a single-replica volume into an HA one: a second replica over DRBD (a
    /// LocalVolumeConvert the controller runs).
    ///
    /// The existing replica keeps the data (DRBD's metadata goes on a small volume of its
    /// own) and a new replica on another node gets a full initial sync. The volume's device
    /// changes, so it converts only while unpublished: its pod must stop. A volume created
    /// convertible (StorageClass parameter convertible: "true") runs DRBD already and
    /// converts online, in use; its conversion can be aborted until the new replica is in
    /// sync. Shows the plan, asks (--yes skips), creates the conversion and follows it until
    /// it ends.
    Convert(ConvertArgs),
    /// Grow a volume to SIZE (e.g. 20Gi), online, and wait until it is allocated. Volumes
    /// never shrink.
    ///
    /// Creates a LocalVolumeExpand the controller carries out, and follows it.
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
pub struct MigrateArgs {
    /// The volume (by name, or by PVC as NAMESPACE/NAME).
    pub volume: String,
    /// The node whose replica moves; needed for an HA volume (default: the only replica's
    /// node).
    #[arg(long, value_name = "NODE")]
    pub from: Option<String>,
    /// A node the replica may move to (repeat for an order of preference; default: the
    /// node with most room).
    #[arg(long = "to", value_name = "NODE")]
    pub to: Vec<String>,
    /// Cap on the block copy's rate, per second (e.g. 50Mi); a volume without replication
    /// only.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub bandwidth: Option<i64>,
    /// Move this volume only. By default the other volumes of its group (those its pods
    /// use with it) that are on the same node move with it, to the same node.
    #[arg(long)]
    pub volume_only: bool,
    /// Show the plan and have the server check the migration; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation; needed without a terminal.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The volume (by name, or by PVC as NAMESPACE/NAME).
    pub volume: String,
    /// The node for the new replica (default: the node with most room).
    #[arg(long = "to", value_name = "NODE")]
    pub to: Option<String>,
    /// Convert this volume only. By default the other volumes of its group (those its pods
    /// use with it) are converted with it, their new replicas on the same node.
    #[arg(long)]
    pub volume_only: bool,
    /// Show the plan and have the server check the conversion; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation; needed without a terminal.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
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
        VolumeCommand::Migrate(a) => return migrate(g, &cluster, a, out).await,
        VolumeCommand::Convert(a) => return convert(g, &cluster, a, out).await,
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
            emit(out, &report, output.options())?;
            if report.exit_code() != 0 {
                eprintln!(
                    "error: the expansion of volume {} ended {}: {}",
                    report.volume,
                    report
                        .phase
                        .map_or_else(|| "-".into(), |p| format!("{p:?}")),
                    report.message.as_deref().unwrap_or("no message")
                );
            }
            return Ok(report.exit_code());
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

async fn migrate(
    g: &GlobalArgs,
    cluster: &crate::Cluster,
    a: MigrateArgs,
    out: &mut dyn Write,
) -> Result<i32, AdminError> {
    let req = MigrateRequest {
        volume: a.volume,
        from: a.from,
        to: a.to,
        bandwidth: a.bandwidth,
        volume_only: a.volume_only,
    };
    let plan = migrate::plan(cluster, &req).await?;
    // The plan goes to stderr, so stdout keeps one result.
    eprint!("{}", render_tables(&plan.tables(false), false));
    if !a.dry_run {
        Confirmation::from_flags(a.yes).confirm(&plan.confirmation_action(), "")?;
    }
    let progress = Progress::auto(g.quiet);
    let follow = (!a.wait.no_wait).then_some(a.wait.timeout);
    let report = migrate::migrate(cluster, &plan, a.dry_run, follow, &progress).await?;
    drop(progress);
    emit(out, &report, a.output.options())?;
    Ok(exit_code(&report))
}

async fn convert(
    g: &GlobalArgs,
    cluster: &crate::Cluster,
    a: ConvertArgs,
    out: &mut dyn Write,
) -> Result<i32, AdminError> {
    let req = ConvertRequest {
        volume: a.volume,
        to: a.to,
        volume_only: a.volume_only,
    };
    let plan = migrate::plan_conversion(cluster, &req).await?;
    eprint!("{}", render_tables(&plan.tables(false), false));
    if !a.dry_run {
        Confirmation::from_flags(a.yes).confirm(&plan.confirmation_action(), "")?;
    }
    let progress = Progress::auto(g.quiet);
    let follow = (!a.wait.no_wait).then_some(a.wait.timeout);
    let report = migrate::convert(cluster, &plan, a.dry_run, follow, &progress).await?;
    drop(progress);
    emit(out, &report, a.output.options())?;
    Ok(exit_code(&report))
}

/// The exit code of a followed operation; one that did not succeed is also said on stderr
/// (stdout carries the report, possibly as JSON).
fn exit_code(report: &OperationReport) -> i32 {
    let code = report.exit_code();
    if code != 0 {
        let r = &report.operation;
        eprintln!(
            "error: {} {} ended {}: {}",
            r.kind,
            r.name,
            r.phase_cell(),
            r.message.as_deref().unwrap_or("no message")
        );
    }
    code
}
