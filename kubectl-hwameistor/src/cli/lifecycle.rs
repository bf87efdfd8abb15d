//! `install`, `upgrade`, `uninstall`.

use super::{cluster, emit, GlobalArgs, OutputArgs, WaitArgs};
use crate::admin::customize::{
    parse_node_selector, parse_toleration, Customization, TolerationArg,
};
use crate::admin::install::{self, prepare, InstallOptions};
use crate::admin::manifests::Bundle;
use crate::admin::uninstall::{self, UninstallOptions};
use crate::confirm::Confirmation;
use crate::errors::AdminError;
use crate::output::OutputFormat;
use crate::progress::Progress;
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;

fn node_selector_arg(s: &str) -> Result<BTreeMap<String, String>, String> {
    parse_node_selector(s).map_err(|e| e.to_string())
}

fn toleration_arg(s: &str) -> Result<TolerationArg, String> {
    parse_toleration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Args)]
pub struct CustomizeArgs {
    /// Registry (and path) to pull every image from, for air-gapped clusters
    /// (e.g. harbor.local:5000/mirror).
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// Tag for HwameiStor's own images (CSI sidecars keep their versions).
    #[arg(long, value_name = "TAG")]
    pub image_tag: Option<String>,
    /// Run the node agent only on nodes with these labels: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...", value_parser = node_selector_arg)]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Let the node agent run on tainted nodes: key[=value]:Effect (repeatable).
    #[arg(long = "toleration", value_name = "KEY[=VALUE]:EFFECT", value_parser = toleration_arg)]
    pub tolerations: Vec<TolerationArg>,
    /// Leave out the hwameistor-scheduler and its extender: pods keep the default
    /// scheduler, guided by CSIStorageCapacity only (no reservations for bursts).
    #[arg(long)]
    pub no_scheduler: bool,
}

impl CustomizeArgs {
    fn customization(&self, namespace: &str) -> Customization {
        Customization {
            namespace: namespace.to_string(),
            registry: self.registry.clone(),
            image_tag: self.image_tag.clone(),
            node_selector: self.node_selector.clone().unwrap_or_default(),
            tolerations: self.tolerations.clone(),
            no_scheduler: self.no_scheduler,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub customize: CustomizeArgs,
    /// Change nothing. With -o yaml|json print every object instead (no cluster needed);
    /// otherwise a server-side dry run reports what would change.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn install(
    g: &GlobalArgs,
    a: InstallArgs,
    out: &mut dyn Write,
    upgrade: bool,
) -> Result<i32, AdminError> {
    let customization = a.customize.customization(&g.namespace);
    let bundle = Bundle::embedded()?;
    if a.dry_run && !a.output.format.is_table() {
        // The manifests as they would be applied, for review or GitOps; offline.
        let (bundle, _) = prepare(bundle, &customization, &BTreeMap::new())?;
        let text = match a.output.format {
            OutputFormat::Json => bundle.to_json()?,
            _ => bundle.to_yaml()?,
        };
        out.write_all(text.as_bytes())?;
        return Ok(0);
    }
    let cluster = cluster(g).await?;
    let opts = InstallOptions {
        customization,
        dry_run: a.dry_run,
        wait: !a.wait.no_wait,
        timeout: a.wait.timeout,
    };
    let progress = Progress::auto(g.quiet);
    let report = if upgrade {
        install::upgrade(&cluster, bundle, &opts, &progress).await?
    } else {
        install::install(&cluster, bundle, &opts, &progress).await?
    };
    drop(progress);
    emit(out, &report, a.output.options())?;
    if !g.quiet {
        eprintln!("{}", report.summary());
    }
    // Left-out parts are said even when quiet: they change what the cluster can do.
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    Ok(0)
}

#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Uninstall even though LocalVolumes exist (asks for confirmation listing them).
    #[arg(long)]
    pub force_with_volumes: bool,
    /// Also delete the CRDs, and with them every LocalDisk, claim, node and volume record.
    #[arg(long)]
    pub delete_crds: bool,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn uninstall(
    g: &GlobalArgs,
    a: UninstallArgs,
    out: &mut dyn Write,
) -> Result<i32, AdminError> {
    let cluster = cluster(g).await?;
    let opts = UninstallOptions {
        // Only the namespace matters for finding what to delete.
        customization: Customization {
            namespace: g.namespace.clone(),
            ..Default::default()
        },
        force_with_volumes: a.force_with_volumes,
        delete_crds: a.delete_crds,
        dry_run: a.dry_run,
        confirmation: Confirmation::from_flags(a.yes),
    };
    let progress = Progress::auto(g.quiet);
    let report = uninstall::uninstall(&cluster, Bundle::embedded()?, &opts, &progress).await?;
    drop(progress);
    emit(out, &report, a.output.options())?;
    Ok(0)
}
