#!/usr/bin/env bash
# Contract fuzzing: schemathesis against openapi.yaml and the running
# service, as a reseller, a compliance officer and an admin, with every
# default check on (see schemathesis.toml beside this file for the one
# adjustment). Bounded: a fixed number of examples per operation. The
# coverage phase is left out: with this Python it stops on an internal error
# of the tool's own ("AST constructor recursion depth mismatch"), not on
# anything of the service's.
#
#   tests/contract/run.sh [path/to/gatekeeper]   (default: target/debug/gatekeeper)
#
# Then checks every exported audit event's hash, and the export's lines, with an independent
# RFC 8785 (JCS) implementation (jcs_check.py beside this file), on the fuzzed data and on names
# with non-ASCII letters, quotes, backslashes, control characters and emoji; it fails loudly on
# any difference.
#
# Creates a virtualenv under target/ with a pinned schemathesis and rfc8785 (from PyPI).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=$(realpath "${1:-target/debug/gatekeeper}")
VENV=$ROOT/target/schemathesis-venv
EXAMPLES=${CONTRACT_EXAMPLES:-25}
if [[ ! -x $VENV/bin/st ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis==4.32.5'
fi
if ! "$VENV/bin/python" -c 'import rfc8785' 2>/dev/null; then
  "$VENV/bin/pip" install -q 'rfc8785==0.1.4'
fi

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { [[ -n ${PID:-} ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# The limits are off: schemathesis checks the API's shape, and its many
# deliberately unauthenticated requests would otherwise throttle its address
# (the limits have tests of their own: tests/api/edges.rs). Webhook delivery
# is off too: an endpoint the fuzzer manages to create (an https URL whose
# name resolves to a public address) must never be sent anything.
( cd "$WORK" && GATEKEEPER_LISTEN="127.0.0.1:$PORT" GATEKEEPER_DATABASE_URL="sqlite://$WORK/gk.db" \
    GATEKEEPER_RATE_LIMIT=0 GATEKEEPER_AUTH_FAILURE_LIMIT=0 GATEKEEPER_WEBHOOK_INTERVAL=0 \
    RUST_LOG=warn exec "$BIN" serve ) 2>"$WORK/serve.log" &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
token() { (cd "$WORK" && "$BIN" token --ttl 7200 "$@"); }
ADMIN=$(token --role admin)
put() { curl -sf -X PUT "http://127.0.0.1:$PORT$1" -H "Authorization: Bearer $ADMIN" -d "$2" >/dev/null; }
# Some data for the examples to find: the reseller, Acme's products.
put /v1/resellers/acme '{"name":"Acme","country":"DE","us_person":false}'
put /v1/organizations/acme '{"name":"Acme Networks","country":"DE"}'
put /v1/products/KAV-ENGINE '{"name":"KAV","vendor":"ao-kaspersky-lab","category":"antivirus"}'
put /v1/products/ACME-FW-K '{"name":"FW","vendor":"acme","category":"firewall","components":["KAV-ENGINE"]}'

failed=0
cd "$ROOT/tests/contract"
for role in "reseller --reseller acme" compliance admin; do
  # shellcheck disable=SC2086
  T=$(token --role $role)
  echo "==> schemathesis as ${role%% *}"
  if ! "$VENV/bin/st" run "$ROOT/openapi.yaml" --url "http://127.0.0.1:$PORT" \
      -H "Authorization: Bearer $T" --checks all --max-examples "$EXAMPLES" --workers 2 \
      --phases examples,fuzzing,stateful --seed 20261127 --no-color > "$WORK/st.log" 2>&1; then
    failed=1
    cat "$WORK/st.log"
  else
    grep -E "Test cases|passed|failures|warning" "$WORK/st.log" | tail -3
  fi
done
echo "==> RFC 8785: every exported hash checked with Python's rfc8785"
if ! ADMIN_TOKEN=$ADMIN RESELLER_TOKEN=$(token --role reseller --reseller acme) \
    COMPLIANCE_TOKEN=$(token --role compliance) \
    "$VENV/bin/python" "$ROOT/tests/contract/jcs_check.py" "http://127.0.0.1:$PORT" "$BIN"; then
  failed=1
fi
exit $failed
