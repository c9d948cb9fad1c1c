#!/usr/bin/env python3
"""Static checks of deploy/ that need more than a parser (used by check.sh).

    python3 deploy/tools/deploycheck.py check [--rendered FILE]
    python3 deploy/tools/deploycheck.py sync-prometheusrule
    python3 deploy/tools/deploycheck.py dashboard-rules OUT.yml

`check` parses every YAML and JSON file, compares the PrometheusRule with the
rules file, checks that every alert has promtool cases where it fires and
where it does not, that rules and dashboard use only metric names the service
exports, and the Kubernetes, compose and Grafana wiring (names, ports, paths,
probes, security context, grace periods). With --rendered it also checks the
output of `kustomize build deploy/k8s/base`.

`sync-prometheusrule` rewrites k8s/base/prometheusrule.yaml from
prometheus/rules/gatekeeper.rules.yml (after editing the rules).

`dashboard-rules` writes the dashboard's queries (Grafana variables filled
in) as recording rules, so that `promtool check rules` parses every one.

Needs PyYAML (python3-yaml, or `pip install pyyaml`). Exits 1 on any failure.
"""

import json
import os
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - reported to the operator
    sys.exit("deploycheck: PyYAML is missing (apt-get install python3-yaml, or pip install pyyaml)")

DEPLOY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(DEPLOY, "prometheus/rules/gatekeeper.rules.yml")
RULES_TEST = os.path.join(DEPLOY, "prometheus/rules/gatekeeper.rules.test.yml")
PROM_CONFIG = os.path.join(DEPLOY, "prometheus/prometheus.yml")
PROMETHEUSRULE = os.path.join(DEPLOY, "k8s/base/prometheusrule.yaml")
K8S_BASE = os.path.join(DEPLOY, "k8s/base")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")
DASHBOARD = os.path.join(DEPLOY, "grafana/dashboards/gatekeeper.json")
GRAFANA_PROVISIONING = os.path.join(DEPLOY, "grafana/provisioning")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")

# The metric families the service exports (the contract, issue 5) and `up`.
KNOWN_METRICS = {
    "gatekeeper_decisions_total",
    "gatekeeper_refusals_total",
    "gatekeeper_http_request_duration_seconds",
    "gatekeeper_audit_append_seconds",
    "gatekeeper_audit_append_failures_total",
    "gatekeeper_audit_head_seq",
    "gatekeeper_ledger_batch_size",
    "gatekeeper_idempotent_replays_total",
    "gatekeeper_review_queue_depth",
    "gatekeeper_catalog_version",
    "gatekeeper_catalog_age_seconds",
    "gatekeeper_db_pool_connections",
    "gatekeeper_db_pool_wait_seconds",
    "gatekeeper_checkpoint_age_seconds",
    "gatekeeper_license_audit_mismatch",
    "gatekeeper_ready",
    "gatekeeper_build_info",
    "gatekeeper_impact_runs",
    "gatekeeper_impact_oldest_running_seconds",
    "gatekeeper_impact_actions_total",
    "gatekeeper_impact_runs_completed_total",
    "gatekeeper_impact_run_lag_seconds",
    "gatekeeper_webhook_deliveries_total",
    "gatekeeper_webhook_oldest_undelivered_seconds",
    "gatekeeper_webhook_endpoints_disabled",
    "gatekeeper_jwks_refreshes_total",
    "gatekeeper_jwks_age_seconds",
    "gatekeeper_jwks_keys",
    "gatekeeper_auth_failures_total",
}
HISTOGRAMS = {
    "gatekeeper_http_request_duration_seconds",
    "gatekeeper_audit_append_seconds",
    "gatekeeper_ledger_batch_size",
    "gatekeeper_db_pool_wait_seconds",
    "gatekeeper_impact_run_lag_seconds",
}

PROMETHEUSRULE_HEADER = """\
# GENERATED from deploy/prometheus/rules/gatekeeper.rules.yml by
#   python3 deploy/tools/deploycheck.py sync-prometheusrule
# Do not edit by hand: deploy/check.sh fails when the groups differ.
# Your Prometheus must select this object: add the label its
# ruleSelector expects (kube-prometheus-stack: release: <name>) in an overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: gatekeeper
  labels:
    app.kubernetes.io/name: gatekeeper
spec:
"""


