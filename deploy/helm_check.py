"""Offline checks of the Helm chart helm/uaprof (run by deploy/helm-check.sh).

1. `helm lint --strict` (Helm's Go SDK through helm-python-sdk) for every good values file.
2. `helm template` of the same files, and of a copy of the chart with dashboards and rule
   files, with Grafana dashboards and the PrometheusRule turned on.
3. Every rendered manifest against the Kubernetes OpenAPI schemas of each version in
   KUBE_VERSIONS (kubernetes-validate, strict: unknown fields are errors). The Prometheus
   Operator's kinds are not in those schemas; they get a structural check here.
4. Every Deployment run as the kubelet would run it, minus the container runtime: its
   ConfigMap files and emptyDirs become local directories, its Secret references get test
   values (a password with quotes and backslashes), its init container's shell script runs
   with /bin/sh, `$(VAR)` references in its env are expanded, and the real binary runs with
   the container's args and env plus `--check-config`. The effective configuration it prints
   must carry the role of the tier, the secrets, the telemetry values, and a shutdown_grace
   that terminationGracePeriodSeconds covers.
5. Every file in deploy/helm-bad-values/ must be refused, with the message its first line
   names (`# refused: <text>`).
6. The configuration keys values.schema.json offers must be the binary's, both ways: every
   key of its tables is one the binary prints in `--check-config`, and every key the binary
   prints is offered or set by the chart.
7. The chart's dashboards/ and rules/ copies must equal deploy/grafana/ and deploy/prometheus/.

Usage: python3 deploy/helm_check.py --binary target/debug/uaprof
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib.metadata import version as package_version
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "uaprof"
BAD_VALUES = ROOT / "deploy" / "helm-bad-values"
# The oldest version the chart supports (Chart.yaml kubeVersion), one carriers commonly run
# on long-term-support distributions, and a recent one.
KUBE_VERSIONS = ["1.29.0", "1.31.0", "1.34.0"]
RELEASE, NAMESPACE = "uaprof", "sip"
# Secret values the simulated pods get: characters a TOML string must escape, and ones that
# are safe in a URL's password part (Redis passwords must be URL-safe).
KAFKA_PASSWORD = 'k"a\\f ka$1'
REDIS_PASSWORD = "r3d1s-Pa55.word"

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"  FAIL {msg}")


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def load_values(path: Path | None) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path else {}


def lint(name: str, values: dict) -> None:
    report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE_VERSIONS[0])
    # Severity 1 is informational (Chart.yaml "icon is recommended"); 2 and 3 fail.
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if bad or report.get("errors"):
        fail(f"helm lint --strict ({name}): {bad or report['errors']}")
    else:
        ok(f"helm lint --strict ({name})")


def render(chart_dir: Path, values: dict) -> list[dict]:
    with helm.Chart.load(str(chart_dir)) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def notes(chart_dir: Path, values: dict) -> str:
    with helm.Chart.load(str(chart_dir)) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def check_crd_kind(doc: dict) -> str | None:
    """The Prometheus Operator's kinds: the fields this chart writes, checked by hand."""
    spec = doc.get("spec") or {}
    if doc["kind"] == "ServiceMonitor":
        eps = spec.get("endpoints") or []
        if not spec.get("selector") or not eps or not all(e.get("port") for e in eps):
            return "ServiceMonitor needs spec.selector and endpoints with a port"
        return None
    if doc["kind"] == "PrometheusRule":
        groups = spec.get("groups")
        if not isinstance(groups, list) or not groups:
            return "PrometheusRule needs spec.groups"
        for g in groups:
            if not g.get("name") or not isinstance(g.get("rules"), list):
                return f"rule group without name or rules: {g!r:.80}"
            for r in g["rules"]:
                if not r.get("expr") or not (r.get("alert") or r.get("record")):
                    return f"rule without expr and alert/record in group {g['name']}"
        return None
    return f"no schema for {doc['apiVersion']} {doc['kind']}"


LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PORT_NAME = re.compile(r"^(?=.{1,15}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_names(doc: dict) -> list[str]:
    """The name rules the API server applies and the OpenAPI schemas do not carry."""
    what = f"{doc['kind']}/{doc['metadata']['name']}"
    bad = []
    # Services and the labels derived from names are DNS labels; the others are at most
    # subdomains, and this chart's names are labels throughout.
    if not LABEL.match(doc["metadata"]["name"]):
        bad.append(f"{what}: name is not a DNS label")
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    for v in pod.get("volumes", []):
        if not LABEL.match(v["name"]):
            bad.append(f"{what}: volume name {v['name']!r} is not a DNS label")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for p in c.get("ports", []):
            if not PORT_NAME.match(p.get("name", "")):
                bad.append(f"{what}: port name {p.get('name')!r} is not an IANA service name")
    for p in doc.get("spec", {}).get("ports", []) if doc["kind"] == "Service" else []:
        if not PORT_NAME.match(p.get("name", "")):
            bad.append(f"{what}: port name {p.get('name')!r} is not an IANA service name")
    return bad


def validate_k8s(name: str, docs: list[dict]) -> None:
    for version in KUBE_VERSIONS:
        errors = [e for doc in docs for e in check_names(doc)]
        for doc in docs:
            what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                problem = check_crd_kind(doc)
                if problem:
                    errors.append(f"{what}: {problem}")
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                errors.append(f"{what}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{what}: {e}")
        if errors:
            fail(f"kubernetes-validate --strict {version} ({name}): " + "; ".join(errors))
        else:
            ok(f"kubernetes-validate --strict {version} ({name}): {len(docs)} manifests")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of env values ($$ escapes, unknown names stay)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def pod_env(container: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[(ref["name"], ref["key"])]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "10.1.2.3"
        else:
            raise ValueError(f"env {e['name']}: unsupported source")
    return env


def run_pod(name: str, docs: list[dict], binary: Path, values: dict) -> None:
    """Runs each Deployment's init container and --check-config of its container."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    secrets = {}
    redis_auth = values.get("redis", {}).get("auth", {})
    if redis_auth.get("existingSecret"):
        secrets[(redis_auth["existingSecret"], redis_auth.get("passwordKey", "password"))] = REDIS_PASSWORD
    sasl = values.get("kafka", {}).get("sasl", {}).get("passwordSecret", {})
    if sasl.get("name"):
        secrets[(sasl["name"], sasl.get("key", "password"))] = KAFKA_PASSWORD
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        tier = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = dep["spec"]["template"]["spec"]
        with tempfile.TemporaryDirectory(prefix=f"uaprof-{tier}-") as tmp:
            vols: dict[str, Path] = {}
            for v in spec["volumes"]:
                d = Path(tmp, "vol", v["name"])
                d.mkdir(parents=True)
                if "configMap" in v:
                    data = configmaps[v["configMap"]["name"]]["data"]
                    for item in v["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                        (d / item["path"]).write_text(data[item["key"]])
                vols[v["name"]] = d

            def local(c: dict):
                # Each mount path becomes its volume's local directory, in env and args.
                mounts = sorted(((m["mountPath"], vols[m["name"]]) for m in c.get("volumeMounts", [])),
                                key=lambda mp: -len(mp[0]))

                def remap(s: str) -> str:
                    for mp, d in mounts:
                        s = s.replace(mp, str(d))
                    return s
                return remap

            base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
            for init in spec.get("initContainers", []):
                remap = local(init)
                env = {k: remap(v) for k, v in pod_env(init, secrets).items()}
                cmd = [remap(a) for a in init["command"] + init.get("args", [])]
                r = subprocess.run(cmd, env=base_env | env, capture_output=True, text=True)
                if r.returncode != 0:
                    fail(f"{name}: {tier} init container {init['name']} exited {r.returncode}: {r.stderr.strip()}")
                    return
            (c,) = spec["containers"]
            remap = local(c)
            env = {k: remap(v) for k, v in pod_env(c, secrets).items()}
            args = [remap(a) for a in c.get("args", [])]
            r = subprocess.run([str(binary), *args, "--check-config"], env=base_env | env,
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                fail(f"{name}: {tier}: uaprof --check-config exited {r.returncode}: {r.stderr.strip()}")
                continue
            eff = tomllib.loads(r.stdout)
            problems = []
            if eff.get("role") != tier:
                problems.append(f"role {eff.get('role')!r}")
            grace = parse_seconds(eff["shutdown_grace"])
            if spec["terminationGracePeriodSeconds"] <= grace:
                problems.append(f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} "
                                f"does not exceed shutdown_grace {grace}s")
            if values.get("redis", {}).get("auth", {}).get("existingSecret"):
                urls = eff.get("redis", {}).get("urls", [])
                if not urls or not all(f":{REDIS_PASSWORD}@" in u for u in urls):
                    problems.append(f"redis urls without the password: {urls}")
            if sasl.get("name") and eff.get("kafka", {}).get("properties", {}).get("sasl.password") != KAFKA_PASSWORD:
                problems.append("kafka sasl.password is not the secret's value")
            tel = values.get("telemetry", {})
            if tel.get("otlpEndpoint"):
                # The tier's own config.telemetry keys win over the shared values, key by key.
                own = values.get(tier, {}).get("config", {}).get("telemetry", {})
                got = eff.get("telemetry", {})
                want = own.get("otlp_endpoint", tel["otlpEndpoint"])
                if got.get("otlp_endpoint") != want:
                    problems.append(f"telemetry.otlp_endpoint {got.get('otlp_endpoint')!r}, not {want!r}")
                name_ok = (got.get("service_name") == own["service_name"] if "service_name" in own
                           else str(got.get("service_name", "")).endswith(f"-{tier}"))
                if not name_ok:
                    problems.append(f"telemetry.service_name {got.get('service_name')!r} is neither the "
                                    f"tier's own nor one naming the tier")
            if problems:
                fail(f"{name}: {tier}: effective configuration: {'; '.join(problems)}")
            else:
                inits = f"{len(spec.get('initContainers', []))} init container(s) ran, "
                ok(f"{name}: {tier} pod: {inits}uaprof --check-config accepted its configuration "
                   f"(shutdown_grace {grace:g}s, terminationGracePeriodSeconds "
                   f"{spec['terminationGracePeriodSeconds']})")


def parse_seconds(d: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)\s*([a-z]+)", d):
        total += float(num) * units[unit]
    return total


# Keys of the binary's file the chart sets itself, or leaves to the binary on purpose
# (node_id: its default carries the pid and a random part, so a restarted container never
# takes its predecessor's leases for its own), per table ("" is the top level).
CHART_SETS = {
    "": {"role", "data_dir", "admin_listen", "http_listen", "shutdown_grace", "grpc_listen",
         "content_url", "node_id", "redis", "kafka", "notifier", "content",
         "provision_listen", "provisioning", "http_tls", "provision_tls", "http3_listen",
         "http3_alt_svc_port"},
    "notifier": {"udp", "tcp", "advertise", "tls", "digest"},
    "content": {"public_base_url", "url_signing_key_files", "fetch_auth"},
    "redis": {"urls", "cluster"},
    "kafka": {"brokers", "properties"},
}
# Keys whose default is unset, so --check-config does not print them.
UNSET_BY_DEFAULT = {"content": {"max_fetch_rate"}, "notifier": {"pnp_multicast"}}


def check_schema_keys(binary: Path) -> None:
    r = subprocess.run([str(binary), "--check-config", "--redis", "redis://x:1/", "--kafka", "k:9092"],
                       env={"PATH": os.environ.get("PATH", "")}, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"uaprof --check-config of the defaults exited {r.returncode}: {r.stderr.strip()}")
        return
    printed = tomllib.loads(r.stdout)
    props = json.loads((CHART / "values.schema.json").read_text())["properties"]
    offered = {
        "": props["notifier"]["properties"]["config"]["properties"].keys() - {"notifier"},
        "notifier": props["notifier"]["properties"]["config"]["properties"]["notifier"]["properties"].keys(),
        "content": props["content"]["properties"]["config"]["properties"]["content"]["properties"].keys(),
        "redis": props["redis"]["properties"]["config"]["properties"].keys(),
        "kafka": props["kafka"]["properties"]["config"]["properties"].keys(),
    }
    problems = []
    for table, keys in offered.items():
        have = set(printed if table == "" else printed[table]) | UNSET_BY_DEFAULT.get(table, set())
        for k in sorted(set(keys) - have):
            problems.append(f"schema offers {table or 'top-level'} key {k!r}, the binary has none")
        for k in sorted(have - set(keys) - CHART_SETS.get(table, set())):
            problems.append(f"the binary has {table or 'top-level'} key {k!r}, the chart neither offers nor sets it")
    if problems:
        fail("values.schema.json and the binary's configuration differ: " + "; ".join(problems))
    else:
        ok("values.schema.json offers exactly the binary's configuration keys the chart does not set")


def check_bad_values() -> None:
    files = sorted(BAD_VALUES.glob("*.yaml"))
    if len(files) < 2:
        fail(f"{BAD_VALUES}: expected at least two bad values files")
    for f in files:
        first = f.read_text().splitlines()[0]
        m = re.match(r"#\s*refused:\s*(.+)", first)
        if not m:
            fail(f"{f.name}: first line must be '# refused: <part of the message>'")
            continue
        expected = m.group(1).strip()
        try:
            render(CHART, load_values(f))
        except (helm.HelmValuesError, helm.HelmRenderError) as e:
            if expected in str(e):
                ok(f"{f.name} refused: {expected}")
            else:
                fail(f"{f.name} refused, but not with {expected!r}: {e}")
        else:
            fail(f"{f.name} was accepted")


def same_files(src: Path, dst: Path, patterns: list[str], skip: str | None) -> None:
    """dst must hold exactly the files of src matching patterns (less those matching skip)."""
    if not src.is_dir():
        ok(f"{src.relative_to(ROOT)} does not exist yet: nothing for {dst.relative_to(ROOT)} to copy")
        return
    def names(d: Path) -> set[str]:
        return {p.name for pat in patterns for p in d.glob(pat) if not (skip and re.search(skip, p.name))}
    want, have = names(src), names(dst)
    diff = sorted(n for n in want & have if not filecmp.cmp(src / n, dst / n, shallow=False))
    if want != have or diff:
        fail(f"{dst.relative_to(ROOT)} differs from {src.relative_to(ROOT)} (missing {sorted(want - have)}, "
             f"extra {sorted(have - want)}, changed {diff}): run bash deploy/helm-sync.sh")
    else:
        ok(f"{dst.relative_to(ROOT)} has the {len(want)} files of {src.relative_to(ROOT)}")


def monitoring_chart(tmp: Path) -> Path:
    """A copy of the chart with dashboards and rules: the chart's own copies when it has them,
    else one small dashboard and one rule file made here for the test."""
    chart = tmp / "uaprof"
    shutil.copytree(CHART, chart)
    if not list(chart.glob("dashboards/*.json")):
        (chart / "dashboards" / "test_overview.json").write_text(json.dumps(
            {"title": "uaprof test", "uid": "uaprof-test", "schemaVersion": 39, "panels": [
                {"type": "timeseries", "title": "SUBSCRIBEs", "targets": [
                    {"expr": "sum(rate(sip_requests_total[1m]))"}]}]}, indent=2))
    if not list(chart.glob("rules/*.yaml")):
        (chart / "rules" / "test.yaml").write_text(yaml.safe_dump({"groups": [
            {"name": "uaprof-test", "rules": [
                {"alert": "UaprofDown", "expr": "up{job=~\".*uaprof.*\"} == 0", "for": "5m",
                 "labels": {"severity": "critical"}, "annotations": {"summary": "a uaprof pod is down"}}]}]}))
    return chart


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True, type=Path, help="the uaprof binary")
    args = ap.parse_args()
    if not os.access(args.binary, os.X_OK):
        print(f"helm-check: no uaprof binary at {args.binary}", file=sys.stderr)
        return 2
    print(f"helm-check: Helm SDK {helm.helm_sdk_version()}, kubernetes-validate "
          f"{package_version('kubernetes-validate')}, Kubernetes {', '.join(KUBE_VERSIONS)}")

    good = [("default values", None)] + [(f"ci/{p.name}", p) for p in sorted((CHART / "ci").glob("*.yaml"))]
    for name, path in good:
        values = load_values(path)
        lint(name, values)
        try:
            docs = render(CHART, values)
        except (helm.HelmValuesError, helm.HelmRenderError) as e:
            fail(f"helm template ({name}): {e}")
            continue
        ok(f"helm template ({name}): {', '.join(sorted({d['kind'] for d in docs}))}")
        validate_k8s(name, docs)
        run_pod(name, docs, args.binary, values)

    with tempfile.TemporaryDirectory(prefix="uaprof-chart-") as tmp:
        chart = monitoring_chart(Path(tmp))
        values = load_values(CHART / "ci" / "production-values.yaml")
        values.setdefault("metrics", {})["prometheusRule"] = {"enabled": True}
        values["grafana"] = {"dashboards": {"enabled": True}}
        name = "production values + dashboards + rules"
        docs = render(chart, values)
        kinds = [d["kind"] for d in docs]
        dash = [d for d in docs if d["kind"] == "ConfigMap" and
                d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        if "PrometheusRule" not in kinds or not dash:
            fail(f"{name}: no PrometheusRule or no labelled dashboard ConfigMap: {kinds}")
        else:
            ok(f"helm template ({name}): {len(dash)} dashboard ConfigMaps, a PrometheusRule")
        validate_k8s(name, docs)
        text = notes(chart, values)
        if "PrometheusRule" not in text or "grafana_dashboard" not in text:
            fail(f"{name}: NOTES.txt does not mention the rules and dashboards")

    # The provisioning API: on the pods' loopback without tokens, on Service -provision with.
    for name, values, want in (("default values", {}, False),
                               ("ci/production-values.yaml", load_values(CHART / "ci" / "production-values.yaml"), True)):
        docs = render(CHART, values)
        has = any(d["kind"] == "Service" and d["metadata"]["name"].endswith("-provision") for d in docs)
        cms = "\n".join(v for d in docs if d["kind"] == "ConfigMap" for v in (d.get("data") or {}).values())
        loopback = 'provision_listen = "127.0.0.1:' in cms
        if has != want or loopback == want:
            fail(f"{name}: provisioning Service {has}, loopback listener {loopback}; want the Service {want}")
        else:
            ok(f"{name}: provisioning API {'on Service -provision' if want else 'on the pods loopback only'}")

    # Signed URLs: the Secret is mounted on the content pods and its files configured.
    docs = render(CHART, {"content": {"urlSigning": {"existingSecret": "url-keys", "keys": ["new", "old"]}}})
    content = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-content"))
    vols = [v for v in content["spec"]["template"]["spec"]["volumes"] if v.get("secret", {}).get("secretName") == "url-keys"]
    cms = "\n".join(v for d in docs if d["kind"] == "ConfigMap" for v in (d.get("data") or {}).values())
    if vols and 'url_signing_key_files = ["/etc/uaprof/url-signing/new", "/etc/uaprof/url-signing/old"]' in cms:
        ok("content.urlSigning: Secret mounted, url_signing_key_files set in order")
    else:
        fail(f"content.urlSigning: volumes {vols}, config {cms[:200]!r}")

    # HTTPS: the TLS Secret is mounted on the content pods, both listeners use it, and the
    # in-cluster document URLs say https.
    docs = render(CHART, {"content": {"tls": {"existingSecret": "content-tls"}}})
    content = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-content"))
    vols = [v for v in content["spec"]["template"]["spec"]["volumes"] if v.get("secret", {}).get("secretName") == "content-tls"]
    cms = "\n".join(v for d in docs if d["kind"] == "ConfigMap" for v in (d.get("data") or {}).values())
    if vols and "[http_tls]" in cms and "[provision_tls]" in cms and 'public_base_url = "https://' in cms:
        ok("content.tls: Secret mounted, [http_tls] and [provision_tls] set, https URLs")
    else:
        fail(f"content.tls: volumes {vols}, config {cms[:300]!r}")

    # SIP over TLS: the Secret is mounted on the notifier pods, [notifier.tls] set, and the
    # SIP Service carries port sip-tls.
    docs = render(CHART, {"notifier": {"tls": {"existingSecret": "sip-tls"}}})
    nd = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-notifier"))
    vols = [v for v in nd["spec"]["template"]["spec"]["volumes"] if v.get("secret", {}).get("secretName") == "sip-tls"]
    svc_ports = [p["name"] for d in docs if d["kind"] == "Service" and "-sip" in d["metadata"]["name"]
                 for p in d["spec"]["ports"]]
    cms = "\n".join(v for d in docs if d["kind"] == "ConfigMap" for v in (d.get("data") or {}).values())
    if vols and "[notifier.tls]" in cms and "sip-tls" in svc_ports:
        ok("notifier.tls: Secret mounted, [notifier.tls] set, Service port sip-tls")
    else:
        fail(f"notifier.tls: volumes {vols}, Service ports {svc_ports}")

    # Digest on SUBSCRIBE and client certificates for provisioning: Secrets mounted, files set.
    docs = render(CHART, {"notifier": {"digest": {"existingSecret": "sip-digest", "realm": "voice.example"}},
                          "content": {"tls": {"existingSecret": "content-tls", "clientCaSecret": "oss-ca"}}})
    secrets = {v.get("secret", {}).get("secretName") for d in docs if d["kind"] == "Deployment"
               for v in d["spec"]["template"]["spec"]["volumes"]}
    cms = "\n".join(v for d in docs if d["kind"] == "ConfigMap" for v in (d.get("data") or {}).values())
    want = ["[notifier.digest]", 'credentials_file = "/etc/uaprof/sip-digest/credentials"',
            'client_ca_file = "/etc/uaprof/client-ca/ca.crt"']
    if {"sip-digest", "oss-ca"} <= secrets and all(w in cms for w in want):
        ok("notifier.digest and content.tls.clientCaSecret: Secrets mounted, files configured")
    else:
        fail(f"digest/client CA: secrets {secrets}, missing {[w for w in want if w not in cms]}")

    # HTTP/3 and fetch authentication: UDP ports on the pods and the Service, the phones'
    # CA on [http_tls] (not only on provisioning), Digest files mounted and configured.
    docs = render(CHART, {"content": {"tls": {"existingSecret": "content-tls"}, "http3": {"enabled": True},
                                      "fetchAuth": {"clientCaSecret": "phone-ca",
                                                    "digest": {"existingSecret": "fetch-digest",
                                                               "realm": "profiles.example"}}}})
    content = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-content"))
    pod = content["spec"]["template"]["spec"]
    udp = [p for c in pod["containers"] for p in c.get("ports", []) if p.get("protocol") == "UDP"]
    svc_udp = [p for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-content")
               for p in d["spec"]["ports"] if p.get("protocol") == "UDP"]
    secrets = {v.get("secret", {}).get("secretName") for v in pod["volumes"]}
    cms = "\n".join(v for d in docs if d["kind"] == "ConfigMap" for v in (d.get("data") or {}).values())
    want = ['http3_listen = "0.0.0.0:8080"', "http3_alt_svc_port = 80", "[content.fetch_auth]",
            "client_certificates = true", 'client_ca_file = "/etc/uaprof/phone-ca/ca.crt"',
            'credentials_file = "/etc/uaprof/fetch-digest/credentials"']
    missing = [w for w in want if w not in cms]
    if udp and svc_udp and {"phone-ca", "fetch-digest"} <= secrets and not missing:
        ok("content.http3 and content.fetchAuth: UDP ports, Secrets mounted, files configured")
    else:
        fail(f"http3/fetchAuth: pod UDP {udp}, Service UDP {svc_udp}, secrets {secrets}, missing {missing}")

    default_notes = notes(CHART, {})
    for needle in ("NEXT: set notifier.advertise", "NEXT: set content.publicBaseUrl",
                   "NEXT: give the OSS a token"):
        if needle not in default_notes:
            fail(f"NOTES.txt of the default values lacks {needle!r}")
    ok("NOTES.txt names the next steps")

    check_schema_keys(args.binary)
    check_bad_values()
    same_files(ROOT / "deploy" / "grafana", CHART / "dashboards", ["*.json"], None)
    same_files(ROOT / "deploy" / "prometheus", CHART / "rules", ["*.yaml", "*.yml"], r"test")

    if failures:
        print(f"helm-check: {len(failures)} failed")
        return 1
    print("helm-check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
