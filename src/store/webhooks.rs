//! Webhook endpoints as stored: their creation, rotation, disabling (by the
//! delivery, on a `410`) and deletion (ledger writes, each with its
//! `webhook.*` audit event), and reading them
//! back. An endpoint's owner is a tenant (`reseller`), or compliance
//! (`reseller` NULL: every tenant's events).
//!
//! The columns `id` to `disabled_reason` are what the audit events vouch
//! for (the secrets through their SHA-256, see `store::audit::reconcile_webhooks`);
//! the rest is the delivery's bookkeeping (`store::deliveries`), which
//! starts at the creation: `cursor` is the highest event `seq` then, so an
//! endpoint receives the events committed after it.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use serde_json::{json, Value};

use super::audit::{append_event, NewEvent};
use super::schema::{webhook_deliveries, webhook_endpoints};
use super::{format_instant, parse_instant, DbConn, Head, Page, Store, StoreError};
use crate::domain::Actor;
use crate::webhook::secret::sha256_hex;

/// How long a rotated-out secret still signs deliveries.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

/// An endpoint's vouched columns, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRow {
    pub id: String,
    /// The tenant it belongs to; `None`: compliance's.
    pub reseller: Option<String>,
    pub url: String,
    /// The event types it receives; `None`: every type.
    pub event_types: Option<Vec<String>>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

/// The vouched columns as stored (text), in the order of [`columns!`].
pub(crate) type Stored = (
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

macro_rules! columns {
    () => {
        (
            webhook_endpoints::id,
            webhook_endpoints::reseller,
            webhook_endpoints::url,
            webhook_endpoints::event_types,
            webhook_endpoints::secret,
            webhook_endpoints::previous_secret,
            webhook_endpoints::previous_until,
            webhook_endpoints::created_at,
            webhook_endpoints::disabled_at,
            webhook_endpoints::disabled_reason,
        )
    };
}
pub(super) use columns;

/// An endpoint's `event_types` as stored (a JSON array, or NULL for every
/// type), read back.
pub(super) fn read_event_types(
    id: &str,
    stored: Option<&str>,
) -> Result<Option<Vec<String>>, StoreError> {
    stored
        .map(serde_json::from_str::<Vec<String>>)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("webhook endpoint {id} event_types: {e}")))
}

pub(super) fn read(row: Stored) -> Result<EndpointRow, StoreError> {
    let (id, reseller, url, types, secret, previous_secret, until, created, disabled, reason) = row;
    let instant = |t: Option<String>| t.as_deref().map(parse_instant).transpose();
    let event_types = read_event_types(&id, types.as_deref())?;
    Ok(EndpointRow {
        reseller,
        url,
        event_types,
        secret,
        previous_secret,
        previous_until: instant(until)?,
        created_at: parse_instant(&created)?,
        disabled_at: instant(disabled)?,
        disabled_reason: reason,
        id,
    })
}

/// `event_types` as stored: a JSON array, or NULL for every type.
fn types_text(types: &Option<Vec<String>>) -> Option<String> {
    types.as_ref().map(|t| json!(t).to_string())
}

/// Only `owner`'s endpoints: a tenant's, or (`None`) compliance's.
macro_rules! owned_by {
    ($query:expr, $owner:expr) => {
        match $owner {
            Some(tenant) => $query.filter(webhook_endpoints::reseller.eq(tenant.to_owned())),
            None => $query.filter(webhook_endpoints::reseller.is_null()),
        }
    };
}

/// The endpoint `id`, if it is `owner`'s.
pub fn endpoint_in(
    conn: &mut DbConn,
    id: &str,
    owner: Option<&str>,
) -> Result<Option<EndpointRow>, StoreError> {
    let query = webhook_endpoints::table
        .select(columns!())
        .filter(webhook_endpoints::id.eq(id))
        .into_boxed();
    owned_by!(query, owner)
        .first::<Stored>(conn)
        .optional()?
        .map(read)
        .transpose()
}

/// How many endpoints `owner` has (disabled ones included).
pub fn count_owned(conn: &mut DbConn, owner: Option<&str>) -> Result<i64, StoreError> {
    let query = webhook_endpoints::table.count().into_boxed();
    Ok(owned_by!(query, owner).get_result::<i64>(conn)?)
}

