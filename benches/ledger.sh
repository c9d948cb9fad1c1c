#!/usr/bin/env bash
# Group commit, measured: the same licence-issuing load against PostgreSQL
# with the ledger writer batching (GATEKEEPER_LEDGER_BATCH=256) and not
# (GATEKEEPER_LEDGER_BATCH=1: one transaction per write), side by side in one
# run, alternating, so that the machine's noise falls on both alike.
#
#   benches/ledger.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
#
# Needs wrk (apt-get install wrk), psql, and PostgreSQL at $BENCH_PG
# (default postgres://postgres@127.0.0.1:5432). Every request is a
# POST /v1/licenses with its own Idempotency-Key: a decision, its audit event,
# a licence and an idempotency record, committed together.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-64}
ROUNDS=${3:-3}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
PORT=${BENCH_PORT:-18181}
DB=gatekeeper_bench

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release -q
BIN=target/release/gatekeeper
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cat > "$WORK/issue.lua" <<'LUA'
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  prefix = "bench-" .. tostring(tid) .. "-" .. tostring(os.time()) .. "-"
end
local body = '{"product":"ACME-VPN","customer":{"id":"c-1","name":"Beispiel GmbH","country":"DE","us_person":false},"seats":5,"term_days":365}'
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", "/v1/licenses", nil, body)
end
LUA

run_once() { # batch -> prints requests/s and non-2xx count
  local batch=$1
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -qc "CREATE DATABASE $DB" >/dev/null
  GATEKEEPER_DATABASE_URL="$PG/$DB" GATEKEEPER_LISTEN="127.0.0.1:$PORT" GATEKEEPER_DATA_DIR="$WORK/keys" \
    GATEKEEPER_LEDGER_BATCH=$batch GATEKEEPER_DB_POOL_SIZE=16 GATEKEEPER_RATE_LIMIT=0 RUST_LOG=warn \
    "$BIN" serve 2>>"$WORK/serve.log" &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  local admin reseller
  admin=$(GATEKEEPER_DATA_DIR="$WORK/keys" "$BIN" token --role admin)
  reseller=$(GATEKEEPER_DATA_DIR="$WORK/keys" "$BIN" token --role reseller --reseller bench)
  curl -sf -X PUT "http://127.0.0.1:$PORT/v1/resellers/bench" -H "Authorization: Bearer $admin" \
    -d '{"name":"Bench","country":"DE","us_person":false}' >/dev/null
  curl -sf -X PUT "http://127.0.0.1:$PORT/v1/organizations/acme" -H "Authorization: Bearer $admin" \
    -d '{"name":"Acme"}' >/dev/null
  curl -sf -X PUT "http://127.0.0.1:$PORT/v1/products/ACME-VPN" -H "Authorization: Bearer $admin" \
    -d '{"name":"Acme VPN","vendor":"acme","category":"vpn"}' >/dev/null
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/issue.lua" \
    -H "Authorization: Bearer $reseller" -H "Content-Type: application/json" "http://127.0.0.1:$PORT")
  local rps non2xx licences
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  licences=$(psql "$PG/$DB" -Atc "SELECT count(*) FROM licenses")
  kill -TERM $pid; wait $pid 2>/dev/null || true
  echo "$rps ${non2xx:-0} $licences"
}

echo "PostgreSQL group commit: POST /v1/licenses, ${CONNECTIONS} connections, ${DURATION}s each, ${ROUNDS} rounds"
printf '%-6s %-22s %-22s\n' round "batch=1 req/s (non2xx)" "batch=256 req/s (non2xx)"
declare -a off on
for r in $(seq 1 "$ROUNDS"); do
  read -r a an al < <(run_once 1)
  read -r b bn bl < <(run_once 256)
  off+=("$a"); on+=("$b")
  printf '%-6s %-22s %-22s\n' "$r" "$a ($an; $al licences)" "$b ($bn; $bl licences)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_off=$(median "${off[@]}"); m_on=$(median "${on[@]}")
awk -v a="$m_off" -v b="$m_on" 'BEGIN { printf "median %-22s %-22s ratio %.1fx\n", a, b, b / a }'
