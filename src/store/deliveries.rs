//! The webhook delivery's statements: which endpoints have events waiting,
//! the lease a worker holds on an endpoint while it delivers to it, the next
//! event an endpoint receives, and the settlement of each event (delivered or
//! abandoned) with the endpoint's cursor, in one transaction.
//!
//! Replicas share endpoints through the lease (`lease_owner`, `lease_until`),
//! taken by a conditional `UPDATE`. Every later write of a delivery is fenced
//! by it (`lease_owner` is still the worker's, and the cursor is still the one
//! it read), so a worker whose lease lapsed and was taken over writes
//! nothing; and the primary key of `webhook_deliveries` refuses a second
//! settlement of one event to one endpoint whatever happens.
//!
//! Disabling an endpoint (it answered `410`) is an audited change, written
//! through the ledger with its `webhook.disable` audit event beside the
//! endpoint's other changes ([`super::webhooks::disable`]).

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use super::events::{events_in, EventFilter, EventRow};
use super::schema::{events, webhook_deliveries, webhook_endpoints};
use super::webhooks::{columns, read, read_event_types, EndpointRow, Stored};
use super::{format_instant, parse_instant, DbConn, Store, StoreError};
use crate::metrics::WebhookStats;

/// An endpoint with at least one event after its cursor that could be its:
/// of its tenant, or of any (or no) tenant for a compliance endpoint. Its
/// `event_types` are not looked at here (they are JSON text): an endpoint
/// with only events of other types waiting is found due once, and its
/// cursor then moves past them ([`Next::Skip`]).
const PENDING: &str = "EXISTS (SELECT 1 FROM events \
     WHERE events.seq > webhook_endpoints.cursor \
     AND (webhook_endpoints.reseller IS NULL OR events.reseller = webhook_endpoints.reseller))";

/// An endpoint as a delivery reads it, once leased: its vouched columns
/// and the delivery's bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub row: EndpointRow,
    /// The `seq` of the last event settled.
    pub cursor: i64,
    /// Attempts made so far at the event after the cursor.
    pub attempts: i32,
    /// Not to be tried again before this.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What an endpoint is to receive next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// This event.
    Event(EventRow),
    /// Nothing up to this `seq` is the endpoint's (other types, or an event
    /// that does not read back): its cursor may move there.
    Skip(i64),
    /// Nothing after the cursor.
    Idle,
}

/// How an event was settled for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Abandoned,
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Delivered => "delivered",
            Settled::Abandoned => "abandoned",
        }
    }
}

/// What fences a worker's write to an endpoint: the lease it holds as
/// `owner`, and the cursor it read. A write under a fence that no longer
/// holds changes nothing.
#[derive(Clone, Copy, Debug)]
pub struct Fence<'a> {
    pub endpoint_id: &'a str,
    pub owner: &'a str,
    pub cursor: i64,
}

/// The endpoint row a [`Fence`] still holds for.
macro_rules! fenced {
    ($fence:expr) => {
        webhook_endpoints::table
            .filter(webhook_endpoints::id.eq($fence.endpoint_id))
            .filter(webhook_endpoints::lease_owner.eq($fence.owner))
            .filter(webhook_endpoints::cursor.eq($fence.cursor))
    };
}

/// A settlement: the event after the fence's cursor is done with for the
/// endpoint.
#[derive(Clone, Debug)]
pub struct Settlement<'a> {
    pub fence: Fence<'a>,
    pub event_seq: i64,
    pub event_id: &'a str,
    pub outcome: Settled,
    /// Attempts made in all.
    pub attempts: i32,
    /// The status of the successful attempt (`None` when abandoned).
    pub status: Option<i32>,
    pub at: DateTime<Utc>,
}

/// A failed attempt at the event after the fence's cursor.
#[derive(Clone, Debug)]
pub struct Failure<'a> {
    pub fence: Fence<'a>,
    /// Attempts made in all, this one included.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// The answer's status, if one came.
    pub status: Option<i32>,
    /// What went wrong, in a few words (never a secret or a body).
    pub error: &'a str,
    pub at: DateTime<Utc>,
}

/// Whether an error is the database refusing a second row with the same
/// primary key.
fn is_duplicate(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _
        ))
    )
}

