DROP INDEX decisions_by_review_status;
ALTER TABLE decisions DROP COLUMN review;
ALTER TABLE decisions DROP COLUMN review_status;
ALTER TABLE decisions DROP COLUMN request;
DROP TABLE audit_checkpoints;
