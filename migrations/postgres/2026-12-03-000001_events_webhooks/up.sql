-- The outbox: what resellers hear of, one row an event, written in the
-- transaction of the audit event that reports the change (`audit_seq`).
-- `seq` is allocated under the ledger head's lock, so it is the commit
-- order, with no gaps, across processes and replicas: a tenant's events
-- come in `seq` order. Every row is derived from its audit event, so
-- verification re-derives it (rows older than the retention may be gone).
CREATE TABLE events (
    seq BIGINT PRIMARY KEY NOT NULL,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    reseller TEXT,
    created_at TEXT NOT NULL,
    audit_seq BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_by_reseller ON events (reseller, seq);
CREATE INDEX events_by_created ON events (created_at);
-- The audit events before the outbox began (this migration) made no events:
-- verification expects events only of those after `audit_seq`.
CREATE TABLE outbox_start (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    audit_seq BIGINT NOT NULL
);
INSERT INTO outbox_start (id, audit_seq) SELECT 1, seq FROM ledger_head;

-- Webhook endpoints: a tenant's (or, with `reseller` NULL, compliance's:
-- every tenant's events). The columns up to `disabled_reason` are vouched
-- for by the `webhook.*` audit events (the secrets through their SHA-256);
-- the rest is the delivery's own bookkeeping: `cursor` is the last event
-- settled (delivered or abandoned), `attempts` and `next_attempt_at` the
-- retries of the one after it, `lease_*` which worker holds the endpoint.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY NOT NULL,
    reseller TEXT,
    url TEXT NOT NULL,
    event_types TEXT,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until TEXT,
    created_at TEXT NOT NULL,
    disabled_at TEXT,
    disabled_reason TEXT,
    cursor BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_attempt_at TEXT,
    last_status INTEGER,
    last_error TEXT,
    lease_owner TEXT,
    lease_until TEXT
);
CREATE INDEX webhook_endpoints_by_reseller ON webhook_endpoints (reseller, id);

-- Each event settled for an endpoint, once: the primary key refuses a
-- second success (or abandonment) of the same event to the same endpoint.
CREATE TABLE webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    status INTEGER,
    settled_at TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, event_seq)
);
-- The purge deletes settlements by event, oldest first.
CREATE INDEX webhook_deliveries_event_seq ON webhook_deliveries (event_seq);