impl Store {
    /// Up to `limit` enabled endpoints that are due (never tried, or their
    /// retry's time has come), not leased (or whose lease lapsed), and with
    /// an event waiting; their ids, the least recently tried first (so that
    /// busy endpoints take turns).
    pub fn due_endpoints(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<String>, StoreError> {
        let now = format_instant(now);
        let mut conn = self.conn()?;
        Ok(webhook_endpoints::table
            .select(webhook_endpoints::id)
            .filter(webhook_endpoints::disabled_at.is_null())
            .filter(
                webhook_endpoints::next_attempt_at
                    .is_null()
                    .or(webhook_endpoints::next_attempt_at.le(now.clone())),
            )
            .filter(
                webhook_endpoints::lease_owner
                    .is_null()
                    .or(webhook_endpoints::lease_until.lt(now)),
            )
            .filter(sql::<Bool>(PENDING))
            .order((
                webhook_endpoints::last_attempt_at.is_not_null(),
                webhook_endpoints::last_attempt_at.asc(),
                webhook_endpoints::id.asc(),
            ))
            .limit(limit)
            .load::<String>(&mut *conn)?)
    }

    /// Takes the lease on an enabled endpoint for `owner` until `until`, if
    /// no other worker holds it (or its lease lapsed); the endpoint as it
    /// then stands, or `None` when it was not taken.
    pub fn lease_endpoint(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut conn = self.conn()?;
        let taken = diesel::update(
            webhook_endpoints::table
                .filter(webhook_endpoints::id.eq(id))
                .filter(webhook_endpoints::disabled_at.is_null())
                .filter(
                    webhook_endpoints::lease_owner
                        .is_null()
                        .or(webhook_endpoints::lease_until.lt(format_instant(now)))
                        .or(webhook_endpoints::lease_owner.eq(owner)),
                ),
        )
        .set((
            webhook_endpoints::lease_owner.eq(owner),
            webhook_endpoints::lease_until.eq(format_instant(until)),
        ))
        .execute(&mut *conn)?;
        if taken == 0 {
            return Ok(None);
        }
        webhook_endpoints::table
            .filter(webhook_endpoints::id.eq(id))
            .filter(webhook_endpoints::lease_owner.eq(owner))
            .select((
                columns!(),
                webhook_endpoints::cursor,
                webhook_endpoints::attempts,
                webhook_endpoints::next_attempt_at,
            ))
            .first::<(Stored, i64, i32, Option<String>)>(&mut *conn)
            .optional()?
            .map(|(row, cursor, attempts, next)| {
                Ok(Endpoint {
                    row: read(row)?,
                    cursor,
                    attempts,
                    next_attempt_at: next.as_deref().map(parse_instant).transpose()?,
                })
            })
            .transpose()
    }

    /// Extends `owner`'s lease to `until`, and reads the endpoint's vouched
    /// columns again (a rotation since the lease was taken signs the next
    /// attempt); `None` when the lease is no longer `owner`'s (it lapsed and
    /// another worker took it, or the endpoint was disabled or deleted).
    pub fn renew_lease(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<EndpointRow>, StoreError> {
        let mut conn = self.conn()?;
        let renewed = diesel::update(
            webhook_endpoints::table
                .filter(webhook_endpoints::id.eq(id))
                .filter(webhook_endpoints::lease_owner.eq(owner))
                .filter(webhook_endpoints::disabled_at.is_null()),
        )
        .set(webhook_endpoints::lease_until.eq(format_instant(until)))
        .execute(&mut *conn)?;
        if renewed != 1 {
            return Ok(None);
        }
        webhook_endpoints::table
            .filter(webhook_endpoints::id.eq(id))
            .filter(webhook_endpoints::lease_owner.eq(owner))
            .select(columns!())
            .first::<Stored>(&mut *conn)
            .optional()?
            .map(read)
            .transpose()
    }

    /// Gives up `owner`'s lease, if it still holds it.
    pub fn release_lease(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::update(
            webhook_endpoints::table
                .filter(webhook_endpoints::id.eq(id))
                .filter(webhook_endpoints::lease_owner.eq(owner)),
        )
        .set((
            webhook_endpoints::lease_owner.eq(None::<String>),
            webhook_endpoints::lease_until.eq(None::<String>),
        ))
        .execute(&mut *conn)?;
        Ok(())
    }

    /// The next event `endpoint` receives: the first after its cursor of
    /// its tenant (every event for a compliance endpoint) and of its types.
    pub fn next_event(&self, endpoint: &Endpoint) -> Result<Next, StoreError> {
        let mut conn = self.conn()?;
        // The newest event that could be the endpoint's, read first: events
        // are committed in `seq` order, so if none of its types is found
        // after the cursor below, none is up to this one either.
        let mut newest = events::table
            .select(diesel::dsl::max(events::seq))
            .filter(events::seq.gt(endpoint.cursor))
            .into_boxed();
        if let Some(reseller) = &endpoint.row.reseller {
            newest = newest.filter(events::reseller.eq(reseller.clone()));
        }
        let newest = newest.first::<Option<i64>>(&mut *conn)?;
        let filter = EventFilter {
            after: endpoint.cursor,
            reseller: endpoint.row.reseller.clone(),
            types: endpoint.row.event_types.clone(),
        };
        let page = events_in(&mut conn, &filter, 1)?;
        if let Some(event) = page.rows.into_iter().next() {
            return Ok(Next::Event(event));
        }
        // A full page with no row: the event did not read back (logged by
        // the listing); it cannot be delivered, and is passed over.
        if let Some(next) = page.next {
            let seq = next
                .parse::<i64>()
                .map_err(|e| StoreError::Corrupt(format!("event seq {next:?}: {e}")))?;
            return Ok(Next::Skip(seq));
        }
        Ok(match newest {
            Some(seq) => Next::Skip(seq),
            None => Next::Idle,
        })
    }

    /// Moves the fenced endpoint's cursor to `to` (past events that are
    /// not its); false when the lease or the cursor changed.
    pub fn skip_events(&self, fence: &Fence<'_>, to: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let moved = diesel::update(fenced!(fence))
            .set(webhook_endpoints::cursor.eq(to))
            .execute(&mut *conn)?;
        Ok(moved == 1)
    }

    /// Settles an event for an endpoint: its row in `webhook_deliveries`
    /// and the endpoint's cursor moved to it (its retries reset), in one
    /// transaction fenced by the lease and the cursor. False, and nothing
    /// written, when the lease or the cursor changed, or the event was
    /// settled for the endpoint already (the primary key refuses it).
    pub fn settle(&self, s: &Settlement<'_>) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let at = format_instant(s.at);
        let done = conn.transaction(|c| {
            let fenced = fenced!(s.fence);
            let moved = match s.outcome {
                Settled::Delivered => diesel::update(fenced)
                    .set((
                        webhook_endpoints::cursor.eq(s.event_seq),
                        webhook_endpoints::attempts.eq(0),
                        webhook_endpoints::next_attempt_at.eq(None::<String>),
                        webhook_endpoints::last_attempt_at.eq(&at),
                        webhook_endpoints::last_status.eq(s.status),
                        webhook_endpoints::last_error.eq(None::<String>),
                    ))
                    .execute(c)?,
                Settled::Abandoned => diesel::update(fenced)
                    .set((
                        webhook_endpoints::cursor.eq(s.event_seq),
                        webhook_endpoints::attempts.eq(0),
                        webhook_endpoints::next_attempt_at.eq(None::<String>),
                    ))
                    .execute(c)?,
            };
            if moved == 0 {
                return Err(StoreError::Conflict);
            }
            diesel::insert_into(webhook_deliveries::table)
                .values((
                    webhook_deliveries::endpoint_id.eq(s.fence.endpoint_id),
                    webhook_deliveries::event_seq.eq(s.event_seq),
                    webhook_deliveries::event_id.eq(s.event_id),
                    webhook_deliveries::outcome.eq(s.outcome.as_str()),
                    webhook_deliveries::attempts.eq(s.attempts),
                    webhook_deliveries::status.eq(s.status),
                    webhook_deliveries::settled_at.eq(&at),
                ))
                .execute(c)?;
            Ok(())
        });
        match done {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records a failed attempt at the event after the cursor, when it is
    /// to be tried again, and gives up the lease; fenced like
    /// [`Store::settle`] (false when nothing was written).
    pub fn record_failure(&self, f: &Failure<'_>) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let recorded = diesel::update(fenced!(f.fence))
            .set((
                webhook_endpoints::attempts.eq(f.attempts),
                webhook_endpoints::next_attempt_at.eq(format_instant(f.next_attempt_at)),
                webhook_endpoints::last_attempt_at.eq(format_instant(f.at)),
                webhook_endpoints::last_status.eq(f.status),
                webhook_endpoints::last_error.eq(f.error),
                webhook_endpoints::lease_owner.eq(None::<String>),
                webhook_endpoints::lease_until.eq(None::<String>),
            ))
            .execute(&mut *conn)?;
        Ok(recorded == 1)
    }
}

/// The oldest event enabled endpoints wait for, and how many endpoints
/// are disabled. One small query per enabled endpoint (the first event
/// after its cursor, by index): endpoints are few. An endpoint whose
/// row does not read is left out.
pub(super) fn webhook_stats(conn: &mut DbConn) -> Result<WebhookStats, StoreError> {
    let endpoints_disabled = webhook_endpoints::table
        .filter(webhook_endpoints::disabled_at.is_not_null())
        .count()
        .get_result::<i64>(conn)?;
    let enabled = webhook_endpoints::table
        .filter(webhook_endpoints::disabled_at.is_null())
        .select((
            webhook_endpoints::id,
            webhook_endpoints::reseller,
            webhook_endpoints::event_types,
            webhook_endpoints::cursor,
        ))
        .load::<(String, Option<String>, Option<String>, i64)>(conn)?;
    let mut oldest: Option<i64> = None;
    for (id, reseller, types, cursor) in enabled {
        let Ok(types) = read_event_types(&id, types.as_deref()) else {
            continue;
        };
        let filter = EventFilter {
            after: cursor,
            reseller,
            types,
        };
        let first = events_in(conn, &filter, 1)?.rows.into_iter().next();
        if let Some(at) = first.and_then(|e| parse_instant(&e.created_at).ok()) {
            let at = at.timestamp_millis();
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    Ok(WebhookStats {
        oldest_undelivered_at_ms: oldest,
        endpoints_disabled,
    })
}
