#!/usr/bin/env bash
# XDP example: two namespaces joined by a veth pair, the gateway in one with XDP on its end,
# clients in the other. Shows an allowed client served, a denied one dropped in XDP, a deny-file
# edit taking effect without a reload, a ban from the admin API, and the drop counters.
# Needs root, iproute2, curl, and a gateway built with the eBPF object:
#   scripts/install-bpf-toolchain.sh && scripts/build-bpf.sh && cargo build
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
sluice="${SLUICE:-$root/target/debug/sluice}"
gw=sluice-ex-gw
cl=sluice-ex-client
work="$(mktemp -d)"

cleanup() {
    [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    ip netns del "$gw" 2>/dev/null || true
    ip netns del "$cl" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$gw"
ip netns add "$cl"
ip -n "$gw" link set lo up
ip -n "$cl" link set lo up
ip -n "$gw" link add gw0 type veth peer name cl0 netns "$cl"
ip -n "$gw" addr add 198.18.50.1/24 dev gw0
for a in 2 3 66 77; do ip -n "$cl" addr add "198.18.50.$a/24" dev cl0; done
ip -n "$gw" link set gw0 up
ip -n "$cl" link set cl0 up

cp "$here/sluice.yaml" "$work/sluice.yaml"
echo "# one CIDR per line" > "$work/deny.txt"

ip netns exec "$gw" "$sluice" run -c "$work/sluice.yaml" > "$work/gateway.log" 2>&1 &
pid=$!
for _ in $(seq 50); do
    ip netns exec "$gw" curl -sf http://127.0.0.1:9901/ready > /dev/null 2>&1 && break
    sleep 0.2
done

try() { # try SRC: one request from that source address
    if ip netns exec "$cl" curl -s --max-time 2 --interface "198.18.50.$1" http://198.18.50.1:8080/ > /dev/null; then
        echo "198.18.50.$1: served"
    else
        echo "198.18.50.$1: dropped"
    fi
}

echo "== config deny list (198.18.50.66 denied)"
try 2; try 3; try 66
echo "== deny file edited: 198.18.50.77 added (applied on change, no reload)"
echo "198.18.50.77" >> "$work/deny.txt"
sleep 1
try 77
echo "== ban 198.18.50.3 through the admin API (as a filter or plugin would through BanSink)"
ip netns exec "$gw" "$sluice" xdp bans add 198.18.50.3 --ttl 30s --admin 127.0.0.1:9901
try 3
ip netns exec "$gw" "$sluice" xdp bans list --admin 127.0.0.1:9901
echo "== counters"
ip netns exec "$gw" curl -s http://127.0.0.1:9901/metrics | grep '^sluice_xdp_packets_total' | grep -v ' 0$'
