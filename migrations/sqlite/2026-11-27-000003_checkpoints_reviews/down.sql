DROP INDEX decisions_by_review_status;
ALTER TABLE decisions DROP COLUMN review;
ALTER TABLE decisions DROP COLUMN review_status;
ALTER TABLE decisions DROP COLUMN request;
DROP TRIGGER audit_checkpoints_no_delete;
DROP TRIGGER audit_checkpoints_no_update;
DROP TABLE audit_checkpoints;
