//! Signed checkpoints over the audit chain's head, and the lock that lets
//! one replica at a time sign them.

use diesel::prelude::*;

use super::schema::{audit_checkpoints, ledger_head};
use super::{DbConn, Manager, Page, Store, StoreError};
use crate::audit::Checkpoint;
use crate::config::DatabaseUrl;

/// A checkpoint's columns, as every read selects them.
const COLUMNS: (
    audit_checkpoints::seq,
    audit_checkpoints::hash,
    audit_checkpoints::at,
    audit_checkpoints::kid,
    audit_checkpoints::signature,
) = (
    audit_checkpoints::seq,
    audit_checkpoints::hash,
    audit_checkpoints::at,
    audit_checkpoints::kid,
    audit_checkpoints::signature,
);

type Row = (i64, String, String, String, String);

fn checkpoint((seq, hash, at, kid, signature): Row) -> Checkpoint {
    Checkpoint {
        seq,
        hash,
        at,
        kid,
        signature,
    }
}

/// The PostgreSQL advisory lock held by the replica that signs checkpoints.
const SIGNER_LOCK: i64 = 7_474_002;

impl Store {
    /// The committed head of the chain: `(seq, hash)`.
    pub fn head(&self) -> Result<(i64, String), StoreError> {
        let mut conn = self.conn()?;
        Ok(ledger_head::table
            .select((ledger_head::seq, ledger_head::hash))
            .first::<(i64, String)>(&mut *conn)?)
    }

    /// Records a checkpoint; one for the same `seq` already there (another
    /// replica signed the same head) is kept and returned instead.
    pub fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(audit_checkpoints::table)
            .values((
                audit_checkpoints::seq.eq(checkpoint.seq),
                audit_checkpoints::hash.eq(&checkpoint.hash),
                audit_checkpoints::at.eq(&checkpoint.at),
                audit_checkpoints::kid.eq(&checkpoint.kid),
                audit_checkpoints::signature.eq(&checkpoint.signature),
            ))
            .execute(&mut *conn);
        match inserted {
            Ok(_) => Ok(checkpoint.clone()),
            Err(e) => match self.checkpoints(Some(checkpoint.seq - 1), 1)?.pop() {
                Some(existing) if existing.seq == checkpoint.seq => Ok(existing),
                _ => Err(e.into()),
            },
        }
    }

    /// Checkpoints in `seq` order, after `after`, at most `limit`.
    pub fn checkpoints(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let mut conn = self.conn()?;
        let rows = audit_checkpoints::table
            .filter(audit_checkpoints::seq.gt(after.unwrap_or(0)))
            .order(audit_checkpoints::seq.asc())
            .limit(limit)
            .select(COLUMNS)
            .load::<Row>(&mut *conn)?;
        Ok(rows.into_iter().map(checkpoint).collect())
    }

    /// A page of checkpoints in `seq` order, after `after`; the next page
    /// starts after the last one's `seq`.
    pub fn checkpoint_page(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Page<Checkpoint>, StoreError> {
        let checkpoints = self.checkpoints(after, limit)?;
        Ok(Page::of(checkpoints, limit, |c| c.seq.to_string()))
    }

    /// The newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.conn()?;
        let row = audit_checkpoints::table
            .order(audit_checkpoints::seq.desc())
            .select(COLUMNS)
            .first::<Row>(&mut *conn)
            .optional()?;
        Ok(row.map(checkpoint))
    }

    /// Every checkpoint, in `seq` order.
    pub fn all_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut all = Vec::new();
        loop {
            let page = self.checkpoints(all.last().map(|c: &Checkpoint| c.seq), 1000)?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// A connection outside the pool, held for long (the ledger writer's,
    /// the checkpoint signer's). On PostgreSQL, TCP keepalives make a dead
    /// peer show within a minute, so that a lock held by a replica whose
    /// host died is released promptly rather than after hours.
    pub fn dedicated_connection(&self) -> Result<DbConn, StoreError> {
        use diesel::r2d2::ManageConnection;
        let url = match &self.url {
            DatabaseUrl::Postgres(url) => {
                let sep = if url.contains('?') { '&' } else { '?' };
                DatabaseUrl::Postgres(format!(
                    "{url}{sep}keepalives=1&keepalives_idle=20&keepalives_interval=5&keepalives_count=4&tcp_user_timeout=40000"
                ))
            }
            sqlite => sqlite.clone(),
        };
        Manager {
            url,
            lock_timeout: self.lock_timeout,
        }
        .connect()
        .map_err(|e| StoreError::BatchFailed(format!("connecting: {e}")))
    }
}

/// Tries to become (or stay) the one signer among replicas. On PostgreSQL
/// this takes a session advisory lock on `conn`, held until that connection
/// closes (so a replica that dies hands over); SQLite has one process.
pub fn try_lead(conn: &mut DbConn) -> Result<bool, StoreError> {
    // BACKEND-SPECIFIC: advisory locks.
    match conn {
        DbConn::Postgres(pg) => Ok(diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
            &format!("pg_try_advisory_lock({SIGNER_LOCK})"),
        ))
        .get_result::<bool>(pg)?),
        DbConn::Sqlite(_) => Ok(true),
    }
}
