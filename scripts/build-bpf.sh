#!/usr/bin/env bash
# Builds the XDP program (bpf/) with nightly for bpfel-unknown-none and copies the object to
# target/bpf/sluice-xdp.o, where gateway/build.rs picks it up (or set SLUICE_BPF_OBJECT).
# Needs the toolchain from scripts/install-bpf-toolchain.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/bpf"
CARGO_TARGET_DIR="$root/target/bpf-build" \
    cargo +nightly build -Z build-std=core --target bpfel-unknown-none --release --bin sluice-xdp
mkdir -p "$root/target/bpf"
cp "$root/target/bpf-build/bpfel-unknown-none/release/sluice-xdp" "$root/target/bpf/sluice-xdp.o.tmp"
mv "$root/target/bpf/sluice-xdp.o.tmp" "$root/target/bpf/sluice-xdp.o"
echo "build-bpf: $root/target/bpf/sluice-xdp.o"
