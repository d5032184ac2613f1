#!/usr/bin/env bash
# Document fetches from the content tier over HTTP/1.1 in clear, HTTPS with HTTP/1.1, HTTPS
# with HTTP/2 (ALPN) and HTTP/3 (QUIC), against a release build on loopback. Two clients:
# h2load (nghttp2, a client this project did not write; Debian's has no HTTP/3) for the
# first three, and uaprof-fetch (loadtest/, the storm simulator's fetchers: hyper, h3 and
# quinn) for all four, so HTTP/3 is compared with the others by the same client. Prints, per
# protocol: requests/s, p50/p99 latency and the server's CPU per request.
#
#   loadtest/bench/https-fetch.sh [requests] [clients] [streams per HTTP/2 connection]
#
# Installs Debian nghttp2-client (h2load) if missing; builds the release binaries if absent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
requests=${1:-20000}
clients=${2:-32}
streams=${3:-1}

command -v h2load >/dev/null || apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
bin="${CARGO_TARGET_DIR:-target}/release/uaprof"
fetch="${CARGO_TARGET_DIR:-target}/release/uaprof-fetch"
[[ -x $bin && -x $fetch ]] || cargo build --release -p uaprof -p loadtest

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
cat > "$work/tls.toml" <<EOF
http3_listen = "127.0.0.1:0"
[http_tls]
cert_file = "$work/tls.crt"
key_file = "$work/tls.key"
EOF
: > "$work/clear.toml"

field() { tr ' ' '\n' <<< "$1" | sed -n "s/^$2=//p"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
doc=$(head -c 4096 /dev/zero | tr '\0' 'x')

# start <name>: a server with <name>.toml; sets srv (pid), http and prov (URLs).
start() {
    $bin --config "$work/$1.toml" --data-dir "$work/$1" --sip-udp 127.0.0.1:0 --sip-tcp off \
        --http 127.0.0.1:0 --provision 127.0.0.1:0 --admin 127.0.0.1:0 --fsync false --log warn \
        > "$work/$1.out" 2> "$work/$1.err" &
    srv=$!
    pids+=("$srv")
    for _ in $(seq 300); do grep -q "uaprof ready" "$work/$1.out" 2>/dev/null && break; sleep 0.1; done
    local line
    line=$(grep "uaprof ready" "$work/$1.out") || { cat "$work/$1.err"; exit 1; }
    http=$(field "$line" http)
    http3=$(field "$line" http3)
    prov=$(field "$line" provision)
    curl -sS -o /dev/null -X PUT -H 'Content-Type: application/xml' --data-binary "<d>$doc</d>" \
        "$prov/provision/v1/device/00df1e00ffee/documents/bench.xml"
}

# run <label> <h2load args...> <url>: one measured run.
run() {
    local label=$1
    shift
    local t0 t1
    rm -f "$work/log"
    t0=$(ticks "$srv")
    h2load -n "$requests" -c "$clients" -m "$streams" --log-file="$work/log" "$@" > "$work/h2load.out"
    t1=$(ticks "$srv")
    python3 - "$label" "$work/log" "$work/h2load.out" "$t0" "$t1" "$hz" <<'PY'
import re, sys
label, log, out, t0, t1, hz = sys.argv[1], sys.argv[2], open(sys.argv[3]).read(), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
durs = sorted(int(l.split()[2]) for l in open(log) if l.strip() and l.split()[1] == "200")
rps = float(re.search(r"finished in [0-9.]+m?s, ([0-9.]+) req/s", out).group(1))
bad = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
pct = lambda p: durs[min(len(durs) - 1, int(p * len(durs)))] / 1000.0
cpu_us = (t1 - t0) / hz * 1e6 / max(1, len(durs))
print(f"{label:<22} {rps:>10.0f} req/s   p50 {pct(0.50):7.2f} ms   p99 {pct(0.99):7.2f} ms   "
      f"server CPU {cpu_us:6.1f} µs/request   ok {len(durs)}  failed {bad.group(2) if bad else '?'}")
PY
}

# ours <label> <uaprof-fetch args...> <url>: one measured run of uaprof-fetch.
ours() {
    local label=$1
    shift
    local t0 t1 out
    t0=$(ticks "$srv")
    out=$($fetch --requests "$requests" --conns "$clients" "$@")
    t1=$(ticks "$srv")
    python3 - "$label" "$out" "$t0" "$t1" "$hz" <<'PY'
import sys
label, out, t0, t1, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
f = dict(kv.split("=", 1) for kv in out.split())
ok = int(f["ok"])
cpu_us = (t1 - t0) / hz * 1e6 / max(1, ok)
print(f"{label:<22} {float(f['req_per_s']):>10.0f} req/s   p50 {float(f['p50_ms']):7.2f} ms   "
      f"p99 {float(f['p99_ms']):7.2f} ms   server CPU {cpu_us:6.1f} µs/request   ok {ok}  failed {f['failed']}")
PY
}

path=/profiles/device/mac%3A00df1e00ffee/bench.xml
echo "== $requests fetches of a 4 KiB document, $clients connections, $streams stream(s) each, loopback"
echo "-- h2load"
start clear
run "HTTP/1.1 (clear)" --h1 "$http$path"
echo "-- uaprof-fetch"
ours "HTTP/1.1 (clear)" --fetch http1 "$http$path"
kill "$srv"
start tls
port=${http##*:}
url="https://127.0.0.1:$port$path"
echo "-- h2load"
run "HTTPS HTTP/1.1" --h1 "$url"
run "HTTPS HTTP/2" "$url"
echo "-- uaprof-fetch"
ours "HTTPS HTTP/1.1" --fetch https --ca "$work/tls.crt" "$url"
ours "HTTPS HTTP/2" --fetch h2 --ca "$work/tls.crt" "$url"
ours "HTTP/3 (QUIC)" --fetch h3 --ca "$work/tls.crt" --http3 "${http3#udp://}" "$url"
