#!/usr/bin/env bash
# Installs what building the XDP program (bpf/) needs, idempotently: nightly Rust with rust-src
# (build-std=core for bpfel-unknown-none), LLVM 22 development files and bpf-linker built against
# them. Nightly's LLVM is 22, so bpf-linker must be built with the `llvm-22` feature (its default,
# llvm-23, fails to link against the LLVM shipped by Debian here).
set -euo pipefail

need_apt=()
for pkg in llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need_apt+=("$pkg")
    fi
done
if ((${#need_apt[@]})); then
    echo "install-bpf-toolchain: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
rustup component add rust-src --toolchain nightly

if ! command -v bpf-linker >/dev/null 2>&1; then
    # bpf-linker finds LLVM through llvm-config; point it at the Debian LLVM 22 install.
    export LLVM_SYS_221_PREFIX=/usr/lib/llvm-22
    export LLVM_SYS_220_PREFIX=/usr/lib/llvm-22
    export PATH="/usr/lib/llvm-22/bin:$PATH"
    cargo install bpf-linker --locked --no-default-features --features llvm-22
fi
echo "install-bpf-toolchain: ok ($(bpf-linker --version 2>/dev/null || echo bpf-linker))"
