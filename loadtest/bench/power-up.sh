#!/usr/bin/env bash
# A power-up storm against a release build, with the content tier's fetch admission on or off:
#
#   bash loadtest/bench/power-up.sh [phones=5000] [over=2] [max-rate=off|N] [pacing=on|off] \
#                                   [topology=tier|all] [storm flags...]
#
# max-rate: the content tier's ceiling (`--content-max-rate`; beyond it fetches get 503).
# pacing=on: the notifier sends URL-bearing NOTIFYs against the fetch credits the content
# tier grants; off (`notifier.pace_fetches = false`): as fast as it can, leaving the ceiling
# to refuse the excess. topology=tier: one Redis, one content node (gRPC) and one notifier
# node that draws its credits over gRPC. topology=all: one `--role all` process (embedded
# store, in-process admission). Then `uaprof-storm power-up` boots the
# phones over the given seconds (1024 keep-alive fetch connections, so the content tier,
# not the simulator's pool, bounds the fetches in flight) and writes its report to
# $OUT (default: a temporary directory, printed at the end).
#
# Prints the storm summary, then the figures the closing notes quote: provisioned, time to the
# last phone provisioned, Timer N failures (no NOTIFY within 32 s of the 200), fetch p50/p99,
# peak fetches in flight at the content node, 503s (SUBSCRIBE and fetch), bodiless first
# NOTIFYs, and the CPU seconds each server process used. Bounded by the storm's --max-time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
phones=${1:-5000}
over=${2:-2}
rate=${3:-off}
pacing=${4:-on}
topology=${5:-tier}
shift $(( $# > 5 ? 5 : $# )) || true
cargo build --release -q -p uaprof -p loadtest
bin=target/release/uaprof
work=$(mktemp -d)
out=${OUT:-$work/report}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() {
    for _ in $(seq 300); do grep -q "uaprof ready" "$1" 2>/dev/null && break; sleep 0.1; done
    grep "uaprof ready" "$1" || { cat "$1" "${1%.out}.err"; exit 1; }
}
field() { tr ' ' '\n' <<< "$1" | sed -n "s/^$2=//p" | sed 's|http://||'; }
rate_args=()
[[ $rate == off ]] || rate_args=(--content-max-rate "$rate")
[[ $pacing == on ]] && pace=true || pace=false
printf '[notifier]\npace_fetches = %s\n' "$pace" > "$work/uaprof.toml"
common=(--config "$work/uaprof.toml" --sip-tcp off --admin 127.0.0.1:0 --fsync false --log warn)
if [[ $topology == tier ]]; then
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
        --hash-max-listpack-value 512 --hash-max-listpack-entries 256 > "$work/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    $bin --role content --data-dir "$work/content" --http 127.0.0.1:0 --provision 127.0.0.1:0 --grpc 127.0.0.1:0 \
        "${rate_args[@]}" "${common[@]}" > "$work/content.out" 2> "$work/content.err" &
    content_pid=$!; pids+=($!)
    cline=$(ready "$work/content.out")
    grpc=$(tr ' ' '\n' <<< "$cline" | sed -n 's/^grpc=//p')
    $bin --role notifier --redis "redis://127.0.0.1:$rport/" --content-url "$grpc" \
        --data-dir "$work/notifier" --sip-udp 127.0.0.1:0 "${common[@]}" \
        > "$work/notifier.out" 2> "$work/notifier.err" &
    notifier_pid=$!; pids+=($!)
    nline=$(ready "$work/notifier.out")
    # Wait until the node holds every partition (a fresh tier hands them out in seconds).
    nadmin=$(field "$nline" admin)
    for _ in $(seq 200); do
        held=$(curl -s "http://$nadmin/metrics" | awk '/^notifier_partitions_owned/ {print $2}')
        [[ ${held:-0} == 256 ]] && break
        sleep 0.1
    done
else
    $bin --role all --data-dir "$work/all" --http 127.0.0.1:0 --provision 127.0.0.1:0 --sip-udp 127.0.0.1:0 \
        "${rate_args[@]}" "${common[@]}" > "$work/all.out" 2> "$work/all.err" &
    content_pid=$!; notifier_pid=$!; pids+=($!)
    cline=$(ready "$work/all.out")
    nline=$cline
fi
sip=$(field "$nline" sip-udp)
http=$(field "$cline" http)
prov=$(field "$cline" provision)
cadmin=$(field "$cline" admin)
nadmin=$(field "$nline" admin)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
c0=$(ticks "$content_pid"); n0=$(ticks "$notifier_pid")
echo "== power-up: $phones phones over $over s, topology=$topology, content max rate=$rate, pacing=$pacing"
target/release/uaprof-storm power-up --phones "$phones" --over "$over" --server "udp://$sip" \
    --http "http://$http" --provision "http://$prov" --http-conns 1024 --max-time 300 --no-progress --out "$out" "$@" \
    | tee "$work/storm" || true
c1=$(ticks "$content_pid"); n1=$(ticks "$notifier_pid")
curl -s "http://$cadmin/metrics" > "$work/content.metrics"
curl -s "http://$nadmin/metrics" > "$work/notifier.metrics"
python3 - "$out/result.json" "$work/content.metrics" "$work/notifier.metrics" \
    "$(( c1 - c0 ))" "$(( n1 - n0 ))" "$hz" "$topology" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
def metric(path, name):
    total = 0.0
    for line in open(path):
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total
cm, nm = sys.argv[2], sys.argv[3]
c = res["counters"]
lat = res["latency"]
phones = res["phones"]
ccpu, ncpu, hz, topo = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
last = res.get("time_to_last_provisioned_s")
print("== figures")
print(f"provisioned            {c['phones_provisioned']}/{phones} ({100 * c['phones_provisioned'] / phones:.1f} %)")
print(f"last phone provisioned {last if last is None else f'{last:.2f} s'}")
print(f"Timer N failures       {c['timeouts_first_notify']}")
print(f"SUBSCRIBE timeouts     {c['timeouts_subscribe']}")
print(f"SUBSCRIBE retrans.     {c['subscribe_retransmissions']} ({100 * c['subscribe_retransmissions'] / max(c['subscribes_sent'], 1):.1f} % of {c['subscribes_sent']} SUBSCRIBEs)")
print(f"SUBSCRIBE 503s         {c['responses_503']}")
print(f"fetches                {c['fetches_ok']} ok ({c['fetches_ok'] / phones:.3f} per phone), {c['fetch_http_errors']} refused, {c['fetch_retries']} retried")
print(f"fetch p50/p99          {lat['http_get']['p50_ms']:.1f} / {lat['http_get']['p99_ms']:.1f} ms")
print(f"boot->provisioned p99  {lat['boot_to_provisioned']['p99_ms']:.0f} ms")
print(f"content: admitted {metric(cm, 'content_fetches_admitted_total'):.0f}, refused {metric(cm, 'content_fetches_refused_total'):.0f}, peak in flight {metric(cm, 'content_fetches_in_flight_peak'):.0f}")
print(f"notifier: bodiless first NOTIFYs {metric(nm, 'notify_bodiless_total'):.0f}, SUBSCRIBEs shed {metric(nm, 'sip_shed_total'):.0f}")
for line in open(nm):
    if line.startswith("sip_shed_total{") or line.startswith("sip_udp_dropped"):
        print(f"notifier: {line.strip()}")
if topo == "tier":
    print(f"CPU: content {ccpu / hz:.1f} s, notifier {ncpu / hz:.1f} s")
else:
    print(f"CPU: server {ncpu / hz:.1f} s")
PY
echo "report: $out/report.html"