class Checker:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def ok(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failures.append(what)
        return cond

    def fail(self, what):
        self.failures.append(what)


def rel(path):
    return os.path.relpath(path, os.path.dirname(DEPLOY))


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_yaml(path):
    docs = load_yaml_docs(path)
    if len(docs) != 1:
        raise ValueError(f"{rel(path)}: expected one YAML document, found {len(docs)}")
    return docs[0]


# --------------------------------------------------------------------------
# parsing


def check_parse(c):
    """Every YAML and JSON file under deploy/ parses."""
    for root, _, files in os.walk(DEPLOY):
        if os.sep + "secrets" in root[len(DEPLOY):]:
            continue  # local keys, not ours to read
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                if name.endswith((".yml", ".yaml")):
                    load_yaml_docs(path)
                elif name.endswith(".json"):
                    with open(path, encoding="utf-8") as f:
                        json.load(f)
                else:
                    continue
                c.ok(True, "")
            except Exception as e:  # noqa: BLE001 - report every parse error
                c.fail(f"{rel(path)} does not parse: {e}")


# --------------------------------------------------------------------------
# rules


def rules_groups():
    return load_yaml(RULES)["groups"]


def check_prometheusrule(c):
    docs = load_yaml_docs(PROMETHEUSRULE)
    c.ok(len(docs) == 1, f"{rel(PROMETHEUSRULE)}: one document expected")
    pr = docs[0]
    c.ok(pr.get("apiVersion") == "monitoring.coreos.com/v1" and pr.get("kind") == "PrometheusRule",
         f"{rel(PROMETHEUSRULE)}: not a monitoring.coreos.com/v1 PrometheusRule")
    same = pr.get("spec", {}).get("groups") == rules_groups()
    c.ok(same, f"{rel(PROMETHEUSRULE)} does not embed the groups of {rel(RULES)}; "
               "run: python3 deploy/tools/deploycheck.py sync-prometheusrule")


def check_rule_tests(c):
    with open(os.path.join(DEPLOY, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    alerts = [r["alert"] for g in rules_groups() for r in g["rules"] if "alert" in r]
    fires, quiet = set(), set()
    for case in load_yaml(RULES_TEST).get("tests", []):
        for t in case.get("alert_rule_test", []) or []:
            (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    for a in alerts:
        c.ok(a in fires, f"{rel(RULES_TEST)}: no case where {a} fires")
        c.ok(a in quiet, f"{rel(RULES_TEST)}: no case where {a} does not fire")
    for a in sorted((fires | quiet) - set(alerts)):
        c.fail(f"{rel(RULES_TEST)}: tests an alert the rules do not define: {a}")
    for g in rules_groups():
        for r in g["rules"]:
            if "alert" in r:
                ann = r.get("annotations", {})
                c.ok("summary" in ann and "description" in ann and "runbook" in ann,
                     f"{r['alert']}: needs summary, description and runbook annotations")
                c.ok(r.get("labels", {}).get("severity") in ("critical", "warning"),
                     f"{r['alert']}: severity must be critical or warning")
                anchor = ann.get("runbook", "").partition("#")[2]
                c.ok(anchor == r["alert"].lower(), f"{r['alert']}: runbook anchor should be #{r['alert'].lower()}")
                c.ok(f"\n### {r['alert']}\n" in readme, f"deploy/README.md: no '### {r['alert']}' section (the runbook link)")


RECORDING_NAME = re.compile(r"\b[a-z_]+:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+\b")
METRIC_NAME = re.compile(r"(?<![:\w])gatekeeper_[a-z0-9_]+")


def metric_family(name):
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def check_metric_names(c, where, exprs, recorded):
    for expr in exprs:
        for name in RECORDING_NAME.findall(expr):
            c.ok(name in recorded, f"{where}: uses recording rule {name}, which the rules file does not define")
        stripped = RECORDING_NAME.sub(" ", expr)
        for name in METRIC_NAME.findall(stripped):
            c.ok(metric_family(name) in KNOWN_METRICS, f"{where}: unknown metric {name} in: {expr.strip()[:120]}")


def check_rules_metrics(c):
    recorded = {r["record"] for g in rules_groups() for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rules_groups() for r in g["rules"]]
    check_metric_names(c, rel(RULES), exprs, recorded)
    for e in exprs:
        raw = METRIC_NAME.findall(RECORDING_NAME.sub(" ", e))
        c.ok(not raw or e.count('job="gatekeeper"') >= len(raw),
             f"{rel(RULES)}: every raw metric should select job=\"gatekeeper\": {e.strip()[:100]}")
    return recorded


def check_prometheus_config(c):
    cfg = load_yaml(PROM_CONFIG)
    for rf in cfg.get("rule_files", []):
        c.ok(os.path.exists(os.path.join(os.path.dirname(PROM_CONFIG), rf)),
             f"{rel(PROM_CONFIG)}: rule file {rf} not found")
    jobs = {s["job_name"]: s for s in cfg.get("scrape_configs", [])}
    c.ok("gatekeeper" in jobs, f"{rel(PROM_CONFIG)}: no scrape job named gatekeeper (the rules select job=\"gatekeeper\")")
    if "gatekeeper" in jobs:
        c.ok(jobs["gatekeeper"].get("metrics_path", "/metrics") == "/metrics",
             f"{rel(PROM_CONFIG)}: gatekeeper job must scrape /metrics")


# --------------------------------------------------------------------------
# Kubernetes


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d.get("kind"), []).append(d)
    return out


def one(c, kinds, kind, where):
    items = kinds.get(kind, [])
    c.ok(len(items) == 1, f"{where}: expected one {kind}, found {len(items)}")
    return items[0] if items else {}


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_k8s(c, docs, where, rendered=False):
    kinds = by_kind(docs)
    c.ok("Secret" not in kinds, f"{where}: contains a Secret; secrets are created outside the base")
    dep = one(c, kinds, "Deployment", where)
    svc = one(c, kinds, "Service", where)
    cm = one(c, kinds, "ConfigMap", where)
    pdb = one(c, kinds, "PodDisruptionBudget", where)
    hpa = one(c, kinds, "HorizontalPodAutoscaler", where)
    job = one(c, kinds, "Job", where)
    sm = one(c, kinds, "ServiceMonitor", where)
    one(c, kinds, "PrometheusRule", where)
    sa = one(c, kinds, "ServiceAccount", where)

    # Deployment
    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    c.ok(spec.get("replicas") == 3, f"{where}: Deployment replicas should be 3")
    c.ok(matches(spec.get("selector", {}).get("matchLabels"), pod_labels),
         f"{where}: Deployment selector does not match its pod labels")
    psc = pod.get("securityContext", {})
    c.ok(psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot must be true")
    c.ok(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccompProfile must be RuntimeDefault")
    c.ok(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] != 0, f"{where}: pod runAsUser must be a non-root uid")
    containers = pod.get("containers", [])
    c.ok(len(containers) == 1, f"{where}: Deployment should run one container")
    ctr = containers[0] if containers else {}
    csc = ctr.get("securityContext", {})
    c.ok(csc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
    c.ok(csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
    c.ok(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities must drop ALL")
    c.ok(csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: container seccompProfile must be RuntimeDefault")
    res = ctr.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            c.ok(r in res.get(part, {}), f"{where}: container resources.{part}.{r} missing")
    ports = {p.get("name"): p.get("containerPort") for p in ctr.get("ports", [])}
    c.ok(ports.get("http") == 8080, f"{where}: container port http must be 8080")
    rp = ctr.get("readinessProbe", {}).get("httpGet", {})
    lp = ctr.get("livenessProbe", {}).get("httpGet", {})
    c.ok(rp.get("path") == "/readyz" and rp.get("port") in ("http", 8080), f"{where}: readinessProbe must GET /readyz")
    c.ok(lp.get("path") == "/healthz" and lp.get("port") in ("http", 8080), f"{where}: livenessProbe must GET /healthz")
    c.ok(ctr.get("args", ["serve"])[0] == "serve", f"{where}: the Deployment must run `gatekeeper serve`")
    if rendered:
        # The base keeps the plain name so that an overlay's
        # `images: [{name: license-gatekeeper, newName: ..., newTag: ...}]` matches.
        c.ok(ctr.get("image") == "license-gatekeeper",
             f"{where}: the base must keep the plain image name license-gatekeeper (overlays set newName/newTag), got {ctr.get('image')}")

    env = {e["name"]: e for e in ctr.get("env", [])}
    db = env.get("GATEKEEPER_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    c.ok(db.get("name") and db.get("key"), f"{where}: GATEKEEPER_DATABASE_URL must come from a secretKeyRef")
    cm_name = cm.get("metadata", {}).get("name")
    refs = [e.get("configMapRef", {}).get("name") for e in ctr.get("envFrom", [])]
    c.ok(cm_name in refs, f"{where}: the container does not take its environment from ConfigMap {cm_name}")
    data = cm.get("data", {})
    for var in ("GATEKEEPER_LISTEN", "GATEKEEPER_JWT_PUBLIC_KEY_FILE", "GATEKEEPER_LICENSE_KEY_FILE",
                "GATEKEEPER_JWT_ISSUER", "GATEKEEPER_JWT_AUDIENCE", "GATEKEEPER_SHUTDOWN_GRACE"):
        c.ok(var in data, f"{where}: ConfigMap lacks {var}")
    c.ok("GATEKEEPER_DATABASE_URL" not in data, f"{where}: the database URL belongs in a Secret, not the ConfigMap")
    c.ok(data.get("GATEKEEPER_LISTEN", "").endswith(":8080") and not data.get("GATEKEEPER_LISTEN", "").startswith("127."),
         f"{where}: GATEKEEPER_LISTEN must bind all interfaces on 8080")
    for value in data.values():
        c.ok(isinstance(value, str), f"{where}: ConfigMap values must be strings: {value!r}")

    # keys: the files the ConfigMap names are in the mounted Secret
    mounts = {m["name"]: m for m in ctr.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for var in ("GATEKEEPER_JWT_PUBLIC_KEY_FILE", "GATEKEEPER_LICENSE_KEY_FILE"):
        path = data.get(var, "")
        found = False
        for name, m in mounts.items():
            v = vols.get(name, {})
            if "secret" in v and path.startswith(m["mountPath"].rstrip("/") + "/"):
                items = [i["path"] for i in v["secret"].get("items", [])]
                found = not items or os.path.basename(path) in items
        c.ok(found, f"{where}: {var}={path} is not a file of a mounted Secret volume")
    c.ok(any(m.get("mountPath") == "/tmp" and "emptyDir" in vols.get(n, {}) for n, m in mounts.items()),
         f"{where}: /tmp should be an emptyDir (read-only root filesystem)")

    # grace periods
    grace = int(data.get("GATEKEEPER_SHUTDOWN_GRACE", "0") or 0)
    pre = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_sleep = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    c.ok(tgps > grace + pre_sleep,
         f"{where}: terminationGracePeriodSeconds ({tgps}) must exceed GATEKEEPER_SHUTDOWN_GRACE ({grace}) + preStop ({pre_sleep})")

    # Service, ServiceMonitor, PDB, HPA
    sspec = svc.get("spec", {})
    c.ok(matches(sspec.get("selector"), pod_labels), f"{where}: Service selector does not match the pods")
    sports = {p.get("name"): p for p in sspec.get("ports", [])}
    c.ok("http" in sports and sports["http"].get("targetPort") in ("http", 8080), f"{where}: Service needs port http -> http")
    c.ok(sm.get("apiVersion") == "monitoring.coreos.com/v1", f"{where}: ServiceMonitor must be monitoring.coreos.com/v1")
    smspec = sm.get("spec", {})
    c.ok(matches(smspec.get("selector", {}).get("matchLabels"), svc.get("metadata", {}).get("labels", {})),
         f"{where}: ServiceMonitor selector does not match the Service")
    eps = smspec.get("endpoints", [])
    c.ok(any(e.get("port") in sports and e.get("path", "/metrics") == "/metrics" for e in eps),
         f"{where}: ServiceMonitor must scrape /metrics on a Service port")
    job_label = smspec.get("jobLabel")
    c.ok(job_label and svc.get("metadata", {}).get("labels", {}).get(job_label) == "gatekeeper",
         f"{where}: ServiceMonitor jobLabel must give job=\"gatekeeper\" (what the rules select)")
    c.ok(pdb.get("apiVersion") == "policy/v1" and pdb.get("spec", {}).get("minAvailable") == 2,
         f"{where}: PodDisruptionBudget policy/v1 with minAvailable 2 expected")
    c.ok(matches(pdb.get("spec", {}).get("selector", {}).get("matchLabels"), pod_labels),
         f"{where}: PDB selector does not match the pods")
    hspec = hpa.get("spec", {})
    c.ok(hpa.get("apiVersion") == "autoscaling/v2", f"{where}: HPA must be autoscaling/v2")
    c.ok(hspec.get("scaleTargetRef", {}).get("name") == dep.get("metadata", {}).get("name")
         and hspec.get("scaleTargetRef", {}).get("kind") == "Deployment", f"{where}: HPA does not target the Deployment")
    c.ok(hspec.get("minReplicas") == 3 and hspec.get("maxReplicas") == 10, f"{where}: HPA should scale 3..10")
    cpu = [m for m in hspec.get("metrics", []) if m.get("resource", {}).get("name") == "cpu"]
    c.ok(bool(cpu) and cpu[0]["resource"]["target"].get("averageUtilization") == 70, f"{where}: HPA CPU target 70% expected")

    # migration Job
    jpod = job.get("spec", {}).get("template", {}).get("spec", {})
    jctr = (jpod.get("containers") or [{}])[0]
    c.ok(jctr.get("args") == ["migrate"], f"{where}: the Job must run `gatekeeper migrate`")
    c.ok(jctr.get("image") == ctr.get("image"), f"{where}: the Job must use the Deployment's image")
    jenv = {e["name"]: e for e in jctr.get("env", [])}
    jdb = jenv.get("GATEKEEPER_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    c.ok(jdb.get("name") and jdb.get("name") != db.get("name"),
         f"{where}: the Job must connect with the owner role's URL (a Secret other than the service's)")
    c.ok(jpod.get("restartPolicy") in ("Never", "OnFailure"), f"{where}: Job restartPolicy must be Never or OnFailure")
    jsc = jctr.get("securityContext", {})
    c.ok(jpod.get("securityContext", {}).get("runAsNonRoot") is True and jsc.get("readOnlyRootFilesystem") is True
         and jsc.get("allowPrivilegeEscalation") is False and jsc.get("capabilities", {}).get("drop") == ["ALL"],
         f"{where}: the Job needs the same restricted security context")
    c.ok(job.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component") == "migration",
         f"{where}: the Job needs app.kubernetes.io/component=migration (README applies it by that label)")
    # README applies `-l 'app.kubernetes.io/component in (service-account,migration)'` before the
    # rollout: the Job's pod cannot start unless its ServiceAccount is applied with it.
    c.ok(jpod.get("serviceAccountName") == sa.get("metadata", {}).get("name"),
         f"{where}: the Job must run as the base's ServiceAccount")
    c.ok(sa.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component") == "service-account",
         f"{where}: the ServiceAccount needs app.kubernetes.io/component=service-account "
         "(README applies it with the migration Job by that label)")

    return {
        "secrets": {(db.get("name"), db.get("key")), (jdb.get("name"), jdb.get("key"))}
        | {(v["secret"]["secretName"], i["key"]) for v in pod.get("volumes", []) if "secret" in v
           for i in v["secret"].get("items", [])},
    }


def check_k8s_sources(c):
    kz = load_yaml(os.path.join(K8S_BASE, "kustomization.yaml"))
    resources = kz.get("resources", [])
    c.ok("secret.example.yaml" not in resources, "k8s/base/kustomization.yaml must not list secret.example.yaml")
    docs = []
    for r in resources:
        path = os.path.join(K8S_BASE, r)
        if c.ok(os.path.exists(path), f"k8s/base/kustomization.yaml: resource {r} not found"):
            docs += load_yaml_docs(path)
    for name in sorted(os.listdir(K8S_BASE)):
        if name.endswith(".yaml") and name not in resources and name not in ("kustomization.yaml", "secret.example.yaml"):
            c.fail(f"k8s/base/{name} is not listed in kustomization.yaml")
    refs = check_k8s(c, docs, "k8s/base")
    # The example Secrets describe exactly what the manifests refer to.
    example = {}
    for d in load_yaml_docs(os.path.join(K8S_BASE, "secret.example.yaml")):
        example[d["metadata"]["name"]] = set((d.get("stringData") or d.get("data") or {}).keys())
    for name, key in refs["secrets"]:
        c.ok(key in example.get(name, set()), f"k8s/base/secret.example.yaml: no example for Secret {name} key {key}")


def check_rendered(c, path):
    docs = load_yaml_docs(path)
    c.ok(len(docs) >= 9, f"{path}: kustomize rendered {len(docs)} objects, expected 9")
    check_k8s(c, docs, "kustomize build", rendered=True)
    for d in docs:
        c.ok(d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/part-of") == "license-gatekeeper",
             f"kustomize build: {d.get('kind')}/{d.get('metadata', {}).get('name')} lacks the part-of label")


# --------------------------------------------------------------------------
# compose


def check_compose(c):
    comp = load_yaml(COMPOSE)
    svcs = comp.get("services", {})
    for s in ("postgres", "migrate", "db-roles", "gatekeeper", "prometheus", "grafana"):
        c.ok(s in svcs, f"docker-compose.yml: service {s} missing")
    gk = svcs.get("gatekeeper", {})
    mig = svcs.get("migrate", {})
    env = gk.get("environment", {})
    c.ok("gatekeeper_service" in env.get("GATEKEEPER_DATABASE_URL", ""), "docker-compose.yml: gatekeeper must serve as gatekeeper_service")
    c.ok("gatekeeper_owner" in mig.get("environment", {}).get("GATEKEEPER_DATABASE_URL", ""), "docker-compose.yml: migrate must run as gatekeeper_owner")
    c.ok(mig.get("command") == ["migrate"], "docker-compose.yml: migrate must run `gatekeeper migrate`")
    c.ok(gk.get("depends_on", {}).get("db-roles", {}).get("condition") == "service_completed_successfully",
         "docker-compose.yml: gatekeeper must wait for db-roles")
    c.ok(svcs.get("db-roles", {}).get("depends_on", {}).get("migrate", {}).get("condition") == "service_completed_successfully",
         "docker-compose.yml: db-roles must wait for migrate")
    c.ok(mig.get("image") == gk.get("image"), "docker-compose.yml: migrate and gatekeeper must use one image")
    top_secrets = comp.get("secrets", {})
    for s in gk.get("secrets", []):
        name = s if isinstance(s, str) else s.get("source")
        c.ok(name in top_secrets, f"docker-compose.yml: secret {name} not declared")
    for var in ("GATEKEEPER_JWT_PUBLIC_KEY_FILE", "GATEKEEPER_LICENSE_KEY_FILE"):
        path = env.get(var, "")
        c.ok(path.startswith("/run/secrets/") and os.path.basename(path) in top_secrets,
             f"docker-compose.yml: {var} must name a mounted secret")
    grace = int(env.get("GATEKEEPER_SHUTDOWN_GRACE", "0"))
    m = re.fullmatch(r"(\d+)s", str(gk.get("stop_grace_period", "10s")))
    c.ok(m is not None and int(m.group(1)) > grace, "docker-compose.yml: stop_grace_period must exceed GATEKEEPER_SHUTDOWN_GRACE")
    c.ok(gk.get("read_only") is True and gk.get("cap_drop") == ["ALL"], "docker-compose.yml: gatekeeper should run read-only with no capabilities")
    # bind mounts point at files of deploy/ (the keys come from make-local-keys.sh)
    for sname, svc in svcs.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("./"):
                c.ok(os.path.exists(os.path.join(DEPLOY, src)), f"docker-compose.yml: {sname} mounts {src}, which does not exist")
    for name, s in top_secrets.items():
        c.ok(s.get("file", "").startswith("./secrets/"), f"docker-compose.yml: secret {name} should come from ./secrets/")
    prom_mounts = svcs.get("prometheus", {}).get("volumes", [])
    c.ok(any(v.startswith("./prometheus:/etc/prometheus") for v in prom_mounts), "docker-compose.yml: prometheus must mount ./prometheus")
    cfg = load_yaml(PROM_CONFIG)
    targets = [t for s in cfg.get("scrape_configs", []) if s.get("job_name") == "gatekeeper"
               for sc in s.get("static_configs", []) for t in sc.get("targets", [])]
    c.ok("gatekeeper:8080" in targets, "prometheus.yml: the compose stack needs target gatekeeper:8080")


# --------------------------------------------------------------------------
# Dockerfile (what hadolint cannot tell: this project's requirements)


def check_dockerfile(c):
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", f.read())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    c.ok(len(froms) >= 2, "Dockerfile: expected a multi-stage build")
    c.ok("cargo build --release --locked" in text, "Dockerfile: build with cargo build --release --locked")
    last = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    final = lines[last:]
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    c.ok(bool(users) and users[-1].split(":")[0] not in ("0", "root"), "Dockerfile: the runtime stage must switch to a non-root USER")
    c.ok(bool(users) and users[-1].split(":")[0].isdigit(), "Dockerfile: USER should be numeric (runAsNonRoot can verify it)")
    hc = [ln for ln in final if ln.upper().startswith("HEALTHCHECK ")]
    c.ok(len(hc) == 1, "Dockerfile: the runtime stage needs one HEALTHCHECK")
    if hc:
        c.ok("/healthz" in hc[0], "Dockerfile: the HEALTHCHECK should probe /healthz")
        c.ok(not re.search(r"busybox.*wget.*\"-T\"", hc[0]), "Dockerfile: bookworm's busybox wget segfaults on -T")
    c.ok(any(ln.upper().startswith("ENTRYPOINT ") and "[" in ln for ln in final), "Dockerfile: exec-form ENTRYPOINT (gatekeeper as PID 1 gets SIGTERM)")
    c.ok(any("EXPOSE 8080" in ln for ln in final), "Dockerfile: EXPOSE 8080")
    with open(os.path.join(DEPLOY, "Dockerfile.dockerignore"), encoding="utf-8") as f:
        ignore = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    for needed in ("src", "migrations", "Cargo.toml", "Cargo.lock"):
        c.ok("!" + needed in ignore, f"Dockerfile.dockerignore must let {needed} into the context")


# --------------------------------------------------------------------------
# Grafana


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def check_dashboard(c, recorded):
    with open(DASHBOARD, encoding="utf-8") as f:
        d = json.load(f)
    c.ok(isinstance(d.get("uid"), str) and 0 < len(d["uid"]) <= 40, "dashboard: uid must be set (at most 40 characters)")
    c.ok(bool(d.get("title")), "dashboard: title missing")
    tvars = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = tvars.get("datasource", {})
    c.ok(ds.get("type") == "datasource" and ds.get("query") == "prometheus", "dashboard: needs a datasource variable of Prometheus type")
    ids, titles, exprs = set(), [], []
    for p in walk_panels(d.get("panels", [])):
        if p.get("type") == "row":
            continue
        titles.append(p.get("title", ""))
        c.ok(p.get("id") not in ids, f"dashboard: duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        c.ok(all(k in p.get("gridPos", {}) for k in ("h", "w", "x", "y")), f"dashboard: panel {p.get('title')} lacks gridPos")
        c.ok(p.get("datasource", {}).get("uid") == "${datasource}", f"dashboard: panel {p.get('title')} must use the datasource variable")
        targets = p.get("targets", [])
        c.ok(bool(targets), f"dashboard: panel {p.get('title')} has no query")
        for t in targets:
            c.ok(t.get("datasource", {}).get("uid") == "${datasource}", f"dashboard: a query of {p.get('title')} must use the datasource variable")
            exprs.append(t.get("expr", ""))
    for v in tvars.values():
        if v.get("type") == "query":
            c.ok(v.get("datasource", {}).get("uid") == "${datasource}", f"dashboard: variable {v.get('name')} must use the datasource variable")
            q = v.get("query")
            exprs.append(q.get("query", "") if isinstance(q, dict) else str(q))
    check_metric_names(c, "dashboard", exprs, recorded)
    joined = "\n".join(exprs)
    for needed in ("gatekeeper_decisions_total", "gatekeeper_refusals_total", "gatekeeper_audit_append_seconds_bucket",
                   "gatekeeper_ledger_batch_size", "gatekeeper_db_pool_connections", "gatekeeper_db_pool_wait_seconds_bucket",
                   "gatekeeper_ready", "gatekeeper_checkpoint_age_seconds", "gatekeeper_review_queue_depth",
                   "job:gatekeeper_http_request_duration_seconds:quantile_rate5m",
                   "gatekeeper_impact_runs{", "gatekeeper_impact_actions_total",
                   "gatekeeper_impact_oldest_running_seconds",
                   "job_trigger:gatekeeper_impact_run_lag_seconds:quantile_rate1h",
                   "gatekeeper_webhook_deliveries_total", "gatekeeper_webhook_oldest_undelivered_seconds",
                   "gatekeeper_webhook_endpoints_disabled"):
        c.ok(needed in joined, f"dashboard: no panel queries {needed}")
    # provisioning points at the dashboard and the datasource uid it defaults to
    dsp = load_yaml(os.path.join(GRAFANA_PROVISIONING, "datasources/prometheus.yml"))
    uids = {x.get("uid") for x in dsp.get("datasources", [])}
    c.ok(ds.get("current", {}).get("value") in uids, "dashboard: the datasource variable's default is not the provisioned datasource uid")
    dbp = load_yaml(os.path.join(GRAFANA_PROVISIONING, "dashboards/gatekeeper.yml"))
    paths = [p.get("options", {}).get("path") for p in dbp.get("providers", [])]
    comp = load_yaml(COMPOSE)
    mounts = comp["services"].get("grafana", {}).get("volumes", [])
    c.ok(any(m.startswith("./grafana/dashboards:" + (paths[0] if paths else "?")) for m in mounts),
         "grafana: the dashboard provider's path is not where compose mounts grafana/dashboards")


# --------------------------------------------------------------------------


def sync_prometheusrule():
    with open(RULES, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    with open(PROMETHEUSRULE, "w", encoding="utf-8") as f:
        f.write(PROMETHEUSRULE_HEADER + body + "\n")
    print(f"wrote {rel(PROMETHEUSRULE)}")


def dashboard_rules(out):
    """Writes the dashboard's queries as a rules file, for `promtool check rules`."""
    with open(DASHBOARD, encoding="utf-8") as f:
        d = json.load(f)
    exprs = []
    for p in walk_panels(d.get("panels", [])):
        exprs += [t["expr"] for t in p.get("targets", []) if t.get("expr")]
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*), *\w+\)", q.strip())
            exprs.append(m.group(1) if m else q)
    subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$job": "gatekeeper", "$instance": ".*"}
    rules = []
    for i, e in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        rules.append({"record": f"dashboard:query_{i}:check", "expr": e})
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"wrote {len(rules)} dashboard queries to {out}")


def main(argv):
    if len(argv) >= 2 and argv[1] == "sync-prometheusrule":
        sync_prometheusrule()
        return 0
    if len(argv) == 3 and argv[1] == "dashboard-rules":
        dashboard_rules(argv[2])
        return 0
    if len(argv) < 2 or argv[1] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    rendered = None
    if len(argv) == 4 and argv[2] == "--rendered":
        rendered = argv[3]
    c = Checker()
    steps = [
        ("YAML/JSON parse", lambda: check_parse(c)),
        ("PrometheusRule == rules file", lambda: check_prometheusrule(c)),
        ("alert test coverage", lambda: check_rule_tests(c)),
        ("prometheus.yml wiring", lambda: check_prometheus_config(c)),
        ("metric names in rules", lambda: check_rules_metrics(c)),
        ("Kubernetes manifests", lambda: check_k8s_sources(c)),
        ("docker-compose.yml", lambda: check_compose(c)),
        ("Dockerfile", lambda: check_dockerfile(c)),
        ("Grafana dashboard", lambda: check_dashboard(c, {r["record"] for g in rules_groups() for r in g["rules"] if "record" in r})),
    ]
    if rendered:
        steps.append(("kustomize output", lambda: check_rendered(c, rendered)))
    for name, step in steps:
        before = len(c.failures)
        try:
            step()
        except Exception as e:  # noqa: BLE001 - a crash is a failed check
            c.fail(f"{name}: {type(e).__name__}: {e}")
        status = "ok" if len(c.failures) == before else "FAILED"
        print(f"  {name}: {status}")
    for f in c.failures:
        print(f"  FAIL: {f}")
    print(f"  {c.passed} assertions passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
