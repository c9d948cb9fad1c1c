DROP TABLE license_keys;
DROP TABLE idempotency_keys;
DROP TABLE licenses;
