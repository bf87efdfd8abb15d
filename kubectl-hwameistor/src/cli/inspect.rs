//! Read-only commands: `node`, `pool`, `diagnose`.

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
