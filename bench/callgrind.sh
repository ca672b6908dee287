#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does not move with the
# machine's load (unlike req/s or CPU time), for edit-measure loops on the request path.
#
#   bench/callgrind.sh [--case CASE] [--bin PATH] [-n REQUESTS] [--keep DIR] [--plugin PATH.wasm]
#                      [--atomics] [--cache]
#
# CASE: proxy (default) | accesslog | headers | wasm | trace1 | trace100 | h2c | nginx
#   proxy     Sluice, one worker, one route to one cluster (the `proxy` bench case)
#   accesslog plus the JSON access log, written to a file
#   headers   plus the native `headers` filter adding one response header
#   wasm      plus a wasm plugin adding the same header (default target/plugins/add_header.wasm,
#             the Rust SDK; target/plugins/raw_add_header.wasm does the same against the raw ABI)
#   trace1    tracing, 1 % sampled, OTLP/HTTP to the upstream nginx (which answers POSTs)
#   trace100  the same, every request sampled
#   h2c       Sluice as in proxy, the clients speaking HTTP/2 with prior knowledge (10
#             concurrent streams per connection; the upstream side stays HTTP/1.1)
#   nginx     nginx as the reverse proxy (the reference), one process
# --bin: the sluice binary (default: target/profiling/sluice, built with
#   `cargo build --profile profiling -p sluice` if missing; published figures use release).
#
# The upstream is Debian's nginx answering `hello\n`; the load is h2load --h1 (h2c: h2load) with 16
# keep-alive connections: 3 000 warm-up requests uncounted, then REQUESTS (default 20 000)
# counted. Prints total instructions (Ir, user space of the whole process, every thread) and
# Ir per request. --keep DIR keeps callgrind's output there for callgrind_annotate. --atomics
# also prints the atomic read-modify-writes (lock-prefixed instructions, ~20 cycles each, which
# instruction counts do not show) per request, by function (bench/atomics.py). --cache also
# simulates the caches (callgrind --cache-sim=yes, sized like this machine's) and prints the L1
# instruction and data misses per request: the cost of a larger code footprint, which
# instruction counts do not show either (user space only; the kernel's share of the caches is
# not simulated).
# SLUICE_WASM_PROFILER=perfmap names the plugins' compiled functions in /tmp/perf-PID.map.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

case_=proxy bin= n=20000 keep= plugin= atomics= cache=
while [ $# -gt 0 ]; do
  case $1 in
    --case) case_=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --atomics) atomics=1; shift ;;
    --cache) cache=1; shift ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for tool in valgrind callgrind_control h2load nginx curl python3; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    echo "callgrind.sh needs $tool (apt-get install valgrind nghttp2-client nginx-light curl)" >&2
    exit 1
  }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "$bin" ] && [ "$case_" != nginx ]; then
  bin=$target/profiling/sluice
  [ -x "$bin" ] || cargo build --quiet --profile profiling -p sluice
fi

work=$(mktemp -d /tmp/sluice-callgrind.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$keep" ]; then mkdir -p "$keep" && cp -r "$work"/. "$keep"/; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port) proxy_port=$(free_port) admin_port=$(free_port)

mkdir -p "$work/up"
sed -e "s#{{DIR}}#$work/up#g" -e "s#{{LISTEN}}#127.0.0.1:$up_port#g" \
  bench/templates/upstream.nginx.conf >"$work/up/nginx.conf"
"$nginx_bin" -p "$work/up" -c "$work/up/nginx.conf" -g 'daemon off;' &
pids+=($!)

filters="[]" plugins="[]" telemetry="" protocols=http1 load=(--h1)
case $case_ in
  proxy) ;;
  h2c) protocols="http1, http2" load=(-m 10) ;;
  headers) filters='[{ name: headers, config: { response: { add: [{ name: x-bench, value: "1" }] } } }]' ;;
  wasm)
    plugin=${plugin:-$target/plugins/add_header.wasm}
    [ -f "$plugin" ] || { echo "no plugin at $plugin (run scripts/build-plugins.sh)" >&2; exit 1; }
    plugin=$(realpath "$plugin") # the config lives in a temporary directory
    filters='[{ plugin: add-header }]'
    plugins="[{ name: add-header, wasm: \"$plugin\", root_id: add_header, config: { response: [{ name: x-bench, value: \"1\", action: add }] } }]" ;;
  trace1|trace100)
    ratio=$([ "$case_" = trace1 ] && echo 0.01 || echo 1.0)
    telemetry="telemetry: { tracing: { otlp_endpoint: \"http://127.0.0.1:$up_port\", protocol: http/protobuf, sample_ratio: $ratio } }" ;;
  accesslog) telemetry="telemetry: { access_log: { path: \"$work/access.log\", format: json } }" ;;
  nginx) ;;
  *) echo "unknown case $case_" >&2; exit 2 ;;
