#!/usr/bin/env bash
# The project's test command (README: `bash deploy/test.sh`; CI runs it via .ci/run):
# installs the external peers the tests use, then runs the whole workspace's tests.
# Plain `cargo test` on purpose; cargo-nextest is not required.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/install-test-deps.sh
# Alert rules, their unit tests and the dashboards' PromQL (promtool, offline); a failure here
# still lets the cargo tests run, and fails the whole run at the end.
monitoring=0
bash deploy/check-monitoring.sh || monitoring=$?
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
CARGO_TERM_COLOR=never cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# cargo's last lines are the (empty) doc-test runs; close with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if [[ "$monitoring" -ne 0 ]]; then
    echo "deploy/check-monitoring.sh failed (exit $monitoring)"
    [[ "$status" -ne 0 ]] || status=$monitoring
fi
exit "$status"
