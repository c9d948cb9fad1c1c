#!/usr/bin/env bash
# The console in a real browser:
#
#   tests/browser/run.sh [path/to/gatekeeper]   (default: target/debug/gatekeeper)
#
# Starts a development server (SQLite, in a temporary folder), makes a case
# for review (a licence asked for a Brazilian customer of unknown U.S.
# status) and an issued licence through the API, then drives headless
# Chromium (Debian's `chromium`, through playwright-core) over the console:
# sign in with the keyboard, open the review, read its evidence, approve it
# with attested facts, see the licence it issued, suspend and reinstate a
# licence, read the audit trail filtered, verify the chain, download the
# NDJSON export (then verified offline with `gatekeeper audit verify
# --file`), sign out. axe-core checks every page (no serious or critical
# violation), and every page is read at 200% zoom (a 640 px wide window)
# without horizontal scrolling. Screenshots of each page go to
# tests/browser/screenshots/.
#
# Needs node and npm (installs tests/browser's pinned packages with npm ci)
# and chromium. Uses only the loopback interface; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=$(realpath "${1:-target/debug/gatekeeper}")
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[[ -n "$CHROMIUM" ]] || { echo "browser: chromium is not installed (apt-get install chromium)" >&2; exit 1; }
[[ -d tests/browser/node_modules/playwright-core ]] || (cd tests/browser && npm ci --no-audit --no-fund)

fail() { echo "browser: FAIL: $*" >&2; exit 1; }
WORK=$(mktemp -d)
pid=
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT

cd "$WORK"
env -u GATEKEEPER_JWT_PUBLIC_KEY_FILE -u GATEKEEPER_OIDC_ISSUER -u GATEKEEPER_JWT_JWKS_URL \
  GATEKEEPER_DATABASE_URL="sqlite://$WORK/g.db" GATEKEEPER_LISTEN="127.0.0.1:$PORT" \
  GATEKEEPER_CHECKPOINT_INTERVAL=0 GATEKEEPER_RATE_LIMIT=0 \
  "$BIN" serve >"$WORK/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$BASE/readyz" >/dev/null || { cat "$WORK/serve.log" >&2; fail "the server did not become ready"; }

ADMIN=$("$BIN" token --role admin)
RESELLER=$("$BIN" token --role reseller --reseller alpha)
put() {
  curl -fs -o /dev/null -X PUT "$BASE$1" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d "$2" || fail "PUT $1"
}
put /v1/resellers/alpha '{"name": "Alpha Revenda Ltda", "country": "BR", "us_person": false}'
put /v1/organizations/acme '{"name": "Acme Networks", "country": "DE"}'
put /v1/products/KAV-ENGINE '{"name": "Kaspersky Anti-Virus engine", "vendor": "ao-kaspersky-lab", "category": "antivirus"}'
put /v1/products/ACME-FW-K '{"name": "Acme Firewall K", "vendor": "acme", "category": "firewall", "components": ["KAV-ENGINE"]}'
put /v1/products/ACME-VPN '{"name": "Acme VPN", "vendor": "acme", "category": "vpn"}'
licence() { # licence BODY: the answer to POST /v1/licenses
  curl -s -X POST "$BASE/v1/licenses" -H "Authorization: Bearer $RESELLER" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $(python3 -c 'import uuid; print(uuid.uuid4())')" \
    -d "$1"
}
REVIEW=$(licence '{"product": "ACME-FW-K", "seats": 40, "term_days": 200, "customer": {"id": "br-1", "name": "Exemplo Ltda", "country": "BR"}}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["decision"]["id"])') || fail "no case for review"
LICENSE=$(licence '{"product": "ACME-VPN", "seats": 5, "term_days": 30, "customer": {"id": "br-2", "name": "Cliente SA", "country": "BR", "us_person": false}}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["license"]["id"])') || fail "no licence"

COMPLIANCE=$("$BIN" token --role compliance)
cd "$ROOT"
mkdir -p tests/browser/screenshots
CHROMIUM="$CHROMIUM" node tests/browser/console.mjs "$BASE" "$REVIEW" "$LICENSE" tests/browser/screenshots \
  || { tail -n 20 "$WORK/serve.log" >&2; fail "the console flows"; }

# The export the browser downloaded verifies offline, as an auditor would check it.
"$BIN" audit verify --file tests/browser/screenshots/audit.ndjson >"$WORK/verify.out" \
  || { cat "$WORK/verify.out" >&2; fail "the exported trail does not verify"; }
grep -q '"ok": *true' "$WORK/verify.out" || { cat "$WORK/verify.out" >&2; fail "the exported trail does not verify"; }

# What the browser did is in the audit trail, by the person who signed in.
curl -fs "$BASE/v1/audit?limit=1000" -H "Authorization: Bearer $COMPLIANCE" | python3 -c '
import json, sys
acts = [e["action"] for e in json.load(sys.stdin)["events"] if e["actor"]["sub"] == "console:Ada Reviewer"]
want = ["review.approve", "license.suspend", "decision.reinstate"]
missing = [a for a in want if not any(x.startswith(a) for x in acts)]
sys.exit(f"not in the audit trail by the console user: {missing} (found {acts})" if missing else 0)
' || fail "the audit trail"
echo "browser: ok (screenshots in tests/browser/screenshots/)"
