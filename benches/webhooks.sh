#!/usr/bin/env bash
# Webhook delivery throughput to a local receiver: a burst of licences
# issued as fast as CONCURRENCY clients can, every one an event for each of
# ENDPOINTS webhook endpoints, timed until the receiver holds them all.
#
#   benches/webhooks.sh [EVENTS] [ENDPOINTS] [CONCURRENCY]     (default 2000 1 16)
#   WEBHOOK_BACKEND=postgres benches/webhooks.sh               (default sqlite)
#
# Prints how long the burst took to issue (licences/s), how long until the
# receiver had every event at every endpoint (deliveries/s over the whole,
# and after the burst: the drain), deliveries per endpoint per second, and
# the lag from each event's commit (its `timestamp`) to its receipt, p50,
# p99 and max. The receiver (benches/lib.sh, standard library) verifies
# every signature and counts each webhook-id once per endpoint; the run
# fails if any delivery does not verify or an event is missing after
# WEBHOOK_DEADLINE seconds (default 300).
#
# An endpoint is sent its events one at a time, in order (the contract), so
# one endpoint's rate is bounded by one round trip and one settlement write
# per event; several endpoints are delivered side by side.
#
# Runs the release build (or $GATEKEEPER_BIN) with GATEKEEPER_WEBHOOK_ALLOW_PRIVATE=1
# (the receiver is on 127.0.0.1) and the tenant's rate limit off. PostgreSQL
# at $LOAD_PG (default postgres://postgres@127.0.0.1:5432, trust auth);
# creates and drops the database gatekeeper_webhooks.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-2000}
ENDPOINTS=${2:-1}
CONCURRENCY=${3:-16}
BACKEND=${WEBHOOK_BACKEND:-sqlite}
PG=${LOAD_PG:-postgres://postgres@127.0.0.1:5432}
PORT=${LOAD_PORT:-18195}
RPORT=$((PORT + 1))
DB=gatekeeper_webhooks
DEADLINE_S=${WEBHOOK_DEADLINE:-300}

# shellcheck source=benches/lib.sh
. benches/lib.sh
if [ -n "${GATEKEEPER_BIN:-}" ]; then
  BIN=$GATEKEEPER_BIN
else
  cargo build --release -q --bin gatekeeper
  BIN=target/release/gatekeeper
fi
bench_workdir
RECEIVER_PID=
webhooks_cleanup() {
  [ "$BASHPID" = "$BENCH_SHELL" ] || return 0
  [ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null
  bench_cleanup
  if [ "$BACKEND" = postgres ]; then
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap webhooks_cleanup EXIT

if [ "$BACKEND" = postgres ]; then
  psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
  URL="$PG/$DB"
else
  URL="sqlite://$WORK/data/gatekeeper.db"
fi
mkdir -p "$WORK/data"
GATEKEEPER_DATABASE_URL="$URL" GATEKEEPER_LISTEN="127.0.0.1:$PORT" GATEKEEPER_DATA_DIR="$WORK/data" \
  GATEKEEPER_RATE_LIMIT=0 GATEKEEPER_WEBHOOK_ALLOW_PRIVATE=1 RUST_LOG=warn \
  "$BIN" serve 2>"$WORK/serve.log" &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$PORT/readyz"
ADMIN=$(GATEKEEPER_DATA_DIR="$WORK/data" "$BIN" token --role admin)
RESELLER=$(GATEKEEPER_DATA_DIR="$WORK/data" "$BIN" token --role reseller --reseller hooks)
base="http://127.0.0.1:$PORT/v1"
curl -sf -X PUT "$base/resellers/hooks" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' -d '{"name":"Hooks","country":"DE","us_person":false}' >/dev/null
put_acme "$base" "$ADMIN"

# The endpoints, each at a path of its own on the one receiver; their
# secrets for the receiver.
echo '{}' >"$WORK/secrets.json"
for i in $(seq 1 "$ENDPOINTS"); do
  created=$(curl -s -w '\n%{http_code}' -X POST "$base/webhook-endpoints" -H "Authorization: Bearer $RESELLER" \
    -H 'Content-Type: application/json' -d "{\"url\": \"http://127.0.0.1:$RPORT/e$i\"}")
  [ "${created##*$'\n'}" = 201 ] || { echo "creating endpoint $i: $created" >&2; exit 1; }
  python3 - "$WORK/secrets.json" "/e$i" "${created%$'\n'*}" <<'PY'
import json, sys
path, secrets = sys.argv[1], json.load(open(sys.argv[1]))
secrets[sys.argv[2]] = json.loads(sys.argv[3])["secret"]
json.dump(secrets, open(path, "w"))
PY
done
webhook_receiver_py >"$WORK/receiver.py"
python3 "$WORK/receiver.py" "$RPORT" "$WORK/secrets.json" 2>"$WORK/receiver.log" &
RECEIVER_PID=$!
wait_ready "http://127.0.0.1:$RPORT/stats"

echo "webhook delivery: $EVENTS licences issued by $CONCURRENCY clients, $ENDPOINTS endpoint(s), $BACKEND, $(nproc) cores" >&2
# The burst: licences as fast as CONCURRENCY keep-alive clients can issue
# them; prints the instants it started and ended (Unix seconds).
times=$(python3 - "$PORT" "$RESELLER" "$EVENTS" "$CONCURRENCY" <<'PY'
import http.client, json, sys, threading, time, uuid
port, token, total, clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = json.dumps({"product": "ACME-VPN", "seats": 5, "term_days": 365,
                   "customer": {"id": "c-1", "name": "Beispiel GmbH", "country": "DE", "us_person": False}})
left, lock, failures = [total], threading.Lock(), []
def client():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while True:
        with lock:
            if left[0] == 0:
                return
            left[0] -= 1
        conn.request("POST", "/v1/licenses", body, {"Authorization": f"Bearer {token}",
                     "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
        reply = conn.getresponse()
        reply.read()
        if reply.status != 201:
            failures.append(reply.status)
start = time.time()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(f"{len(failures)} issuances failed: {sorted(set(failures))}")
print(start, time.time())
PY
)
read -r T0 T1 <<<"$times"
want=$((EVENTS * ENDPOINTS))
deadline=$((SECONDS + DEADLINE_S))
while :; do
  got=$(receiver_stats "$RPORT" unique)
  [ "$got" -ge "$want" ] && break
  [ "$SECONDS" -lt "$deadline" ] || { echo "after ${DEADLINE_S}s the receiver has $got of $want events" >&2; exit 1; }
  sleep 0.2
done
curl -sf "http://127.0.0.1:$RPORT/stats" >"$WORK/stats.json"
python3 - "$WORK/stats.json" "$T0" "$T1" "$EVENTS" "$ENDPOINTS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t0, t1, events, endpoints = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if s["bad"]:
    sys.exit(f"{s['bad']} deliveries did not verify")
last = s["last"]
lags = sorted(s["lags"])
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
print(f"issued {events} licences in {t1 - t0:.2f} s: {events / (t1 - t0):.0f} licences/s")
print(f"delivered {s['unique']} events ({endpoints} endpoint(s)) {last - t0:.2f} s after the burst began: "
      f"{s['unique'] / (last - t0):.0f} deliveries/s, {events / (last - t0):.0f} per endpoint per second")
print(f"the last delivery came {max(0.0, last - t1):.2f} s after the last licence was issued")
print(f"commit to receipt: p50 {q(0.5) * 1000:.0f} ms, p99 {q(0.99) * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
print(f"posts received {s['posts']} (repeats of an event: {s['posts'] - s['unique']}); "
      f"per endpoint: {sorted(s['per_path'].values())}")
PY
