#!/usr/bin/env bash
# The plans of the queries behind each index of the tables every audited
# write adds to (decisions, idempotency_keys, licenses, audit_events, events),
# on a PostgreSQL database the service has filled: by default the one
# benches/load.sh leaves behind.
#
#   benches/plans.sh [DATABASE_URL]     (default postgres://postgres@127.0.0.1:5432/gatekeeper_load)
#
# Prints each table's indexes, then each query (as the store sends it, with
# values taken from the data) and its plan. An index that no query below
# uses has no reason to be kept up on every write.
set -euo pipefail
URL=${1:-postgres://postgres@127.0.0.1:5432/gatekeeper_load}
q() { psql "$URL" -qAtX -c "$1"; }

echo "== indexes"
q "SELECT tablename || ': ' || indexdef FROM pg_indexes
   WHERE tablename IN ('decisions', 'idempotency_keys', 'licenses', 'audit_events', 'events')
   ORDER BY tablename, indexname"
echo "== rows"
for t in decisions idempotency_keys licenses audit_events events; do
  echo "$t: $(q "SELECT count(*) FROM $t")"
done
q "ANALYZE" >/dev/null

decision=$(q "SELECT id FROM decisions ORDER BY audit_seq DESC LIMIT 1")
reseller=$(q "SELECT reseller FROM licenses LIMIT 1")
product=$(q "SELECT product FROM licenses LIMIT 1")
license=$(q "SELECT id FROM licenses ORDER BY created_at DESC LIMIT 1")
key=$(q "SELECT idem_key FROM idempotency_keys LIMIT 1")
seq=$(q "SELECT max(seq) / 2 FROM audit_events")
now=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)

plan() {
  printf '\n-- %s\n%s\n' "$1" "$2"
  psql "$URL" -qAtX -c "EXPLAIN (COSTS OFF) $2" | sed 's/^/   /'
}

plan "a decision, read from its event (GET /v1/decisions/{id})" \
  "SELECT d.id, d.reseller, e.event, d.request, d.review_status, d.review
   FROM decisions d JOIN audit_events e ON e.seq = d.audit_seq WHERE d.id = '$decision'"
plan "the review queue (GET /v1/reviews), every status" \
  "SELECT d.id FROM decisions d JOIN audit_events e ON e.seq = d.audit_seq
   WHERE d.review_status IS NOT NULL ORDER BY d.id LIMIT 50"
plan "the review queue, open only" \
  "SELECT d.id FROM decisions d JOIN audit_events e ON e.seq = d.audit_seq
   WHERE d.review_status IS NOT NULL AND d.review_status = 'open' ORDER BY d.id LIMIT 50"
plan "open reviews, counted for the metrics" \
  "SELECT count(*) FROM decisions WHERE review_status = 'open'"
plan "an idempotency record with its event (every keyed licence request)" \
  "SELECT k.fingerprint, k.status, k.body, k.audit_seq, e.event
   FROM idempotency_keys k LEFT JOIN audit_events e ON e.seq = k.audit_seq
   WHERE k.reseller = '$reseller' AND k.idem_key = '$key' AND k.expires_at > '$now'"
plan "idempotency records past their 24 hours (the writer's purge)" \
  "SELECT count(*) FROM idempotency_keys WHERE expires_at <= '$now'"
plan "a licence (GET /v1/licenses/{id}, a renewal's read)" \
  "SELECT * FROM licenses WHERE id = '$license'"
plan "a reseller's licences (GET /v1/licenses)" \
  "SELECT id FROM licenses WHERE reseller = '$reseller' ORDER BY id LIMIT 50"
plan "a product's licences (impact runs)" \
  "SELECT id FROM licenses WHERE product = '$product' ORDER BY id LIMIT 500"
plan "a status list's entries" \
  "SELECT status_idx FROM licenses WHERE status_idx >= 0 AND status_idx < 131072
   AND status <> 'active' ORDER BY status_idx"
plan "licences waiting on an impact review" \
  "SELECT id FROM licenses WHERE impact_review IS NOT NULL ORDER BY id LIMIT 100"
plan "the audit trail by action (GET /v1/audit?action=)" \
  "SELECT seq FROM audit_events WHERE action = 'decision.issue' AND seq > $seq ORDER BY seq LIMIT 100"
plan "the audit trail by reseller" \
  "SELECT seq FROM audit_events WHERE reseller = '$reseller' AND seq > $seq ORDER BY seq LIMIT 100"
plan "the audit trail by instant" \
  "SELECT seq FROM audit_events WHERE at >= '$now' ORDER BY seq LIMIT 100"
plan "an event by its id" \
  "SELECT seq FROM audit_events WHERE id = 'x'"
plan "a reseller's feed (GET /v1/events), each event's data read from its audit event" \
  "SELECT e.seq, a.event FROM events e LEFT JOIN audit_events a ON a.seq = e.audit_seq
   WHERE e.reseller = '$reseller' AND e.seq > 0 ORDER BY e.seq LIMIT 100"
plan "events past their retention (the purge)" \
  "SELECT count(*) FROM events WHERE created_at < '2000-01-01T00:00:00.000000Z'"
