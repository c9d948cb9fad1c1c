#!/usr/bin/env bash
# What a scrape of /metrics costs as licences grow: a scrape only renders
# what the refresher last read, so its time stays flat; beside it, the time of
# one refresh (the queries a scrape itself ran before they moved to a timer).
#
#   benches/metrics.sh [SIZES]        (default "1000 10000 100000")
#
# METRICS_BACKEND=postgres uses PostgreSQL at $METRICS_PG (default
# postgres://postgres@127.0.0.1:5432, trust auth) instead of SQLite.
# BIN=target/debug/gatekeeper measures another build (default: release).
# Installs wrk from Debian's packages if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-1000 10000 100000}
BACKEND=${METRICS_BACKEND:-sqlite}
PG=${METRICS_PG:-postgres://postgres@127.0.0.1:5432}
PORT=${METRICS_PORT:-18191}
BASE="http://127.0.0.1:$PORT"
DB=gatekeeper_metrics_bench

# shellcheck source=benches/lib.sh
. benches/lib.sh
ensure_wrk
if [ -z "${BIN:-}" ]; then
  cargo build --release -q --bin gatekeeper
  BIN=target/release/gatekeeper
fi
bench_workdir

case "$BACKEND" in
  sqlite) URL="sqlite://$WORK/gk.db" ;;
  postgres)
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
    URL="$PG/$DB" ;;
  *) echo "METRICS_BACKEND is sqlite or postgres" >&2; exit 1 ;;
esac

GATEKEEPER_LISTEN="127.0.0.1:$PORT" GATEKEEPER_DATABASE_URL="$URL" \
  GATEKEEPER_DATA_DIR="$WORK/data" GATEKEEPER_RATE_LIMIT=0 GATEKEEPER_METRICS_REFRESH=1 \
  GATEKEEPER_CHECKPOINT_INTERVAL=0 RUST_LOG=warn "$BIN" serve 2>>"$WORK/serve.log" &
SERVER_PID=$!
wait_ready "$BASE/readyz"
ADMIN=$(GATEKEEPER_DATA_DIR="$WORK/data" "$BIN" token --role admin)
TOKEN=$(GATEKEEPER_DATA_DIR="$WORK/data" "$BIN" token --role reseller --reseller alpha --ttl 86400)
curl -sf -X PUT "$BASE/v1/resellers/alpha" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' -d '{"name":"Alpha","country":"DE","us_person":false}' >/dev/null
put_acme "$BASE/v1" "$ADMIN"

lua_issue '{"product":"ACME-VPN","customer":{"id":"c-1","name":"Beispiel GmbH","country":"DE","us_person":false},"seats":1,"term_days":365}' >"$WORK/issue.lua"

# The value of one series in the metrics text on stdin.
series() { awk -v s="$1" '$1 == s { print $2 }'; }
licences() {
  local n
  n=$(curl -sf "$BASE/metrics" | series 'gatekeeper_decisions_total{outcome="allow",transaction="issue"}')
  echo "${n:-0}"
}

printf '%-10s %14s %12s %12s %18s\n' licences "scrapes/s" "p50 ms" "p99 ms" "one refresh ms"
for size in $SIZES; do
  while [ "$(licences)" -lt "$size" ]; do
    wrk -t2 -c32 -d2s -s "$WORK/issue.lua" -H "Authorization: Bearer $TOKEN" \
      -H "Content-Type: application/json" "$BASE" >/dev/null
  done
  sleep 2 # a refresh over the grown table
  before=$(curl -sf "$BASE/metrics")
  out=$(wrk -t2 -c8 -d5s --latency "$BASE/metrics")
  after=$(curl -sf "$BASE/metrics")
  read -r rps p50 p99 _ <<<"$(wrk_stats <<<"$out")"
  # The refreshes that ran meanwhile, each as long as a scrape took before.
  refresh=$(awk -v b="$(series gatekeeper_db_stats_refresh_seconds_sum <<<"$before")" \
                -v bc="$(series gatekeeper_db_stats_refresh_seconds_count <<<"$before")" \
                -v a="$(series gatekeeper_db_stats_refresh_seconds_sum <<<"$after")" \
                -v ac="$(series gatekeeper_db_stats_refresh_seconds_count <<<"$after")" \
                'BEGIN { if (ac > bc) printf "%.2f", 1000 * (a - b) / (ac - bc); else print "-" }')
  printf '%-10s %14s %12s %12s %18s\n' "$(licences)" "$rps" "$p50" "$p99" "$refresh"
done
