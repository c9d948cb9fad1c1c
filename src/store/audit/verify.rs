//! Verification of what the store holds against the audit chain that
//! records it.
//!
//! - The chain itself: its links, that it ends at the recorded head, and
//!   that it agrees with signed checkpoints ([`audit::Verifier`]).
//! - The columns beside each event that listings and exports filter by
//!   (`seq`, `id`, `at`, `action`, `outcome`, `reseller`, `prev_hash`,
//!   `what_if`): each
//!   must say what the hashed event says, or an edit of one could hide an
//!   event from a filtered listing while the chain verifies
//!   (`index_mismatch`).
//! - The state the service acts on (`state_mismatch`, naming the row):
//!   the catalogue tables must be the replay of the `catalog.*` events (and
//!   `ledger_head.catalog_version` their version); each licence what its
//!   latest event recording it whole says (an allowing decision, or a
//!   change of its standing), and no licence without one nor
//!   such an event without its licence; each decision the one its event
//!   carries; each review open, or resolved as its latest review event says;
//!   each impact run and action what its events say (see
//!   `reconcile_impact`); each webhook endpoint the replay of its
//!   `webhook.*` events (see `reconcile_webhooks`); each outbox event the
//!   one its audit event derives (see `reconcile_outbox`).
//!
//! A full verification reads the chain once in `seq` order, holding the
//! replayed catalogue, one entry per licence (its latest event's `seq`) and
//! one per review; then reads the licences and decisions a page at a time
//! by primary key, each page with the events it names.
//!
//! [`vouch_catalog`] is the cheap check the service makes whenever it loads
//! or changes the catalogue: the latest catalogue event records the digest
//! of the catalogue it left; a stored catalogue with another digest is
//! [`StoreError::Unvouched`].
use std::collections::HashMap;

use diesel::prelude::*;
use serde_json::Value;

use super::reconcile::{catalog_mismatch, decision_mismatch, license_mismatch, Expected};
use super::reconcile_impact::impact_mismatch;
use super::reconcile_outbox::OutboxCheck;
use super::reconcile_webhooks::webhook_mismatch;
use super::{event_at, events_page, exported, text, PAGE};
use crate::audit::state::{
    apply_catalog_event, catalog_digest, is_what_if, Tenant, CATALOG_ACTIONS,
};
use crate::audit::{self, Fault, Report};
use crate::policy::CatalogData;
use crate::store::schema::{audit_events, ledger_head};
use crate::store::{DbConn, Store, StoreError};

type EventColumns = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    bool,
);
/// Whether `event` is intact on its own: its hash is the hash of its fields.
fn intact(event: &Value) -> bool {
    text(event, "/hash").is_some_and(|hash| audit::event_hash(event) == hash)
}

