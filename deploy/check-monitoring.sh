#!/usr/bin/env bash
# Checks the dashboards and alert rules offline with promtool (Debian `prometheus`, installed by
# deploy/install-test-deps.sh):
#   * deploy/prometheus/uaprof-rules.yaml: `promtool check rules` and its unit tests
#     (`promtool test rules deploy/prometheus/uaprof-rules.test.yaml`);
#   * deploy/grafana/*.json: the shape Grafana and the Helm chart rely on (schemaVersion, the
#     `datasource`/`job`/`instance` variables, a title, unit and legend per panel), and every
#     PromQL expression, panels' and variables' alike. promtool has no offline query check, so
#     the expressions, with Grafana's variables replaced by values of the same kind, become
#     recording rules of a temporary file that `promtool check rules` parses.
# That the metrics they name exist is services/server/tests/dashboards.rs (cargo test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v promtool >/dev/null 2>&1 || {
    echo "check-monitoring: promtool not found (run deploy/install-test-deps.sh)" >&2
    exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

promtool check rules deploy/prometheus/uaprof-rules.yaml
(cd deploy/prometheus && promtool test rules uaprof-rules.test.yaml)

python3 - "$tmp/dashboards.rules.yaml" deploy/grafana/*.json <<'PY'
import json, re, sys

out, files = sys.argv[1], sys.argv[2:]
# Grafana's variables, replaced by values of the same kind so the result is plain PromQL.
SUBST = [("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"),
         ("${job}", ".+"), ("$job", ".+"), ("${instance}", ".+"), ("$instance", ".+")]
errors, rules = [], []

def expr_of(q):
    m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", q)
    return m.group(1) if m else None

for path in files:
    name = path.rsplit("/", 1)[-1].removesuffix(".json")
    d = json.load(open(path))
    where = lambda what: f"{path}: {what}"
    if not d.get("uid") or not d.get("title"):
        errors.append(where("no uid or title"))
    if not 36 <= d.get("schemaVersion", 0) <= 41:
        errors.append(where(f"schemaVersion {d.get('schemaVersion')}"))
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append(where("no `datasource` variable of type prometheus"))
    for var in ("job", "instance"):
        if var not in variables:
            errors.append(where(f"no `{var}` variable"))
    exprs = []
    for v in variables.values():
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            e = expr_of(q or "")
            if e is None:
                errors.append(where(f"variable {v['name']}: not label_values(<selector>, <label>): {q!r}"))
            else:
                exprs.append((f"var_{v['name']}", e))
            if v.get("datasource", {}).get("uid") != "${datasource}":
                errors.append(where(f"variable {v['name']} does not use ${{datasource}}"))
    for p in d.get("panels", []):
        if p.get("type") == "row":
            continue
        pid = p.get("id")
        if not p.get("title"):
            errors.append(where(f"panel {pid} has no title"))
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(where(f"panel {pid} does not use ${{datasource}}"))
        if p.get("type") in ("timeseries", "stat") and not p["fieldConfig"]["defaults"].get("unit"):
            errors.append(where(f"panel {pid} ({p.get('title')}) has no unit"))
        if not p.get("targets"):
            errors.append(where(f"panel {pid} has no queries"))
        for t in p.get("targets", []):
            if not t.get("expr"):
                errors.append(where(f"panel {pid} query {t.get('refId')} has no expr"))
                continue
            if p.get("type") == "timeseries" and not t.get("legendFormat"):
                errors.append(where(f"panel {pid} query {t.get('refId')} has no legend"))
            if p.get("type") == "heatmap" and ("_bucket" not in t["expr"] or t.get("format") != "heatmap"):
                errors.append(where(f"heatmap {pid} is not drawn from _bucket series"))
            exprs.append((f"panel{pid}_{t['refId']}", t["expr"]))
    for key, e in exprs:
        for a, b in SUBST:
            e = e.replace(a, b)
        if "$" in e:
            errors.append(where(f"{key}: unknown Grafana variable left in {e!r}"))
        rules.append((f"dashboard_check:{name}:{key}", e))

with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard-expressions\n    rules:\n")
    for record, e in rules:
        f.write(f"      - record: {record}\n        expr: {json.dumps(e)}\n")
for e in errors:
    print(f"check-monitoring: {e}", file=sys.stderr)
print(f"check-monitoring: {len(rules)} dashboard expressions from {len(files)} dashboards")
sys.exit(1 if errors else 0)
PY
promtool check rules "$tmp/dashboards.rules.yaml"
echo "check-monitoring: ok"
