#!/usr/bin/env bash
# The project's test command: unit tests, API-level tests against the in-process test API
# server, loop-device tests on the host, and node tests in throwaway QEMU VMs.
# Set HWAMEISTOR_TEST_KUBECONFIG to run the API-level suites against a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental compilation, which doubles the target size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads=2
