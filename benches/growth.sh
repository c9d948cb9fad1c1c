#!/usr/bin/env bash
# How cost grows: the hot paths on PostgreSQL as the catalogue grows (1k,
# 100k, 1M organisations and products) and as the audit trail grows (empty,
# 1M, 10M events, with as many decisions), each measured with wrk like
# benches/load.sh; then the query plans of every read on the hot path.
#
#   benches/growth.sh [DURATION_SECONDS] [CONNECTIONS]        (default 10 64)
#
# GROWTH_CATALOGS="1000 100000 1000000" and GROWTH_EVENTS="0 1000000 10000000"
# pick the sizes. The generated catalogue goes in through `gatekeeper catalog
# import` (one audited commit). The filler events are written with SQL
# straight into the table, a fixture: they are not a verifiable chain (only
# the first and the last are whole events, and the first links to the
# catalogue's last change: what the service checks when it starts); every
# request measured goes through the real service.
#
# The catalogue: chains of 20 organisations (each a subsidiary of the one
# before), every 50th chain under AO Kaspersky Lab (so covered by the shipped
# designation), minority stakes that do not carry, one product per
# organisation, every 10th product embedding the three before it, every 50th
# a white label of another. Requests ask about a US customer and 1,000
# products spread over the whole catalogue, so both refusals (with paths) and
# allows are measured.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-64}
PG=${LOAD_PG:-postgres://postgres@127.0.0.1:5432}
CATALOGS=${GROWTH_CATALOGS:-1000 100000 1000000}
EVENTS=${GROWTH_EVENTS:-0 1000000 10000000}
PORT=${LOAD_PORT:-18181}
DB=gatekeeper_growth

# shellcheck source=benches/lib.sh
. benches/lib.sh
ensure_wrk
cargo build --release -q --bin gatekeeper
BIN=target/release/gatekeeper
bench_workdir
sql() { psql "$PG/$DB" -qAtX -v ON_ERROR_STOP=1 "$@"; }
export GATEKEEPER_DATABASE_URL="$PG/$DB" GATEKEEPER_LISTEN="127.0.0.1:$PORT" \
  GATEKEEPER_DATA_DIR="$WORK/data" GATEKEEPER_RATE_LIMIT=0 RUST_LOG=warn

fresh_database() { # catalogue size, filler events
  local size=$1 events=$2 half=$(( $1 / 2 ))
  psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
  "$BIN" migrate 2>>"$WORK/serve.log"
  # The generated catalogue goes in through `gatekeeper catalog import`, one
  # audited commit, so that the chain vouches for it as for any catalogue
  # (the service serves no catalogue written behind its back).
  sql >"$WORK/catalog.ndjson" <<SQL
COPY (
  SELECT json_build_object('kind', 'organization', 'id', 'g-' || i,
           'spec', json_build_object('name', 'Org ' || i))::text
    FROM generate_series(1, $half) i
  UNION ALL
  SELECT json_build_object('kind', 'relationship', 'id', 'g-' || i || '/g-' || (i - 1),
           'spec', json_build_object('kind', 'subsidiary_of'))::text
    FROM generate_series(2, $half) i WHERE i % 20 <> 1
  UNION ALL
  SELECT json_build_object('kind', 'relationship', 'id', 'g-' || i || '/ao-kaspersky-lab',
           'spec', json_build_object('kind', 'subsidiary_of'))::text
    FROM generate_series(1, $half) i WHERE i % 1000 = 1
  UNION ALL
  SELECT json_build_object('kind', 'relationship', 'id', 'g-' || i || '/g-' || (i + 7),
           'spec', json_build_object('kind', 'minority_owned_by'))::text
    FROM generate_series(1, $half - 7) i WHERE i % 20 = 5
  UNION ALL
  SELECT json_build_object('kind', 'product', 'id', 'P-' || i, 'spec',
    jsonb_build_object('name', 'Product ' || i, 'vendor', 'g-' || i, 'category', 'endpoint',
       'components', CASE WHEN i % 10 = 0 THEN jsonb_build_array('P-' || (i - 1), 'P-' || (i - 2), 'P-' || (i - 3))
                          ELSE '[]'::jsonb END)
     || CASE WHEN i % 50 = 25 THEN jsonb_build_object('white_label_of', 'P-' || (i - 5)) ELSE '{}'::jsonb END)::text
    FROM generate_series(1, $half) i
) TO STDOUT
SQL
  "$BIN" catalog import "$WORK/catalog.ndjson" --sub growth >/dev/null 2>>"$WORK/serve.log"
  if [ "$events" -gt 0 ]; then
    # Filler: events and decisions shaped like a preflight's, appended after
    # the seed's events, ids in time order as UUIDv7s are.
    sql <<SQL
-- The first filler is whole and linked to the latest catalogue change (the
-- service checks the event after it); the rest are filler.
WITH h AS (SELECT seq, hash, catalog_version FROM ledger_head WHERE id = 1),
     e AS (SELECT seq + 1 AS seq, hash AS prev,
                  format('{"action":"decision.preflight","actor":{"reseller":null,"role":"system","sub":"filler"},'
                         '"at":"2026-01-01T00:00:00.000000Z","id":"00000000-0000-7000-8000-000000000001",'
                         '"policy_version":"%s","prev_hash":"%s","seq":%s,"subject":{"kind":"filler"}}',
                         catalog_version, hash, seq + 1) AS event
           FROM h)
INSERT INTO audit_events (seq, id, at, action, outcome, reseller, event, prev_hash, hash)
  SELECT seq, '00000000-0000-7000-8000-000000000001', '2026-01-01T00:00:00.000000Z', 'decision.preflight',
         NULL, NULL, event, prev, encode(sha256(convert_to(event, 'UTF8')), 'hex') FROM e;
INSERT INTO audit_events (seq, id, at, action, outcome, reseller, event, prev_hash, hash)
  SELECT h.seq + s, '00000000-0000-7000-8000-' || lpad(s::text, 12, '0'),
    to_char(timestamp '2026-01-01' + s * interval '1 millisecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'decision.preflight', 'allow', 'filler-' || (s % 100), repeat('e', 900),
    md5(s::text) || md5(s::text), md5((s + 1)::text) || md5((s + 1)::text)
  FROM (SELECT seq FROM ledger_head WHERE id = 1) h, generate_series(2, $events) s;
INSERT INTO decisions (id, reseller, transaction_kind, outcome, audit_seq, created_at, request, review_status)
  SELECT '00000000-0000-7000-9000-' || lpad(s::text, 12, '0'), 'filler-' || (s % 100), 'issue', 'allow',
    h.seq + s, to_char(timestamp '2026-01-01' + s * interval '1 millisecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    repeat('r', 200), NULL
  FROM (SELECT seq FROM ledger_head WHERE id = 1) h, generate_series(1, $events) s;
-- A last event that is whole (its hash is SHA-256 over its canonical JSON)
-- and on the current catalogue version: the service checks the chain's head
-- event, and the event after its latest catalogue change, when it starts.
WITH last AS (SELECT max(seq) AS seq, (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) AS prev,
                     (SELECT catalog_version FROM ledger_head WHERE id = 1) AS version FROM audit_events),
     e AS (SELECT seq + 1 AS seq, prev, '01900000-0000-7000-8000-ffffffffffff' AS id,
                  '2026-06-01T00:00:00.000000Z' AS at,
                  format('{"action":"decision.preflight","actor":{"reseller":null,"role":"system","sub":"filler"},'
                         '"at":"2026-06-01T00:00:00.000000Z","id":"01900000-0000-7000-8000-ffffffffffff",'
                         '"policy_version":"%s","prev_hash":"%s","seq":%s,"subject":{"kind":"filler"}}',
                         version, prev, seq + 1) AS event
           FROM last)
INSERT INTO audit_events (seq, id, at, action, outcome, reseller, event, prev_hash, hash)
  SELECT seq, id, at, 'decision.preflight', NULL, NULL, event, prev,
         encode(sha256(convert_to(event, 'UTF8')), 'hex') FROM e;
UPDATE ledger_head SET seq = (SELECT max(seq) FROM audit_events),
  hash = (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) WHERE id = 1;
SQL
  fi
  # Settle the fixture's own writes (statistics, hint bits, a checkpoint), so
  # that the measurement does not pay for loading it.
  sql -c "VACUUM ANALYZE" >/dev/null
  sql -c "CHECKPOINT" >/dev/null
}

start_service() { # sets READY (seconds until ready)
  local t0
  t0=$(date +%s.%N)
  "$BIN" serve >/dev/null 2>>"$WORK/serve.log" &
  SERVER_PID=$!
  # A million-node catalogue takes seconds to build: wait up to a minute.
  wait_ready "http://127.0.0.1:$PORT/readyz" "" 1200
  READY=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  ADMIN=$("$BIN" token --role admin)
  TOKEN=$("$BIN" token --role reseller --reseller load)
  curl -sf -X PUT "http://127.0.0.1:$PORT/v1/resellers/load" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"Load","country":"US","us_person":true}' >/dev/null
}

write_scripts() { # catalogue size
  local half=$(( $1 / 2 ))
  {
    echo "local skus = {"
    for i in $(seq 1 1000); do echo "  \"P-$(( (i * 7919) % half + 1 ))\","; done
    echo "}"
    cat <<'LUA'
local counter, threads, all = 0, 0, {}
function setup(thread) threads = threads + 1; thread:set("tid", threads); table.insert(all, thread) end
function init(args) prefix = "g-" .. tostring(tid) .. "-" .. tostring(math.random(1e9)) .. "-"; failures = 0 end
-- A refusal (403) is an answer; a failure is anything else outside 2xx.
function response(status, headers, body)
  if status >= 300 and status ~= 403 then failures = failures + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(all) do n = n + t:get("failures") end
  io.write("failures " .. n .. "\n")
end
local customer = '"customer":{"id":"c-1","name":"Example Inc.","country":"US","us_person":true}'
LUA
  } >"$WORK/common.lua"
  { cat "$WORK/common.lua"; cat <<'LUA'
function request()
  counter = counter + 1
  local body = '{"transaction":"issue","product":"' .. skus[counter % #skus + 1] .. '",' .. customer .. '}'
  return wrk.format("POST", "/v1/decisions", nil, body)
end
LUA
  } >"$WORK/decide.lua"
  { cat "$WORK/common.lua"; cat <<'LUA'
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  local body = '{"product":"' .. skus[counter % #skus + 1] .. '",' .. customer .. ',"seats":1,"term_days":30}'
  return wrk.format("POST", "/v1/licenses", nil, body)
end
LUA
  } >"$WORK/issue.lua"
}

wrk_run() { # script -> "rps p50 p99 failures"
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$1" \
    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" "http://127.0.0.1:$PORT")
  wrk_stats <<<"$out"
}

stop_service() {
  PEAK_MIB=$(( $(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status") / 1024 ))
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

ROWS=()
measure() { # catalogue size, events
  echo "catalogue $1, filler events $2: loading" >&2
  fresh_database "$1" "$2"
  write_scripts "$1"
  local pre iss
  start_service
  pre=$(wrk_run "$WORK/decide.lua")
  iss=$(wrk_run "$WORK/issue.lua")
  stop_service
  read -r pr p50 p99 pbad <<<"$pre"
  read -r ir i50 i99 ibad <<<"$iss"
  ROWS+=("$(printf '| %9s | %10s | %7s s | %8s MiB | %8s | %6s | %6s | %8s | %6s | %6s | %s |' \
    "$1" "$2" "$READY" "$PEAK_MIB" "$pr" "$p50" "$p99" "$ir" "$i50" "$i99" "$((pbad + ibad))")")
  echo "  ${ROWS[-1]}" >&2
}

first_events=${EVENTS%% *}
for size in $CATALOGS; do measure "$size" "$first_events"; done
first_catalog=${CATALOGS%% *}
for events in ${EVENTS#"$first_events"}; do measure "$first_catalog" "$events"; done

# The plans of the hot path's reads, on the last (largest) database.
fresh_plan() {
  sql -c "EXPLAIN $1" | grep -m1 -E "Scan|Update on" | sed 's/^ *//; s/->  //; s/  (cost.*//'
}
echo
printf '| %9s | %10s | %9s | %12s | %8s | %6s | %6s | %8s | %6s | %6s | %s |\n' catalogue "audit events" "start" "peak RSS" "preflight/s" p50 p99 "issue/s" p50 p99 failures
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "query plans of the hot path's reads (database of the last row):"
for q in \
  "UPDATE ledger_head SET seq = seq WHERE id = 1 RETURNING seq, hash, catalog_version" \
  "SELECT catalog_version FROM ledger_head WHERE id = 1" \
  "SELECT k.body, e.event FROM idempotency_keys k LEFT JOIN audit_events e ON e.seq = k.audit_seq WHERE k.reseller = 'load' AND k.idem_key = 'k' AND k.expires_at > '2026-11-28'" \
  "SELECT * FROM licenses WHERE id = '0193'" \
  "SELECT d.*, e.event FROM decisions d JOIN audit_events e ON e.seq = d.audit_seq WHERE d.id = '0193'" \
  "SELECT event, hash FROM audit_events WHERE reseller = 'load' AND seq > 5 ORDER BY seq LIMIT 100" \
  "SELECT event, hash FROM audit_events WHERE seq > 5000000 ORDER BY seq LIMIT 1000"; do
  printf '  %-60.60s  %s\n' "$q" "$(fresh_plan "$q")"
done
