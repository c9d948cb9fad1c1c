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
//!   latest allowing decision event says, and no licence without one nor
//!   such an event without its licence; each decision the one its event
//!   carries; each review open, or resolved as its latest review event says.
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

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::schema::{audit_events, decisions, ledger_head};
use super::{load_catalog_data, DbConn, Store, StoreError};
use crate::audit::state::{
    apply_catalog_event, catalog_digest, is_what_if, Tenant, CATALOG_ACTIONS,
};
use crate::audit::{self, Fault, Report};
use crate::policy::CatalogData;

/// Rows read per query.
const PAGE: i64 = 1000;

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

/// An event as exported (its stored JSON with `hash`), or `null` when the
/// stored text is not JSON (the verifier then calls it malformed). Every
/// read of the trail (listings, exports, verification) goes through it.
pub(super) fn exported(event: &str, hash: &str) -> Value {
    let mut value = serde_json::from_str(event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("hash".into(), Value::String(hash.to_owned()));
    }
    value
}

/// The event at `seq`, as exported.
fn event_at(conn: &mut DbConn, seq: i64) -> Result<Option<Value>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::seq.eq(seq))
        .select((audit_events::event, audit_events::hash))
        .first::<(String, String)>(conn)
        .optional()?
        .map(|(event, hash)| exported(&event, &hash)))
}

/// The events at these `seq`s, as exported.
fn events_at(conn: &mut DbConn, seqs: Vec<i64>) -> Result<HashMap<i64, Value>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::seq.eq_any(seqs))
        .select((audit_events::seq, audit_events::event, audit_events::hash))
        .load::<(i64, String, String)>(conn)?
        .into_iter()
        .map(|(seq, event, hash)| (seq, exported(&event, &hash)))
        .collect())
}

/// A page of the events with one of `actions`, in `seq` order after
/// `after` (and at most `until`), as exported with their `seq`.
fn events_page(
    conn: &mut DbConn,
    actions: &[&str],
    after: i64,
    until: i64,
) -> Result<Vec<(i64, Value)>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::action.eq_any(actions))
        .filter(audit_events::seq.gt(after))
        .filter(audit_events::seq.le(until))
        .order(audit_events::seq.asc())
        .limit(PAGE)
        .select((audit_events::seq, audit_events::event, audit_events::hash))
        .load::<(i64, String, String)>(conn)?
        .into_iter()
        .map(|(seq, event, hash)| (seq, exported(&event, &hash)))
        .collect())
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

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

/// What the chain says the state should be, gathered while it is read.
#[derive(Default)]
struct Expected {
    /// The replayed catalogue, and the version its latest change made.
    catalog: CatalogData,
    catalog_version: i64,
    catalog_error: Option<(i64, String)>,
    /// Licence id -> the `seq` of its latest allowing decision event.
    licenses: HashMap<u128, i64>,
    /// Decisions under review (not what-ifs) -> their tenant.
    reviewable: HashMap<String, String>,
    /// Decision id -> the subject of its latest review event.
    reviews: HashMap<String, (i64, Value)>,
    /// Events that carry a decision.
    decisions: u64,
}

impl Expected {
    fn record(&mut self, seq: i64, event: &Value) {
        let action = text(event, "/action").unwrap_or_default();
        if action.starts_with("catalog.") {
            if let Err(e) = apply_catalog_event(&mut self.catalog, event) {
                self.catalog_error.get_or_insert((seq, e));
            }
            self.catalog_version = text(event, "/policy_version")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
        }
        if let Some(decision) = event.get("decision") {
            self.decisions += 1;
            let outcome = text(event, "/outcome");
            if outcome == Some("review") && !is_what_if(event) {
                if let (Some(id), Some(tenant)) = (
                    decision.get("id").and_then(Value::as_str),
                    text(event, "/subject/reseller/id"),
                ) {
                    self.reviewable.insert(id.to_owned(), tenant.to_owned());
                }
            }
            if outcome == Some("allow") {
                if let Some(id) = text(event, "/subject/license/id").and_then(license_key) {
                    self.licenses.insert(id, seq);
                }
            }
        }
        if action.starts_with("review.") {
            if let (Some(id), Some(subject)) = (text(event, "/subject/id"), event.get("subject")) {
                self.reviews.insert(id.to_owned(), (seq, subject.clone()));
            }
        }
    }
}

