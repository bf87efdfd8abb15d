//! DRBD's usermode helper for HwameiStor resources.
//!
//! DRBD runs it as `hwameistor-drbd-helper COMMAND` (fence-peer, split-brain, ...) with
//! the resource in `DRBD_RESOURCE`; it asks the node agent over its unix socket and exits
//! with the agent's answer. Its whole logic is in the agent (`hwameistor_agent::ha`); when
//! the agent cannot answer it exits with a code that leaves DRBD's I/O frozen.

use hwameistor_agent::ha::exit;
use hwameistor_agent::helper_socket::{self, DEFAULT_SOCKET};
use std::path::PathBuf;
use std::time::Duration;

/// How long the helper waits for the agent: DRBD keeps I/O frozen meanwhile, and the
/// agent's own retries take over after.
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("usage: hwameistor-drbd-helper COMMAND (DRBD_RESOURCE set by DRBD)");
        std::process::exit(exit::KEEP_FROZEN);
    };
    // DRBD 8.4 passes the resource in the environment (and "minor-N" as an argument).
    let Ok(resource) = std::env::var("DRBD_RESOURCE") else {
        eprintln!("hwameistor-drbd-helper: DRBD_RESOURCE is not set");
        std::process::exit(exit::KEEP_FROZEN);
    };
    let socket = std::env::var_os("HWAMEISTOR_DRBD_HELPER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let code = helper_socket::ask(&socket, &command, &resource, TIMEOUT).await;
    std::process::exit(code);
}
