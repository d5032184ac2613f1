#!/usr/bin/env bash
# Measures the sustained SUBSCRIBE→200→NOTIFY→200 rate with SIPp against a release server,
# the server's CPU time per exchange (from /proc), and its memory per held subscription.
#
#   bash loadtest/bench/sipp-rate.sh [calls=100000] [rate=5000] [fsync=false] [settle_s=1]
#
# settle_s waits before reading RSS, so that completed transactions (kept 32 s for
# retransmission replay, RFC 3261 Timer J) have been reaped: use 40 for memory figures.
#
# Prints SIPp's summary plus: calls ok/failed, wall time, server CPU µs per exchange, RSS
# before/after and bytes per held subscription. Bounded by the call count and SIPp's -timeout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
calls=${1:-100000}
rate=${2:-5000}
fsync=${3:-false}
settle=${4:-1}
bin=target/release/uaprof
[[ -x $bin ]] || cargo build --release -p uaprof
work=$(mktemp -d)
trap 'kill $srv 2>/dev/null && wait $srv 2>/dev/null; rm -rf "$work"' EXIT
$bin --data-dir "$work/data" --sip-udp 127.0.0.1:5060 --sip-tcp off --http 127.0.0.1:0 --provision 127.0.0.1:0 \
     --admin 127.0.0.1:0 --fsync "$fsync" --log warn > "$work/out" &
srv=$!
for _ in $(seq 100); do grep -q "uaprof ready" "$work/out" 2>/dev/null && break; sleep 0.1; done
grep "uaprof ready" "$work/out"
ticks() { awk '{print $14 + $15}' /proc/$srv/stat; }
rss() { awk '/VmRSS/ {print $2}' /proc/$srv/status; }
hz=$(getconf CLK_TCK)
rss0=$(rss); t0=$(ticks); s0=$(date +%s.%N)
(cd "$work" && sipp -sf "$OLDPWD/loadtest/sipp/subscribe_notify.xml" -m "$calls" -r "$rate" \
     -l 20000 -i 127.0.0.1 -p 5070 -nostdin -timeout 600s -timeout_error \
     -trace_stat -fd 5 127.0.0.1:5060 > "$work/sipp.out" 2>&1) || true
s1=$(date +%s.%N); t1=$(ticks); sleep "$settle"; rss1=$(rss)
stat=$(ls "$work"/*_.csv 2>/dev/null | head -1 || true)
ok=$(grep -E "Successful call" "$work/sipp.out" | tail -1 | awk '{print $NF}' || true)
failed=$(grep -E "Failed call" "$work/sipp.out" | tail -1 | awk '{print $NF}' || true)
tail -40 "$work/sipp.out" | grep -E "Successful call|Failed call|Call Rate|Elapsed|Retransmissions" || true
python3 - "$calls" "$t0" "$t1" "$hz" "$s0" "$s1" "$rss0" "$rss1" "$ok" "$failed" <<'PY'
import sys
calls, t0, t1, hz, s0, s1, rss0, rss1, ok, failed = sys.argv[1:]
ok = int(ok or 0); failed = int(failed or 0)
cpu = (int(t1) - int(t0)) / int(hz)
wall = float(s1) - float(s0)
n = max(ok, 1)
print(f"calls ok={ok} failed={failed} ({100.0*failed/max(ok+failed,1):.2f}% failed)")
print(f"wall {wall:.1f} s -> {ok/wall:.0f} exchanges/s")
print(f"server CPU {cpu:.2f} s -> {cpu/n*1e6:.1f} us per exchange")
print(f"RSS {int(rss0)/1024:.1f} MiB -> {int(rss1)/1024:.1f} MiB: {(int(rss1)-int(rss0))*1024/n:.0f} bytes per held subscription")
PY
