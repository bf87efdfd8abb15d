//! `node drain NODE`: move every volume replica off a node.

use super::{emit, GlobalArgs, OutputArgs, WaitArgs};
use crate::admin::drain::{self, ApiEvictor, DrainOptions};
use crate::confirm::Confirmation;
use crate::errors::AdminError;
use crate::output::{render_tables, Render};
use crate::progress::Progress;
use clap::Args;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The storage node to empty.
    pub node: String,
    /// Show the plan and have the server check the migrations; cordon, create and evict
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation; needed without a terminal.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Delete the pods instead of evicting them (PodDisruptionBudgets are NOT respected);
    /// for API servers that do not serve evictions.
    #[arg(long)]
    pub disable_eviction: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Pause between attempts of an eviction a PodDisruptionBudget refused (kubectl drain's).
const EVICT_RETRY: Duration = Duration::from_secs(5);

pub async fn run(
    g: &GlobalArgs,
    cluster: &crate::Cluster,
    a: DrainArgs,
    out: &mut dyn Write,
) -> Result<i32, AdminError> {
    let plan = drain::plan(cluster, &a.node).await?;
    // The plan goes to stderr, so stdout keeps one result.
    eprint!("{}", render_tables(&plan.tables(false), false));
    if !a.dry_run {
        Confirmation::from_flags(a.yes).confirm(&plan.confirmation_action(), "")?;
    }
    let opts = DrainOptions {
        dry_run: a.dry_run,
        timeout: a.wait.timeout,
        follow: !a.wait.no_wait,
        evict_retry: EVICT_RETRY,
    };
    let evictor = ApiEvictor {
        client: cluster.client.clone(),
        delete_instead: a.disable_eviction,
    };
    let progress = Progress::auto(g.quiet);
    let report = drain::drain(cluster, &plan, &opts, &evictor, &progress).await?;
    drop(progress);
    emit(out, &report, a.output.options())?;
    let code = report.exit_code();
    if code != 0 {
        eprintln!("error: {}", report.summary());
    }
    Ok(code)
}
