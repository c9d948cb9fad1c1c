-- Licence lifecycle: the stored status (`active`, `ended`, `suspended`,
-- `revoked`; `expired` is shown for an active licence past its term), why
-- and by whom (`status_reason`, JSON), the designation that ended it
-- (`ended_by`, JSON), the impact action that blocks its renewal
-- (`renewal_blocked`, JSON), the impact review it waits on
-- (`impact_review`, JSON: the decision under review and its due time), and its index in the status lists
-- (`status_idx`: list `status_idx / 65536`, entry `status_idx % 65536`;
-- NULL for a licence whose token predates status lists, until it is signed
-- again). Every value is vouched for by the licence's latest audit event.
ALTER TABLE licenses ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE licenses ADD COLUMN status_reason TEXT;
ALTER TABLE licenses ADD COLUMN ended_by TEXT;
ALTER TABLE licenses ADD COLUMN renewal_blocked TEXT;
ALTER TABLE licenses ADD COLUMN impact_review TEXT;
ALTER TABLE licenses ADD COLUMN status_idx BIGINT;
CREATE UNIQUE INDEX licenses_by_status_idx ON licenses (status_idx);
-- A status list reads only the entries that are not 0 (valid).
CREATE INDEX licenses_not_valid ON licenses (status_idx) WHERE status <> 'active';
-- Licences waiting on an impact review (suspended when it is overdue).
CREATE INDEX licenses_in_impact_review ON licenses (id) WHERE impact_review IS NOT NULL;
-- The reverse index of an impact run: organisation -> products -> licences.
CREATE INDEX licenses_by_product ON licenses (product, id);

-- Impact runs: one per trigger (`trigger_key` is unique: a catalogue
-- version, or a rule instant), with the products and resellers it reaches
-- (`reach`, JSON), where it has got to (`cursor`: the last licence id it
-- acted on, in id order) and what it did.
CREATE TABLE impact_runs (
    id TEXT PRIMARY KEY NOT NULL,
    trigger_key TEXT NOT NULL UNIQUE,
    trigger_spec TEXT NOT NULL,
    at TEXT NOT NULL,
    reach TEXT NOT NULL,
    status TEXT NOT NULL,
    cursor TEXT NOT NULL DEFAULT '',
    licenses_checked BIGINT NOT NULL DEFAULT 0,
    ended BIGINT NOT NULL DEFAULT 0,
    capped BIGINT NOT NULL DEFAULT 0,
    renewal_blocked BIGINT NOT NULL DEFAULT 0,
    review BIGINT NOT NULL DEFAULT 0,
    completed_at TEXT,
    audit_seq BIGINT NOT NULL
);
CREATE INDEX impact_runs_running ON impact_runs (status, id);

-- What a run did to each licence it acted on: at most once per (run,
-- licence), each with its audit event.
CREATE TABLE impact_actions (
    run_id TEXT NOT NULL,
    license_id TEXT NOT NULL,
    reseller TEXT NOT NULL,
    product TEXT NOT NULL,
    action TEXT NOT NULL,
    not_after TEXT,
    decision_id TEXT NOT NULL,
    audit_seq BIGINT NOT NULL,
    PRIMARY KEY (run_id, license_id)
);
CREATE INDEX impact_actions_by_reseller ON impact_actions (run_id, reseller, license_id);

-- How far rule instants have been swept for runs: an instant after it
-- starts a run when it passes (one row).
CREATE TABLE impact_clock (
    id INTEGER PRIMARY KEY NOT NULL,
    swept_to TEXT NOT NULL
);
