#!/usr/bin/env bash
# Builds a profile-guided (PGO) release binary of the gateway, to compare with the plain release
# build (`cargo xtask bench --compare sluice-pgo=target/pgo/sluice`). Measured in
# docs/performance.md: no gain beyond noise, so releases do not use it. An instrumented build
# serves a training load (plain proxying, native and wasm filters, sampled tracing, HTTP/1.1 and
# h2c, misses), its profile is merged, and the release build is redone with it. The result is
# target/pgo/sluice (under CARGO_TARGET_DIR if set); the plain `cargo build --release` binary is
# untouched. Idempotent: installs llvm-tools (for llvm-profdata) if missing, and builds the wasm
# plugin it trains with if missing.
#
#   bench/build-pgo.sh [--requests N]     (N: requests on the main training listener, default 200000)
#
# Needs: nginx (the training upstream), h2load and curl (apt-get install nginx-light
# nghttp2-client curl). Loopback only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
requests=200000
while [ $# -gt 0 ]; do
  case $1 in
    --requests) requests=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in nginx h2load curl python3; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    echo "build-pgo.sh needs $tool (apt-get install nginx-light nghttp2-client curl python3)" >&2
    exit 1
  }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

log() { printf '==> build-pgo: %s\n' "$*"; }

host=$(rustc -vV | awk '/^host:/ { print $2 }')
sysroot=$(rustc --print sysroot)
profdata=$sysroot/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  log "installing llvm-tools (llvm-profdata matching rustc's LLVM)"
  rustup component add llvm-tools >/dev/null
fi
[ -x "$profdata" ] || { echo "no llvm-profdata at $profdata" >&2; exit 1; }

target=${CARGO_TARGET_DIR:-$root/target}
plugin=$target/plugins/add_header.wasm
if [ ! -f "$plugin" ]; then
  log "building the wasm plugins (the training load runs one)"
  scripts/build-plugins.sh
fi

work=$target/pgo-work
rm -rf "$work"
mkdir -p "$work/profiles" "$work/up"
# Instrumented build: thin LTO is enough (counters are placed before link-time optimisation, so
# the profile matches the fat-LTO build below) and saves several minutes.
log "instrumented build"
RUSTFLAGS="-Cprofile-generate=$work/profiles" \
  CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --quiet --release -p sluice --target "$host" --target-dir "$target/pgo-build/gen"
gen_bin=$target/pgo-build/gen/$host/release/sluice

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port) plain_port=$(free_port) filtered_port=$(free_port) admin_port=$(free_port)

sed -e "s#{{DIR}}#$work/up#g" -e "s#{{LISTEN}}#127.0.0.1:$up_port#g" \
  bench/templates/upstream.nginx.conf >"$work/up/nginx.conf"
"$nginx_bin" -p "$work/up" -c "$work/up/nginx.conf" -g 'daemon off;' &
pids+=($!)

cat >"$work/sluice.yaml" <<EOF
admin: { address: "127.0.0.1:$admin_port" }
workers: 1
listeners:
  - name: plain
    address: "127.0.0.1:$plain_port"
    protocols: [http1, http2]
    routes:
      - match: { path_prefix: "/" }
        cluster: upstream
  - name: filtered
    address: "127.0.0.1:$filtered_port"
    protocols: [http1]
    filters:
      - name: headers
        config: { response: { add: [{ name: x-native, value: "1" }] } }
      - plugin: add-header
    routes:
      - match: { path_prefix: "/" }
        cluster: upstream
clusters:
  - name: upstream
    endpoints: ["127.0.0.1:$up_port"]
    protocol: http1
    pool: { max_idle_per_endpoint: 64, idle_timeout: 300s }
plugins:
  - name: add-header
    wasm: "$plugin"
    root_id: add_header
    config: { response: [{ name: x-bench, value: "1", action: add }] }
telemetry:
  tracing: { otlp_endpoint: "http://127.0.0.1:$up_port", protocol: http/protobuf, sample_ratio: 0.05 }
EOF

log "training load"
RUST_LOG=warn "$gen_bin" run -c "$work/sluice.yaml" >"$work/sluice.log" 2>&1 &
sluice_pid=$!
pids+=($sluice_pid)
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$plain_port/" 2>/dev/null && break
  kill -0 "$sluice_pid" 2>/dev/null || { tail -20 "$work/sluice.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS -D - -o /dev/null "http://127.0.0.1:$filtered_port/" | grep -qi '^x-bench: 1' \
  || { echo "the training plugin did not run" >&2; exit 1; }

check() { # h2load output file, expected 2xx count
  grep -q "status codes: $2 2xx" "$1" || { cat "$1" >&2; echo "training load failed" >&2; exit 1; }
}
h2load --h1 -n "$requests" -c 32 "http://127.0.0.1:$plain_port/" >"$work/plain.txt"
check "$work/plain.txt" "$requests"
h2load --h1 -n $((requests / 4)) -c 32 "http://127.0.0.1:$filtered_port/" >"$work/filtered.txt"
check "$work/filtered.txt" $((requests / 4))
h2load -n $((requests / 10)) -c 8 -m 10 "http://127.0.0.1:$plain_port/" >"$work/h2c.txt"
check "$work/h2c.txt" $((requests / 10))
for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$plain_port/missing/page"; done

# SIGTERM drains and exits 0, which writes the profile.
kill -TERM "$sluice_pid"
wait "$sluice_pid" || { tail -20 "$work/sluice.log" >&2; echo "instrumented gateway did not exit cleanly" >&2; exit 1; }
ls "$work"/profiles/*.profraw >/dev/null 2>&1 || { echo "no profile written" >&2; exit 1; }
"$profdata" merge -o "$work/sluice.profdata" "$work"/profiles/*.profraw

log "optimised build with the profile"
RUSTFLAGS="-Cprofile-use=$work/sluice.profdata -Cllvm-args=-no-pgo-warn-mismatch" \
  cargo build --quiet --release -p sluice --target "$host" --target-dir "$target/pgo-build/use"
mkdir -p "$target/pgo"
cp "$target/pgo-build/use/$host/release/sluice" "$target/pgo/sluice"
log "done: $target/pgo/sluice"
