-- Makes a ledger batch's one statement fail (src/store/commit.rs): called
-- when a licence the batch changes is no longer as the batch read it, so
-- that nothing of the batch is written and the ledger runs it again under
-- the locked head. PostgreSQL only: SQLite's batches run under the lock.
CREATE FUNCTION ledger_refuse(why TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger batch refused: %', why USING ERRCODE = 'serialization_failure';
END;
$$;