/// Checks, inside the caller's transaction, that the stored catalogue
/// `data` at `version` is the one the chain records, given the chain's head
/// `(seq, hash)` as locked or read in the same transaction:
///
/// - the head event is intact, is the recorded head, and was written on
///   `version` (every event records the catalogue version in force), so no
///   catalogue change was rolled back behind it;
/// - the latest catalogue event is intact, linked to the event after it,
///   made `version`, and records the digest of `data` (a database written
///   before events carried digests is vouched for by replaying its
///   catalogue events instead).
///
/// One indexed look-up per catalogue action and one pass over `data`; the
/// whole chain is `audit verify`'s to check.
pub(crate) fn vouch_catalog(
    conn: &mut DbConn,
    head: (i64, &str),
    version: i64,
    data: &CatalogData,
) -> Result<(), StoreError> {
    let unvouched = |m: String| Err(StoreError::Unvouched(m));
    let (head_seq, head_hash) = head;
    let recorded_version = |event: &Value| -> Option<i64> {
        text(event, "/policy_version").and_then(|v| v.parse().ok())
    };
    if head_seq > 0 {
        let Some(event) = event_at(conn, head_seq)? else {
            return unvouched(format!("the head event {head_seq} is missing"));
        };
        if !intact(&event) || text(&event, "/hash") != Some(head_hash) {
            return unvouched(format!(
                "the head event {head_seq} is not the recorded head"
            ));
        }
        if recorded_version(&event) != Some(version) {
            return unvouched(format!(
                "the catalogue is at version {version}, but the chain's head event {head_seq} \
                 was written on another"
            ));
        }
    }
    let mut last: Option<i64> = None;
    for action in CATALOG_ACTIONS {
        let seq = audit_events::table
            .filter(audit_events::action.eq(action))
            .select(diesel::dsl::max(audit_events::seq))
            .first::<Option<i64>>(conn)?;
        last = last.max(seq);
    }
    let Some(seq) = last else {
        if version == 0 && *data == CatalogData::default() {
            return Ok(());
        }
        return unvouched("the catalogue holds entries the chain records no change of".into());
    };
    let Some(event) = event_at(conn, seq)? else {
        return unvouched(format!("catalogue event {seq} is missing"));
    };
    if !intact(&event) {
        return unvouched(format!("catalogue event {seq} was edited"));
    }
    let hash = text(&event, "/hash").unwrap_or_default();
    let linked = if seq == head_seq {
        hash == head_hash
    } else {
        event_at(conn, seq.saturating_add(1))?
            .is_some_and(|next| text(&next, "/prev_hash") == Some(hash))
    };
    if !linked {
        return unvouched(format!(
            "catalogue event {seq} is not linked into the chain"
        ));
    }
    if recorded_version(&event) != Some(version) {
        return unvouched(format!(
            "the catalogue is at version {version}, but its latest change (event {seq}) made another"
        ));
    }
    match text(&event, "/subject/catalog_digest") {
        Some(digest) if digest == catalog_digest(data) => Ok(()),
        Some(_) => unvouched(format!(
            "the stored catalogue is not the one catalogue event {seq} records (digest differs)"
        )),
        None => {
            // Written before catalogue events carried a digest: replay them.
            let mut replayed = CatalogData::default();
            let mut after = 0;
            loop {
                let page = events_page(conn, &CATALOG_ACTIONS, after, seq)?;
                let Some(&(end, _)) = page.last() else {
                    break;
                };
                for (at, event) in page {
                    if !intact(&event) {
                        return unvouched(format!("catalogue event {at} was edited"));
                    }
                    apply_catalog_event(&mut replayed, &event)
                        .map_err(|e| StoreError::Unvouched(format!("catalogue event {at}: {e}")))?;
                }
                after = end;
            }
            if replayed == *data {
                Ok(())
            } else {
                unvouched(format!(
                    "the stored catalogue is not the replay of the chain's catalogue events \
                     (up to event {seq})"
                ))
            }
        }
    }
}
/// The column beside the event that differs from it, if any.
fn index_mismatch(
    row: &EventColumns,
    event: &Value,
    reviewable: &HashMap<String, String>,
) -> Option<&'static str> {
    let (seq, id, at, action, outcome, reseller, _, prev_hash, _, what_if) = row;
    let tenant = match Tenant::of(event) {
        Tenant::Named(t) => t,
        Tenant::OfDecision(d) => reviewable.get(&d).cloned(),
    };
    if event.get("seq").and_then(Value::as_i64) != Some(*seq) {
        Some("seq")
    } else if text(event, "/id") != Some(id) {
        Some("id")
    } else if text(event, "/at") != Some(at) {
        Some("at")
    } else if text(event, "/action") != Some(action) {
        Some("action")
    } else if text(event, "/outcome") != outcome.as_deref() {
        Some("outcome")
    } else if tenant.as_deref() != reseller.as_deref() {
        Some("reseller")
    } else if text(event, "/prev_hash") != Some(prev_hash) {
        Some("prev_hash")
    } else if is_what_if(event) != *what_if {
        Some("what_if")
    } else {
        None
    }
}
impl Store {
    /// Checks the whole stored chain and the state beside it (see the module
    /// docs), in one read-only snapshot of the database: its links, that it
    /// ends at the recorded head, that it agrees with every signed
    /// checkpoint (those in the database and `extra` ones kept elsewhere),
    /// whose signatures must verify with `trusted_keys` (the keys the
    /// operator configured, never rows of the database), that every indexed
    /// column says what its event says, and that the catalogue, licences,
    /// decisions and reviews are what the chain records.
    pub fn verify_chain(
        &self,
        extra: &[audit::Checkpoint],
        trusted_keys: &[Value],
    ) -> Result<Report, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        conn.transaction(|conn| {
            // BACKEND-SPECIFIC: PostgreSQL's default isolation gives each
            // statement its own snapshot; SQLite's transactions are snapshots.
            if let DbConn::Postgres(pg) = conn {
                use diesel::connection::SimpleConnection;
                pg.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            }
            verify_in(conn, extra, trusted_keys)
        })
    }
}

