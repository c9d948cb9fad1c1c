//! The outbox as stored: the events resellers hear of, one row each,
//! written by `audit::append_event` in the transaction of the audit event
//! that reports the change (see `audit::outbox` for what each is), read
//! back here a page at a time, and purged once older than the retention.
//!
//! An event's `seq` is `16 × its audit event's seq + its place among that
//! audit event's events`: audit events are numbered under the ledger head's
//! lock, so `seq` is the commit order across threads, processes and
//! replicas (with gaps), which is the order a tenant's events are listed and
//! delivered in.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::schema::{events, webhook_deliveries};
use super::{format_instant, parse_json, DbConn, Page, Store, StoreError};

/// Events one audit event may make (at most four are ever made).
const PER_AUDIT_EVENT: i64 = 16;

/// The `seq` of the `n`th event of the audit event at `audit_seq`.
pub fn outbox_seq(audit_seq: i64, n: usize) -> i64 {
    let n = i64::try_from(n).unwrap_or(PER_AUDIT_EVENT - 1);
    audit_seq * PER_AUDIT_EVENT + n.min(PER_AUDIT_EVENT - 1)
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub reseller: Option<String>,
    pub created_at: String,
    pub audit_seq: i64,
    pub data: Value,
}

pub type Stored = (i64, String, String, Option<String>, String, i64, String);

macro_rules! event_columns {
    () => {
        (
            events::seq,
            events::id,
            events::event_type,
            events::reseller,
            events::created_at,
            events::audit_seq,
            events::data,
        )
    };
}

fn read(row: Stored) -> Result<EventRow, StoreError> {
    let (seq, id, event_type, reseller, created_at, audit_seq, data) = row;
    Ok(EventRow {
        seq,
        id,
        event_type,
        reseller,
        created_at,
        audit_seq,
        data: parse_json(&data)?,
    })
}

/// Which events a listing (or a delivery) reads.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// After this `seq`.
    pub after: i64,
    /// Only this tenant's (`None`: every tenant's, and those of no tenant).
    pub reseller: Option<String>,
    /// Only events of these types (`None`: every type).
    pub types: Option<Vec<String>>,
}

/// A page of events in `seq` order.
pub fn events_in(
    conn: &mut DbConn,
    filter: &EventFilter,
    limit: i64,
) -> Result<Page<EventRow>, StoreError> {
    let mut query = events::table
        .select(event_columns!())
        .filter(events::seq.gt(filter.after))
        .order(events::seq.asc())
        .limit(limit)
        .into_boxed();
    if let Some(reseller) = &filter.reseller {
        query = query.filter(events::reseller.eq(reseller.clone()));
    }
    if let Some(types) = &filter.types {
        query = query.filter(events::event_type.eq_any(types.clone()));
    }
    let stored = query.load::<Stored>(conn)?;
    Ok(Page::read(
        "events",
        stored,
        limit,
        |r| r.0.to_string(),
        read,
    ))
}

/// Every event made by the audit events in `(after, until]`, in `seq`
/// order (for verification, a page of audit events at a time).
pub fn events_of_audit(
    conn: &mut DbConn,
    after: i64,
    until: i64,
) -> Result<Vec<Stored>, StoreError> {
    Ok(events::table
        .select(event_columns!())
        .filter(events::audit_seq.gt(after))
        .filter(events::audit_seq.le(until))
        .order(events::seq.asc())
        .load::<Stored>(conn)?)
}

/// The highest event `seq` now stored (0 when there is none).
pub fn last_seq(conn: &mut DbConn) -> Result<i64, StoreError> {
    Ok(events::table
        .select(diesel::dsl::max(events::seq))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0))
}

impl Store {
    /// A page of events in `seq` order.
    pub fn events(&self, filter: &EventFilter, limit: i64) -> Result<Page<EventRow>, StoreError> {
        events_in(&mut *self.conn()?, filter, limit)
    }

    /// Deletes the events created before `before` (at most `limit` of them,
    /// oldest first, so a purge holds no lock for long), with their
    /// deliveries settled before it; how many events it deleted.
    pub fn purge_events(&self, before: DateTime<Utc>, limit: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let old = events::table
            .select(events::seq)
            .filter(events::created_at.lt(format_instant(before)))
            .order(events::seq.asc())
            .limit(limit)
            .load::<i64>(&mut *conn)?;
        let Some(&last) = old.last() else {
            return Ok(0);
        };
        let before = format_instant(before);
        conn.transaction(|c| {
            diesel::delete(
                webhook_deliveries::table
                    .filter(webhook_deliveries::event_seq.le(last))
                    .filter(webhook_deliveries::settled_at.lt(&before)),
            )
            .execute(c)?;
            Ok(diesel::delete(
                events::table
                    .filter(events::seq.le(last))
                    .filter(events::created_at.lt(&before)),
            )
            .execute(c)?)
        })
    }
}
