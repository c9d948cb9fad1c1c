//! The outbox as stored: the events resellers hear of, one row each,
//! written by `audit::append_event` in the transaction of the audit event
//! that reports the change (see `audit::outbox` for what each is), read
//! back here a page at a time, and purged once older than the retention.
//! A row keeps the event's place in the order, its id, type, tenant and
//! instant; its data is derived from its audit event when read (the audit
//! event carries it, and is never purged), not stored twice.
//!
//! An event's `seq` is `16 × its audit event's seq + its place among that
//! audit event's events`: audit events are numbered under the ledger head's
//! lock, so `seq` is the commit order across threads, processes and
//! replicas (with gaps), which is the order a tenant's events are listed and
//! delivered in.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::schema::{audit_events, events, webhook_deliveries};
use super::{format_instant, parse_json, DbConn, Page, Store, StoreError};
use crate::audit::outbox::{derive, Derived};

/// Events one audit event may make (at most four are ever made).
const PER_AUDIT_EVENT: i64 = 16;

/// The `seq` of the `n`th event of the audit event at `audit_seq`.
pub fn outbox_seq(audit_seq: i64, n: usize) -> i64 {
    let n = i64::try_from(n).unwrap_or(PER_AUDIT_EVENT - 1);
    audit_seq * PER_AUDIT_EVENT + n.min(PER_AUDIT_EVENT - 1)
}

/// An event as read: its row, and the data its audit event derives.
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

/// An event's row as stored (no data: see [`read`]).
pub type Stored = (i64, String, String, Option<String>, String, i64);

macro_rules! event_columns {
    () => {
        (
            events::seq,
            events::id,
            events::event_type,
            events::reseller,
            events::created_at,
            events::audit_seq,
        )
    };
}

/// An event's row with its audit event's stored text and `reseller`
/// column (none when no audit event has its `audit_seq`).
type WithAudit = (Stored, Option<String>, Option<String>);

/// An event with its data: what `audit::outbox::derive` makes of its audit
/// event, at the event's place among that audit event's events. The data is
/// not stored (it was the larger part of every event row, and the audit
/// event already carries it); a row that is not what its audit event makes
/// does not read (verification names it).
fn read((row, audit_event, tenant): WithAudit) -> Result<EventRow, StoreError> {
    let (seq, id, event_type, reseller, created_at, audit_seq) = row;
    let Some(audit_event) = audit_event else {
        return Err(StoreError::Corrupt(format!(
            "event {seq} has no audit event {audit_seq}"
        )));
    };
    let event = parse_json(&audit_event)?;
    let place = usize::try_from(seq - audit_seq * PER_AUDIT_EVENT).ok();
    let derived = place.and_then(|n| derive(&event, tenant.as_deref()).into_iter().nth(n));
    match derived {
        Some(d) if made_as(&d, &id, &event_type, reseller.as_deref(), &created_at) => {
            Ok(EventRow {
                seq,
                id,
                event_type,
                reseller,
                created_at,
                audit_seq,
                data: d.data,
            })
        }
        _ => Err(StoreError::Corrupt(format!(
            "event {seq} is not one its audit event {audit_seq} makes"
        ))),
    }
}

/// Whether a stored row (id, type, tenant, instant) is the event `made`
/// that its audit event derives: what a row must be to read, and what
/// verification holds it to (with its `seq`).
pub(crate) fn made_as(
    made: &Derived,
    id: &str,
    event_type: &str,
    reseller: Option<&str>,
    created_at: &str,
) -> bool {
    made.id == id
        && made.event_type == event_type
        && made.reseller.as_deref() == reseller
        && made.created_at == created_at
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
        .left_join(audit_events::table.on(audit_events::seq.eq(events::audit_seq)))
        .select((
            event_columns!(),
            audit_events::event.nullable(),
            audit_events::reseller.nullable(),
        ))
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
    let stored = query.load::<WithAudit>(conn)?;
    Ok(Page::read(
        "events",
        stored,
        limit,
        |r| r.0 .0.to_string(),
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
