//! `node`, `pool`, `diagnose` (read-only), and `node drain`.

use super::{cluster, emit, GlobalArgs, OutputArgs};
use crate::admin::{diagnose as diag, nodes, pools};
use crate::errors::AdminError;
use clap::{Args, Subcommand};
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List storage nodes.
    #[command(visible_alias = "ls")]
    List(OutputArgs),
    /// Show one node: pools, disks, conditions.
    Get {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Move every volume replica off a node: migrate each volume, cordon the node, evict the
    /// pods that must stop, and follow the migrations.
    ///
    /// Shows the plan first: each volume with a replica on the node, HA or plain, its size,
    /// the node it would go to (predicted: the controller decides when each migration
    /// starts), the pods on the node that will restart, and what cannot move and why (no
    /// room, an HA volume whose other replica is not healthy, ...). Then asks (--yes skips),
    /// creates one LocalVolumeMigrate per volume (label hwameistor.io/drain=NODE), cordons
    /// the node (spec.unschedulable=true), evicts the pods (Eviction API:
    /// PodDisruptionBudgets are respected, a refusal is retried until --timeout) and follows
    /// every migration.
    ///
    /// An HA volume has A SINGLE COMPLETE COPY while it moves (DRBD 8.4 replicates to one
    /// peer); its old replica is kept intact until the new one is UpToDate.
    ///
    /// Running it again resumes: migrations of the node that have not ended are followed,
    /// not created again. The exit code is 0 once the node holds no replica.
    Drain(super::drain::DrainArgs),
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// List pools per node and class.
    #[command(visible_alias = "ls")]
    List {
        /// Only this node's pools.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Exit non-zero on warnings too.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn node(g: &GlobalArgs, c: NodeCommand, out: &mut dyn Write) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    match c {
        NodeCommand::List(o) => emit(out, &nodes::list_nodes(&cluster).await?, o.options())?,
        NodeCommand::Get { name, output } => emit(
            out,
            &nodes::get_node(&cluster, &name).await?,
            output.options(),
        )?,
        NodeCommand::Drain(a) => return super::drain::run(g, &cluster, a, out).await,
    }
    Ok(0)
}

pub async fn pool(g: &GlobalArgs, c: PoolCommand, out: &mut dyn Write) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    match c {
        PoolCommand::List { node, output } => emit(
            out,
            &pools::list_pools(&cluster, node.as_deref()).await?,
            output.options(),
        )?,
    }
    Ok(0)
}

pub async fn diagnose(
    g: &GlobalArgs,
    a: DiagnoseArgs,
    out: &mut dyn Write,
) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    let report = diag::diagnose(&cluster).await?;
    emit(out, &report, a.output.options())?;
    if !g.quiet {
        eprintln!("{}", report.summary());
    }
    Ok(report.exit_code(a.strict))
}
