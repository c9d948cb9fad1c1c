//! The locked ledger head, and the rows a batch has written but not yet sent.
//!
//! A ledger batch runs many writes in one transaction. Sending each row as
//! its own statement (with a savepoint per write) made the writer wait on a
//! round trip per statement: at 64 connections it spent most of its time in
//! the kernel between sends and polls. So writes do not send their rows:
//! they hand them to the [`Head`], which sends each table's rows of the
//! whole batch as one multi-row `INSERT` before the head is written back.
//!
//! A write that fails is undone by dropping the rows it handed over, so no
//! savepoint is needed. A write that must run a statement of its own (a
//! catalogue change, closing a review) calls [`Head::immediate`] first: the
//! rows of earlier writes go out, a savepoint is taken, and from then on the
//! write is rolled back to it if it fails.
//!
//! If sending a batch's rows fails (say another replica stored the same
//! idempotency key a moment earlier), the ledger runs the batch again in
//! *eager* mode: each write in a savepoint of its own, its rows sent at its
//! end, so that only the write at fault fails.
//!
//! On PostgreSQL the writer usually runs a batch on a *predicted* head
//! ([`Head::predicted`]): the head the batches still committing will leave,
//! held in memory, with no lock and no transaction. The head then sends
//! nothing: [`Head::into_rows`] hands every row to the one statement that
//! checks the head and writes them ([`super::commit`]); reads see what the
//! batches still out changed (their licences are *carried*). A write that
//! needs statements of its own ([`Head::immediate`]) cannot run there: it
//! marks the batch ([`Head::needs_lock`]), which the writer runs again on
//! the locked head as above.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::licenses::{IdempotencyRecord, LicenseRow, IDEMPOTENCY_TTL_HOURS};
use super::schema::{audit_events, decisions, events, idempotency_keys, licenses};
use super::{format_instant, format_storable, DbConn, StoreError};

/// Sends one multi-row `INSERT`. BACKEND-SPECIFIC: diesel's multi-backend
/// connection does not build batch inserts, so each backend builds its own.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {
        match $conn {
            DbConn::Postgres(pg) => diesel::insert_into($table).values($rows).execute(pg)?,
            DbConn::Sqlite(lite) => diesel::insert_into($table).values($rows).execute(lite)?,
        }
    };
}

/// Rows per `INSERT`, well under both backends' limits on bound parameters.
const CHUNK: usize = 500;

/// The head of the chain and the catalogue version, as locked in a write,
/// with what the batch has written so far.
#[derive(Debug)]
pub struct Head {
    pub(super) seq: i64,
    pub(super) hash: String,
    pub(super) catalog_version: i64,
    pending: Pending,
    job: Job,
    eager: bool,
    /// The next free status-list index, once this batch has read it.
    next_status_idx: Option<i64>,
    /// Prepared against a predicted head, to be sent as one statement
    /// ([`super::commit`]), rather than under the locked head.
    predicted: bool,
    /// A write of a predicted batch asked for [`Head::immediate`]: the batch
    /// must run under the locked head instead.
    needs_lock: bool,
    /// Licences as batches still committing leave them.
    carried: Vec<LicenseRow>,
    /// The versions this writer's committed batches left licences at
    /// (licence id to `updated_at`), as far as the writer remembers.
    written: Arc<HashMap<String, String>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = audit_events)]
pub(super) struct EventRow {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub action: String,
    pub outcome: Option<&'static str>,
    pub reseller: Option<String>,
    pub event: String,
    pub prev_hash: String,
    pub hash: String,
    pub what_if: bool,
}

/// An outbox event, derived from an audit event of the batch.
#[derive(Debug, Insertable)]
#[diesel(table_name = events)]
pub(super) struct OutboxRow {
    pub seq: i64,
    pub id: String,
    pub event_type: &'static str,
    pub reseller: Option<String>,
    pub created_at: String,
    pub audit_seq: i64,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = decisions)]
