-- A decision is stored once, in the audit event that records it: the row
-- keeps what the queue and the review need (tenant, kind, outcome, the
-- event's seq, what was asked, the review) and reads the decision from its
-- event. Indexes only where a query uses them: nothing reads decisions by
-- reseller, and the review queue (`review_status IS NOT NULL` or `= ?`,
-- by id) needs only the decisions in review, a few of all.
DROP INDEX decisions_by_reseller;
DROP INDEX decisions_by_review_status;
ALTER TABLE decisions DROP COLUMN body;
CREATE INDEX decisions_in_review ON decisions (id) WHERE review_status IS NOT NULL;

-- An idempotency record keeps what a replay needs to answer again byte for
-- byte, not a copy of the answer: the seq of the audit event that carries
-- the decision and the licence as written (`audit_seq`), and in `body` only
-- what the event does not (a licence's token; empty otherwise). Records
-- written before keep the answer's parts in `body` and no `audit_seq`.
ALTER TABLE idempotency_keys ADD COLUMN audit_seq BIGINT;
