#!/usr/bin/env bash
# The load harness: the service's hot paths next to baselines measured in the
# same run, on the same machine, one after another, in rounds, medians taken.
#
#   benches/load.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]     (default 10 64 3)
#
# Prints one table: requests/s, p50 and p99 for
#   - bare actix-web: a JSON endpoint with nothing behind it (benches/bare_actix.rs)
#   - pgbench: one prepared one-row INSERT per transaction, 16 clients
#   - preflight (POST /v1/decisions), issuance (POST /v1/licenses) and renewal
#     (POST /v1/licenses/{id}/renewals) against the release build on
#     PostgreSQL and on SQLite, each answered only once durably audited
# then each PostgreSQL path again at half its saturating rate (p99 there), the
# service's peak RSS, the WAL PostgreSQL wrote per answered request on each
# path (beside pgbench's per row), whether the audit chain verifies
# afterwards, and the issue's targets as ratios.
#
# Needs PostgreSQL at $LOAD_PG (default postgres://postgres@127.0.0.1:5432,
# trust auth) and pgbench; installs wrk from Debian's packages if missing.
# LOAD_BACKENDS="postgres sqlite" picks the service's backends.
#
# What events cost issuance: LOAD_EVENTS=1 adds, in each round and on each
# backend, issuance by
#   - the release before the outbox (LOAD_BASELINE_REV, default the parent of
#     the commit that added the events migration): no events at all;
#   - this build with no webhook endpoint: every licence also writes its
#     event, in its transaction;
#   - this build with one endpoint, to a local receiver (benches/lib.sh) that
#     verifies every delivery: the delivery worker reads, sends and settles
#     while the licences are issued;
# then the ratios, and how many of the run's events the receiver had and how
# long after the run it had them all. LOAD_EVENTS=only runs just these (no
# baselines, preflights, renewals or half load). The baseline is built once
# from `git archive` of that commit into target/bench-baseline/ (a release
# build from scratch: minutes), and checked to have no events table. The
# outbox cannot be turned off in this build: comparing with the release
# before it is how its cost is measured. With LOAD_EVENTS=only,
# GATEKEEPER_BIN and LOAD_BASELINE_BIN name other builds to compare instead.
#
# LOAD_BEFORE_BIN=path/to/gatekeeper runs the three paths on each backend
# against that build too, in each round right after this one's (before it
# in even rounds), and prints
# this build's rates as ratios of its ("before": how a change to the write
# path is measured side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-64}
ROUNDS=${3:-3}
PG=${LOAD_PG:-postgres://postgres@127.0.0.1:5432}
BACKENDS=${LOAD_BACKENDS:-postgres sqlite}
PORT=${LOAD_PORT:-18181}
BARE_PORT=$((PORT + 1))
DB=gatekeeper_load
PGBENCH_DB=gatekeeper_pgbench
PGBENCH_CLIENTS=16
EVENTS_MODE=${LOAD_EVENTS:-0}
RPORT=$((PORT + 2))
case $EVENTS_MODE in 0|1|only) ;; *) echo "LOAD_EVENTS must be 0, 1 or only" >&2; exit 2;; esac

# shellcheck source=benches/lib.sh
. benches/lib.sh
ensure_wrk
if [ "$EVENTS_MODE" != only ]; then
  command -v pgbench >/dev/null || { echo "pgbench is missing (Debian: postgresql-client)" >&2; exit 1; }
fi
if [ -n "${GATEKEEPER_BIN:-}" ] && [ "$EVENTS_MODE" = only ]; then
  BIN=$GATEKEEPER_BIN   # a quick look at another build (the events runs need no bare-actix)
else
  cargo build --release -q --bin gatekeeper --example bare-actix
  BIN=target/release/gatekeeper
fi
BARE=target/release/examples/bare-actix

# The release before the outbox, built once (LOAD_EVENTS).
if [ "$EVENTS_MODE" != 0 ]; then
  BASELINE_REV=${LOAD_BASELINE_REV:-$(git log --diff-filter=A --format=%H -- 'migrations/*events_webhooks*' | tail -n 1)^}
  BASELINE_SHORT=$(git rev-parse --short "$BASELINE_REV")
  BASELINE_DIR=target/bench-baseline/$BASELINE_SHORT
  BASELINE_BIN=${LOAD_BASELINE_BIN:-$BASELINE_DIR/target/release/gatekeeper}
  if [ ! -x "$BASELINE_BIN" ]; then
    echo "building the baseline $BASELINE_SHORT ($(git log -1 --format=%s "$BASELINE_REV" | cut -c1-60)…) in $BASELINE_DIR" >&2
    rm -rf "$BASELINE_DIR/src"
    mkdir -p "$BASELINE_DIR/src"
    git archive --format=tar "$BASELINE_REV" | tar -x -C "$BASELINE_DIR/src"
    CARGO_TARGET_DIR="$(pwd)/$BASELINE_DIR/target" \
      cargo build --release -q --bin gatekeeper --manifest-path "$BASELINE_DIR/src/Cargo.toml"
  fi
