//! The channel between DRBD's usermode helper and the agent: a unix socket.
//!
//! DRBD runs its helper program (fence-peer, split-brain, ...) outside the agent, as a
//! fresh process. That process, `hwameistor-drbd-helper`, sends one line `COMMAND
//! RESOURCE` here and exits with the code the agent answers ([`crate::ha::on_helper`]). If
//! the agent cannot be reached or does not answer in time, the helper exits with a code
//! DRBD treats as a failed fence: I/O stays frozen, which is safe, and the agent's replica
//! reconciler fences (or learns it was fenced) as soon as it runs again.

use crate::context::Context;
use crate::ha::{self, Replication};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/hwameistor/drbd-helper.sock";
/// Longest line accepted: a command and a resource name.
const MAX_LINE: usize = 512;

/// Parses `COMMAND RESOURCE`; `None` for anything else.
pub fn parse_request(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.split_whitespace();
    let command = parts.next()?;
    let resource = parts.next()?;
    if parts.next().is_some() || line.len() > MAX_LINE {
        return None;
    }
    Some((command, resource))
}

/// Serves helper requests on `path` for as long as the agent runs.
pub async fn serve(ctx: Arc<Context>, rep: Arc<Replication>, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by an earlier agent would make bind fail.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    tracing::info!(socket = %path.display(), "serving DRBD helper calls");
    loop {
        let (stream, _) = listener.accept().await?;
        let (ctx, rep) = (ctx.clone(), rep.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(&ctx, &rep, stream).await {
                tracing::warn!(error = %e, "DRBD helper call failed");
            }
        });
    }
}

async fn answer(ctx: &Context, rep: &Replication, stream: UnixStream) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    BufReader::new(rd.take(MAX_LINE as u64 + 1))
        .read_line(&mut line)
        .await?;
    let code = match parse_request(line.trim_end()) {
        Some((command, resource)) => {
            tracing::info!(command, resource, "DRBD helper call");
            ha::on_helper(ctx, rep, command, resource).await
        }
        None => {
            tracing::warn!(request = %line.trim_end(), "malformed DRBD helper request");
            ha::exit::KEEP_FROZEN
        }
    };
    wr.write_all(format!("{code}\n").as_bytes()).await?;
    wr.shutdown().await
}

/// The helper side: asks the agent at `path` and returns the exit code for DRBD.
/// Unreachable, silent or garbled agents give [`ha::exit::KEEP_FROZEN`].
pub async fn ask(path: &Path, command: &str, resource: &str, timeout: Duration) -> i32 {
    let work = async {
        let mut s = UnixStream::connect(path).await?;
        s.write_all(format!("{command} {resource}\n").as_bytes())
            .await?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line.trim().parse::<i32>().ok())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(Some(code))) => code,
        Ok(Ok(None)) => {
            eprintln!("hwameistor-drbd-helper: the agent gave no exit code");
            ha::exit::KEEP_FROZEN
        }
        Ok(Err(e)) => {
            eprintln!(
                "hwameistor-drbd-helper: cannot reach the agent at {}: {e}",
                path.display()
            );
            ha::exit::KEEP_FROZEN
        }
        Err(_) => {
            eprintln!("hwameistor-drbd-helper: the agent did not answer within {timeout:?}");
            ha::exit::KEEP_FROZEN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_two_words_and_bounded() {
        assert_eq!(
            parse_request("fence-peer pvc-1"),
            Some(("fence-peer", "pvc-1"))
        );
        assert_eq!(parse_request("split-brain r7"), Some(("split-brain", "r7")));
        assert_eq!(parse_request("fence-peer"), None);
        assert_eq!(parse_request(""), None);
        assert_eq!(parse_request("a b c"), None);
        assert_eq!(parse_request(&format!("x {}", "y".repeat(600))), None);
    }

    #[tokio::test]
    async fn an_unreachable_agent_keeps_io_frozen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let code = ask(
            &dir.path().join("none.sock"),
            "fence-peer",
            "r1",
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(code, ha::exit::KEEP_FROZEN);
    }

    #[tokio::test]
    async fn a_silent_agent_keeps_io_frozen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let hold = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let code = ask(&path, "fence-peer", "r1", Duration::from_millis(200)).await;
        assert_eq!(code, ha::exit::KEEP_FROZEN);
        hold.abort();
    }
}
