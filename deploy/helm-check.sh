#!/usr/bin/env bash
# Offline checks of the Helm chart helm/uaprof: yamllint of its static YAML, then
# deploy/helm_check.py (helm lint and helm template through Helm's Go SDK, every manifest
# against the Kubernetes schemas, each rendered pod's configuration through the real binary's
# --check-config, bad values refused, dashboard and rule copies current). No cluster, no helm
# binary, no network. deploy/test.sh runs it after the cargo tests.
#
# Needs the venv deploy/install-test-deps.sh builds ($UAPROF_VENV) and the uaprof binary:
# $UAPROF_BIN, else ${CARGO_TARGET_DIR:-target}/debug/uaprof, built when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${UAPROF_VENV:-$HOME/.cache/uaprof/venv}"
if ! "$VENV/bin/python" -c 'import helm_python, kubernetes_validate, yamllint' 2>/dev/null; then
    echo "helm-check: $VENV lacks helm-python-sdk, kubernetes-validate or yamllint;" \
         "run bash deploy/install-test-deps.sh" >&2
    exit 1
fi

bin="${UAPROF_BIN:-${CARGO_TARGET_DIR:-target}/debug/uaprof}"
if [[ ! -x "$bin" ]]; then
    echo "helm-check: building $bin"
    cargo build --locked --quiet --bin uaprof
fi

echo "helm-check: yamllint"
"$VENV/bin/yamllint" --strict -d '{extends: default, rules: {line-length: {max: 120},
    document-start: disable, truthy: {check-keys: false}}}' \
    helm/uaprof/Chart.yaml helm/uaprof/values.yaml helm/uaprof/ci deploy/helm-bad-values \
    $(find helm/uaprof/rules -name '*.yaml' -o -name '*.yml')

exec "$VENV/bin/python" deploy/helm_check.py --binary "$bin"
