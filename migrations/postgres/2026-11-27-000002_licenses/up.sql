-- Licences issued and renewed through the gate. `customer` holds the facts
-- (JSON) the latest decision was taken on; `token` is the signed licence.
CREATE TABLE licenses (
    id TEXT PRIMARY KEY NOT NULL,
    reseller TEXT NOT NULL,
    product TEXT NOT NULL,
    customer TEXT NOT NULL,
    seats BIGINT NOT NULL,
    starts_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX licenses_by_reseller ON licenses (reseller, id);

-- Idempotency keys, per tenant: the first response to a key, replayed to
-- every retry with the same request for 24 hours.
CREATE TABLE idempotency_keys (
    reseller TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (reseller, idem_key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

-- Public keys that have signed licences, kept after rotation so that old
-- licences still verify (published at GET /v1/keys).
CREATE TABLE license_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    jwk TEXT NOT NULL,
    created_at TEXT NOT NULL
);
