//! The state reconciliation of a full verification (see [`super::verify`]):
//! what the chain says the catalogue, licences, decisions and reviews
//! should be, gathered while the chain is read, and the first stored row
//! that differs from it (`state_mismatch`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{event_at, events_at, events_page, text, PAGE};
use crate::audit::state::{apply_catalog_event, is_what_if};
use crate::policy::CatalogData;
use crate::store::catalog::load_catalog_data;
use crate::store::schema::{decisions, ledger_head};
use crate::store::{DbConn, StoreError};

/// What the chain says the state should be, gathered while it is read.
#[derive(Default)]
pub(super) struct Expected {
    /// The replayed catalogue, and the version its latest change made.
    catalog: CatalogData,
    catalog_version: i64,
    catalog_error: Option<(i64, String)>,
    /// Licence id -> the `seq` of its latest event that records the licence
    /// whole (an allowing decision, or a change of its standing).
    licenses: HashMap<u128, i64>,
    /// Decisions under review (not what-ifs) -> their tenant.
    pub(super) reviewable: HashMap<String, String>,
    /// Decision id -> the subject of its latest review event.
    reviews: HashMap<String, (i64, Value)>,
    /// Events that carry a decision.
    decisions: u64,
    /// Impact runs and their actions.
    pub(super) impact: super::reconcile_impact::ImpactExpected,
    /// Webhook endpoints.
    pub(super) webhooks: super::reconcile_webhooks::WebhookExpected,
}

impl Expected {
    pub(super) fn record(&mut self, seq: i64, event: &Value) {
        self.impact.record(seq, event);
        self.webhooks.record(seq, event);
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
            // A reinstatement whose answer is review opens none (the
            // licence stays suspended; its impact review is where facts go).
            if outcome == Some("review") && !is_what_if(event) && action != "decision.reinstate" {
                if let (Some(id), Some(tenant)) = (
                    decision.get("id").and_then(Value::as_str),
                    text(event, "/subject/reseller/id"),
                ) {
                    self.reviewable.insert(id.to_owned(), tenant.to_owned());
                }
            }
        }
        // A licence as an event records it whole: an allowing decision (its
        // term and token), or a change of its standing (revoked, suspended,
        // reinstated, capped, ended by an impact run), which carries its
        // expiry too. A refused renewal names the licence only.
        if event.pointer("/subject/license/expires_at").is_some() {
            if let Some(id) = text(event, "/subject/license/id").and_then(license_key) {
                self.licenses.insert(id, seq);
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
fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A mismatch: the row, and the event that vouches for it (if any).
type Mismatch = (String, Option<i64>);
/// The first catalogue row that is not the replay of the chain.
pub(super) fn catalog_mismatch(
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

/// The first licence that is not what its latest event recording it whole
/// says, has no such event, or is missing though an event issued it.
pub(super) fn license_mismatch(
    conn: &mut DbConn,
    expected: &mut Expected,
) -> Result<Option<Mismatch>, StoreError> {
    let mut after = String::new();
    loop {
        let page = crate::store::licenses::raw_page(conn, &after, PAGE)?;
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
            let id = &row.0;
            let Some(event) = events.get(&seq) else {
                return Ok(Some((format!("licenses/{id}"), Some(seq))));
            };
            if !license_matches(row, event) {
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

/// Whether a stored licence row is what `event` records of it. A decision
/// event keeps the licence's reseller, product, customer and decision
/// beside it (in the subject and the decision); an event that changes the
/// licence's standing keeps them in the licence itself. Events written
/// before licences had a standing record an active licence without a
/// status-list index.
fn license_matches(row: &crate::store::licenses::Row, event: &Value) -> bool {
    let (id, reseller, product, customer, seats, starts, expires, decision, token) = (
        &row.0, &row.1, &row.2, &row.3, row.4, &row.5, &row.6, &row.7, &row.8,
    );
    let license = event.pointer("/subject/license").unwrap_or(&Value::Null);
    let either = |own: &str, beside: &str| text(license, own).or_else(|| text(event, beside));
    let customer: Value = serde_json::from_str(customer).unwrap_or(Value::Null);
    let token_ok = match license.get("token_sha256").and_then(Value::as_str) {
        Some(digest) => hex::encode(Sha256::digest(token.as_bytes())) == digest,
        // Written before events carried the token's digest.
        None => true,
    };
    let json = |text: &Option<String>| -> Value {
        text.as_deref()
            .map(|t| serde_json::from_str(t).unwrap_or(Value::Bool(false)))
            .unwrap_or(Value::Null)
    };
    let field = |name: &str| license.get(name).cloned().unwrap_or(Value::Null);
    let status = text(license, "/status").unwrap_or("active");
    text(license, "/id") == Some(id.as_str())
        && either("/reseller", "/subject/reseller/id") == Some(reseller.as_str())
        && either("/product", "/subject/product") == Some(product.as_str())
        && license
            .get("customer")
            .or_else(|| event.pointer("/subject/customer"))
            == Some(&customer)
        && license.get("seats").and_then(Value::as_i64) == Some(seats)
        && text(license, "/starts_at").and_then(instant) == instant(starts)
        && text(license, "/expires_at").and_then(instant) == instant(expires)
        && either("/decision_id", "/decision/id") == Some(decision.as_str())
        && token_ok
        && status == row.9
        && field("status_reason") == json(&row.10)
        && field("ended_by") == json(&row.11)
        && field("renewal_blocked") == json(&row.12)
        && field("impact_review") == json(&row.13)
        && license.get("status_idx").and_then(Value::as_i64) == row.14
}

/// The first decision that is not the one its event carries, or whose
/// review is not as the chain records it; or, when there are fewer
/// decisions than events carrying one, the first missing.
pub(super) fn decision_mismatch(
    conn: &mut DbConn,
    expected: &Expected,
) -> Result<Option<Mismatch>, StoreError> {
    type Row = (
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
                decisions::audit_seq,
                decisions::request,
                decisions::review_status,
                decisions::review,
            ))
            .load::<Row>(conn)?;
        let Some(last) = page.last().map(|r| r.0.clone()) else {
            break;
        };
        let events = events_at(conn, page.iter().map(|r| r.4).collect())?;
        for row in &page {
            let (id, reseller, transaction, outcome, seq, request, status, review) = row;
            let mismatch = || Ok(Some((format!("decisions/{id}"), Some(*seq))));
            checked += 1;
            let Some(event) = events.get(seq) else {
                return mismatch();
            };
            // The decision itself is stored in its event only: the row
            // must point at the event that carries it, and agree with it.
            let same = text(event, "/decision/id") == Some(id)
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
    let actions = [
        "decision.impact_review",
        "decision.issue",
        "decision.preflight",
        "decision.reinstate",
        "decision.renew",
        "impact.capped",
        "impact.ended",
        "impact.renewal_blocked",
        "impact.review",
    ];
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
