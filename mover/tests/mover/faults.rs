//! Copies through failures: a chunk damaged in flight, a cut link, a restarted source, a
//! killed target, a cancelled copy, a source changed under the copy.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use hwameistor_mover::testing::CuttingProxy;
use hwameistor_mover::{ClientConfig, FaultInjection, MoverError, Phase, ServerOptions};

use crate::support::*;

/// A copy slow enough (2 MiB/s) to be interrupted part-way.
fn slow(fx: &Fixture, addr: SocketAddr) -> ClientConfig {
    let mut config = fx.config(addr);
    config.rate_limit = 2 * 1024 * 1024;
    config
}

impl Background {
    /// Waits until the copy has `chunks` chunks on the target.
    async fn reached(&mut self, chunks: usize) -> TestResult {
        let bytes = (chunks * CHUNK) as u64;
        let wait = self
            .progress
            .wait_for(|p| p.phase == Phase::Copying && p.bytes_done >= bytes);
        tokio::time::timeout(Duration::from_secs(20), wait).await??;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_damaged_in_flight_is_detected_and_sent_again() -> TestResult {
    let data = device_image(24, &[2], 100, 20);
    let fx = Fixture::new(&data)?;
    let options = ServerOptions {
        fault: FaultInjection {
            corrupt_chunk: Some(9),
            corrupt_times: 1,
        },
        ..ServerOptions::default()
    };
    let server = fx.start(options).await?;
    let outcome = fx.copy(fx.config(server.addr)).await?;
    server.stop().await;
    assert!(
        fx.target_bytes()? == data,
        "the copy differs from the source"
    );
    assert_eq!(outcome.resends, 1);
    // Resent on the same connection, from the damaged chunk on.
    assert_eq!(
        (outcome.resumes, outcome.resume_points.clone()),
        (0, vec![0])
    );
    assert_eq!(outcome.digest.to_hex(), expected_digest(&data, CHUNK));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_damaged_every_time_is_given_up_on() -> TestResult {
    let data = random_bytes(16 * CHUNK, 26);
    let fx = Fixture::new(&data)?;
    let options = ServerOptions {
        fault: FaultInjection {
            corrupt_chunk: Some(9),
            corrupt_times: u32::MAX,
        },
        ..ServerOptions::default()
    };
    let server = fx.start(options).await?;
    let mut config = fx.config(server.addr);
    config.retry.max_attempts = 3;
    let result = fx.copy(config).await;
    server.stop().await;
    match result {
        Err(MoverError::GaveUp { attempts: 3, last }) => {
            assert!(
                matches!(*last, MoverError::Damaged { index: 9, times: 4 }),
                "{last:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // What arrived intact is kept: the copy would go on from the damaged chunk.
    let stored = fx.stored_checkpoint()?;
    assert_eq!(stored.next_chunk, 9);
    assert!(fx.target_bytes()?[..9 * CHUNK] == data[..9 * CHUNK]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_where_it_stopped() -> TestResult {
    let data = device_image(32, &[5, 6], 0, 21);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    // Cut the first connection about 60 % into the stream, inside a chunk.
    let proxy = CuttingProxy::start(server.addr, Some(18 * CHUNK as u64 + 777)).await?;
    let outcome = fx.copy(fx.config(proxy.addr())).await?;
    server.stop().await;
    assert!(
        fx.target_bytes()? == data,
        "the copy differs from the source"
    );
    assert_eq!(outcome.resumes, 1);
    assert_eq!(outcome.resume_points.len(), 2);
    let resumed_at = outcome.resume_points[1];
    // Everything received whole before the cut was kept (the writer syncs and records it
    // when the connection fails), so the copy went on from there, not from zero.
    assert!(
        (15..=20).contains(&resumed_at),
        "resumed at chunk {resumed_at}"
    );
    let data_bytes = (data.len() - 2 * CHUNK) as u64;
    assert!(
        outcome.bytes_on_wire < data_bytes + 3 * CHUNK as u64,
        "{} bytes on the wire for {data_bytes}",
        outcome.bytes_on_wire
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_source_is_resumed_from() -> TestResult {
    let data = random_bytes(32 * CHUNK, 22);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    let addr = server.addr;
    let mut copy = fx.copy_in_background(slow(&fx, addr))?;
    copy.reached(10).await?;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let server = Running::start(fx.server(ServerOptions::default()), &addr.to_string()).await?;
    let outcome = copy.copy.await??;
    server.stop().await;
    assert!(
        fx.target_bytes()? == data,
        "the copy differs from the source"
    );
    assert!(outcome.resumes >= 1, "{outcome:?}");
    assert!(outcome.resume_points[1] >= 10, "{outcome:?}");
    assert_eq!(outcome.digest.to_hex(), expected_digest(&data, CHUNK));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_target_resumes_from_its_checkpoint() -> TestResult {
    let data = device_image(32, &[0, 1, 30], 0, 23);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    let mut config = slow(&fx, server.addr);
    // Sync and record every 4 chunks, so the checkpoint is recent when the task dies.
    config.sync_every_bytes = 4 * CHUNK as u64;
    let mut copy = fx.copy_in_background(config.clone())?;
    copy.reached(14).await?;
    copy.copy.abort();
    assert!(copy.copy.await.is_err_and(|e| e.is_cancelled()));
    // The agent restarting: a new client with the same checkpoint store, at full speed.
    let stored = fx.stored_checkpoint()?;
    assert!(stored.next_chunk >= 8, "{stored:?}");
    config.rate_limit = 0;
    let outcome = fx.copy(config).await?;
    server.stop().await;
    assert!(
        fx.target_bytes()? == data,
        "the copy differs from the source"
    );
    assert!(outcome.resume_points[0] >= stored.next_chunk, "{outcome:?}");
    assert_eq!(outcome.resumes, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_copy_stops_and_keeps_its_progress() -> TestResult {
    let data = random_bytes(32 * CHUNK, 24);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    let mut config = slow(&fx, server.addr);
    let mut copy = fx.copy_in_background(config.clone())?;
    copy.reached(8).await?;
    copy.cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), copy.copy).await??;
    assert!(matches!(result, Err(MoverError::Cancelled)), "{result:?}");
    // Cancelling waits for the writer to record what it has.
    let stored = fx.stored_checkpoint()?;
    assert!(stored.next_chunk >= 8, "{stored:?}");
    config.rate_limit = 0;
    let outcome = fx.copy(config).await?;
    server.stop().await;
    assert!(fx.target_bytes()? == data);
    assert_eq!(outcome.resume_points[0], stored.next_chunk);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_under_the_copy_fails_verification() -> TestResult {
    let data = random_bytes(16 * CHUNK, 25);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    let mut copy = fx.copy_in_background(slow(&fx, server.addr))?;
    // Chunk 0 is already on the target when the source changes it.
    copy.reached(4).await?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fx.source)?
        .write_all_at(b"written while copying", 100)?;
    let result = copy.copy.await?;
    server.stop().await;
    assert!(
        matches!(result, Err(MoverError::DigestMismatch { .. })),
        "{result:?}"
    );
    assert_eq!(copy.progress.borrow().phase, Phase::Verifying);
    Ok(())
}
