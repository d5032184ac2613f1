#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (README "Fuzzing"): every target, or the one named,
# for SECONDS each (default 60), and prints the executions of each run.
#
#   bash deploy/fuzz.sh                  # every target, 60 s each
#   bash deploy/fuzz.sh sip_parse 600    # one target, 10 minutes
#
# Each target's corpus grows in fuzz/corpus/<target> (not committed); the hand-made seeds in
# fuzz/seeds/<target> are read too. A crash leaves its input in fuzz/artifacts/<target>/ and
# `cargo +nightly fuzz run <target> <file>` replays it. The full libFuzzer output of each run
# is kept in fuzz/artifacts/<target>.log.
#
# Environment: FUZZ_SANITIZER (default `none`: the code under test has no `unsafe`, and
# AddressSanitizer would halve the executions; `address` to use it anyway), FUZZ_ARGS (more
# libFuzzer flags, e.g. `-max_len=65535`; `-fork=1 -ignore_crashes=1` keeps going past a known
# crash, and then only fuzz/artifacts/<target>/ shows what was found).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGETS=(sip_parse stream_frame event_header accept expires key_normalize provisioning_json event_proto)
target="${1:-all}"
seconds="${2:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
read -r -a extra <<<"${FUZZ_ARGS:-}"

if [[ "$target" != all ]] && [[ ! " ${TARGETS[*]} " =~ " $target " ]]; then
    printf 'fuzz: unknown target %s (targets: %s)\n' "$target" "${TARGETS[*]}" >&2
    exit 64
fi
if [[ "$target" == all ]]; then
    run=("${TARGETS[@]}")
else
    run=("$target")
fi

bash deploy/install-fuzz-deps.sh
cargo +nightly fuzz build --sanitizer "$sanitizer"

summary=()
status=0
for t in "${run[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t.log"
    printf 'fuzz: %s for %s s\n' "$t" "$seconds"
    rc=0
    cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || rc=$?
    # The log holds the fuzzer's inputs, so it is not text: grep needs -a.
    execs=$(awk '/^stat::number_of_executed_units:/ { n = $NF } END { print n }' "$log")
    if [[ -z "$execs" ]]; then
        # Without final stats (killed, fork mode) the last status line has the count.
        execs=$(grep -aEo '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    if [[ "$rc" -eq 0 ]]; then
        result=ok
    else
        result="FAILED (exit $rc, see $log)"
        status=1
        grep -a -A2 'panicked at' "$log" | head -6 >&2 || true
        grep -a 'Test unit written' "$log" | head -1 >&2 || true
    fi
    summary+=("$(printf '%-18s %12s execs  %s' "$t" "${execs:-?}" "$result")")
done

printf '\nfuzz: executions per target (%s s each, sanitizer %s)\n' "$seconds" "$sanitizer"
printf '  %s\n' "${summary[@]}"
exit "$status"
