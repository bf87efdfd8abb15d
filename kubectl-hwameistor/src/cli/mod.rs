//! The command line: clap definitions and a thin dispatch onto [`crate::admin`]. It lives
//! in the library so tests can run commands in-process and read what they print.

mod args;
mod completion;
mod disk;
mod drain;
mod inspect;
mod lifecycle;
mod operation;
mod snapshot;
mod volume;

pub use args::*;

use crate::client::{connect, Cluster, ConnectOptions};
use crate::errors::AdminError;
use crate::output::{render, OutputOptions, Render};
use clap::{Parser, Subcommand};
use std::io::Write;

/// Install, inspect and operate HwameiStor local storage.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-hwameistor",
    bin_name = "kubectl hwameistor",
    version,
    about = "Install, inspect and operate HwameiStor local storage",
    long_about = "Install, inspect and operate HwameiStor local storage.\n\nTalks only to the Kubernetes API: node agents and the controller act on what it writes.",
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install HwameiStor (CRDs, RBAC, CSI driver, controller, node agents, StorageClasses).
    Install(lifecycle::InstallArgs),
    /// Re-apply the manifests of this version and show what changes.
    Upgrade(lifecycle::InstallArgs),
    /// Remove HwameiStor's workloads, RBAC, CSI driver and StorageClasses (never node data).
    Uninstall(lifecycle::UninstallArgs),
    /// Physical disks: list, claim into pools, reserve, release.
    #[command(subcommand, visible_alias = "disks")]
    Disk(disk::DiskCommand),
    /// Storage nodes: state, pools, volumes, disks; drain one.
    #[command(subcommand, visible_alias = "nodes")]
    Node(inspect::NodeCommand),
    /// Pools per node and class.
    #[command(subcommand, visible_alias = "pools")]
    Pool(inspect::PoolCommand),
    /// Volumes: list, show, migrate, convert to HA, expand, resolve a split brain.
    #[command(subcommand, visible_aliases = ["volumes", "vol"])]
    Volume(volume::VolumeCommand),
    /// Snapshots of volumes (behind VolumeSnapshots): list, show, delete.
    #[command(subcommand, visible_aliases = ["snapshots", "snap"])]
    Snapshot(snapshot::SnapshotCommand),
    /// Volume operations (migrations, conversions, expansions): list, show, abort, delete.
    #[command(subcommand, visible_aliases = ["operations", "op", "ops"])]
    Operation(operation::OperationCommand),
    /// Check the health of everything HwameiStor needs; non-zero exit on errors.
    Diagnose(inspect::DiagnoseArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
}

/// Connects using the global flags.
pub async fn cluster(global: &GlobalArgs) -> Result<Cluster, AdminError> {
    let opts = ConnectOptions {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
        request_timeout: Some(global.request_timeout),
    };
    let client = connect(&opts).await?;
    Ok(Cluster {
        client,
        namespace: global.namespace.clone(),
        request_timeout: Some(global.request_timeout),
    })
}

/// Renders a result to `out`; an empty table prints its note on stderr like kubectl.
pub fn emit<T: Render>(
    out: &mut dyn Write,
    value: &T,
    opts: OutputOptions,
) -> Result<(), AdminError> {
    let text = render(value, opts)?;
    if opts.format.is_table() {
        if let Some(note) = value.empty_note() {
            eprintln!("{note}");
            return Ok(());
        }
    }
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Runs a parsed command; returns the process exit code (diagnose decides its own).
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<i32, AdminError> {
    let g = &cli.global;
    match cli.command {
        Command::Install(a) => lifecycle::install(g, a, out, false).await,
        Command::Upgrade(a) => lifecycle::install(g, a, out, true).await,
        Command::Uninstall(a) => lifecycle::uninstall(g, a, out).await,
        Command::Disk(c) => disk::run(g, c, out).await,
        Command::Node(c) => inspect::node(g, c, out).await,
        Command::Pool(c) => inspect::pool(g, c, out).await,
        Command::Volume(c) => volume::run(g, c, out).await,
        Command::Operation(c) => operation::run(g, c, out).await,
        Command::Snapshot(c) => snapshot::run(g, c, out).await,
        Command::Diagnose(a) => inspect::diagnose(g, a, out).await,
        Command::Completion(a) => completion::run(a, out),
    }
}

/// Parses `args` (the first one is the program name) and runs them, as the binary does.
pub async fn run_args<I, T>(args: I, out: &mut dyn Write) -> Result<i32, AdminError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| AdminError::InvalidArgument(e.to_string()))?;
    run(cli, out).await
}