/// A page of every endpoint's vouched columns as stored, by `id` (for
/// verification).
pub(crate) fn raw_page(
    conn: &mut DbConn,
    after: &str,
    limit: i64,
) -> Result<Vec<Stored>, StoreError> {
    Ok(webhook_endpoints::table
        .select(columns!())
        .filter(webhook_endpoints::id.gt(after))
        .order(webhook_endpoints::id.asc())
        .limit(limit)
        .load::<Stored>(conn)?)
}

/// The audit event of a change to an endpoint of `reseller`'s.
fn event(action: &str, actor: Actor, reseller: &Option<String>, subject: Value) -> NewEvent {
    NewEvent {
        action: action.into(),
        actor,
        outcome: None,
        decision: None,
        subject,
        reseller: reseller.clone(),
    }
}

/// Creates `endpoint` (a ledger write) with its `webhook.create` event,
/// unless its owner has `max` endpoints already (`None`). Its cursor is the
/// highest event `seq` now: it receives what is committed after it.
pub fn create(
    conn: &mut DbConn,
    head: &mut Head,
    endpoint: &EndpointRow,
    actor: Actor,
    max: i64,
) -> Result<Option<i64>, StoreError> {
    // Earlier writes of the batch first: their events move the cursor, and
    // their endpoints count.
    head.immediate(conn)?;
    if count_owned(conn, endpoint.reseller.as_deref())? >= max {
        return Ok(None);
    }
    let cursor = super::events::last_seq(conn)?;
    let created_at = format_instant(endpoint.created_at);
    diesel::insert_into(webhook_endpoints::table)
        .values((
            webhook_endpoints::id.eq(&endpoint.id),
            webhook_endpoints::reseller.eq(&endpoint.reseller),
            webhook_endpoints::url.eq(&endpoint.url),
            webhook_endpoints::event_types.eq(types_text(&endpoint.event_types)),
            webhook_endpoints::secret.eq(&endpoint.secret),
            webhook_endpoints::created_at.eq(&created_at),
            webhook_endpoints::cursor.eq(cursor),
            webhook_endpoints::attempts.eq(0),
        ))
        .execute(conn)?;
    let subject = json!({
        "kind": "webhook_endpoint",
        "id": endpoint.id,
        "reseller": endpoint.reseller,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "secret_sha256": sha256_hex(&endpoint.secret),
        "created_at": created_at,
    });
    let version = head.catalog_version().to_string();
    let event = event("webhook.create", actor, &endpoint.reseller, subject);
    append_event(head, event, &version, endpoint.created_at).map(Some)
}

/// Rotates the secret of `owner`'s endpoint `id` (a ledger write) with its
/// `webhook.rotate` event: `secret` becomes the signing secret, and the one
/// it replaces still signs until [`ROTATION_OVERLAP_HOURS`] from `now` (a
/// secret rotated out before is dropped). The endpoint as it now stands, or
/// `None` when `owner` has no such endpoint.
pub fn rotate(
    conn: &mut DbConn,
    head: &mut Head,
    id: &str,
    owner: Option<&str>,
    secret: &str,
    actor: Actor,
    now: DateTime<Utc>,
) -> Result<Option<EndpointRow>, StoreError> {
    head.immediate(conn)?;
    let Some(mut row) = endpoint_in(conn, id, owner)? else {
        return Ok(None);
    };
    let until = now + Duration::hours(ROTATION_OVERLAP_HOURS);
    let until_text = format_instant(until);
    let updated = diesel::update(webhook_endpoints::table.filter(webhook_endpoints::id.eq(id)))
        .set((
            webhook_endpoints::secret.eq(secret),
            webhook_endpoints::previous_secret.eq(&row.secret),
            webhook_endpoints::previous_until.eq(&until_text),
        ))
        .execute(conn)?;
    if updated != 1 {
        return Err(StoreError::Conflict);
    }
    let subject = json!({
        "kind": "webhook_endpoint",
        "id": id,
        "reseller": row.reseller,
        "secret_sha256": sha256_hex(secret),
        "previous_secret_sha256": sha256_hex(&row.secret),
        "previous_until": until_text,
    });
    let version = head.catalog_version().to_string();
    append_event(
        head,
        event("webhook.rotate", actor, &row.reseller, subject),
        &version,
        now,
    )?;
    row.previous_secret = Some(std::mem::replace(&mut row.secret, secret.to_owned()));
    row.previous_until = Some(parse_instant(&until_text)?);
    Ok(Some(row))
}

