-- What-if decisions (a preflight with `as_of`) are marked beside their event,
-- so that outcome filters can leave them out; verification checks the column
-- against the hashed event like the other filter columns.
ALTER TABLE audit_events ADD COLUMN what_if BOOLEAN NOT NULL DEFAULT FALSE;

-- Backfill from the stored events: a what-if's subject (or decision) says
-- `"what_if": true`. Events are canonical JSON, so the LIKE only narrows the
-- rows to parse; a stored text that is not JSON is left for the verifier to
-- call malformed. The append-only trigger is lifted for this one statement.
DROP TRIGGER audit_events_no_update;
UPDATE audit_events SET what_if = TRUE
WHERE event LIKE '%"what_if":true%'
  AND CASE WHEN json_valid(event)
      THEN json_type(event, '$.subject.what_if') = 'true'
           OR json_type(event, '$.decision.what_if') = 'true'
      ELSE FALSE END;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
