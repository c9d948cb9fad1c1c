-- Signed checkpoints over the audit chain's head. Append-only, like events.
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL,
    at TEXT NOT NULL,
    kid TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- The review queue: what a decision asked for (to act on it when approved),
-- and how its review was resolved.
ALTER TABLE decisions ADD COLUMN request TEXT;
ALTER TABLE decisions ADD COLUMN review_status TEXT;
ALTER TABLE decisions ADD COLUMN review TEXT;
CREATE INDEX decisions_by_review_status ON decisions (review_status, created_at);