fi
bench_workdir
RECEIVER_PID=
load_cleanup() {
  [ "$BASHPID" = "$BENCH_SHELL" ] || return 0
  [ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null
  bench_cleanup
}
trap load_cleanup EXIT

# --- request scripts --------------------------------------------------------

BODY_DECIDE='{"transaction":"issue","product":"ACME-VPN","customer":{"id":"c-1","name":"Beispiel GmbH","country":"DE","us_person":false}}'
BODY_ISSUE='{"product":"ACME-VPN","customer":{"id":"c-1","name":"Beispiel GmbH","country":"DE","us_person":false},"seats":5,"term_days":365}'


{ lua_common; cat <<LUA
local body = '$BODY_DECIDE'
function request()
  return wrk.format("POST", "/v1/decisions", nil, body)
end
LUA
} >"$WORK/decide.lua"

lua_issue "$BODY_ISSUE" >"$WORK/issue.lua"

# Renewals of a week each: at 30 days, 256 licences renewed 3,000 times a
# second for 10 s ran into the ten-year cap (422) near the end of a run.
renew_lua() { # licence ids (one per line) on stdin
  lua_common
  echo "local ids = {"
  sed 's/.*/  "&",/'
  echo "}"
  cat <<'LUA'
local body = '{"term_days":7}'
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  local id = ids[(counter * 7 + tid) % #ids + 1]
  return wrk.format("POST", "/v1/licenses/" .. id .. "/renewals", nil, body)
end
LUA
}

cat >"$WORK/pgbench.sql" <<'SQL'
\set k random(1, 1000000000)
INSERT INTO one_row (k, payload) VALUES (:k, 'a one-row insert, one transaction');
SQL

# --- runners ---------------------------------------------------------------

# wrk_run URL SCRIPT [PACE_MS] -> "rps p50_ms p99_ms non2xx"
wrk_run() {
  local url=$1 script=$2 pace=${3:-0} out
  out=$(PACE_MS=$pace wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$script" \
    -H "Authorization: Bearer ${TOKEN:-none}" -H "Content-Type: application/json" "$url")
  wrk_stats <<<"$out"
}

bare_run() {
  "$BARE" "127.0.0.1:$BARE_PORT" &
  local pid=$!
  wait_ready "http://127.0.0.1:$BARE_PORT/" any
  TOKEN=none wrk_run "http://127.0.0.1:$BARE_PORT" "$WORK/decide.lua"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

pgbench_run() {
  psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" \
    -c "CREATE DATABASE $PGBENCH_DB" >/dev/null
  psql "$PG/$PGBENCH_DB" -qX -c "CREATE TABLE one_row (id bigserial PRIMARY KEY, k bigint NOT NULL, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())" >/dev/null
  local out
  wal_lsn >"$WORK/pgbench.lsn"   # after the CREATE DATABASE, which writes WAL of its own
  out=$(pgbench -n -M prepared -c "$PGBENCH_CLIENTS" -j 2 -T "$DURATION" -f "$WORK/pgbench.sql" "$PG/$PGBENCH_DB" 2>&1)
  awk '/latency average/ { lat = $4 } /^tps/ { tps = $3 } END { printf "%.0f %.2f - 0\n", tps, lat }' <<<"$out"
}

# start_service BACKEND [BINARY]: a fresh database, the service (this
# build unless told), a registered tenant and product, and tokens.
start_service() {
  local backend=$1 bin=${2:-$BIN} url
  rm -rf "$WORK/data"
  if [ "$backend" = postgres ]; then
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
    url="$PG/$DB"
  else
    url="sqlite://$WORK/data/gatekeeper.db"
  fi
  DB_URL=$url
  # Private addresses allowed: the events runs' receiver is on 127.0.0.1
  # (a build before webhooks ignores the variable).
  GATEKEEPER_DATABASE_URL="$url" GATEKEEPER_LISTEN="127.0.0.1:$PORT" GATEKEEPER_DATA_DIR="$WORK/data" \
    GATEKEEPER_RATE_LIMIT=0 GATEKEEPER_WEBHOOK_ALLOW_PRIVATE=1 RUST_LOG=warn "$bin" serve 2>>"$WORK/serve.log" &
  SERVER_PID=$!
  wait_ready "http://127.0.0.1:$PORT/readyz"
  ADMIN=$(GATEKEEPER_DATA_DIR="$WORK/data" "$bin" token --role admin)
  COMPLIANCE=$(GATEKEEPER_DATA_DIR="$WORK/data" "$bin" token --role compliance)
  TOKEN=$(GATEKEEPER_DATA_DIR="$WORK/data" "$bin" token --role reseller --reseller load)
  local base="http://127.0.0.1:$PORT/v1"
  curl -sf -X PUT "$base/resellers/load" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"Load","country":"DE","us_person":false}' >/dev/null
  put_acme "$base" "$ADMIN"
  # Licences to renew.
  for i in $(seq 1 256); do
    curl -sf -X POST "$base/licenses" -H "Authorization: Bearer $TOKEN" -H "Idempotency-Key: seed-$i" \
      -H 'Content-Type: application/json' -d "$BODY_ISSUE"
    echo
  done | python3 -c 'import json, sys
for line in sys.stdin:
    print(json.loads(line)["license"]["id"])' | renew_lua >"$WORK/renew.lua"
  [ "$(grep -c '^  "' "$WORK/renew.lua")" -ge 1 ] || { echo "no licence to renew" >&2; exit 1; }
}

stop_service() {
  PEAK_RSS_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

verify_chain() {
  curl -sf "http://127.0.0.1:$PORT/v1/audit/verify" -H "Authorization: Bearer $COMPLIANCE"
}

# db_count SQL: a count from the service's database ($DB_URL), read beside it.
db_count() {
  case $DB_URL in
    sqlite://*) python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' \
                  "${DB_URL#sqlite://}" "$1" ;;
    *) psql "$DB_URL" -AtXc "$1" ;;
  esac
}

# The three issuance runs of LOAD_EVENTS on BACKEND; the delivery figures
# go to DELIVERY.
events_runs() {
  local backend=$1 created secret before after want got deadline ended
  start_service "$backend" "$BASELINE_BIN"
  local tables="SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'"
  [[ $DB_URL == sqlite://* ]] && tables="SELECT count(*) FROM sqlite_master WHERE name = 'events'"
  [ "$(db_count "$tables")" = 0 ] ||
    { echo "the baseline $BASELINE_SHORT has an events table: pick an older LOAD_BASELINE_REV" >&2; exit 1; }
  record "$backend issuance, $BASELINE_SHORT" "$(wrk_run "http://127.0.0.1:$PORT" "$WORK/issue.lua")"
  stop_service

  start_service "$backend"
  record "$backend issuance, events" "$(wrk_run "http://127.0.0.1:$PORT" "$WORK/issue.lua")"
  stop_service

  start_service "$backend"
  created=$(curl -s -w '\n%{http_code}' -X POST "http://127.0.0.1:$PORT/v1/webhook-endpoints" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"url\": \"http://127.0.0.1:$RPORT/load\"}")
  [ "${created##*$'\n'}" = 201 ] || { echo "creating the webhook endpoint: $created" >&2; exit 1; }
  secret=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["secret"])' "${created%$'\n'*}")
  printf '{"/load": "%s"}' "$secret" >"$WORK/secrets.json"
  webhook_receiver_py >"$WORK/receiver.py"
  python3 "$WORK/receiver.py" "$RPORT" "$WORK/secrets.json" 2>>"$WORK/receiver.log" &
  RECEIVER_PID=$!
  wait_ready "http://127.0.0.1:$RPORT/stats"
  before=$(db_count "SELECT count(*) FROM events")
  record "$backend issuance, events + endpoint" "$(wrk_run "http://127.0.0.1:$PORT" "$WORK/issue.lua")"
  ended=$SECONDS
  after=$(db_count "SELECT count(*) FROM events")
  want=$((after - before))
  got=$(receiver_stats "$RPORT" unique)
  local at_end=$got
  deadline=$((SECONDS + 600))
  while [ "$got" -lt "$want" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.5
    got=$(receiver_stats "$RPORT" unique)
  done
  DELIVERY+="$backend round $r: $want events in the run; the receiver had $at_end when it ended, $got of $want $((SECONDS - ended)) s later; $(receiver_stats "$RPORT" bad) did not verify"$'\n'
  kill "$RECEIVER_PID" 2>/dev/null
  wait "$RECEIVER_PID" 2>/dev/null || true
  RECEIVER_PID=
  stop_service
}

# --- the run -----------------------------------------------------------------

declare -A RPS P50 P99 BAD
# The WAL PostgreSQL wrote per answered request: how much each path makes
# the database write, against pgbench's one row. Taken around each run on
# the server's WAL position (the whole server's: nothing else should write
# meanwhile), divided by rate x duration; the median of the rounds is shown.
declare -A WAL
wal_lsn() { psql "$PG/postgres" -AtXc "SELECT pg_current_wal_lsn()"; }
wal_record() { # NAME FROM_LSN "rps p50 p99 bad"
  local bytes rps=${3%% *}
  bytes=$(psql "$PG/postgres" -AtXc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$2')")
  WAL[$1]+="$(awk -v b="$bytes" -v r="$rps" -v d="$DURATION" 'BEGIN { printf "%.0f", (r > 0 ? b / (r * d) : 0) }') "
}
# run_path NAME SCRIPT: a wrk run against the service, recorded, with its
# WAL per request on PostgreSQL.
run_path() {
  local name=$1 from out
  from=$(wal_lsn)
  out=$(wrk_run "http://127.0.0.1:$PORT" "$2")
  record "$name" "$out"
  case $name in postgres*) wal_record "$name" "$from" "$out" ;; esac
}

record() { # name "rps p50 p99 bad"
  local name=$1 rps p50 p99 bad
  read -r rps p50 p99 bad <<<"$2"
  RPS[$name]+="$rps "
  P50[$name]+="$p50 "
  P99[$name]+="$p99 "
  BAD[$name]=$(( ${BAD[$name]:-0} + bad ))
  printf '  %-22s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "$bad" >&2
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "load harness: ${DURATION}s per run, $CONNECTIONS connections (pgbench $PGBENCH_CLIENTS clients), $ROUNDS rounds" >&2
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(psql "$PG/postgres" -AtXc 'SHOW server_version')" >&2
# before_runs BACKEND: the three paths against LOAD_BEFORE_BIN.
before_runs() {
  start_service "$1" "$LOAD_BEFORE_BIN"
  run_path "$1 preflight, before" "$WORK/decide.lua"
  run_path "$1 issuance, before" "$WORK/issue.lua"
  run_path "$1 renewal, before" "$WORK/renew.lua"
  stop_service
}

declare -A PEAK
CHAIN=""
DELIVERY=""
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r" >&2
  if [ "$EVENTS_MODE" != only ]; then
    record "bare actix-web" "$(bare_run)"
    out=$(pgbench_run)
    record "pgbench one-row insert" "$out"
    wal_record "pgbench one-row insert" "$(cat "$WORK/pgbench.lsn")" "$out"
    for backend in $BACKENDS; do
      # With a build to compare, the two take turns to go first: the one
      # that goes first runs right after pgbench, while PostgreSQL may still
      # be writing out what pgbench wrote, and the other on a machine the
      # first has warmed; taking turns favours neither.
      if [ -n "${LOAD_BEFORE_BIN:-}" ] && [ $((r % 2)) = 0 ]; then
        this_build_after=1
        before_runs "$backend"
      else
        this_build_after=0
      fi
      start_service "$backend"
      run_path "$backend preflight" "$WORK/decide.lua"
      run_path "$backend issuance" "$WORK/issue.lua"
      run_path "$backend renewal" "$WORK/renew.lua"
      verdict=$(verify_chain)
      CHAIN+="$backend round $r: $verdict"$'\n'
      stop_service
      PEAK[$backend]=$(( ${PEAK[$backend]:-0} > PEAK_RSS_KIB ? ${PEAK[$backend]:-0} : PEAK_RSS_KIB ))
      if [ -n "${LOAD_BEFORE_BIN:-}" ] && [ "$this_build_after" = 0 ]; then
        before_runs "$backend"
      fi
    done
  fi
  if [ "$EVENTS_MODE" != 0 ]; then
    for backend in $BACKENDS; do events_runs "$backend"; done
  fi
done

# Half of the saturating rate, paced: p99 there.
if [ "$EVENTS_MODE" != only ] && [[ " $BACKENDS " == *" postgres "* ]]; then
  echo "half load (PostgreSQL)" >&2
  start_service postgres
  for path in preflight issuance renewal; do
    script=$WORK/$(case $path in preflight) echo decide;; issuance) echo issue;; renewal) echo renew;; esac).lua
    target=$(( $(median "${RPS[postgres $path]}") / 2 ))
    pace=$(( CONNECTIONS * 1000 / (target > 0 ? target : 1) ))
    record "postgres $path @half" "$(wrk_run "http://127.0.0.1:$PORT" "$script" "$pace")"
  done
  verdict=$(verify_chain)
  CHAIN+="postgres half load: $verdict"$'\n'
  stop_service
  PEAK[postgres]=$(( PEAK[postgres] > PEAK_RSS_KIB ? PEAK[postgres] : PEAK_RSS_KIB ))
fi

echo
printf '| %-24s | %9s | %8s | %8s | %7s | %s |\n' path "req/s" "p50 ms" "p99 ms" non-2xx "runs (req/s)"
printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..26})" "-----------" "----------" "----------" "---------" "---"
rows=()
if [ "$EVENTS_MODE" != only ]; then
  rows+=("bare actix-web" "pgbench one-row insert")
  for backend in $BACKENDS; do
    rows+=("$backend preflight" "$backend issuance" "$backend renewal")
    [ -n "${LOAD_BEFORE_BIN:-}" ] &&
      rows+=("$backend preflight, before" "$backend issuance, before" "$backend renewal, before")
  done
  for p in preflight issuance renewal; do [ -n "${RPS[postgres $p @half]:-}" ] && rows+=("postgres $p @half"); done
fi
if [ "$EVENTS_MODE" != 0 ]; then
  for backend in $BACKENDS; do
    rows+=("$backend issuance, $BASELINE_SHORT" "$backend issuance, events" "$backend issuance, events + endpoint")
  done
fi
for name in "${rows[@]}"; do
  printf '| %-24s | %9s | %8s | %8s | %7s | %s |\n' "$name" "$(median "${RPS[$name]}")" \
    "$(median "${P50[$name]}")" "$(median "${P99[$name]}")" "${BAD[$name]}" "${RPS[$name]% }"
done
echo
if [ "$EVENTS_MODE" != 0 ]; then
  echo "what events cost issuance (medians; $BASELINE_SHORT is the release before the outbox):"
  for backend in $BACKENDS; do
    base=$(median "${RPS[$backend issuance, $BASELINE_SHORT]}")
    awk -v b="$base" -v e="$(median "${RPS[$backend issuance, events]}")" \
      -v w="$(median "${RPS[$backend issuance, events + endpoint]}")" -v n="$backend" \
      'BEGIN { printf "  %s: events %.3f of %s req/s, events + an endpoint %.3f\n", n, e / b, b, w / b }'
  done
  echo "deliveries during the events + endpoint runs:"
  printf '%s' "$DELIVERY" | sed 's/^/  /'
fi
[ "$EVENTS_MODE" = only ] && exit 0
for backend in $BACKENDS; do
  echo "peak RSS of the service ($backend): $(( PEAK[$backend] / 1024 )) MiB"
done
if [ -n "${WAL[pgbench one-row insert]:-}" ]; then
  echo "WAL written per answered request (PostgreSQL, median of the rounds):"
  for name in "pgbench one-row insert" "postgres preflight" "postgres issuance" "postgres renewal" \
    "postgres preflight, before" "postgres issuance, before" "postgres renewal, before"; do
    [ -n "${WAL[$name]:-}" ] && printf '  %-28s %6s B\n' "$name" "$(median "${WAL[$name]}")"
  done
fi
if [ -n "${LOAD_BEFORE_BIN:-}" ]; then
  echo "this build against $LOAD_BEFORE_BIN (medians):"
  for backend in $BACKENDS; do
    for p in preflight issuance renewal; do
      awk -v n="$(median "${RPS[$backend $p]}")" -v b="$(median "${RPS[$backend $p, before]}")" -v w="$backend $p" \
        'BEGIN { printf "  %s: %.2f times (%s against %s req/s)\n", w, n / b, n, b }'
    done
  done
fi
echo "audit chain after each run:"
printf '%s' "$CHAIN" | sed 's/^/  /'
if [[ " $BACKENDS " == *" postgres "* ]]; then
  bare=$(median "${RPS[bare actix-web]}")
  one=$(median "${RPS[pgbench one-row insert]}")
  pre=$(median "${RPS[postgres preflight]}")
  iss=$(median "${RPS[postgres issuance]}")
  echo "targets (PostgreSQL):"
  awk -v p="$pre" -v b="$bare" 'BEGIN { printf "  preflight / bare actix-web = %.3f (target >= 0.25)\n", p / b }'
  awk -v i="$iss" -v o="$one" 'BEGIN { printf "  issuance / pgbench one-row insert = %.2f (target >= 1)\n", i / o }'
  for p in preflight issuance renewal; do
    echo "  p99 at half load, $p: $(median "${P99[postgres $p @half]}") ms (target < 10) at $(median "${RPS[postgres $p @half]}") req/s"
  done
fi
