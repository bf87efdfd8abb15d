//! Shared by the VM test binaries (`tests/vm.rs`, `tests/ha.rs`): assets built once per binary
//! and a time bound per test.

use std::sync::OnceLock;
use std::time::Duration;

use hwameistor_testbed::{AssetOptions, Error, TestbedAssets};

pub const MIB: u64 = 1 << 20;
/// Upper bound for each test; dropping the testbed on timeout kills its VMs.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(240);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hwameistor_testbed=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Built once per test binary; later builds hit the cache anyway.
pub async fn assets() -> TestbedAssets {
    init_tracing();
    static ASSETS: OnceLock<Result<TestbedAssets, String>> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        ASSETS
            .get_or_init(|| {
                let qemu_found = std::env::var_os("PATH").is_some_and(|p| {
                    std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").exists())
                });
                if !qemu_found {
                    return Err("qemu-system-x86_64 not found: these tests boot real VMs; \
                                install the Debian package qemu-system-x86"
                        .into());
                }
                let opts = AssetOptions {
                    // Cargo builds this crate's binary for its integration tests.
                    guest_binary: Some(env!("CARGO_BIN_EXE_testbed-guest").into()),
                    ..Default::default()
                };
                TestbedAssets::build_with(&[], &opts).map_err(|e| e.to_string())
            })
            .clone()
    })
    .await
    .expect("asset build panicked")
    .unwrap_or_else(|e| panic!("testbed assets: {e}"))
}

pub async fn bounded<F: std::future::Future<Output = Result<(), Error>>>(f: F) {
    match tokio::time::timeout(TEST_TIMEOUT, f).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}
