#!/usr/bin/env bash
# The main job: a local HwameiStor on this machine, no cluster needed.
# Installs the host packages it needs, builds, and runs the sandbox. Extra arguments go to
# hwameistor-sandbox (e.g. --keep-running, --nodes 3).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-host-deps.sh
cargo build --release -p hwameistor-agent -p hwameistor-controller -p hwameistor-scheduler-plugin -p hwameistor-sandbox -p hwameistor-testbed --bins
exec ./target/release/hwameistor-sandbox "$@"