pub(super) struct DecisionRow {
    pub id: String,
    pub reseller: String,
    pub transaction_kind: String,
    pub outcome: &'static str,
    pub audit_seq: i64,
    pub created_at: String,
    pub request: Option<String>,
    pub review_status: Option<&'static str>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = licenses)]
pub(super) struct LicenseInsert {
    pub id: String,
    pub reseller: String,
    pub product: String,
    pub customer: String,
    pub seats: i64,
    pub starts_at: String,
    pub expires_at: String,
    pub decision_id: String,
    pub token: String,
    pub created_at: String,
    pub updated_at: String,
    pub status: &'static str,
    pub status_reason: Option<String>,
    pub ended_by: Option<String>,
    pub renewal_blocked: Option<String>,
    pub impact_review: Option<String>,
    pub status_idx: Option<i64>,
}

/// A licence changed by a write (renewed, capped, ended, suspended,
/// reinstated, revoked): the row as the write leaves it.
#[derive(Debug)]
pub(super) struct Renewed {
    pub license: LicenseRow,
    /// The decision behind the licence when it was read.
    pub read_decision: String,
    /// Its `updated_at` when it was read (see [`LicenseRow::version`]).
    pub read_version: String,
    /// Its new `updated_at`.
    pub at: String,
}

pub(super) fn json_text(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

#[derive(Debug, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub(super) struct IdempotencyRow {
    pub reseller: String,
    pub idem_key: String,
    pub fingerprint: String,
    pub status: i32,
    pub body: String,
    pub created_at: String,
    pub expires_at: String,
    pub audit_seq: Option<i64>,
}

/// The rows a batch has written and not yet sent.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub events: Vec<EventRow>,
    pub outbox: Vec<OutboxRow>,
    pub decisions: Vec<DecisionRow>,
    pub licenses: Vec<LicenseInsert>,
    pub renewals: Vec<Renewed>,
    pub idempotency: Vec<IdempotencyRow>,
}

/// How many rows of each kind were pending when a write began.
#[derive(Debug, Clone, Copy, Default)]
struct Lens {
    events: usize,
    outbox: usize,
    decisions: usize,
    licenses: usize,
    renewals: usize,
    idempotency: usize,
}

impl Pending {
    fn lens(&self) -> Lens {
        Lens {
            events: self.events.len(),
            outbox: self.outbox.len(),
            decisions: self.decisions.len(),
            licenses: self.licenses.len(),
            renewals: self.renewals.len(),
            idempotency: self.idempotency.len(),
        }
    }

    fn truncate(&mut self, to: Lens) {
        self.events.truncate(to.events);
        self.outbox.truncate(to.outbox);
        self.decisions.truncate(to.decisions);
        self.licenses.truncate(to.licenses);
        self.renewals.truncate(to.renewals);
        self.idempotency.truncate(to.idempotency);
    }

    /// Takes the rows before `to`, leaving the rest.
    fn split_front(&mut self, to: Lens) -> Pending {
        Pending {
            events: self.events.drain(..to.events).collect(),
            outbox: self.outbox.drain(..to.outbox).collect(),
            decisions: self.decisions.drain(..to.decisions).collect(),
            licenses: self.licenses.drain(..to.licenses).collect(),
            renewals: self.renewals.drain(..to.renewals).collect(),
            idempotency: self.idempotency.drain(..to.idempotency).collect(),
        }
    }

    /// Each changed licence once, as the batch leaves it, with the decision
    /// behind it when the batch first read it (a licence renewed twice in a
    /// batch is one row change from what was read).
    pub(super) fn changed_licenses(&self) -> Vec<(&Renewed, &Renewed)> {
        let mut changed: Vec<(&Renewed, &Renewed)> = Vec::with_capacity(self.renewals.len());
        for r in &self.renewals {
            match changed
                .iter_mut()
                .find(|(_, c)| c.license.id == r.license.id)
            {
                Some(entry) => entry.1 = r,
                None => changed.push((r, r)),
            }
        }
        changed
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.outbox.is_empty()
            && self.decisions.is_empty()
            && self.licenses.is_empty()
            && self.renewals.is_empty()
            && self.idempotency.is_empty()
    }