/// A licence id (a UUID) as a compact map key.
fn license_key(id: &str) -> Option<u128> {
    uuid::Uuid::parse_str(id).ok().map(|u| u.as_u128())
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

fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A mismatch: the row, and the event that vouches for it (if any).
type Mismatch = (String, Option<i64>);

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
    use super::schema::audit_checkpoints as cp;
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
                None => decision_mismatch(conn, &expected)?,
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

/// The first catalogue row that is not the replay of the chain.
fn catalog_mismatch(
    conn: &mut DbConn,
    expected: &Expected,
) -> Result<Option<Mismatch>, StoreError> {
    if let Some((seq, e)) = &expected.catalog_error {
        return Ok(Some((format!("audit_events/{seq}: {e}"), Some(*seq))));
    }
    let version = ledger_head::table
        .select(ledger_head::catalog_version)
        .first::<i64>(conn)?;
    if version != expected.catalog_version {
        return Ok(Some(("ledger_head/catalog_version".into(), None)));
    }
    let stored = match load_catalog_data(conn) {
        Ok(data) => data,
        Err(StoreError::Corrupt(what)) => return Ok(Some((what, None))),
        Err(e) => return Err(e),
    };
    let want = &expected.catalog;
    fn first<K: Ord + std::fmt::Display, V: PartialEq>(
        table: &str,
        have: &BTreeMap<K, V>,
        want: &BTreeMap<K, V>,
    ) -> Option<String> {
        have.iter()
            .filter(|(k, v)| want.get(k) != Some(v))
            .map(|(k, _)| k)
            .chain(want.keys().filter(|k| !have.contains_key(k)))
            .min()
            .map(|k| format!("{table}/{k}"))
    }
    let relationships = |data: &CatalogData| -> BTreeMap<String, crate::domain::RelKind> {
        data.relationships
            .iter()
            .map(|((s, t), k)| (format!("{s}/{t}"), *k))
            .collect()
    };
    Ok(first("resellers", &stored.resellers, &want.resellers)
        .or_else(|| first("organizations", &stored.organizations, &want.organizations))
        .or_else(|| {
            first(
                "relationships",
                &relationships(&stored),
                &relationships(want),
            )
        })
        .or_else(|| first("products", &stored.products, &want.products))
        .or_else(|| first("designations", &stored.designations, &want.designations))
        .map(|row| (row, None)))
}

/// The first licence that is not what its latest allowing event says,
/// has no such event, or is missing though an event issued it.
fn license_mismatch(
    conn: &mut DbConn,
    expected: &mut Expected,
) -> Result<Option<Mismatch>, StoreError> {
    let mut after = String::new();
    loop {
        let page = super::licenses::raw_page(conn, &after, PAGE)?;
        let Some(last) = page.last().map(|r| r.0.clone()) else {
            break;
        };
        let mut wanted = Vec::with_capacity(page.len());
        for row in &page {
            match license_key(&row.0).and_then(|k| expected.licenses.remove(&k)) {
                Some(seq) => wanted.push(seq),
                None => return Ok(Some((format!("licenses/{}", row.0), None))),
            }
        }
        let events = events_at(conn, wanted.clone())?;
        for (row, seq) in page.iter().zip(wanted) {
            let (id, reseller, product, customer, seats, starts, expires, decision, token) = row;
            let Some(event) = events.get(&seq) else {
                return Ok(Some((format!("licenses/{id}"), Some(seq))));
            };
            let license = event.pointer("/subject/license").unwrap_or(&Value::Null);
            let customer: Value = serde_json::from_str(customer).unwrap_or(Value::Null);
            let token_ok = match license.get("token_sha256").and_then(Value::as_str) {
                Some(digest) => hex::encode(Sha256::digest(token.as_bytes())) == digest,
                // Written before events carried the token's digest.
                None => true,
            };
            let same = text(license, "/id") == Some(id)
                && text(event, "/subject/reseller/id") == Some(reseller)
                && text(event, "/subject/product") == Some(product)
                && event.pointer("/subject/customer") == Some(&customer)
                && license.get("seats").and_then(Value::as_i64) == Some(*seats)
                && text(license, "/starts_at").and_then(instant) == instant(starts)
                && text(license, "/expires_at").and_then(instant) == instant(expires)
                && text(event, "/decision/id") == Some(decision)
                && token_ok;
            if !same {
                return Ok(Some((format!("licenses/{id}"), Some(seq))));
            }
        }
        after = last;
    }
    // Licences the chain issued that are not there.
    let missing = expected.licenses.values().min().copied();
    Ok(match missing {
        Some(seq) => {
            let id = event_at(conn, seq)?
                .and_then(|e| text(&e, "/subject/license/id").map(str::to_owned))
                .unwrap_or_default();
            Some((format!("licenses/{id}"), Some(seq)))
        }
        None => None,
    })
}

/// The first decision that is not the one its event carries, or whose
/// review is not as the chain records it; or, when there are fewer
/// decisions than events carrying one, the first missing.
fn decision_mismatch(
    conn: &mut DbConn,
    expected: &Expected,
) -> Result<Option<Mismatch>, StoreError> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut after = String::new();
    let mut checked: u64 = 0;
    loop {
        let page = decisions::table
            .filter(decisions::id.gt(&after))
            .order(decisions::id.asc())
            .limit(PAGE)
            .select((
                decisions::id,
                decisions::reseller,
                decisions::transaction_kind,
                decisions::outcome,
                decisions::body,
                decisions::audit_seq,
                decisions::request,
                decisions::review_status,
                decisions::review,
            ))
            .load::<Row>(conn)?;
        let Some(last) = page.last().map(|r| r.0.clone()) else {
            break;
        };
        let events = events_at(conn, page.iter().map(|r| r.5).collect())?;
        for row in &page {
            let (id, reseller, transaction, outcome, body, seq, request, status, review) = row;
            let mismatch = || Ok(Some((format!("decisions/{id}"), Some(*seq))));
            checked += 1;
            let Some(event) = events.get(seq) else {
                return mismatch();
            };
            let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let same = event.get("decision") == Some(&body)
                && text(event, "/decision/id") == Some(id)
                && text(event, "/outcome") == Some(outcome)
                && text(event, "/subject/reseller/id") == Some(reseller)
                && text(event, "/subject/transaction") == Some(transaction);
            if !same {
                return mismatch();
            }
            // Its review: open, or as its latest review event says.
            let reviewable = expected.reviewable.contains_key(id);
            let (want_status, want_review) = match expected.reviews.get(id) {
                Some((_, subject)) => {
                    let mut review = subject.clone();
                    if let Value::Object(map) = &mut review {
                        map.remove("kind");
                        map.remove("id");
                    }
                    (text(subject, "/status").map(str::to_owned), Some(review))
                }
                None if reviewable => (Some("open".to_owned()), None),
                None => (None, None),
            };
            let review: Option<Value> = review
                .as_deref()
                .map(|r| serde_json::from_str(r).unwrap_or(Value::Null));
            if *status != want_status || review != want_review {
                return mismatch();
            }
            // What an approval will act on, where the event records it.
            if let Some(asked) = event.pointer("/subject/request") {
                let stored: Option<Value> = request
                    .as_deref()
                    .map(|r| serde_json::from_str(r).unwrap_or(Value::Null));
                if stored.as_ref() != Some(asked) {
                    return mismatch();
                }
            }
        }
        after = last;
    }
    if checked == expected.decisions {
        return Ok(None);
    }
    // Fewer decisions than events carrying one: find the first missing.
    let actions = ["decision.issue", "decision.preflight", "decision.renew"];
    let mut after = 0;
    loop {
        let page = events_page(conn, &actions, after, i64::MAX)?;
        let Some(&(end, _)) = page.last() else {
            // Not found by action: name no row, but say so.
            return Ok(Some(("decisions".into(), None)));
        };
        let ids: Vec<(i64, String)> = page
            .iter()
            .filter_map(|(seq, event)| text(event, "/decision/id").map(|id| (*seq, id.to_owned())))
            .collect();
        let present: std::collections::HashSet<String> = decisions::table
            .filter(decisions::id.eq_any(ids.iter().map(|(_, id)| id.clone())))
            .select(decisions::id)
            .load::<String>(conn)?
            .into_iter()
            .collect();
        if let Some((seq, id)) = ids.iter().find(|(_, id)| !present.contains(id)) {
            return Ok(Some((format!("decisions/{id}"), Some(*seq))));
        }
        after = end;
    }
}
