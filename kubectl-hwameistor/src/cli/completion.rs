//! `completion bash|zsh|fish`.

use super::Cli;
use crate::errors::AdminError;
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::io::Write;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

pub fn run(a: CompletionArgs, out: &mut dyn Write) -> Result<i32, AdminError> {
    let shell = match a.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    // Completes the plugin binary; kubectl ≥ 1.26 delegates `kubectl hwameistor <TAB>` to
    // an executable named kubectl_complete-hwameistor (see the krew caveats).
    clap_complete::generate(shell, &mut Cli::command(), "kubectl-hwameistor", out);
    Ok(0)
}
