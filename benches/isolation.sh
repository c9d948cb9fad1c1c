#!/usr/bin/env bash
# Tenant isolation under a flood: one tenant's preflights, paced well under
# its rate limit, measured alone and then while another tenant floods the
# service with as many requests as 128 connections can send. Prints the
# quiet tenant's p50 and p99 both ways, their ratio, and what the flood got
# (mostly 429 with Retry-After).
#
#   benches/isolation.sh [DURATION_SECONDS]        (default 10)
#
# Runs the release build (or $GATEKEEPER_BIN, as CI does with its debug
# build) on SQLite in a temporary directory; needs wrk (installed from
# Debian's packages if missing). Exits non-zero if the quiet tenant sees any
# answer other than 200, or if the flood is not limited.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
PORT=${LOAD_PORT:-18191}
LIMIT=200   # requests/s per tenant
BURST=50

# shellcheck source=benches/lib.sh
. benches/lib.sh
ensure_wrk
if [ -n "${GATEKEEPER_BIN:-}" ]; then
  BIN=$GATEKEEPER_BIN
else
  cargo build --release -q --bin gatekeeper
  BIN=target/release/gatekeeper
fi
bench_workdir

export GATEKEEPER_DATABASE_URL="sqlite://$WORK/data/gatekeeper.db" GATEKEEPER_LISTEN="127.0.0.1:$PORT" \
  GATEKEEPER_DATA_DIR="$WORK/data" GATEKEEPER_RATE_LIMIT=$LIMIT GATEKEEPER_RATE_BURST=$BURST RUST_LOG=warn
"$BIN" serve >/dev/null 2>"$WORK/serve.log" &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$PORT/readyz"
ADMIN=$("$BIN" token --role admin)
base="http://127.0.0.1:$PORT/v1"
for tenant in quiet flood; do
  curl -sf -X PUT "$base/resellers/$tenant" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"T","country":"DE","us_person":false}' >/dev/null
done
put_acme "$base" "$ADMIN"
QUIET=$("$BIN" token --role reseller --reseller quiet)
FLOOD=$("$BIN" token --role reseller --reseller flood)

cat >"$WORK/decide.lua" <<'LUA'
local pace = tonumber(os.getenv("PACE_MS") or "0")
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local body = '{"transaction":"issue","product":"ACME-VPN","customer":{"id":"c-1","name":"Beispiel GmbH","country":"DE","us_person":false}}'
function delay()
  if pace == 0 then return 0 end
  return math.floor(pace * (0.5 + math.random()))
end
function request()
  return wrk.format("POST", "/v1/decisions", nil, body)
end
LUA

# wrk TOKEN CONNECTIONS PACE_MS -> "rps p50 p99 non2xx"
run() {
  local out
  out=$(PACE_MS=$3 wrk -t1 -c"$2" -d"${DURATION}s" --latency -s "$WORK/decide.lua" \
    -H "Authorization: Bearer $1" -H "Content-Type: application/json" "http://127.0.0.1:$PORT")
  wrk_stats <<<"$out"
}

# The quiet tenant: 4 connections, one request each 40 ms or so (about
# 100/s, half its limit).
read -r a_rps a_p50 a_p99 a_bad <<<"$(run "$QUIET" 4 40)"
run "$FLOOD" 128 0 >"$WORK/flood" &
flood=$!
sleep 0.5
read -r b_rps b_p50 b_p99 b_bad <<<"$(run "$QUIET" 4 40)"
wait "$flood"
read -r f_rps _ _ f_bad <"$WORK/flood"

echo "tenant isolation (SQLite, rate limit $LIMIT/s burst $BURST per tenant, ${DURATION}s per run)"
printf '| %-34s | %8s | %7s | %7s | %s |\n' run "req/s" "p50 ms" "p99 ms" "not 200"
echo "|---|---|---|---|---|"
printf '| %-34s | %8s | %7s | %7s | %s |\n' "quiet tenant alone" "$a_rps" "$a_p50" "$a_p99" "$a_bad"
printf '| %-34s | %8s | %7s | %7s | %s |\n' "quiet tenant during the flood" "$b_rps" "$b_p50" "$b_p99" "$b_bad"
printf '| %-34s | %8s | %7s | %7s | %s |\n' "flooding tenant, 128 connections" "$f_rps" "-" "-" "$f_bad (429)"
awk -v a="$a_p99" -v b="$b_p99" 'BEGIN { printf "quiet tenant p99 during the flood / alone: %.1fx\n", b / a }'
[ "$a_bad" = 0 ] && [ "$b_bad" = 0 ] || { echo "the quiet tenant was refused" >&2; exit 1; }
[ "$f_bad" -gt 0 ] || { echo "the flood was not limited" >&2; exit 1; }
