#!/usr/bin/env bash
# Static checks of deploy/, with the real tools where they exist:
#
#   deploy/check.sh
#
# Required (the script fails, and says how to get them, when missing):
#   promtool   Debian/Ubuntu: apt-get install prometheus
#   python3 with PyYAML   apt-get install python3-yaml, or pip install pyyaml
# Used when present, skipped with a message otherwise:
#   kustomize, or kubectl (kubectl kustomize)   render deploy/k8s/base
#   hadolint                                    lint deploy/Dockerfile
#   ShellCheck (shellcheck)                     lint the shell scripts
#   docker compose                              validate docker-compose.yml
#
# It installs nothing and changes nothing (temporary files aside). Exits 0
# when every check that ran passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

failed=()
skipped=()
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() { # run NAME COMMAND...: a check that must pass
  local name=$1
  shift
  printf '\n==> %s\n' "$name"
  if "$@"; then
    printf '    ok: %s\n' "$name"
  else
    printf '    FAILED: %s\n' "$name"
    failed+=("$name")
  fi
}

skip() { # skip NAME REASON
  printf '\n==> %s\n    SKIPPED: %s\n' "$1" "$2"
  skipped+=("$1 ($2)")
}

missing=0
if ! command -v promtool >/dev/null 2>&1; then
  echo "check.sh: promtool not found. It comes with Prometheus: apt-get install prometheus (Debian/Ubuntu), or a release tarball from prometheus.io." >&2
  missing=1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "check.sh: python3 not found." >&2
  missing=1
elif ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "check.sh: python3 lacks PyYAML: apt-get install python3-yaml, or pip install pyyaml." >&2
  missing=1
fi
if [[ $missing -ne 0 ]]; then
  echo "check.sh: FAILED (required tools missing)" >&2
  exit 1
fi
printf '%s\n' "promtool: $(promtool --version 2>&1 | head -n 1)"

# --- Prometheus ----------------------------------------------------------------
run "promtool check config deploy/prometheus/prometheus.yml" \
  promtool check config deploy/prometheus/prometheus.yml
run "promtool check rules deploy/prometheus/rules/gatekeeper.rules.yml" \
  promtool check rules deploy/prometheus/rules/gatekeeper.rules.yml
run "promtool test rules deploy/prometheus/rules/gatekeeper.rules.test.yml" \
  promtool test rules deploy/prometheus/rules/gatekeeper.rules.test.yml

# --- Grafana -------------------------------------------------------------------
json_tool() { python3 -m json.tool "$1" >/dev/null; }
run "python3 -m json.tool deploy/grafana/dashboards/gatekeeper.json" \
  json_tool deploy/grafana/dashboards/gatekeeper.json
dashboard_queries() {
  python3 deploy/tools/deploycheck.py dashboard-rules "$tmp/dashboard.rules.yml" &&
    promtool check rules "$tmp/dashboard.rules.yml"
}
run "dashboard queries parse (promtool check rules)" dashboard_queries

# --- Kubernetes ----------------------------------------------------------------
rendered=""
render() { "$@" deploy/k8s/base >"$tmp/rendered.yaml" && rendered="$tmp/rendered.yaml"; }
if command -v kustomize >/dev/null 2>&1; then
  run "kustomize build deploy/k8s/base" render kustomize build
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  run "kubectl kustomize deploy/k8s/base" render kubectl kustomize
else
  skip "kustomize build deploy/k8s/base" "neither kustomize nor kubectl found; the manifests are still parsed and checked below"
fi

# --- everything parsed, and cross-checked --------------------------------------
# YAML-parses every k8s, compose, Prometheus and Grafana file; the
# PrometheusRule embeds the rules file's groups; every alert has firing and
# non-firing tests; metric names exist; names, ports, probes, security
# context, secrets and grace periods agree across files (and in the rendered
# output when kustomize ran).
if [[ -n "$rendered" ]]; then
  run "deploycheck.py (parse, PrometheusRule sync, wiring; rendered output too)" \
    python3 deploy/tools/deploycheck.py check --rendered "$rendered"
else
  run "deploycheck.py (parse, PrometheusRule sync, wiring)" \
    python3 deploy/tools/deploycheck.py check
fi

# --- Dockerfile, compose, shell --------------------------------------------------
if command -v hadolint >/dev/null 2>&1; then
  run "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
else
  skip "hadolint deploy/Dockerfile" "hadolint not found"
fi

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose_config() { docker compose -f deploy/docker-compose.yml config --quiet; }
  run "docker compose config" compose_config
else
  skip "docker compose config" "docker compose not found (the file is YAML-parsed and cross-checked above)"
fi

scripts=(deploy/check.sh deploy/make-local-keys.sh deploy/compose/initdb/10-gatekeeper-owner.sh)
bash_syntax() { local s; for s in "$@"; do bash -n "$s" || return 1; done; }
run "bash -n (shell syntax)" bash_syntax "${scripts[@]}"
if command -v shellcheck >/dev/null 2>&1; then
  run "shellcheck" shellcheck "${scripts[@]}"
else
  skip "shellcheck" "shellcheck not found"
fi

# --- summary -------------------------------------------------------------------
printf '\n'
for s in "${skipped[@]}"; do printf 'skipped: %s\n' "$s"; done
if [[ ${#failed[@]} -gt 0 ]]; then
  for f in "${failed[@]}"; do printf 'FAILED: %s\n' "$f"; done
  printf 'check.sh: %d check(s) failed\n' "${#failed[@]}"
  exit 1
fi
printf 'check.sh: all checks passed\n'
