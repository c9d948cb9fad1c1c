ALTER TABLE audit_events DROP COLUMN what_if;
