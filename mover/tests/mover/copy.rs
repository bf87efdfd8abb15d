//! Copies that go right: sparse data, partial and tiny devices, thin targets, the rate limit.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use hwameistor_mover::{
    CancellationToken, Checkpoint, MoverError, Phase, RefusalKind, Role, ServerOptions,
    TargetZeroed,
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_a_sparse_device_exactly_without_sending_zero_chunks() -> TestResult {
    // 40 full chunks, 7 of them zeros, and a partial last chunk.
    let zero = [3, 4, 5, 6, 7, 8, 20];
    let data = device_image(40, &zero, 1000, 1);
    let fx = Fixture::new(&data)?;
    // The target holds garbage: zero chunks must be zeroed, not skipped.
    std::fs::write(&fx.target, vec![0xaa; data.len()])?;
    let server = fx.start(ServerOptions::default()).await?;
    let client = fx.client(fx.config(server.addr))?;

    let mut progress = client.progress();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while progress.changed().await.is_ok() {
            let p = progress.borrow_and_update().clone();
            let done = p.phase == Phase::Verified;
            seen.push(p);
            if done {
                break;
            }
        }
        seen
    });
    let outcome = client.run(CancellationToken::new()).await?;
    server.stop().await;

    assert!(
        fx.target_bytes()? == data,
        "the copy differs from the source"
    );
    assert_eq!(outcome.digest.to_hex(), expected_digest(&data, CHUNK));
    assert_eq!(outcome.bytes, data.len() as u64);
    assert_eq!(outcome.zero_chunks, zero.len() as u64);
    assert_eq!((outcome.resends, outcome.resumes), (0, 0));
    assert_eq!(outcome.resume_points, vec![0]);
    // Only the data chunks travelled, plus small headers.
    let data_bytes = (data.len() - zero.len() * CHUNK) as u64;
    assert!(
        outcome.bytes_on_wire >= data_bytes,
        "{}",
        outcome.bytes_on_wire
    );
    assert!(
        outcome.bytes_on_wire < data_bytes + 41 * 100 + 1000,
        "{}",
        outcome.bytes_on_wire
    );

    // Progress went up to the whole device and ended verified.
    let seen = watcher.await?;
    let last = seen.last().ok_or("no progress published")?;
    assert_eq!(last.phase, Phase::Verified);
    assert_eq!(
        (last.bytes_done, last.bytes_total),
        (data.len() as u64, data.len() as u64)
    );
    assert_eq!(last.zero_chunks, zero.len() as u64);
    assert!(seen.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done));
    assert!(seen.iter().any(|p| p.phase == Phase::Copying));

    // The checkpoint records the whole copy.
    let stored = fx.stored_checkpoint()?;
    assert_eq!(stored.next_chunk, 41);
    assert_eq!((stored.total_chunks, stored.chunk_size), (41, CHUNK as u32));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeroed_target_gets_no_writes_for_zero_chunks() -> TestResult {
    let zero: Vec<usize> = (0..32).filter(|i| i % 4 != 0).collect();
    let data = device_image(32, &zero, 0, 2);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    let mut config = fx.config(server.addr);
    config.target_zeroed = TargetZeroed::Yes;
    let outcome = fx.copy(config).await?;
    server.stop().await;
    assert!(fx.target_bytes()? == data);
    assert_eq!(outcome.zero_chunks, 24);
    // The target stays sparse: only the 8 data chunks are allocated.
    let allocated = std::fs::metadata(&fx.target)?.blocks() * 512;
    assert!(allocated <= 9 * CHUNK as u64, "{allocated} bytes allocated");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_and_exact_devices_copy_and_an_empty_one_is_refused() -> TestResult {
    for (len, seed) in [(5000usize, 3u64), (CHUNK, 4), (3 * CHUNK, 5), (1, 6)] {
        let data = random_bytes(len, seed);
        let fx = Fixture::new(&data)?;
        let server = fx.start(ServerOptions::default()).await?;
        let outcome = fx.copy(fx.config(server.addr)).await?;
        server.stop().await;
        assert!(fx.target_bytes()? == data, "{len} bytes");
        assert_eq!(outcome.digest.to_hex(), expected_digest(&data, CHUNK));
    }
    let fx = Fixture::new(&[])?;
    let server = fx.start(ServerOptions::default()).await?;
    let result = fx.copy(fx.config(server.addr)).await;
    server.stop().await;
    assert!(
        matches!(
            result,
            Err(MoverError::RefusedByPeer {
                peer: Role::Source,
                kind: RefusalKind::EmptySource,
                ..
            })
        ),
        "{result:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_smaller_than_the_source_is_refused_untouched() -> TestResult {
    let data = random_bytes(4 * CHUNK, 7);
    let fx = Fixture::new(&data)?;
    std::fs::File::create(&fx.target)?.set_len(3 * CHUNK as u64)?;
    let server = fx.start(ServerOptions::default()).await?;
    let result = fx.copy(fx.config(server.addr)).await;
    server.stop().await;
    assert!(
        matches!(result, Err(MoverError::TargetTooSmall { target, needed }) if target == 3 * CHUNK as u64 && needed == 4 * CHUNK as u64),
        "{result:?}"
    );
    assert!(fx.target_bytes()?.iter().all(|&b| b == 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_roughly() -> TestResult {
    let data = random_bytes(16 * CHUNK, 8);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    let mut config = fx.config(server.addr);
    let rate = 2 * 1024 * 1024;
    config.rate_limit = rate;
    let start = Instant::now();
    let outcome = fx.copy(config).await?;
    let elapsed = start.elapsed();
    server.stop().await;
    assert!(fx.target_bytes()? == data);
    // 1 MiB at 2 MiB/s: half a second; generous above for a loaded machine.
    let expected = Duration::from_secs_f64(outcome.bytes_on_wire as f64 / rate as f64);
    assert!(
        elapsed >= expected.mul_f64(0.8),
        "{elapsed:?} for {expected:?}"
    );
    assert!(elapsed <= expected * 6, "{elapsed:?} for {expected:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_longer_than_the_idle_timeout_verifies_on_its_connection() -> TestResult {
    let data = random_bytes(16 * CHUNK, 10);
    let fx = Fixture::new(&data)?;
    // The copy's only request comes long before the stream ends: idle time counts from the
    // end of the stream, not from that request.
    let options = ServerOptions {
        idle_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let server = fx.start(options).await?;
    let mut config = fx.config(server.addr);
    config.rate_limit = 2 * 1024 * 1024;
    let outcome = fx.copy(config).await?;
    server.stop().await;
    assert!(outcome.elapsed > Duration::from_millis(400), "{outcome:?}");
    assert_eq!(outcome.resume_points, vec![0], "{outcome:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_copy_run_again_only_verifies() -> TestResult {
    let data = random_bytes(8 * CHUNK, 9);
    let fx = Fixture::new(&data)?;
    let server = fx.start(ServerOptions::default()).await?;
    let first = fx.copy(fx.config(server.addr)).await?;
    let again = fx.copy(fx.config(server.addr)).await?;
    server.stop().await;
    assert_eq!(first.digest, again.digest);
    assert_eq!(again.resume_points, vec![8]);
    // Only the end of the stream and the digest came over the wire.
    assert!(again.bytes_on_wire < 1000, "{}", again.bytes_on_wire);
    let stored: Checkpoint = fx.stored_checkpoint()?;
    assert_eq!(stored.next_chunk, 8);
    Ok(())
}
