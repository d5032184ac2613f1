#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, on Debian 12 (bookworm), as root.
#
# Idempotent: each dependency is checked first and only installed when missing, so running this
# twice (or on a machine that already has everything) changes nothing and needs no network.
# `apt-get update` runs at most once, and only when something must actually be installed, because
# the apt lists on a fresh machine may be missing or stale.
#
# Installed:
#   build deps    deploy/install-build-deps.sh (cmake, libssl-dev, ... for librdkafka)
#   sipp          Debian `sip-tester`  interop scenarios in loadtest/sipp/ (an independent SIP peer)
#   redis-server  Debian `redis-server` and `redis-tools` (redis-cli)  the Redis tests; the
#                 `testkit` crate starts its own servers and clusters on free loopback ports
#   promtool      Debian `prometheus`  deploy/check-monitoring.sh: the alert rules, their unit
#                 tests and the dashboards' PromQL (the Prometheus server it also installs is
#                 not started)
#   tansu         `cargo install tansu --features dynostore,libsql`: a Kafka-protocol broker
#                 (SQLite storage, so a restarted broker keeps its records). Building it takes
#                 about 15 minutes once; an installed binary (PATH, ~/.cargo/bin or $TANSU) is
#                 reused.
#   iproute2      `ip netns` and veth pairs: the multicast plug-and-play test puts a phone
#                 on a LAN of its own (needs root, as the rest of this script)
#   python venv   $UAPROF_VENV (default ~/.cache/uaprof/venv) with confluent-kafka and
#                 protobuf from PyPI: an OSS-side producer this project did not write, and
#                 grpcio-tools to compile proto/ for it; and the Helm chart's checkers
#                 (deploy/helm-check.sh): helm-python-sdk (Helm's Go SDK as a library, for
#                 helm lint and helm template without a helm binary), kubernetes-validate
#                 (the Kubernetes API schemas, offline) and yamllint; aioquic, an HTTP/3
#                 client this project did not write, for the content tier's HTTP/3 test.
# UAPROF_TEST_DEPS="no-kafka" skips tansu and the venv's Kafka packages (the Kafka tests then
# fail, loudly).
#
# The test runner is plain `cargo test`; cargo-nextest is deliberately not required.
set -euo pipefail

UAPROF_TEST_DEPS="${UAPROF_TEST_DEPS:-}"
TANSU_VERSION="0.6.0"
VENV="${UAPROF_VENV:-$HOME/.cache/uaprof/venv}"

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

# --- iproute2: network namespaces and veth pairs (the multicast plug-and-play test) ----------
install_iproute() {
    if command -v ip >/dev/null && ip netns list >/dev/null 2>&1; then
        log "iproute2 present: $(command -v ip)"
        return
    fi
    apt_install iproute2
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

# --- promtool: checks deploy/prometheus and deploy/grafana offline ----------------------------
install_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        log "promtool already present: $(command -v promtool)"
        return
    fi
    apt_install prometheus
    command -v promtool >/dev/null 2>&1 || { log "prometheus installed but no promtool on PATH" >&2; exit 1; }
    log "installed promtool: $(command -v promtool)"
}

# --- kafka: tansu, the broker the Kafka tests start (services/testkit/src/kafka.rs) ----------
install_kafka() {
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    local found=""
    if [[ -n "${TANSU:-}" && -x "${TANSU}" ]]; then found="$TANSU"
    elif command -v tansu >/dev/null 2>&1; then found="$(command -v tansu)"
    elif [[ -x "$cargo_bin/tansu" ]]; then found="$cargo_bin/tansu"
    fi
    if [[ -n "$found" ]]; then
        log "tansu already present: $found"
        return
    fi
    log "cargo install tansu $TANSU_VERSION --features dynostore,libsql (builds from crates.io; ~15 min once)"
    cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql --locked --quiet
    log "installed tansu: $cargo_bin/tansu"
}

# --- python: a Kafka producer this project did not write; the Helm chart's checkers ---------
# Pinned: helm-python-sdk 0.2.2 carries Helm SDK v4.2.3; kubernetes-validate 1.37.0 carries
# the schemas of Kubernetes 1.25 to 1.37.
HELM_PY_PACKAGES=('helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0' 'yamllint==1.38.0'
    'aioquic==1.*')
HELM_PY_IMPORTS='helm_python, kubernetes_validate, yamllint, aioquic'
KAFKA_PY_PACKAGES=('confluent-kafka==2.*' 'protobuf>=5' 'grpcio-tools>=1.60')
KAFKA_PY_IMPORTS='confluent_kafka, google.protobuf, grpc_tools'
install_python() {
    local py="$VENV/bin/python" imports="$HELM_PY_IMPORTS" packages=("${HELM_PY_PACKAGES[@]}")
    if ! wants no-kafka; then
        imports="$imports, $KAFKA_PY_IMPORTS"
        packages+=("${KAFKA_PY_PACKAGES[@]}")
    fi
    if [[ -x "$py" ]] && "$py" -c "import $imports" 2>/dev/null; then
        log "python venv present: $VENV"
        return
    fi
    if [[ ! -x "$py" ]]; then
        if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            apt_install python3-venv
        fi
        log "creating python venv $VENV"
        python3 -m venv "$VENV"
    fi
    log "pip install into $VENV: ${packages[*]}"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
    "$py" -c "import $imports" || { log "python venv incomplete" >&2; exit 1; }
}

bash "$(dirname "${BASH_SOURCE[0]}")/install-build-deps.sh"
install_sipp
install_iproute
install_redis
install_promtool
if wants no-kafka; then
    log "tansu and the Kafka python packages skipped (UAPROF_TEST_DEPS=no-kafka)"
else
    install_kafka
fi
install_python
log "done"
