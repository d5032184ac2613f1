#!/usr/bin/env bash
# The project's test command (README: `bash deploy/test.sh`; CI runs it via .ci/run):
# installs the external peers the tests use, then runs the whole workspace's tests and the
# Helm chart's offline checks (deploy/helm-check.sh).
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
# The Helm chart, offline, with the binary the tests just built (its --check-config reads
# each rendered pod's configuration). About ten seconds.
UAPROF_BIN="${CARGO_TARGET_DIR:-target}/debug/uaprof" bash deploy/helm-check.sh || status=1
# cargo's last lines are the (empty) doc-test runs; close with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if [[ "$monitoring" -ne 0 ]]; then
    echo "deploy/check-monitoring.sh failed (exit $monitoring)"
    [[ "$status" -ne 0 ]] || status=$monitoring
fi
exit "$status"
