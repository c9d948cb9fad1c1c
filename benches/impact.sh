#!/usr/bin/env bash
# Impact runs at scale, on PostgreSQL: what a catalogue change costs when a
# million licences are issued.
#
#   benches/impact.sh                       (about 25 s on the development machine)
#   IMPACT_COUNTRY=BR benches/impact.sh     (the reached licences go to review instead)
#
# IMPACT_LICENSES (default 1000000) licences, every 100th (1%) of SCY-AV, the
# rest spread over IMPACT_PRODUCTS (default 99) other products, all of one
# reseller, active, ten years to run. The customers are in the U.S.; those of
# SCY-AV are in IMPACT_COUNTRY (default US). Then, through HTTP:
#   (a) secure-cy, SCY-AV's vendor, becomes a subsidiary of AO Kaspersky Lab:
#       the run reaches the 1% and ends every one (the shipped designation's
#       full cut-off; with IMPACT_COUNTRY=BR, whose U.S. nexus is unknown, it
#       opens a review of each instead, due at once, and the next sweep
#       suspends them: the script waits for that too);
#   (b) vacant-co becomes one too: its product VACANT-AV has no licence, so
#       the run reaches nothing to check;
#   (c) secure-cy's relationship is deleted: the run reaches SCY-AV again,
#       whose licences are none of them active now (with IMPACT_COUNTRY=BR
#       they are suspended, so it re-decides them, and changes nothing).
# For each: the time from the catalogue request to the run's `completed_at`
# (GET /v1/impact-runs), from the run's `at` to its `completed_at`, what it
# checked and did, licences acted on per second; how long a licence issued
# (POST /v1/licenses) two seconds into (a) waited; the service's peak memory
# (VmHWM) before and after; and EXPLAIN (ANALYZE, BUFFERS) of the query
# `reached_after` (src/store/impact.rs) runs for each chunk, for one product,
# custom and generic plans.
#
# The catalogue goes in through the admin API. The licences are written with
# SQL straight into `licenses` (generate_series), a fixture: no audit event
# records them, so the chain does not vouch for them (`/v1/audit/verify`
# answers `state_mismatch`, naming the first, and the metric
# `gatekeeper_license_audit_mismatch` counts them); the service still starts
# and serves (it refuses to serve only a catalogue the chain does not vouch
# for). Every action the runs take goes
# through the service and is audited as usual.
#
# Needs PostgreSQL at $LOAD_PG (default postgres://postgres@127.0.0.1:5432,
# trust auth); creates and drops the database gatekeeper_impact.
set -euo pipefail
cd "$(dirname "$0")/.."
LICENSES=${IMPACT_LICENSES:-1000000}
PRODUCTS=${IMPACT_PRODUCTS:-99}
COUNTRY=${IMPACT_COUNTRY:-US}
PG=${LOAD_PG:-postgres://postgres@127.0.0.1:5432}
PORT=${LOAD_PORT:-18183}
DB=gatekeeper_impact
DEADLINE_S=${IMPACT_DEADLINE:-300}

# shellcheck source=benches/lib.sh
. benches/lib.sh
cargo build --release -q --bin gatekeeper
BIN=target/release/gatekeeper
bench_workdir
impact_cleanup() {
  bench_cleanup
  [ "$BASHPID" = "$BENCH_SHELL" ] || return 0
  psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap impact_cleanup EXIT
sql() { psql "$PG/$DB" -qAtX -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
export GATEKEEPER_DATABASE_URL="$PG/$DB" GATEKEEPER_LISTEN="127.0.0.1:$PORT" \
  GATEKEEPER_DATA_DIR="$WORK/data" GATEKEEPER_RATE_LIMIT=0 RUST_LOG=warn \
  GATEKEEPER_IMPACT_INTERVAL=1
BASE="http://127.0.0.1:$PORT/v1"

start_service() {
  "$BIN" serve >/dev/null 2>>"$WORK/serve.log" &
  SERVER_PID=$!
  wait_ready "http://127.0.0.1:$PORT/readyz" "" 1200
  ADMIN=$("$BIN" token --role admin)
  TOKEN=$("$BIN" token --role reseller --reseller load)
}
stop_service() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
mem() { # "VmHWM VmRSS" of the service, MiB
  awk '/^VmHWM/ { h = $2 } /^VmRSS/ { r = $2 } END { printf "%.0f %.0f\n", h / 1024, r / 1024 }' \
    "/proc/$SERVER_PID/status"
}
admin() { # METHOD PATH [BODY]
  local body=()
  [ $# -ge 3 ] && body=(-d "$3")
  curl -sf -X "$1" "$BASE$2" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' "${body[@]}" >/dev/null
}

# issue_probe: one licence issued (another write the ledger writer serves
# while a run goes on) -> "HTTP_STATUS in SECONDS s".
issue_probe() {
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST "$BASE/licenses" \
    -H "Authorization: Bearer $TOKEN" -H "Idempotency-Key: probe-$RANDOM-$(now)" \
    -H 'Content-Type: application/json' \
    -d '{"product":"OTHER-1","customer":{"id":"c-probe","name":"Probe GmbH","country":"DE","us_person":false},"seats":1,"term_days":30}' |
    awk '{ printf "%s in %.2f s\n", $1, $2 }'
}

echo "impact bench: $LICENSES licences, 1% of SCY-AV (customers in $COUNTRY), the rest over $PRODUCTS products" >&2
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); PostgreSQL $(psql "$PG/postgres" -AtXc 'SHOW server_version')" >&2

# --- the database, the catalogue, the licences -------------------------------

psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
"$BIN" migrate 2>>"$WORK/serve.log"
start_service
admin PUT /resellers/load '{"name":"Load","country":"DE","us_person":false}'
admin PUT /organizations/secure-cy '{"name":"Secure Cyprus Ltd","country":"CY"}'
admin PUT /products/SCY-AV '{"name":"SecureCY AV","vendor":"secure-cy","category":"antivirus"}'
admin PUT /organizations/vacant-co '{"name":"Vacant Co","country":"CY"}'
admin PUT /products/VACANT-AV '{"name":"Vacant AV","vendor":"vacant-co","category":"antivirus"}'
admin PUT /organizations/other '{"name":"Other Networks","country":"DE"}'
for k in $(seq 1 "$PRODUCTS"); do
  admin PUT "/products/OTHER-$k" "{\"name\":\"Other $k\",\"vendor\":\"other\",\"category\":\"firewall\"}"
done
stop_service

echo "inserting $LICENSES licences" >&2
t0=$(now)
# Ids are UUIDv7-shaped, in order; every 100th licence is SCY-AV's.
sql <<SQL
INSERT INTO licenses (id, reseller, product, customer, seats, starts_at, expires_at, decision_id,
                      token, created_at, updated_at, status, status_idx)
SELECT '01900000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'),
       'load',
       CASE WHEN i % 100 = 0 THEN 'SCY-AV' ELSE 'OTHER-' || (i % $PRODUCTS + 1) END,
       format('{"id":"c-%s","name":"%s","country":"%s"}', i, i,
              CASE WHEN i % 100 = 0 THEN '$COUNTRY' ELSE 'US' END),
       5,
       '2026-06-01T00:00:00.000000Z',
       '2036-06-01T00:00:00.000000Z',
       'fixture-decision-' || i,
       'fixture-token-' || i,
       '2026-06-01T00:00:00.000000Z',
       '2026-06-01T00:00:00.000000Z',
       'active',
       i - 1
  FROM generate_series(1, $LICENSES) i;
SQL
INSERT_S=$(since "$t0")
t0=$(now)
sql -c "VACUUM ANALYZE licenses" -c "CHECKPOINT" >/dev/null
SETTLE_S=$(since "$t0")
echo "  inserted in ${INSERT_S} s, VACUUM ANALYZE and CHECKPOINT in ${SETTLE_S} s; licences table and indexes: $(sql -c "SELECT pg_size_pretty(pg_total_relation_size('licenses'))")" >&2

# The query reached_after runs for each chunk, for one product (cursor '': a
# run's first chunk), as diesel sends it (bind parameters, so both the
# custom plan and the generic plan PostgreSQL may switch to after five runs).
explain() { # PRODUCT
  sql <<SQL
PREPARE reached(text, text, text[], bigint) AS
  SELECT id FROM licenses WHERE product = \$1 AND id > \$2 AND status = ANY(\$3) ORDER BY id ASC LIMIT \$4;
SET plan_cache_mode = force_custom_plan;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE reached('$1', '', '{active,suspended}', 200);
SET plan_cache_mode = force_generic_plan;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE reached('$1', '', '{active,suspended}', 200);
SQL
}
PLAN_SCY_BEFORE=$(explain SCY-AV)

# --- the runs ----------------------------------------------------------------

start_service
read -r HWM_BEFORE RSS_BEFORE <<<"$(mem)"
echo "service ready; VmHWM ${HWM_BEFORE} MiB, VmRSS ${RSS_BEFORE} MiB" >&2

# run_after N METHOD PATH [BODY]: sends the catalogue request, waits for the
# N-th run to complete, prints "request_to_complete_s at_to_complete_s checked
# ended capped renewal_blocked review".
run_after() {
  local n=$1 t0 deadline runs
  shift
  t0=$(now)
  admin "$@"
  deadline=$(( $(date +%s) + DEADLINE_S ))
  while :; do
    runs=$(curl -sf "$BASE/impact-runs?limit=1000" -H "Authorization: Bearer $ADMIN")
    if python3 -c 'import json, sys
runs = json.loads(sys.argv[1])["runs"]
sys.exit(0 if len(runs) >= int(sys.argv[2]) and runs[int(sys.argv[2]) - 1]["status"] == "complete" else 1)' \
      "$runs" "$n"; then
      break
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "run $n did not complete in ${DEADLINE_S} s: $runs" >&2; exit 1; }
    sleep 0.1
  done
  python3 -c 'import json, sys
from datetime import datetime
run = json.loads(sys.argv[1])["runs"][int(sys.argv[2]) - 1]
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
c = run["counts"]
print("%.2f %.2f %d %d %d %d %d" % (t(run["completed_at"]) - float(sys.argv[3]),
      t(run["completed_at"]) - t(run["at"]), run["licenses_checked"],
      c["ended"], c["capped"], c["renewal_blocked"], c["review"]))' "$runs" "$n" "$t0"
}

echo "(a) secure-cy becomes a subsidiary of AO Kaspersky Lab" >&2
( sleep 2; issue_probe ) >"$WORK/probe-a" &
probe=$!
A=$(run_after 1 PUT /organizations/secure-cy/relationships/ao-kaspersky-lab '{"kind":"subsidiary_of"}')
read -r HWM_A RSS_A <<<"$(mem)"
wait "$probe"
PROBE_A=$(cat "$WORK/probe-a")
echo "  $A; VmHWM ${HWM_A} MiB; a licence issued 2 s into it: $PROBE_A" >&2
REVIEWS=$(awk '{print $7}' <<<"$A")
SWEEP=""
if [ "$REVIEWS" -gt 0 ]; then
  # The reviews are due at once: the next sweep suspends them. Meanwhile a
  # licence is issued every half second; the slowest is reported.
  t0=$(now)
  ( while [ ! -e "$WORK/swept" ]; do issue_probe; sleep 0.5; done ) >"$WORK/probe-sweep" &
  probe=$!
  deadline=$(( $(date +%s) + DEADLINE_S ))
  until [ "$(sql -c "SELECT count(*) FROM licenses WHERE status = 'suspended'")" -ge "$REVIEWS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "the reviews were not suspended in ${DEADLINE_S} s" >&2; exit 1; }
    sleep 0.1
  done
  SWEEP_S=$(since "$t0")
  touch "$WORK/swept"
  wait "$probe"
  read -r HWM_SWEEP _ <<<"$(mem)"
  SLOWEST=$(sort -k3 -g "$WORK/probe-sweep" | tail -1)
  STATUSES=$(awk '{ n[$1]++ } END { for (c in n) { printf "%s%s x%d", sep, c, n[c]; sep = ", " } }' "$WORK/probe-sweep")
  SWEEP="the $REVIEWS reviews, due at once, were all suspended ${SWEEP_S} s after (a) completed (the sweep runs every second here); of $(wc -l <"$WORK/probe-sweep") licences issued meanwhile, one every 0.5 s: $STATUSES, the slowest $SLOWEST; VmHWM ${HWM_SWEEP} MiB after"
  echo "  $SWEEP" >&2
fi
echo "(b) vacant-co (one product, no licence) becomes one too" >&2
B=$(run_after 2 PUT /organizations/vacant-co/relationships/ao-kaspersky-lab '{"kind":"subsidiary_of"}')
echo "  $B" >&2
echo "(c) secure-cy's relationship is deleted" >&2
C=$(run_after 3 DELETE /organizations/secure-cy/relationships/ao-kaspersky-lab)
echo "  $C" >&2
read -r HWM_AFTER RSS_AFTER <<<"$(mem)"
PLAN_VACANT=$(explain VACANT-AV)
PLAN_SCY_AFTER=$(explain SCY-AV)
STATUS=$(sql -c "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) n FROM licenses GROUP BY status) s")
stop_service

# --- the report --------------------------------------------------------------

row() { # name "req_s at_s checked ended capped blocked review" probe
  local req at checked ended capped blocked review
  read -r req at checked ended capped blocked review <<<"$2"
  local acted=$(( ended + capped + blocked + review ))
  printf '| %s | %s s | %s s | %s | %s | %s | %s |\n' "$1" "$req" "$at" "$checked" \
    "ended $ended, capped $capped, blocked $blocked, review $review" \
    "$(awk -v n="$acted" -v s="$at" 'BEGIN { if (n == 0) print "–"; else printf "%.0f", n / s }')" "$3"
}
echo
echo "$LICENSES licences (SCY-AV's customers in $COUNTRY) inserted in ${INSERT_S} s (VACUUM ANALYZE, CHECKPOINT ${SETTLE_S} s)"
echo
echo "| run | request → completed_at | at → completed_at | checked | acted on | acted on / s | a licence issued during it (status, s) |"
echo "|---|---|---|---|---|---|---|"
row "(a) reaches SCY-AV: 1% of the licences" "$A" "$PROBE_A"
row "(b) reaches VACANT-AV: no licence" "$B" "–"
row "(c) reaches SCY-AV again" "$C" "–"
echo
if [ -n "$SWEEP" ]; then echo "$SWEEP"; echo; fi
echo "service memory: VmHWM ${HWM_BEFORE} MiB before (a), ${HWM_A} MiB after (a), ${HWM_AFTER} MiB after (c); VmRSS ${RSS_BEFORE} → ${RSS_AFTER} MiB"
echo "licences by status afterwards: $STATUS"
echo
echo "reached_after's query, SCY-AV before (a) (custom plan, then generic):"
sed 's/^/  /' <<<"$PLAN_SCY_BEFORE"
echo "reached_after's query, VACANT-AV (no licence):"
sed 's/^/  /' <<<"$PLAN_VACANT"
echo "reached_after's query, SCY-AV after the runs ($(( LICENSES / 100 )) licences, none active):"
sed 's/^/  /' <<<"$PLAN_SCY_AFTER"
