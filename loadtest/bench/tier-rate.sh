#!/usr/bin/env bash
# Sustained SUBSCRIBE rate of a tier: one Redis, one content node (gRPC), N notifier nodes,
# one SIPp per node sharing the rate. Optionally preloads the store first, to show that a
# node's memory does not follow the number of subscriptions the tier holds.
#
#   bash loadtest/bench/tier-rate.sh [nodes=1] [calls=50000] [rate=4000] [preload=0]
#
# Prints per SIPp its summary, then the tier's exchanges/s, each node's CPU µs per exchange
# and RSS (before preload, after preload, after the run), Redis CPU and used_memory.
# Redis runs with the listpack limits the README recommends. Bounded by counts and -timeout.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)
nodes=${1:-1}
calls=${2:-50000}
rate=${3:-4000}
preload=${4:-0}
bin=target/release/uaprof
fill=target/release/uaprof-redis-fill
[[ -x $bin && -x $fill ]] || cargo build --release -p uaprof -p loadtest
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --hash-max-listpack-value 512 --hash-max-listpack-entries 256 --logfile "$work/redis.log" &
pids+=($!); rpid=$!
redis="redis://127.0.0.1:$port/"
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
ready() { for _ in $(seq 200); do grep -q "uaprof ready" "$1" 2>/dev/null && return; sleep 0.1; done; cat "$1"; exit 1; }
$bin --role content --data-dir "$work/content" --http 127.0.0.1:0 --provision 127.0.0.1:0 --admin 127.0.0.1:0 \
     --grpc 127.0.0.1:0 --fsync false --log warn > "$work/content.out" &
pids+=($!)
ready "$work/content.out"
grpc=$(grep -o 'grpc=[^ ]*' "$work/content.out" | cut -d= -f2)
node_pids=()
for i in $(seq "$nodes"); do
  $bin --role notifier --redis "$redis" --content-url "$grpc" --node-id "bench-$i" \
       --data-dir "$work/n$i" --sip-udp "127.0.0.1:$((5060 + 10 * i))" --sip-tcp off \
       --admin 127.0.0.1:0 --log warn > "$work/n$i.out" &
  pids+=($!); node_pids+=($!)
  ready "$work/n$i.out"
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A rss0 rss1 rss2 t0 t1
for p in "${node_pids[@]}"; do rss0[$p]=$(rss "$p"); done
if (( preload > 0 )); then
  $fill --redis "$redis" --count "$preload" | tail -2
  sleep 5
fi
for p in "${node_pids[@]}"; do rss1[$p]=$(rss "$p"); t0[$p]=$(ticks "$p"); done
rt0=$(ticks "$rpid")
s0=$(date +%s.%N)
sipps=()
for i in $(seq "$nodes"); do
  (cd "$work" && mkdir -p "s$i" && cd "s$i" && sipp -sf "$repo/loadtest/sipp/subscribe_notify.xml" \
     -m $((calls / nodes)) -r $((rate / nodes)) -l 20000 -i 127.0.0.1 -p $((6070 + 10 * i)) \
     -nostdin -timeout 600s -timeout_error "127.0.0.1:$((5060 + 10 * i))" > sipp.out 2>&1) &
  sipps+=($!)
done
for s in "${sipps[@]}"; do wait "$s" || true; done
s1=$(date +%s.%N)
for p in "${node_pids[@]}"; do t1[$p]=$(ticks "$p"); rss2[$p]=$(rss "$p"); done
rt1=$(ticks "$rpid")
ok=0; failed=0
for i in $(seq "$nodes"); do
  o=$(grep -E "Successful call" "$work/s$i/sipp.out" | tail -1 | awk '{print $NF}'); ok=$((ok + ${o:-0}))
  f=$(grep -E "Failed call" "$work/s$i/sipp.out" | tail -1 | awk '{print $NF}'); failed=$((failed + ${f:-0}))
done
python3 - "$ok" "$failed" "$s0" "$s1" <<'PY'
import sys
ok, failed, s0, s1 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
wall = s1 - s0
print(f"tier: calls ok={ok} failed={failed}; wall {wall:.1f} s -> {ok / wall:.0f} exchanges/s")
PY
for p in "${node_pids[@]}"; do
  cpu=$(( ${t1[$p]} - ${t0[$p]} ))
  python3 -c "import sys; cpu=$cpu/$hz; n=max($ok,1)/$nodes; print(f'node pid $p: CPU {cpu:.1f} s = {cpu/n*1e6:.0f} us/exchange; RSS {${rss0[$p]}/1024:.1f} MiB empty, {${rss1[$p]}/1024:.1f} MiB after preload of $preload, {${rss2[$p]}/1024:.1f} MiB after the run')"
done
python3 -c "print(f'redis: CPU {($rt1 - $rt0)/$hz:.1f} s = {($rt1 - $rt0)/$hz/max($ok,1)*1e6:.0f} us/exchange')"
redis-cli -p "$port" info memory | grep -E "^used_memory_human"
redis-cli -p "$port" info commandstats | grep -E "evalsha|hget" | cut -c1-100
