#!/usr/bin/env bash
# Builds the example's wasm plugins and Sluice, then runs the gateway on examples/quickstart.
# Idempotent; installs the wasm32-wasip1 target if it is missing (build-plugins.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh
cargo build --release -p sluice
exec "${CARGO_TARGET_DIR:-target}/release/sluice" run -c examples/quickstart/sluice.yaml
