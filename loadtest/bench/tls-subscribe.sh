#!/usr/bin/env bash
# The server's CPU for SIP over TLS against SIP over UDP: the same `uaprof-storm steady` load
# (RATE new phones a second for SECONDS; each subscribes, is notified, fetches its document,
# refreshes and unsubscribes, HOLD seconds apart) against one release server, once over UDP
# and once over TLS, then the server's CPU per phone and per SIP transaction of each, and
# their ratio. SIPp is not used: Debian's SIPp is built without TLS.
#
#   bash loadtest/bench/tls-subscribe.sh [rate=1000] [seconds=10] [tls connections=256]
#
# TLS phones share `tls connections` connections (as behind an SBC, or phones that keep
# theirs open): the figure is the steady cost of TLS records, not of handshakes; with
# connections = phones every phone pays one handshake. Bounded by the storm's --max-time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rate=${1:-1000}
secs=${2:-10}
conns=${3:-256}
bin="${CARGO_TARGET_DIR:-target}/release/uaprof"
storm="${CARGO_TARGET_DIR:-target}/release/uaprof-storm"
[[ -x $bin && -x $storm ]] || cargo build --release -p uaprof -p loadtest
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$work/tls.key" -out "$work/tls.crt" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null
cat > "$work/uaprof.toml" <<EOF
[notifier.tls]
listen = "127.0.0.1:0"
cert_file = "$work/tls.crt"
key_file = "$work/tls.key"
EOF
$bin --config "$work/uaprof.toml" --data-dir "$work/data" --sip-udp 127.0.0.1:0 --sip-tcp off \
    --http 127.0.0.1:0 --provision 127.0.0.1:0 --admin 127.0.0.1:0 --fsync false --log warn \
    > "$work/srv.out" 2> "$work/srv.err" &
srv=$!
pids+=("$srv")
for _ in $(seq 300); do grep -q "uaprof ready" "$work/srv.out" 2>/dev/null && break; sleep 0.1; done
line=$(grep "uaprof ready" "$work/srv.out") || { cat "$work/srv.err"; exit 1; }
field() { tr ' ' '\n' <<< "$line" | sed -n "s/^$1=//p"; }
udp=$(field sip-udp)
tls=$(field sip-tls)
http=$(field http)
prov=$(field provision)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# one <label> <server URL> <offset>: a steady run; prints its line, keeps its figures.
one() {
    local t0 t1
    t0=$(ticks "$srv")
    $storm steady --rate "$rate" --duration "$secs" --hold 1 --server "$2" --http "$http" \
        --provision "$prov" --ca "$work/tls.crt" --tcp-conns "$conns" --id-offset "$3" \
        --max-time $(( secs + 60 )) --no-progress --out "$work/$1" > "$work/$1.txt"
    t1=$(ticks "$srv")
    python3 - "$1" "$work/$1/result.json" "$t0" "$t1" "$hz" <<'PY'
import json, sys
label, res, t0, t1, hz = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
c = res["counters"]
tx = c["subscribes_sent"] + c["refreshes_sent"] + c["unsubscribes_sent"]
cpu = (t1 - t0) / hz
phones = max(1, c["phones_provisioned"])
print(f"{label:<4} phones {c['phones_provisioned']:>7}  failed {c['phones_failed']}  SIP transactions {tx:>7}  "
      f"server CPU {cpu:6.2f} s = {cpu / phones * 1e6:6.1f} µs/phone, {cpu / max(1, tx) * 1e6:6.1f} µs/transaction")
open(sys.argv[2] + ".cpu", "w").write(f"{cpu / max(1, tx) * 1e6}")
PY
}
echo "== steady $rate phones/s for $secs s, hold 1 s; TLS over $conns connections; loopback"
one udp "udp://$udp" 0
one tls "tls://$tls" 100000000
python3 - "$work/udp/result.json.cpu" "$work/tls/result.json.cpu" <<'PY'
import sys
u, t = (float(open(p).read()) for p in sys.argv[1:3])
print(f"TLS / UDP server CPU per SIP transaction: {t / u:.2f}")
PY