    /// Sends the rows, in an order that keeps every reference valid.
    /// `one_by_one` replaces expired idempotency records first (eager mode);
    /// a batch's multi-row insert fails on one instead, and is run again.
    fn send(self, conn: &mut DbConn, one_by_one: bool) -> Result<(), StoreError> {
        for chunk in self.events.chunks(CHUNK) {
            insert_rows!(conn, audit_events::table, chunk);
        }
        for chunk in self.outbox.chunks(CHUNK) {
            insert_rows!(conn, events::table, chunk);
        }
        for chunk in self.decisions.chunks(CHUNK) {
            insert_rows!(conn, decisions::table, chunk);
        }
        for chunk in self.licenses.chunks(CHUNK) {
            insert_rows!(conn, licenses::table, chunk);
        }
        for r in &self.renewals {
            let l = &r.license;
            let updated = diesel::update(
                licenses::table
                    .filter(licenses::id.eq(&l.id))
                    .filter(licenses::decision_id.eq(&r.read_decision))
                    .filter(licenses::updated_at.eq(&r.read_version)),
            )
            .set((
                licenses::customer.eq(l.customer.to_string()),
                licenses::expires_at.eq(format_instant(l.expires_at)),
                licenses::decision_id.eq(&l.decision_id),
                licenses::token.eq(&l.token),
                licenses::updated_at.eq(&r.at),
                licenses::status.eq(l.state.standing.as_str()),
                licenses::status_reason.eq(json_text(&l.state.status_reason)),
                licenses::ended_by.eq(json_text(&l.state.ended_by)),
                licenses::renewal_blocked.eq(json_text(&l.state.renewal_blocked)),
                licenses::impact_review.eq(json_text(&l.state.impact_review)),
                licenses::status_idx.eq(l.state.status_idx),
            ))
            .execute(conn)?;
            if updated != 1 {
                return Err(StoreError::Conflict);
            }
        }
        if one_by_one {
            for row in &self.idempotency {
                diesel::delete(
                    idempotency_keys::table
                        .filter(idempotency_keys::reseller.eq(&row.reseller))
                        .filter(idempotency_keys::idem_key.eq(&row.idem_key))
                        .filter(idempotency_keys::expires_at.le(&row.created_at)),
                )
                .execute(conn)?;
            }
        }
        for chunk in self.idempotency.chunks(CHUNK) {
            insert_rows!(conn, idempotency_keys::table, chunk);
        }
        Ok(())
    }
}

/// The state of the write now running.
#[derive(Debug, Default)]
struct Job {
    mark: Lens,
    seq: i64,
    hash: String,
    catalog_version: i64,
    savepoint: bool,
}

impl Head {
    pub(super) fn new(seq: i64, hash: String, catalog_version: i64) -> Head {
        Head {
            seq,
            hash,
            catalog_version,
            pending: Pending::default(),
            job: Job::default(),
            eager: false,
            next_status_idx: None,
            predicted: false,
            needs_lock: false,
            carried: Vec::new(),
            written: Arc::default(),
        }
    }

    /// A head predicted (not locked): the one the batches before leave,
    /// with the licences those still committing change, the versions the
    /// writer's committed batches left licences at, and the next free
    /// status-list index once one of them has read it.
    pub(super) fn predicted(
        seq: i64,
        hash: String,
        catalog_version: i64,
        next_status_idx: Option<i64>,
        carried: Vec<LicenseRow>,
        written: Arc<HashMap<String, String>>,
    ) -> Head {
        Head {
            next_status_idx,
            predicted: true,
            carried,
            written,
            ..Head::new(seq, hash, catalog_version)
        }
    }

    /// Whether a write of this predicted batch needs the locked head.
    pub(super) fn needs_lock(&self) -> bool {
        self.needs_lock
    }

    /// What a predicted batch leaves: its rows, and the next free
    /// status-list index if it knows it.
    pub(super) fn into_rows(self) -> (Pending, Option<i64>) {
        (self.pending, self.next_status_idx)
    }

    pub fn catalog_version(&self) -> i64 {
        self.catalog_version
    }

    /// Eager mode: each write in its own savepoint, its rows sent at its end.
    pub(super) fn set_eager(&mut self, eager: bool) {
        self.eager = eager;
    }

    /// Before a write: remembers what to go back to if it fails.
    pub(super) fn begin(&mut self, conn: &mut DbConn) -> Result<(), StoreError> {
        self.job = Job {
            mark: self.pending.lens(),
            seq: self.seq,
            hash: self.hash.clone(),
            catalog_version: self.catalog_version,
            savepoint: false,
        };
        if self.eager {
            self.immediate(conn)?;
        }
        Ok(())
    }

