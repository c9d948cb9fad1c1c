-- An event's `data` is derived from its audit event (`audit::outbox::derive`,
-- which verification already ran to check it) when the event is read, not
-- stored beside it: the audit event at `audit_seq` already carries it, and
-- audit events are never purged. The column held about 570 of an event
-- row's 690 bytes, written again for every licence, renewal and change of
-- standing. Verification holds every stored event to its derivation as
-- before (seq, id, type, tenant, instant); what an event says can now only
-- change with its audit event, which the chain vouches for.
ALTER TABLE events DROP COLUMN data;
