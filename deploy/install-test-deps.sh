#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, on Debian 12 (bookworm), as root.
#
# Idempotent: each dependency is checked first and only installed when missing, so running this
# twice (or on a machine that already has everything) changes nothing and needs no network.
# `apt-get update` runs at most once, and only when something must actually be installed, because
# the apt lists on a fresh machine may be missing or stale.
#
# Always installed:
#   sipp          Debian `sip-tester`  interop scenarios in loadtest/sipp/ (an independent SIP peer)
#   redis-server  Debian `redis-server` and `redis-tools` (redis-cli)  the Redis tests; the
#                 `testkit` crate starts its own servers and clusters on free loopback ports
# Opt-in via UAPROF_TEST_DEPS (comma/space separated words, e.g. UAPROF_TEST_DEPS="kafka"):
#   kafka       `cargo install tansu --features dynostore`  a Kafka-protocol broker for the bus tests
#
# The test runner is plain `cargo test`; cargo-nextest is deliberately not required.
set -euo pipefail

# A later issue flips this default to include kafka once its tests exist.
UAPROF_TEST_DEPS="${UAPROF_TEST_DEPS:-}"

log() { printf 'install-test-deps: %s\n' "$*"; }

# Debian frontend must never prompt: CI runs with no standard input.
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_install() {
    if [[ "$(id -u)" -ne 0 ]]; then
        log "need root to apt-get install $*" >&2
        exit 1
    fi
    if [[ "$apt_updated" -eq 0 ]]; then
        log "apt-get update (once, before installing)"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

wants() {
    # True when UAPROF_TEST_DEPS names $1 as a word.
    [[ " ${UAPROF_TEST_DEPS//,/ } " == *" $1 "* ]]
}

install_sipp() {
    if command -v sipp >/dev/null 2>&1; then
        log "sipp already present: $(command -v sipp)"
        return
    fi
    apt_install sip-tester
    command -v sipp >/dev/null 2>&1 || { log "sip-tester installed but no sipp on PATH" >&2; exit 1; }
    log "installed sipp: $(command -v sipp)"
}

# --- redis: always (services/testkit starts real redis-server processes) ----------------------
install_redis() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        log "redis-server already present: $(command -v redis-server) (redis-cli: $(command -v redis-cli))"
        return
    fi
    apt_install redis-server redis-tools
    # The tests start their own redis-server on a free port; the packaged system service is not
    # used, and on machines without systemd it does not start anyway.
    command -v redis-server >/dev/null 2>&1 || { log "redis-server installed but not on PATH" >&2; exit 1; }
    command -v redis-cli >/dev/null 2>&1 || { log "redis-tools installed but no redis-cli on PATH" >&2; exit 1; }
    log "installed redis-server: $(command -v redis-server) (redis-cli: $(command -v redis-cli))"
}

# --- kafka: enabled by UAPROF_TEST_DEPS=kafka (a later issue makes it the default) -----------
install_kafka() {
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    if command -v tansu >/dev/null 2>&1; then
        log "tansu already present: $(command -v tansu)"
        return
    fi
    if [[ -x "$cargo_bin/tansu" ]]; then
        log "tansu already present: $cargo_bin/tansu (add $cargo_bin to PATH)"
        return
    fi
    log "cargo install tansu --features dynostore (builds from crates.io; takes a while)"
    cargo install tansu --features dynostore
    log "installed tansu: $cargo_bin/tansu"
}

install_sipp
install_redis
if wants kafka; then install_kafka; else log "tansu skipped (UAPROF_TEST_DEPS has no 'kafka')"; fi
log "done"