    /// After a write that succeeded: in eager mode its rows go out now (an
    /// error here is the write's own, and it is then rolled back).
    pub(super) fn settle(&mut self, conn: &mut DbConn) -> Result<(), StoreError> {
        if self.eager {
            std::mem::take(&mut self.pending).send(conn, true)?;
        }
        Ok(())
    }

    /// Ends a write: keeps it, or undoes it. An error here is the batch's.
    pub(super) fn end(&mut self, conn: &mut DbConn, keep: bool) -> Result<(), StoreError> {
        if keep {
            if self.job.savepoint {
                conn.batch_execute("RELEASE SAVEPOINT ledger_write")?;
            }
        } else {
            if self.job.savepoint {
                conn.batch_execute("ROLLBACK TO SAVEPOINT ledger_write")?;
                conn.batch_execute("RELEASE SAVEPOINT ledger_write")?;
            }
            self.pending.truncate(self.job.mark);
            self.seq = self.job.seq;
            self.hash = std::mem::take(&mut self.job.hash);
            self.catalog_version = self.job.catalog_version;
        }
        self.job.savepoint = false;
        Ok(())
    }

    /// For a write about to run statements of its own: sends every pending
    /// row (the earlier writes' before this write's savepoint, so that
    /// rolling this write back keeps them), so that what it reads is current.
    pub fn immediate(&mut self, conn: &mut DbConn) -> Result<(), StoreError> {
        if self.predicted {
            self.needs_lock = true;
            return Err(StoreError::BatchFailed(
                "this write runs under the locked head".into(),
            ));
        }
        if !self.job.savepoint {
            let earlier = self.pending.split_front(self.job.mark);
            if !earlier.is_empty() {
                earlier.send(conn, self.eager)?;
            }
            conn.batch_execute("SAVEPOINT ledger_write")?;
            self.job.savepoint = true;
            self.job.mark = Lens::default();
        }
        if !self.pending.is_empty() {
            std::mem::take(&mut self.pending).send(conn, self.eager)?;
        }
        Ok(())
    }

    /// Sends what the batch has written (before the head is written back).
    pub(super) fn flush(&mut self, conn: &mut DbConn) -> Result<(), StoreError> {
        let eager = self.eager;
        std::mem::take(&mut self.pending).send(conn, eager)
    }

    pub(super) fn push_event(&mut self, row: EventRow) {
        self.pending.events.push(row);
    }

    pub(super) fn push_outbox(&mut self, row: OutboxRow) {
        self.pending.outbox.push(row);
    }

    pub(super) fn push_decision(&mut self, row: DecisionRow) {
        self.pending.decisions.push(row);
    }

    /// Writes a new licence with the batch; refuses one whose instants would
    /// not read back (see [`super::format_storable`]).
    pub fn insert_license(&mut self, license: &LicenseRow) -> Result<(), StoreError> {
        let now = format_instant(Utc::now());
        self.pending.licenses.push(LicenseInsert {
            id: license.id.clone(),
            reseller: license.reseller.clone(),
            product: license.product.clone(),
            customer: license.customer.to_string(),
            seats: license.seats,
            starts_at: format_storable(license.starts_at)?,
            expires_at: format_storable(license.expires_at)?,
            decision_id: license.decision_id.clone(),
            token: license.token.clone(),
            created_at: now.clone(),
            updated_at: now,
            status: license.state.standing.as_str(),
            status_reason: json_text(&license.state.status_reason),
            ended_by: json_text(&license.state.ended_by),
            renewal_blocked: json_text(&license.state.renewal_blocked),
            impact_review: json_text(&license.state.impact_review),
            status_idx: license.state.status_idx,
        });
        Ok(())
    }

    /// Writes a changed licence (renewed, capped, or its standing changed)
    /// with the batch, if it is still as it was read: the same decision
    /// behind it and the same [`LicenseRow::version`] (else
    /// [`StoreError::Conflict`], as for a row that was never read); refuses
    /// an expiry that would not read back.
    pub fn update_license(
        &mut self,
        license: &LicenseRow,
        read_decision: &str,
    ) -> Result<(), StoreError> {
        format_storable(license.expires_at)?;
        let read_version = license.version.clone().ok_or(StoreError::Conflict)?;
        self.pending.renewals.push(Renewed {
            license: license.clone(),
            read_decision: read_decision.to_string(),
            read_version,
            at: format_instant(Utc::now()),
        });
        Ok(())
    }

