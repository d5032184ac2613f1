#!/usr/bin/env bash
# The project's test command (README: `bash deploy/test.sh`; CI runs it via .ci/run):
# installs the external peers the tests use, then runs the whole workspace's tests.
# Plain `cargo test` on purpose; cargo-nextest is not required.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/install-test-deps.sh
CARGO_TERM_COLOR=never cargo test --workspace --locked
