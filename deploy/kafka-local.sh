#!/usr/bin/env bash
# Starts a local Kafka-protocol broker (tansu) on loopback for trying the Kafka path by hand:
#
#   bash deploy/kafka-local.sh [PORT]        # default 9092; prints the bootstrap address
#
# It stores its log in SQLite under ./data/kafka (a restart keeps every record) and runs in
# the foreground until Ctrl-C. Installs tansu first if it is missing (cargo install, about
# 15 minutes once). uaprof creates its topics itself (kafka.create_topics, default on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${1:-9092}"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || (( PORT < 1 || PORT > 65535 )); then
    echo "usage: bash deploy/kafka-local.sh [PORT]" >&2
    exit 64
fi
tansu=""
if command -v tansu >/dev/null 2>&1; then tansu="$(command -v tansu)"
elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then tansu="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
else
    echo "kafka-local: installing tansu (cargo install tansu --features dynostore,libsql)" >&2
    cargo install tansu --version 0.6.0 --features dynostore,libsql --locked --quiet
    tansu="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
fi
mkdir -p data/kafka
cd data/kafka
echo "kafka-local: bootstrap 127.0.0.1:$PORT (storage $(pwd)/tansu.db)"
# tansu resolves the sqlite:// path against its working directory.
exec "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "sqlite://tansu.db"
