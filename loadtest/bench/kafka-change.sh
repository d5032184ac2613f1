#!/usr/bin/env bash
# The Kafka change path end to end, measured on a release build:
#
#   bash loadtest/bench/kafka-change.sh [phones=100000] [store=embedded|redis] [extra storm flags...]
#
# FETCH_WAIT (ms, default librdkafka's 500) sets the consumers' fetch.wait.max.ms. A Kafka
# broker answers a waiting fetch as soon as a record arrives, so the wait costs nothing
# there; tansu 0.6 sleeps out every fetch, so on tansu the event -> NOTIFY latency is about
# two waits, and a short wait (FETCH_WAIT=1) shows the latency of everything but the
# broker's fetch loop, at the price of the broker polling its storage every millisecond.
#
# Starts its own tansu broker (SQLite storage in a temporary directory), Redis when asked,
# and one `uaprof --role all --kafka` node (fsync off), then
#   1. times event -> NOTIFY on the wire at idle (uaprof-kafka-latency, 200 events);
#   2. runs `uaprof-storm change-storm --via kafka` with the given number of phones: they
#      subscribe, one class document change is published as a protobuf event on the change
#      topic, and the run ends when every phone fetched the new version;
#   3. prints the server's CPU time and fan-out counters.
# Bounded by the storm's --max-time (default here 600 s) and the tools' own timeouts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
phones=${1:-100000}
store=${2:-embedded}
shift $(( $# > 2 ? 2 : $# )) || true
cargo build --release -q -p uaprof -p loadtest
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kport=$(free_port)
tansu=$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")
(cd "$work" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" \
    --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine sqlite://tansu.db) \
    > "$work/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
redis_args=()
if [[ $store == redis ]]; then
    rport=$(free_port)
    redis-server --port "$rport" --save '' --appendonly no --hash-max-listpack-value 512 \
        --hash-max-listpack-entries 256 > "$work/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis_args=(--redis "redis://127.0.0.1:$rport/")
fi
fetch_wait=${FETCH_WAIT:-500}
printf '[kafka]\nbrokers = "127.0.0.1:%s"\n[kafka.properties]\n"fetch.wait.max.ms" = "%s"\n' \
    "$kport" "$fetch_wait" > "$work/uaprof.toml"
echo "consumers: fetch.wait.max.ms=$fetch_wait"
target/release/uaprof --role all --config "$work/uaprof.toml" "${redis_args[@]}" \
    --data-dir "$work/data" --sip-udp 127.0.0.1:0 --sip-tcp off --http 127.0.0.1:0 --provision 127.0.0.1:0 \
    --admin 127.0.0.1:0 --fsync false --log warn > "$work/out" 2> "$work/err" &
srv=$!
pids+=($srv)
for _ in $(seq 300); do grep -q "uaprof ready" "$work/out" 2>/dev/null && break; sleep 0.1; done
line=$(grep "uaprof ready" "$work/out") || { cat "$work/err"; exit 1; }
echo "$line"
field() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p" | sed 's|http://||'; }
sip=$(field sip-udp); http=$(field http); prov=$(field provision); admin=$(field admin)
echo "== event -> NOTIFY at idle"
target/release/uaprof-kafka-latency --kafka "127.0.0.1:$kport" --server "$sip" --events 200
ticks() { awk '{print $14 + $15}' /proc/$srv/stat; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
# The server's RSS every half second, seconds since the storm started.
storm_start=$(date +%s.%N)
( while kill -0 "$srv" 2>/dev/null; do
      awk -v now="$(date +%s.%N)" -v t0="$storm_start" \
          '/VmRSS/ {print now - t0, $2}' /proc/$srv/status
      sleep 0.5
  done ) > "$work/rss" 2>/dev/null &
pids+=($!)
echo "== change-storm via kafka, $phones phones ($store store)"
target/release/uaprof-storm change-storm --phones "$phones" --server "udp://$sip" \
    --http "http://$http" --provision "http://$prov" --via kafka --kafka "127.0.0.1:$kport" --max-time 600 \
    --no-progress "$@" | tee "$work/storm" || true
t1=$(ticks)
published=$(sed -n 's/.*(published at \([0-9.]*\) s).*/\1/p' "$work/storm")
python3 - "$t0" "$t1" "$hz" "${published:-0}" "$work/rss" <<'PY'
import sys
t0, t1, hz = (int(x) for x in sys.argv[1:4])
published = float(sys.argv[4])
print(f"server CPU during the storm: {(t1 - t0) / hz:.1f} s")
samples = [tuple(map(float, l.split())) for l in open(sys.argv[5]) if len(l.split()) == 2]
before = [kb for t, kb in samples if t < published]
after = [kb for t, kb in samples if t >= published]
if before and after:
    print(f"server RSS: {before[-1] / 1024:.0f} MiB when the change was published, "
          f"peak {max(after) / 1024:.0f} MiB during its fan-out "
          f"(+{(max(after) - before[-1]) / 1024:.0f} MiB)")
PY
curl -s "http://$admin/metrics" | grep -E '^(fanout_notifies_total|fanout_jobs_total|kafka_change_events_total|notify_sent_total)' || true
