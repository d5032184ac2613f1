#!/usr/bin/env bash
# Copies the Grafana dashboards (deploy/grafana/*.json) and the Prometheus rule files
# (deploy/prometheus/*.yaml, not their promtool tests) into the Helm chart, which can package
# only files inside itself. deploy/helm-check.sh fails while the copies differ.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sync() { # sync SRC DST GLOB...
    local src=$1 dst=$2; shift 2
    find "$dst" -maxdepth 1 -type f ! -name README.md -delete
    [[ -d "$src" ]] || return 0
    for pat in "$@"; do
        for f in "$src"/$pat; do
            [[ -f "$f" && "$(basename "$f")" != *test* ]] && cp "$f" "$dst/"
        done
    done
    return 0
}
shopt -s nullglob
sync deploy/grafana helm/uaprof/dashboards '*.json'
sync deploy/prometheus helm/uaprof/rules '*.yaml' '*.yml'
echo "helm-sync: $(ls helm/uaprof/dashboards | grep -vc README.md) dashboards," \
     "$(ls helm/uaprof/rules | grep -vc README.md) rule files"
