#!/usr/bin/env bash
# Runs every test of Sluice on a fresh machine: installs what the tests need (idempotently),
# builds the wasm plugins and the eBPF object from source, then runs lints and the test suites.
# Usage: scripts/test-all.sh            (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\n==> %s\n' "$*"; }

log "system packages"
need=()
for cmd_pkg in curl:curl nginx:nginx-light wrk:wrk h2load:nghttp2-client openssl:openssl ip:iproute2 nft:nftables; do
  cmd=${cmd_pkg%%:*}; pkg=${cmd_pkg#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

log "rust toolchain components"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if [ -x scripts/install-bpf-toolchain.sh ]; then
  log "eBPF toolchain (nightly rust-src, llvm-22, bpf-linker)"
  scripts/install-bpf-toolchain.sh
fi
if [ -x scripts/build-bpf.sh ]; then
  log "eBPF object"
  scripts/build-bpf.sh
  export SLUICE_REQUIRE_BPF=1
fi
if [ -x scripts/build-plugins.sh ]; then
  log "wasm plugins (Rust and AssemblyScript) from source"
  scripts/build-plugins.sh
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads 2
else
  cargo test --workspace --no-fail-fast -- --test-threads 2
fi
cargo test --workspace --doc --quiet
log "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
log "all tests passed"
