#!/usr/bin/env bash
# The README's webhook receiver, verbatim, against a real gatekeeper:
#
#   tests/contract/webhook_check.sh [path/to/gatekeeper]   (default: target/debug/gatekeeper)
#
# 1. The README embeds tests/contract/webhook_receiver_check.py exactly (a
#    ```python block equal to the file), so what a reseller copies is what
#    runs here.
# 2. The receiver itself, fed by hand: a delivery signed with the
#    `standardwebhooks` package is printed once (a repeat with the same
#    webhook-id is answered 204 and not printed again); a wrong signature, a
#    stale timestamp and a missing header are answered 400 and not printed.
# 3. The service: a development server (SQLite, GATEKEEPER_WEBHOOK_ALLOW_PRIVATE=1
#    so that it may call 127.0.0.1), a webhook endpoint created through the
#    API with a reseller's token, the receiver started with the secret the
#    creation answered, then a licence issued and revoked: the receiver must
#    print the verified license.issued and then license.revoked of that
#    licence, with the ids GET /v1/events gives them, each once.
#
# Creates a virtualenv under target/ with a pinned standardwebhooks (from
# PyPI). Uses only the loopback interface; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=$(realpath "${1:-target/debug/gatekeeper}")
VENV=$ROOT/target/webhook-venv
RECEIVER=$ROOT/tests/contract/webhook_receiver_check.py
if ! "$VENV/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'standardwebhooks==1.1.0'
fi
PY=$VENV/bin/python

fail() { echo "webhook_check: FAIL: $*" >&2; exit 1; }
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# until TCP port $1 on 127.0.0.1 takes connections (10 s at most)
wait_listening() {
  for _ in $(seq 1 100); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "nothing listens on 127.0.0.1:$1"
}
# start_receiver SECRET PORT OUT: the README's program, in the background
start_receiver() {
  WEBHOOK_SECRET=$1 "$PY" "$RECEIVER" "$2" >"$3" 2>"$3.err" &
  pids+=($!)
  wait_listening "$2"
}

echo "==> the README embeds $(basename "$RECEIVER") verbatim"
python3 - "$ROOT/README.md" "$RECEIVER" <<'PY' || fail "README.md has no python block equal to $RECEIVER"
import re, sys
readme, program = open(sys.argv[1]).read(), open(sys.argv[2]).read()
sys.exit(0 if program in re.findall(r"^```python\n(.*?)^```$", readme, re.S | re.M) else 1)
PY

echo "==> the receiver, fed by hand"
RPORT=$(free_port)
SECRET=$("$PY" -c 'import base64, os; print("whsec_" + base64.b64encode(os.urandom(32)).decode())')
start_receiver "$SECRET" "$RPORT" "$WORK/hand.out"
SECRET=$SECRET "$PY" - "$RPORT" "$WORK/hand.out" <<'PY' || fail "the receiver, fed by hand"
import json, os, sys, time, urllib.error, urllib.request
from datetime import datetime, timedelta, timezone
from standardwebhooks import Webhook
port, out = int(sys.argv[1]), sys.argv[2]
hook = Webhook(os.environ["SECRET"])
body = json.dumps({"type": "license.issued", "timestamp": "2026-12-02T10:00:00.000000Z",
                   "data": {"license": {"id": "l-1"}}})

def post(msg_id, at, signature=None, drop=None):
    headers = {"content-type": "application/json", "webhook-id": msg_id,
               "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": signature or hook.sign(msg_id, at, body)}
    headers.pop(drop, None)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", body.encode(), headers)
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code

now = datetime.now(timezone.utc)
other = Webhook(b"another secret of 32 bytes......")
answers = {
    "signed": post("evt_1", now),
    "repeated": post("evt_1", now + timedelta(seconds=1)),
    "wrong key": post("evt_2", now, other.sign("evt_2", now, body)),
    "stale": post("evt_3", now - timedelta(minutes=6)),
    "no signature": post("evt_4", now, drop="webhook-signature"),
    "malformed signature": post("evt_5", now, "v1"),
    "second": post("evt_6", now),
}
expected = {"signed": 204, "repeated": 204, "wrong key": 400, "stale": 400,
            "no signature": 400, "malformed signature": 400, "second": 204}
assert answers == expected, f"answers {answers}, expected {expected}"
deadline = time.monotonic() + 5
while True:
    lines = [json.loads(line) for line in open(out) if line.strip()]
    if len(lines) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.05)
assert [e["id"] for e in lines] == ["evt_1", "evt_6"], f"printed {lines}"
assert lines[0] == {"id": "evt_1", **json.loads(body)}, lines[0]
print("    answers as expected; printed evt_1 and evt_6 once each, nothing unverified")
PY