esac

out=$work/callgrind.out
vg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out")
if [ -n "$atomics" ]; then vg+=(--dump-instr=yes --compress-pos=no --compress-strings=no); fi
if [ -n "$cache" ]; then vg+=(--cache-sim=yes); fi
if [ "$case_" = nginx ]; then
  mkdir -p "$work/px"
  sed -e "s#{{DIR}}#$work/px#g" -e "s#{{LISTEN}}#127.0.0.1:$proxy_port#g" \
    -e "s#{{UPSTREAM}}#127.0.0.1:$up_port#g" bench/templates/proxy.nginx.conf >"$work/px/nginx.conf"
  "${vg[@]}" "$nginx_bin" -p "$work/px" -c "$work/px/nginx.conf" \
    -g 'daemon off; master_process off;' 2>"$work/valgrind.log" &
else
  cat >"$work/sluice.yaml" <<EOF
admin: { address: "127.0.0.1:$admin_port" }
workers: 1
listeners:
  - name: bench
    address: "127.0.0.1:$proxy_port"
    protocols: [$protocols]
    filters: $filters
    routes:
      - match: { path_prefix: "/" }
        cluster: upstream
clusters:
  - name: upstream
    endpoints: ["127.0.0.1:$up_port"]
    protocol: http1
    pool: { max_idle_per_endpoint: 64, idle_timeout: 300s }
plugins: $plugins
$telemetry
EOF
  SLUICE_WASM_PROFILER=${SLUICE_WASM_PROFILER:-} RUST_LOG=${RUST_LOG:-info} "${vg[@]}" "$bin" run -c "$work/sluice.yaml" \
    >"$work/sluice.log" 2>"$work/valgrind.log" &
fi
vg_pid=$!
pids+=($vg_pid)

url=http://127.0.0.1:$proxy_port/
for _ in $(seq 1 600); do
  if curl -fsS -o /dev/null "$url" 2>/dev/null; then break; fi
  kill -0 "$vg_pid" 2>/dev/null || { cat "$work/valgrind.log" "$work"/sluice.log 2>/dev/null | tail -20 >&2; exit 1; }
  sleep 0.1
done
curl -fsS -o /dev/null "$url"
if [ "$case_" = wasm ] || [ "$case_" = headers ]; then
  curl -fsS -D - -o /dev/null "$url" | grep -qi '^x-bench: 1' || { echo "x-bench header missing" >&2; exit 1; }
fi

h2load "${load[@]}" -n 3000 -c 16 "$url" >/dev/null
callgrind_control -i on "$vg_pid" >/dev/null
h2load "${load[@]}" -n "$n" -c 16 "$url" >"$work/h2load.txt"
callgrind_control -i off "$vg_pid" >/dev/null
callgrind_control -d "$vg_pid" >/dev/null
grep -q "status codes: $n 2xx" "$work/h2load.txt" || { cat "$work/h2load.txt" >&2; echo "not every request succeeded" >&2; exit 1; }
sleep 0.5
total=0
for f in "$out"*; do
  ir=$(awk '/^totals:/ { print $2; exit }' "$f")
  total=$((total + ${ir:-0}))
done
printf 'case %s: %d requests, %d instructions, %d per request\n' "$case_" "$n" "$total" $((total / n))
if [ -n "$cache" ]; then
  # totals: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  cat "$out"* | awk -v n="$n" '/^totals:/ { i1 += $5; d1 += $6 + $7 }
    END { printf "L1 misses per request (simulated): instruction %.0f, data %.0f\n", i1 / n, d1 / n }'
fi
if [ -n "$atomics" ]; then
  for f in "$out"*; do
    grep -q '^0x' "$f" && python3 bench/atomics.py "$f" "$n"
  done
fi
