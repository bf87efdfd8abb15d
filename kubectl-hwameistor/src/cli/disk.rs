//! `disk list|claim|reserve|release`.

use super::{cluster, emit, parse_disk_type, parse_size_arg, GlobalArgs, OutputArgs, WaitArgs};
use crate::admin::claims::{self, ClaimRequest};
use crate::admin::disks;
use crate::confirm::Confirmation;
use crate::errors::AdminError;
use crate::output::{render_tables, Render};
use crate::progress::Progress;
use clap::{Args, Subcommand};
use hwameistor_api::DiskType;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// List disks with why each unavailable disk is not available.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Add disks of a node to its pools: shows the plan, asks, creates a LocalDiskClaim
    /// and follows it until the pools have grown.
    Claim(ClaimArgs),
    /// Keep disks out of automatic use.
    Reserve(ReserveArgs),
    /// Make reserved disks claimable again.
    Release(ReserveArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this node's disks.
    #[arg(long)]
    pub node: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// The node whose disks to claim.
    pub node: String,
    /// Only disks of this type (HDD, SSD, NVMe).
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_disk_type)]
    pub disk_type: Option<DiskType>,
    /// Only disks at least this large (e.g. 100Gi).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub min_size: Option<i64>,
    /// Only these disks, by LocalDisk name (repeatable); all must be claimable.
    #[arg(long = "disk", value_name = "NAME")]
    pub disks: Vec<String>,
    /// Name of the LocalDiskClaim (default: NODE-TIMESTAMP).
    #[arg(long)]
    pub name: Option<String>,
    /// Show the plan and validate the claim on the server; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ReserveArgs {
    /// LocalDisk names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Check and show; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(g: &GlobalArgs, c: DiskCommand, out: &mut dyn Write) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    match c {
        DiskCommand::List(a) => emit(
            out,
            &disks::list_disks(&cluster, a.node.as_deref()).await?,
            a.output.options(),
        )?,
        DiskCommand::Reserve(a) => emit(
            out,
            &disks::set_reserved(&cluster, &a.names, true, a.dry_run).await?,
            a.output.options(),
        )?,
        DiskCommand::Release(a) => emit(
            out,
            &disks::set_reserved(&cluster, &a.names, false, a.dry_run).await?,
            a.output.options(),
        )?,
        DiskCommand::Claim(a) => claim(g, &cluster, a, out).await?,
    }
    Ok(0)
}

async fn claim(
    g: &GlobalArgs,
    cluster: &crate::Cluster,
    a: ClaimArgs,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let req = ClaimRequest {
        node: a.node,
        disk_type: a.disk_type,
        min_size_bytes: a.min_size,
        disks: a.disks,
        name: a.name,
    };
    let plan = claims::plan(cluster, &req).await?;
    if a.dry_run {
        // Validated by the server too (names, schema), but not created.
        claims::create(cluster, &plan, true).await?;
        return emit(out, &plan, a.output.options());
    }
    // The plan is shown before the question; on stderr, so stdout keeps one result.
    eprint!("{}", render_tables(&plan.tables(false), false));
    Confirmation::from_flags(a.yes).confirm(&plan.confirmation_action(), "")?;
    claims::create(cluster, &plan, false).await?;
    let result = if a.wait.no_wait {
        let mut r = claims::dry_run_result(&plan);
        r.dry_run = false;
        r.message = Some("created; not followed (--no-wait)".into());
        r
    } else {
        let progress = Progress::auto(g.quiet);
        claims::follow_claim(cluster, &plan, a.wait.timeout, &progress).await?
    };
    emit(out, &result, a.output.options())?;
    Ok(())
}
