-- The release before stores each event's data in its row and cannot derive
-- it: with events stored, there is nothing to fill the column from in SQL.
-- Refuse, changing nothing; downgrade by restoring a backup taken before
-- the upgrade.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM events) THEN
        RAISE EXCEPTION 'events are stored without their data since 2026-12-07-000001_events_derived; the release before cannot read them: restore a backup taken before the upgrade';
    END IF;
END
$$;
ALTER TABLE events ADD COLUMN data TEXT NOT NULL DEFAULT '';
ALTER TABLE events ALTER COLUMN data DROP DEFAULT;