/// Deletes `owner`'s endpoint `id` (a ledger write) with its deliveries'
/// records and its `webhook.delete` event; whether there was one.
pub fn delete(
    conn: &mut DbConn,
    head: &mut Head,
    id: &str,
    owner: Option<&str>,
    actor: Actor,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    head.immediate(conn)?;
    let Some(row) = endpoint_in(conn, id, owner)? else {
        return Ok(false);
    };
    diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::endpoint_id.eq(id)))
        .execute(conn)?;
    let deleted = diesel::delete(webhook_endpoints::table.filter(webhook_endpoints::id.eq(id)))
        .execute(conn)?;
    if deleted != 1 {
        return Err(StoreError::Conflict);
    }
    let subject = json!({"kind": "webhook_endpoint", "id": id, "reseller": row.reseller});
    let version = head.catalog_version().to_string();
    append_event(
        head,
        event("webhook.delete", actor, &row.reseller, subject),
        &version,
        now,
    )?;
    Ok(true)
}

/// Disables endpoint `id`, which answered `status` (a `410`), at `at` for
/// `reason` (a ledger write, by the delivery holding its lease as
/// `lease_owner`, which it gives up) with its `webhook.disable` event by the
/// system; the event's `seq`, or `None` when the lease is no longer
/// `lease_owner`'s or the endpoint is disabled or gone already (nothing
/// written).
pub fn disable(
    conn: &mut DbConn,
    head: &mut Head,
    id: &str,
    lease_owner: &str,
    at: DateTime<Utc>,
    reason: &str,
    status: i32,
) -> Result<Option<i64>, StoreError> {
    head.immediate(conn)?;
    let at_text = format_instant(at);
    let disabled = diesel::update(
        webhook_endpoints::table
            .filter(webhook_endpoints::id.eq(id))
            .filter(webhook_endpoints::lease_owner.eq(lease_owner))
            .filter(webhook_endpoints::disabled_at.is_null()),
    )
    .set((
        webhook_endpoints::disabled_at.eq(&at_text),
        webhook_endpoints::disabled_reason.eq(reason),
        webhook_endpoints::attempts.eq(webhook_endpoints::attempts + 1),
        webhook_endpoints::next_attempt_at.eq(None::<String>),
        webhook_endpoints::last_attempt_at.eq(&at_text),
        webhook_endpoints::last_status.eq(status),
        webhook_endpoints::last_error.eq(None::<String>),
        webhook_endpoints::lease_owner.eq(None::<String>),
        webhook_endpoints::lease_until.eq(None::<String>),
    ))
    .execute(conn)?;
    if disabled == 0 {
        return Ok(None);
    }
    let reseller = webhook_endpoints::table
        .filter(webhook_endpoints::id.eq(id))
        .select(webhook_endpoints::reseller)
        .first::<Option<String>>(conn)?;
    let subject = json!({
        "kind": "webhook_endpoint",
        "id": id,
        "reseller": reseller,
        "disabled_at": at_text,
        "disabled_reason": reason,
    });
    let version = head.catalog_version().to_string();
    append_event(
        head,
        event("webhook.disable", Actor::system(), &reseller, subject),
        &version,
        at,
    )
    .map(Some)
}

impl Store {
    /// `owner`'s endpoint `id`, if there is one.
    pub fn webhook_endpoint(
        &self,
        id: &str,
        owner: Option<&str>,
    ) -> Result<Option<EndpointRow>, StoreError> {
        endpoint_in(&mut *self.conn()?, id, owner)
    }

    /// A page of `owner`'s endpoints by `id`, after `after`.
    pub fn webhook_endpoints(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<EndpointRow>, StoreError> {
        let query = webhook_endpoints::table
            .select(columns!())
            .filter(webhook_endpoints::id.gt(after.unwrap_or_default().to_owned()))
            .order(webhook_endpoints::id.asc())
            .limit(limit)
            .into_boxed();
        let stored = owned_by!(query, owner).load::<Stored>(&mut *self.conn()?)?;
        Ok(Page::read(
            "webhook_endpoints",
            stored,
            limit,
            |r| r.0.clone(),
            read,
        ))
    }
}
