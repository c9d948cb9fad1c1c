-- What-if decisions (a preflight with `as_of`) are marked beside their event,
-- so that outcome filters can leave them out; verification checks the column
-- against the hashed event like the other filter columns.
ALTER TABLE audit_events ADD COLUMN what_if BOOLEAN NOT NULL DEFAULT FALSE;

-- Backfill from the stored events: a what-if's subject (or decision) says
-- `"what_if": true`. Events are canonical JSON, so the LIKE only narrows the
-- rows to parse; a stored text that is not JSON is left for the verifier to
-- call malformed. The append-only trigger is lifted for this one statement
-- (inside the migration's transaction).
CREATE FUNCTION pg_temp.audit_event_what_if(event TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    RETURN COALESCE(event::jsonb #>> '{subject,what_if}' = 'true', FALSE)
        OR COALESCE(event::jsonb #>> '{decision,what_if}' = 'true', FALSE);
EXCEPTION WHEN others THEN
    RETURN FALSE;
END;
$$;
ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete;
UPDATE audit_events SET what_if = TRUE
WHERE event LIKE '%"what_if":true%' AND pg_temp.audit_event_what_if(event);
ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete;
DROP FUNCTION pg_temp.audit_event_what_if(TEXT);
