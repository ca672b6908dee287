#!/usr/bin/env bash
# Build Sluice, generate the example certificates (once), and run the edge-tls example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/gen-certs.sh"
cd "$here/../.."
cargo build -p sluice
exec target/debug/sluice run -c "$here/sluice.yaml"