    /// A status-list index no licence holds: one past the highest stored
    /// (read once a batch; licence writes are serialised by the head's lock,
    /// so no other writer takes it). An index handed to a write that is
    /// undone is never stored: a gap in a list, never a shared entry.
    pub fn allocate_status_idx(&mut self, conn: &mut DbConn) -> Result<i64, StoreError> {
        let next = match self.next_status_idx {
            Some(next) => next,
            None => {
                let max: Option<i64> = licenses::table
                    .select(diesel::dsl::max(licenses::status_idx))
                    .first(conn)?;
                max.map_or(0, |m| m + 1)
            }
        };
        self.next_status_idx = Some(next + 1);
        Ok(next)
    }

    /// A licence as this batch leaves it: changed earlier in the batch, or
    /// as stored.
    pub fn license(&self, conn: &mut DbConn, id: &str) -> Result<Option<LicenseRow>, StoreError> {
        match self.unsent_license(id) {
            Some(row) => Ok(Some(row)),
            None => super::licenses::license_in(conn, id),
        }
    }

    /// [`Head::license`] for a licence the request read before its write
    /// was queued (`read`, with its version). On a predicted head, unless
    /// a batch still unsent changed it or this writer committed it at
    /// another version since, that row itself, not read again: the batch's
    /// statement writes it back only if its version is still the stored
    /// one (else the batch runs again under the lock, where this reads).
    pub fn license_as_read(
        &self,
        conn: &mut DbConn,
        read: &LicenseRow,
    ) -> Result<Option<LicenseRow>, StoreError> {
        if let Some(row) = self.unsent_license(&read.id) {
            return Ok(Some(row));
        }
        let as_written = match (self.written.get(&read.id), &read.version) {
            (Some(written), Some(version)) => written == version,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if self.predicted && as_written {
            Ok(Some(read.clone()))
        } else {
            super::licenses::license_in(conn, &read.id)
        }
    }

    /// A licence as this batch, or a batch still committing, leaves it.
    fn unsent_license(&self, id: &str) -> Option<LicenseRow> {
        if let Some(r) = self
            .pending
            .renewals
            .iter()
            .rev()
            .find(|r| r.license.id == id)
        {
            return Some(LicenseRow {
                version: Some(r.at.clone()),
                ..r.license.clone()
            });
        }
        self.carried.iter().rev().find(|l| l.id == id).cloned()
    }

    /// The live record of an idempotency key. Outside eager mode only this
    /// batch's keys are looked at: the request checked the database before
    /// it was queued, and a key stored since (by another replica) makes the
    /// batch's insert fail, and the batch run again eagerly, which reads.
    pub fn idempotency(
        &self,
        conn: &mut DbConn,
        reseller: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        if let Some(row) = self
            .pending
            .idempotency
            .iter()
            .find(|r| r.reseller == reseller && r.idem_key == key)
        {
            // Its event is in the batch too.
            let event = row.audit_seq.and_then(|seq| {
                let found = self.pending.events.iter().find(|e| e.seq == seq);
                found.map(|e| e.event.clone())
            });
            return Ok(Some(IdempotencyRecord {
                fingerprint: row.fingerprint.clone(),
                status: u16::try_from(row.status).unwrap_or(500),
                body: row.body.clone(),
                audit_seq: row.audit_seq,
                event,
            }));
        }
        if self.eager {
            super::licenses::idempotency_in(conn, reseller, key, now)
        } else {
            Ok(None)
        }
    }

    /// Remembers what the first request with a key came to, with the batch.
    pub fn save_idempotency(
        &mut self,
        reseller: &str,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) {
        self.pending.idempotency.push(IdempotencyRow {
            reseller: reseller.to_string(),
            idem_key: key.to_string(),
            fingerprint: record.fingerprint.clone(),
            status: i32::from(record.status),
            body: record.body.clone(),
            audit_seq: record.audit_seq,
            created_at: format_instant(now),
            expires_at: format_instant(now + chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS)),
        });
    }
}
