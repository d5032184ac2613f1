#!/usr/bin/env bash
# The same SIPp load (loadtest/sipp/subscribe_notify.xml: SUBSCRIBE→200→NOTIFY→200, one new
# phone a call) against Kamailio's presence server and against uaprof, one after the other
# on this machine, and the server CPU per exchange of each and their ratio: every claim
# about how uaprof compares is a ratio measured in one run.
#
#   bash loadtest/bench/kamailio-vs-uaprof.sh [calls=50000] [rate=5000]
#
# Kamailio: Debian's kamailio and kamailio-presence-modules (installed if missing), presence
# with presence_profile (the ua-profile event), subscriptions in memory (subs_db_mode 0; the
# db_text URL only satisfies the module), 2 UDP workers, the TLSF allocator. Kamailio refuses
# the RFC 6080 Event parameters (489), so its script rewrites the Event header to a plain
# `ua-profile` first (textopsx msg_apply_changes), a small cost Kamailio pays and uaprof does
# not. uaprof: the release build, embedded store, fsync off. CPU is user+system time of every
# server process (/proc), between SIPp's start and end. Bounded by the call count and SIPp's
# -timeout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
calls=${1:-50000}
rate=${2:-5000}
bin="${CARGO_TARGET_DIR:-target}/release/uaprof"
[[ -x $bin ]] || cargo build --release -p uaprof
command -v sipp >/dev/null || apt-get install -y -qq --no-install-recommends sip-tester >/dev/null
if ! command -v kamailio >/dev/null || [[ ! -e /usr/lib/x86_64-linux-gnu/kamailio/modules/presence_profile.so ]]; then
    apt-get install -y -qq --no-install-recommends kamailio kamailio-presence-modules >/dev/null
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $work/kamailio.pid ]] && kill "$(cat "$work/kamailio.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hz=$(getconf CLK_TCK)
# Ticks (user + system) of every process whose command line contains $1.
ticks() { local t=0 p; for p in $(pgrep -f -- "$1"); do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done; echo "$t"; }

# measure <label> <process pattern> <port>: one SIPp run; prints its line, records the CPU.
measure() {
    local t0 t1 s0 s1
    t0=$(ticks "$2"); s0=$(date +%s.%N)
    (cd "$work" && sipp -sf "$OLDPWD/loadtest/sipp/subscribe_notify.xml" -m "$calls" -r "$rate" \
        -l 20000 -i 127.0.0.1 -p "$(free_port)" -nostdin -timeout 600s -timeout_error \
        "127.0.0.1:$3" > "$work/$1.sipp" 2>&1) || true
    s1=$(date +%s.%N); t1=$(ticks "$2")
    local ok failed
    ok=$(grep -E "Successful call" "$work/$1.sipp" | tail -1 | awk '{print $NF}')
    failed=$(grep -E "Failed call" "$work/$1.sipp" | tail -1 | awk '{print $NF}')
    python3 - "$1" "$t0" "$t1" "$hz" "$s0" "$s1" "${ok:-0}" "${failed:-0}" "$work/$1.cpu" <<'PY'
import sys
label, t0, t1, hz, s0, s1, ok, failed, out = sys.argv[1:]
ok, failed = int(ok), int(failed)
cpu = (int(t1) - int(t0)) / int(hz)
wall = float(s1) - float(s0)
per = cpu / max(ok, 1) * 1e6
print(f"{label:<9} ok {ok:>7}  failed {failed:>5} ({100.0 * failed / max(ok + failed, 1):.2f} %)  "
      f"{ok / wall:>7.0f} exchanges/s  server CPU {cpu:6.2f} s = {per:5.1f} µs/exchange")
# A run with failures measured something else than the exchange: no ratio from it.
open(out, "w").write(str(per) if failed == 0 and ok > 0 else "failed")
PY
}

echo "== SIPp subscribe_notify.xml: $calls calls at $rate/s, loopback"
kport=$(free_port)
mkdir -p "$work/db"
cp /usr/share/kamailio/dbtext/kamailio/{version,presentity,active_watchers,watchers,xcap} "$work/db/"
cat > "$work/kamailio.cfg" <<EOF
#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=2
listen=udp:127.0.0.1:$kport
auto_aliases=no
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "textopsx.so"
loadmodule "siputils.so"
loadmodule "db_text.so"
loadmodule "presence.so"
loadmodule "presence_profile.so"
modparam("presence", "db_url", "text://$work/db")
modparam("presence", "subs_db_mode", 0)
modparam("presence", "publ_cache", 1)
modparam("presence", "server_address", "sip:127.0.0.1:$kport")
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (is_method("SUBSCRIBE")) {
        remove_hf("Event");
        append_hf("Event: ua-profile\r\n");
        if (!msg_apply_changes()) { sl_send_reply("500", "Rewrite failed"); exit; }
        if (!t_newtran()) { sl_reply_error(); exit; }
        handle_subscribe();
        t_release();
        exit;
    }
    if (has_totag() && loose_route()) { t_relay(); exit; }
    sl_send_reply("404", "Not here");
}
EOF
kamailio -f "$work/kamailio.cfg" -P "$work/kamailio.pid" -m 512 -M 32 -x tlsf > "$work/kamailio.log" 2>&1
for _ in $(seq 50); do [[ -s $work/kamailio.pid ]] && break; sleep 0.1; done
[[ -s $work/kamailio.pid ]] || { cat "$work/kamailio.log"; exit 1; }
sleep 1
measure kamailio "kamailio -f $work/kamailio.cfg" "$kport"
kill "$(cat "$work/kamailio.pid")"; rm -f "$work/kamailio.pid"

uport=$(free_port)
$bin --data-dir "$work/uaprof" --sip-udp "127.0.0.1:$uport" --sip-tcp off --http 127.0.0.1:0 \
    --provision 127.0.0.1:0 --admin 127.0.0.1:0 --fsync false --log warn > "$work/uaprof.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "uaprof ready" "$work/uaprof.out" 2>/dev/null && break; sleep 0.1; done
grep -q "uaprof ready" "$work/uaprof.out" || { cat "$work/uaprof.out"; exit 1; }
measure uaprof "$bin --data-dir $work/uaprof" "$uport"
python3 - "$work/kamailio.cpu" "$work/uaprof.cpu" <<'PY'
import sys
k, u = (open(p).read() for p in sys.argv[1:3])
if "failed" in (k, u):
    print("no ratio: a run had failed calls (lower the rate)")
    sys.exit(1)
print(f"uaprof / Kamailio server CPU per exchange: {float(u) / float(k):.2f}")
PY
