//! The review queue: decisions whose outcome was `review`, and how each
//! review was resolved. A stored review that does not read back is left out
//! of the queue's page and logged, as a licence is (see
//! [`super::licenses`]): one bad row never takes the queue down.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::Value;

use super::licenses::Page;
use super::schema::decisions;
use super::{append_event, parse_json, DbConn, Head, NewEvent, Store, StoreError, StoredDecision};

pub(super) type DecisionRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(super) const DECISION_COLUMNS: (
    decisions::id,
    decisions::reseller,
    decisions::body,
    decisions::request,
    decisions::review_status,
    decisions::review,
) = (
    decisions::id,
    decisions::reseller,
    decisions::body,
    decisions::request,
    decisions::review_status,
    decisions::review,
);

pub(super) fn from_row(row: DecisionRow) -> Result<StoredDecision, StoreError> {
    let (id, reseller, body, request, review_status, review) = row;
    Ok(StoredDecision {
        id,
        reseller,
        body: parse_json(&body)?,
        request: request.as_deref().map(parse_json).transpose()?,
        review_status,
        review: review.as_deref().map(parse_json).transpose()?,
    })
}

impl Store {
    /// Decisions in review, oldest first: those whose review is `status`
    /// (`None`: every one), after the decision id `after`.
    pub fn reviews(
        &self,
        status: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<StoredDecision>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = decisions::table
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