echo "==> the service delivers to it"
PORT=$(free_port)
RPORT=$(free_port)
( cd "$WORK" && GATEKEEPER_LISTEN="127.0.0.1:$PORT" GATEKEEPER_DATABASE_URL="sqlite://$WORK/gk.db" \
    GATEKEEPER_WEBHOOK_ALLOW_PRIVATE=1 GATEKEEPER_WEBHOOK_RETRY_BASE_MS=200 GATEKEEPER_WEBHOOK_TIMEOUT=5 \
    RUST_LOG=warn exec "$BIN" serve ) 2>"$WORK/serve.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$WORK/serve.log" >&2; fail "the service is not ready"; }
token() { (cd "$WORK" && "$BIN" token --ttl 3600 "$@"); }
ADMIN=$(token --role admin)
RESELLER=$(token --role reseller --reseller acme)
API="http://127.0.0.1:$PORT/v1"
# call METHOD PATH TOKEN [BODY]: prints "STATUS BODY"
call() {
  local out status
  out=$(curl -s -o "$WORK/body" -w '%{http_code}' -X "$1" "$API$2" -H "Authorization: Bearer $3" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $RANDOM-$RANDOM-$RANDOM" ${4:+-d "$4"})
  status=$out
  printf '%s %s' "$status" "$(cat "$WORK/body")"
}
expect() { # expect STATUS "STATUS BODY" WHAT
  [[ ${2%% *} == "$1" ]] || fail "$3 answered ${2%% *}, expected $1: ${2#* }"
}
expect 201 "$(call PUT /resellers/acme "$ADMIN" '{"name":"Acme Resale","country":"DE","us_person":false}')" "PUT /v1/resellers/acme"
expect 201 "$(call PUT /organizations/acme "$ADMIN" '{"name":"Acme"}')" "PUT /v1/organizations/acme"
expect 201 "$(call PUT /products/ACME-VPN "$ADMIN" '{"name":"Acme VPN","vendor":"acme","category":"vpn"}')" "PUT /v1/products/ACME-VPN"

created=$(call POST /webhook-endpoints "$RESELLER" "{\"url\": \"http://127.0.0.1:$RPORT/gatekeeper\"}")
expect 201 "$created" "POST /v1/webhook-endpoints"
SECRET=$(python3 -c 'import json, sys; s = json.loads(sys.argv[1])["secret"]; assert s.startswith("whsec_"), s; print(s)' "${created#* }") \
  || fail "the creation answered no whsec_ secret: ${created#* }"
ENDPOINT=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "${created#* }")
# The secret is shown once: never in a read of the endpoint.
read_back=$(call GET "/webhook-endpoints/$ENDPOINT" "$RESELLER")
expect 200 "$read_back" "GET /v1/webhook-endpoints/$ENDPOINT"
[[ $read_back != *"$SECRET"* && $read_back != *'"secret"'* ]] || fail "a read of the endpoint shows its secret"
start_receiver "$SECRET" "$RPORT" "$WORK/service.out"

issued=$(call POST /licenses "$RESELLER" '{"product":"ACME-VPN","seats":5,"term_days":365,"customer":{"id":"c-1","name":"Beispiel GmbH","country":"DE","us_person":false}}')
expect 201 "$issued" "POST /v1/licenses"
LICENSE=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["license"]["id"])' "${issued#* }")
expect 200 "$(call POST "/licenses/$LICENSE/revocation" "$RESELLER" '{"reason":"webhook check"}')" "POST /v1/licenses/$LICENSE/revocation"
expect 200 "$(call GET '/events?limit=1000' "$RESELLER")" "GET /v1/events"
cp "$WORK/body" "$WORK/events.json"

python3 - "$WORK/service.out" "$WORK/events.json" "$LICENSE" <<'PY' || { cat "$WORK/service.out.err" "$WORK/serve.log" >&2; fail "the receiver did not print the verified events"; }
import json, sys, time
out, feed, licence = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
want = [(e["id"], e["type"]) for e in feed["events"]
        if e["type"] in ("license.issued", "license.revoked") and e["data"]["license"]["id"] == licence]
assert [t for _, t in want] == ["license.issued", "license.revoked"], f"GET /v1/events: {feed}"
deadline = time.monotonic() + 30
while True:
    printed = [json.loads(line) for line in open(out) if line.strip()]
    got = [(e["id"], e["type"]) for e in printed if e["data"].get("license", {}).get("id") == licence]
    if len(got) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.1)
assert got == want, f"the receiver printed {got}, GET /v1/events has {want}"
assert len({e["id"] for e in printed}) == len(printed), f"an event printed twice: {printed}"
issued = next(e for e in printed if e["type"] == "license.issued")
assert issued["data"]["license"]["status"] == "active" and "token" not in issued["data"]["license"], issued
print(f"    printed, verified: {got[0][1]} {got[0][0]}, then {got[1][1]} {got[1][0]}")
PY
[[ ! -s $WORK/service.out.err ]] || { cat "$WORK/service.out.err" >&2; fail "the receiver refused a delivery of the service"; }
echo "webhook_check: 3 passed, 0 failed"
