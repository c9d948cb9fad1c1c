-- The ledger head: the one row every write locks first. It serialises the
-- audit hash chain (seq, hash) and the catalogue version across processes.
CREATE TABLE ledger_head (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    catalog_version BIGINT NOT NULL
);
INSERT INTO ledger_head (id, seq, hash, catalog_version)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);

-- Catalogue entries: the key columns plus the validated request body as JSON.
CREATE TABLE resellers (
    id TEXT PRIMARY KEY NOT NULL,
    spec TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE organizations (
    id TEXT PRIMARY KEY NOT NULL,
    spec TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE relationships (
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, target)
);
CREATE TABLE products (
    sku TEXT PRIMARY KEY NOT NULL,
    spec TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE designations (
    id TEXT PRIMARY KEY NOT NULL,
    spec TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Every decision taken (preflights included), as returned to the caller.
CREATE TABLE decisions (
    id TEXT PRIMARY KEY NOT NULL,
    reseller TEXT NOT NULL,
    transaction_kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_seq BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX decisions_by_reseller ON decisions (reseller, created_at);

-- The audit trail: one linear hash chain. `event` is the canonical JSON of
-- the event without its hash; the other columns are copies for filtering.
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY NOT NULL,
    id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT,
    reseller TEXT,
    event TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_by_action ON audit_events (action, seq);
CREATE INDEX audit_events_by_reseller ON audit_events (reseller, seq);
CREATE INDEX audit_events_by_at ON audit_events (at, seq);

CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END;
$$;
CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
