//! Flags shared by several commands, and value parsers that reuse the library's own
//! parsing so clap shows the library's messages.

use crate::output::{OutputFormat, OutputOptions};
use clap::Args;
use hwameistor_api::duration::parse_duration;
use std::path::PathBuf;
use std::time::Duration;

/// The standard kubectl flags, accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace HwameiStor runs in.
    #[arg(short = 'n', long, global = true, value_name = "NS", default_value = hwameistor_api::SYSTEM_NAMESPACE)]
    pub namespace: String,
    /// Timeout of each API request (e.g. 30s, 1m; 0 for none).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// No progress output (results are still printed).
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
}

/// `-o` and `--no-headers` of read commands.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Print tables without their header lines.
    #[arg(long)]
    pub no_headers: bool,
}

impl OutputArgs {
    pub fn options(&self) -> OutputOptions {
        OutputOptions {
            format: self.format,
            no_headers: self.no_headers,
        }
    }
}

/// How long write commands follow what they started.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// How long to wait for the change to complete.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Do not wait: return once the change is submitted.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn parse_size_arg(s: &str) -> Result<i64, String> {
    hwameistor_api::quantity::parse_size(s)
        .map_err(|e| crate::errors::AdminError::Size(e).to_string())
}

pub fn parse_disk_type(s: &str) -> Result<hwameistor_api::DiskType, String> {
    hwameistor_api::DiskType::parse(s)
        .ok_or_else(|| format!("disk type {s:?} is not one of HDD, SSD, NVMe"))
}