fn verify_in(
    conn: &mut DbConn,
    extra: &[audit::Checkpoint],
    trusted_keys: &[Value],
) -> Result<Report, StoreError> {
    use crate::store::schema::audit_checkpoints as cp;
    let mut checkpoints: Vec<audit::Checkpoint> = cp::table
        .order(cp::seq.asc())
        .select((cp::seq, cp::hash, cp::at, cp::kid, cp::signature))
        .load::<(i64, String, String, String, String)>(conn)?
        .into_iter()
        .map(|(seq, hash, at, kid, signature)| audit::Checkpoint {
            seq,
            hash,
            at,
            kid,
            signature,
        })
        .collect();
    let (seq, hash) = ledger_head::table
        .select((ledger_head::seq, ledger_head::hash))
        .first::<(i64, String)>(conn)?;
    checkpoints.extend_from_slice(extra);
    let mut verifier = audit::Verifier::with_checkpoints(&checkpoints, trusted_keys);
    let mut expected = Expected::default();
    let outbox = OutboxCheck::new(conn, chrono::Utc::now())?;
    let mut outbox_fault = None;
    let mut after = 0;
    'pages: while verifier.is_ok() {
        let page = audit_events::table
            .filter(audit_events::seq.gt(after))
            .filter(audit_events::seq.le(seq))
            .order(audit_events::seq.asc())
            .limit(PAGE)
            .select((
                audit_events::seq,
                audit_events::id,
                audit_events::at,
                audit_events::action,
                audit_events::outcome,
                audit_events::reseller,
                audit_events::event,
                audit_events::prev_hash,
                audit_events::hash,
                audit_events::what_if,
            ))
            .load::<EventColumns>(conn)?;
        let Some(last) = page.last().map(|row| row.0) else {
            break;
        };
        let mut verified = Vec::with_capacity(page.len());
        for row in &page {
            let event = exported(&row.6, &row.8);
            if !verifier.push(&event) {
                break 'pages;
            }
            if !verifier.verified(row.0) {
                // Out of its place: the chain's own fault comes next.
                continue;
            }
            expected.record(row.0, &event);
            if let Some(column) = index_mismatch(row, &event, &expected.reviewable) {
                verifier.reject(
                    Some(row.0),
                    Fault::IndexMismatch,
                    Some(format!("audit_events/{}/{column}", row.0)),
                );
                break 'pages;
            }
            verified.push((row.0, event, row.5.clone()));
        }
        if outbox_fault.is_none() {
            outbox_fault = outbox.page(conn, after, last, &verified)?;
        }
        after = last;
    }
    let mut report = verifier.finish_at((seq, &hash));
    // Events past the recorded head (in this snapshot each write has moved
    // the head with its events) were slipped in behind the service's back.
    if report.ok {
        let beyond = audit_events::table
            .filter(audit_events::seq.gt(seq))
            .select(diesel::dsl::min(audit_events::seq))
            .first::<Option<i64>>(conn)?;
        if beyond.is_some() {
            report.ok = false;
            report.first_invalid_seq = Some(seq + 1);
            report.fault = Some(Fault::HeadMismatch);
        }
    }
    if report.ok {
        let mismatch = match catalog_mismatch(conn, &expected)? {
            Some(m) => Some(m),
            None => match license_mismatch(conn, &mut expected)? {
                Some(m) => Some(m),
                None => match decision_mismatch(conn, &expected)? {
                    Some(m) => Some(m),
                    None => match impact_mismatch(conn, &mut expected.impact)? {
                        Some(m) => Some(m),
                        None => match webhook_mismatch(conn, &mut expected.webhooks)? {
                            Some(m) => Some(m),
                            None => match outbox_fault {
                                Some(m) => Some(m),
                                None => outbox.beyond(conn, seq)?,
                            },
                        },
                    },
                },
            },
        };
        if let Some((row, seq)) = mismatch {
            report.ok = false;
            report.first_invalid_seq = seq;
            report.fault = Some(Fault::StateMismatch);
            report.row = Some(row);
        }
    }
    Ok(report)
}
