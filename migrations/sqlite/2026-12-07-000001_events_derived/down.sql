-- The release before stores each event's data in its row and cannot derive
-- it: with events stored, there is nothing to fill the column from in SQL.
-- Refuse, changing nothing (RAISE works only in a trigger: a temporary one
-- on a temporary table); downgrade by restoring a backup taken before the
-- upgrade.
CREATE TEMP TABLE IF NOT EXISTS events_derived_down (x INTEGER);
CREATE TEMP TRIGGER IF NOT EXISTS events_derived_down_refused BEFORE INSERT ON events_derived_down
WHEN EXISTS (SELECT 1 FROM main.events)
BEGIN
    SELECT RAISE(ABORT, 'events are stored without their data since 2026-12-07-000001_events_derived; the release before cannot read them: restore a backup taken before the upgrade');
END;
INSERT INTO events_derived_down VALUES (1);
DROP TABLE events_derived_down;
ALTER TABLE events ADD COLUMN data TEXT NOT NULL DEFAULT '';
