#!/usr/bin/env bash
# Installs what building uaprof needs beyond the Rust toolchain, on Debian 12 (bookworm), as
# root: the Kafka client (rdkafka) builds the librdkafka it links from source with CMake, with
# TLS (OpenSSL) for SASL_SSL brokers.
#
#   cmake, pkg-config, libssl-dev, zlib1g-dev, libcurl4-openssl-dev
#
# Idempotent: each package is checked first and only installed when missing, so running this
# twice (or on a machine that already has everything) changes nothing and needs no network.
# `deploy/run-local.sh` and `deploy/install-test-deps.sh` both run it.
set -euo pipefail

log() { printf 'install-build-deps: %s\n' "$*"; }
export DEBIAN_FRONTEND=noninteractive

missing=()
for pkg in cmake pkg-config libssl-dev zlib1g-dev libcurl4-openssl-dev; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    log "build dependencies present"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    log "need root to apt-get install ${missing[*]} (or install them yourself)" >&2
    exit 1
fi
log "apt-get update (once, before installing)"
apt-get update -qq
log "apt-get install ${missing[*]}"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "done"
