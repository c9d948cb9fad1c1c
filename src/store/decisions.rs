//! The decisions table: every decision recorded with its audit event, and
//! the review queue (decisions whose outcome was `review`, and how each
//! review was resolved). The decision itself is stored once, in its event:
//! a row keeps its tenant, kind and outcome, the event's `seq`, what was
//! asked and its review, and is read joined to the event. A stored review
//! that does not read back is left out of the queue's page and logged, as a
//! licence is (see [`super::licenses`]): one bad row never takes the queue
//! down.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::Value;

use super::audit::{append_event, NewEvent};
use super::schema::{audit_events, decisions};
use super::{format_instant, parse_json, DbConn, Head, Page, Store, StoreError};
use crate::policy::Decision;

/// A decision about to be recorded, with its audit event.
#[derive(Debug, Clone)]
pub struct NewDecision {
    /// The decision, without `audit_seq` (which the store fills in).
    pub decision: Decision,
    pub reseller: String,
    /// What was asked (to act on it if a review approves it).
    pub request: Value,
    /// Whether the decision opens a review (the gate's rule:
    /// [`Decision::is_reviewable`]).
    pub reviewable: bool,
    pub event: NewEvent,
}

/// A decision as stored: its tenant, the object returned to callers, what
/// was asked, and (for a `review` outcome) the state of its review.
#[derive(Debug, Clone)]
pub struct StoredDecision {
    pub id: String,
    pub reseller: String,
    pub body: Value,
    pub request: Option<Value>,
    /// `open`, or how the review ended; `None` for decisions not in review.
    pub review_status: Option<String>,
    pub review: Option<Value>,
}

pub(super) type DecisionRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A decision row with the event that carries its body (the decision is
/// stored once, in its audit event; the row keeps a reference, `audit_seq`).
pub(super) const DECISION_COLUMNS: (
    decisions::id,
    decisions::reseller,
    audit_events::event,
    decisions::request,
    decisions::review_status,
    decisions::review,
) = (
    decisions::id,
    decisions::reseller,
    audit_events::event,
    decisions::request,
    decisions::review_status,
    decisions::review,
);

/// Decisions joined to the events that carry them.
macro_rules! with_events {
    () => {
        decisions::table
            .inner_join(audit_events::table.on(audit_events::seq.eq(decisions::audit_seq)))
    };
}

pub(super) fn from_row(row: DecisionRow) -> Result<StoredDecision, StoreError> {
    let (id, reseller, event, request, review_status, review) = row;
    let mut event: Value = parse_json(&event)?;
    let body = match event.get_mut("decision") {
        Some(body) if body.get("id").and_then(Value::as_str) == Some(id.as_str()) => body.take(),
        _ => {
            return Err(StoreError::Corrupt(format!(
                "decision {id}: its audit event does not carry it"
            )))
        }
    };
    Ok(StoredDecision {
        id,
        reseller,
        body,
        request: request.as_deref().map(parse_json).transpose()?,
        review_status,
        review: review.as_deref().map(parse_json).transpose()?,
    })
}

impl Store {
    /// Reads one decision.
    pub fn decision(&self, id: &str) -> Result<Option<StoredDecision>, StoreError> {
        let mut conn = self.conn()?;
        with_events!()
            .filter(decisions::id.eq(id))
            .select(DECISION_COLUMNS)
            .first::<DecisionRow>(&mut *conn)
            .optional()?
            .map(from_row)
            .transpose()
    }

    /// Decisions in review, oldest first: those whose review is `status`
    /// (`None`: every one), after the decision id `after`.
    pub fn reviews(
        &self,
        status: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<StoredDecision>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = with_events!()
            .filter(decisions::review_status.is_not_null())
            .order(decisions::id.asc())
            .limit(limit)
            .select(DECISION_COLUMNS)
            .into_boxed();
        if let Some(status) = status {
            query = query.filter(decisions::review_status.eq(status.to_string()));
        }
        if let Some(after) = after {
            query = query.filter(decisions::id.gt(after.to_string()));
        }
        let rows = query.load::<DecisionRow>(&mut *conn)?;
        Ok(Page::read(
            "decisions",
            rows,
            limit,
            |r| r.0.clone(),
            from_row,
        ))
    }
}

/// Closes an open review (a ledger write) with its audit event. A review
/// already resolved is [`StoreError::ReviewNotOpen`].
pub fn resolve_review(
    conn: &mut DbConn,
    head: &mut Head,
    decision_id: &str,
    status: &str,
    review: &Value,
    event: NewEvent,
) -> Result<i64, StoreError> {
    head.immediate(conn)?;
    let updated = diesel::update(
        decisions::table
            .filter(decisions::id.eq(decision_id))
            .filter(decisions::review_status.eq("open")),
    )
    .set((
        decisions::review_status.eq(status),
        decisions::review.eq(review.to_string()),
    ))
    .execute(conn)?;
    if updated != 1 {
        return Err(StoreError::ReviewNotOpen);
    }
    let version = head.catalog_version().to_string();
    append_event(head, event, &version, Utc::now())
}

/// Records a decision and its audit event (a ledger write), if the
/// catalogue it was taken on is still the newest committed one (else
/// [`StoreError::Stale`]). Returns the decision with its `audit_seq`. The
/// decision is stored in its event only; the row refers to the event.
pub fn record_decision(
    head: &mut Head,
    catalog_version: i64,
    new: NewDecision,
) -> Result<Decision, StoreError> {
    if head.catalog_version != catalog_version {
        return Err(StoreError::Stale);
    }
    let now = Utc::now();
    let mut decision = new.decision;
    decision.audit_seq = Some(head.seq + 1);
    let mut event = new.event;
    event.decision = Some(decision.to_json());
    // What a review's approval will act on (seats, term) is vouched for by
    // the chain like the rest of the decision.
    if new.reviewable {
        event.subject["request"] = new.request.clone();
    }
    append_event(head, event, &catalog_version.to_string(), now)?;
    head.push_decision(super::head::DecisionRow {
        id: decision.id.clone(),
        reseller: new.reseller,
        transaction_kind: decision.transaction.as_str().to_string(),
        outcome: decision.outcome.as_str(),
        audit_seq: head.seq,
        created_at: format_instant(now),
        request: Some(new.request.to_string()),
        review_status: new.reviewable.then_some("open"),
    });
    Ok(decision)
}
