#!/usr/bin/env bash
# Runs one server on embedded defaults (role `all`, data under ./data, no Redis or Kafka).
# Extra arguments go to the server, e.g. `bash deploy/run-local.sh --check-config`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/install-build-deps.sh >&2
exec cargo run --release -p uaprof -- "$@"
