#!/usr/bin/env bash
# A real Prometheus, with deploy/'s configuration and rules, scrapes a real
# gatekeeper: checks through Prometheus's HTTP API that the target is up,
# that gatekeeper_decisions_total is queryable after some traffic, and that
# every rule loaded healthy.
#
#   deploy/scrape-check.sh [path/to/gatekeeper]   (default: target/debug/gatekeeper)
#
# Needs prometheus and promtool (Debian: apt-get install prometheus), curl
# and python3. Starts both processes on free local ports and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/gatekeeper}
command -v prometheus >/dev/null || { echo "prometheus is missing: apt-get install prometheus" >&2; exit 1; }
[[ -x $BIN ]] || { echo "no gatekeeper binary at $BIN (cargo build first)" >&2; exit 1; }
BIN=$(realpath "$BIN")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
GK_PORT=$(free_port)
PROM_PORT=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# The gatekeeper: SQLite, development mode, in a scratch folder.
( cd "$WORK" && GATEKEEPER_LISTEN="127.0.0.1:$GK_PORT" GATEKEEPER_DATABASE_URL="sqlite://$WORK/gk.db" \
    RUST_LOG=warn exec "$BIN" serve ) 2>"$WORK/gatekeeper.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$GK_PORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$GK_PORT/readyz" >/dev/null || { cat "$WORK/gatekeeper.log"; exit 1; }

# Some traffic: a reseller, a product, a refused preflight.
ADMIN=$(cd "$WORK" && "$BIN" token --role admin)
RESELLER=$(cd "$WORK" && "$BIN" token --role reseller --reseller ci)
put() { curl -sf -X PUT "http://127.0.0.1:$GK_PORT$1" -H "Authorization: Bearer $ADMIN" -d "$2" >/dev/null; }
put /v1/resellers/ci '{"name":"CI","country":"DE","us_person":false}'
put /v1/products/KAV '{"name":"KAV","vendor":"ao-kaspersky-lab","category":"antivirus"}'
for _ in 1 2 3; do
  curl -sf -X POST "http://127.0.0.1:$GK_PORT/v1/decisions" -H "Authorization: Bearer $RESELLER" \
    -d '{"transaction":"issue","product":"KAV","customer":{"id":"c","name":"n","country":"US"}}' >/dev/null
done

# Prometheus with deploy/'s configuration, pointed at this gatekeeper and
# scraping every second.
mkdir -p "$WORK/prometheus/rules"
cp deploy/prometheus/rules/*.yml "$WORK/prometheus/rules/"
python3 - "$WORK/prometheus/prometheus.yml" "$GK_PORT" <<'PY'
import sys, yaml
out, port = sys.argv[1], sys.argv[2]
config = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
config["global"]["scrape_interval"] = "1s"
config["global"]["evaluation_interval"] = "1s"
config["global"]["scrape_timeout"] = "1s"
jobs = [j for j in config["scrape_configs"] if j["job_name"] == "gatekeeper"]
assert jobs, "deploy/prometheus/prometheus.yml has no gatekeeper job"
for job in jobs:
    job.pop("scrape_interval", None)
    job.pop("scrape_timeout", None)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"], "labels": job["static_configs"][0].get("labels", {})}]
config["scrape_configs"] = jobs
yaml.safe_dump(config, open(out, "w"))
PY
promtool check config "$WORK/prometheus/prometheus.yml"
prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn 2>"$WORK/prometheus.log" &
pids+=($!)

query() { curl -sf --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1"; }
value() { python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'; }
up="" decisions=""
for _ in $(seq 1 60); do
  up=$(query 'up{job="gatekeeper"}' 2>/dev/null | value 2>/dev/null || true)
  decisions=$(query 'sum(gatekeeper_decisions_total{outcome="deny"})' 2>/dev/null | value 2>/dev/null || true)
  [[ $up == 1 && -n $decisions && $decisions != 0 ]] && break
  sleep 1
done
echo "up{job=\"gatekeeper\"} = ${up:-none}; sum(gatekeeper_decisions_total{outcome=\"deny\"}) = ${decisions:-none}"
[[ $up == 1 ]] || { echo "Prometheus does not see the gatekeeper up" >&2; cat "$WORK/prometheus.log" >&2; exit 1; }
[[ $decisions == 3 ]] || { echo "gatekeeper_decisions_total is not queryable as expected" >&2; exit 1; }

rules=$(curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/rules")
python3 - "$rules" <<'PY'
import json, sys
groups = json.loads(sys.argv[1])["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
assert rules, "no rules loaded"
assert not bad, f"unhealthy rules: {bad}"
print(f"{len(rules)} rules loaded, none unhealthy")
PY
echo "a real Prometheus scrapes the gatekeeper: ok"
