-- Records in the new form mean nothing to the code before: forget them
-- (a retry with their key is then decided again, as after 24 hours).
DELETE FROM idempotency_keys WHERE audit_seq IS NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN audit_seq;
DROP INDEX decisions_in_review;
ALTER TABLE decisions ADD COLUMN body TEXT NOT NULL DEFAULT '';
UPDATE decisions d SET body = (e.event::json -> 'decision')::text
FROM audit_events e WHERE e.seq = d.audit_seq;
ALTER TABLE decisions ALTER COLUMN body DROP DEFAULT;
CREATE INDEX decisions_by_review_status ON decisions (review_status, created_at);
CREATE INDEX decisions_by_reseller ON decisions (reseller, created_at);
