//! Licences and idempotency records. (The `license_keys` table that once
//! listed licence-signing keys is no longer written or read: the keys the
//! service publishes and trusts come from its configuration only.)
//!
//! A licence's instants are written only in a form they read back in (see
//! [`super::format_storable`]). A row that still does not read back (edited
//! by hand, or written by an older release: a term run past the year 9999
//! was once stored as `+10001-…`) is not served, and does not take anyone
//! else's licences with it: a listing leaves it out of its page, logs it
//! (an `ERROR` naming the licence and why) and counts it in
//! `gatekeeper_unreadable_rows_total{table="licenses"}`, and its `next`
//! cursor still moves past it, so every readable licence after it is still
//! listed. Reading that one licence (`GET /v1/licenses/{id}`, or renewing
//! it) is a `500` with the cause in the log, and `GET /v1/audit/verify`
//! names it (`state_mismatch`): the chain holds what it should say, for
//! the operator to restore it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::schema::{audit_events, idempotency_keys, licenses};
use super::{format_instant, parse_instant, parse_json, DbConn, Page, Store, StoreError};
use crate::domain::Standing;

/// What a licence request reads before its write: its idempotency key's
/// record, and the licence it renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub reseller: String,
    pub key: Option<String>,
    pub renews: Option<String>,
}

/// What [`Store::before_license_write`] finds: the key's live record (then
/// nothing else is read), else the licence to renew as stored, if one was
/// asked for (`Some(None)`: there is none).
pub type Before = (Option<IdempotencyRecord>, Option<Option<LicenseRow>>);

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// A licence as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenseRow {
    pub id: String,
    pub reseller: String,
    pub product: String,
    /// The customer facts (JSON) the latest decision was taken on.
    pub customer: Value,
    pub seats: i64,
    pub starts_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decision_id: String,
    pub token: String,
    /// Where it stands, why, and its status-list entry.
    pub state: LicenseState,
    /// Its `updated_at` as stored when it was read (`None` for a row not
    /// read from the database): every change sets it anew, so a write can
    /// tell whether the licence is still as it was read.
    pub version: Option<String>,
}

/// Where a licence stands (the lifecycle columns).
#[derive(Debug, Clone, PartialEq)]
pub struct LicenseState {
    pub standing: Standing,
    /// Why, and who: `{"reason", "by": {actor}, "at"}` (`None` while active).
    pub status_reason: Option<Value>,
    /// The designation that ended its service: `{"designation", "rule", "at"}`.
    pub ended_by: Option<Value>,
    /// The impact action that blocks its renewal: `{"designation", "rule", "run", "at"}`.
    pub renewal_blocked: Option<Value>,
    /// The impact review it waits on: `{"decision_id", "due", "run"}`;
    /// suspended if still open at `due`.
    pub impact_review: Option<Value>,
    /// Its index in the status lists (`None` for a licence whose token
    /// predates them, until it is signed again).
    pub status_idx: Option<i64>,
}

impl Default for LicenseState {
    fn default() -> Self {
        LicenseState {
            standing: Standing::Active,
            status_reason: None,
            ended_by: None,
            renewal_blocked: None,
            impact_review: None,
            status_idx: None,
        }
    }
}

impl LicenseState {
    /// The state as the licence's audit events record it (beside its
    /// instants and token digest): what verification holds the row to.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "status": self.standing,
            "status_reason": self.status_reason,
            "ended_by": self.ended_by,
            "renewal_blocked": self.renewal_blocked,
            "impact_review": self.impact_review,
            "status_idx": self.status_idx,
        })
    }
}

/// What the first request with an idempotency key came to, for its retries:
/// the request's fingerprint, the kind of outcome (`status`: a code the gate
/// gives each kind), the audit event that records the outcome
/// (`audit_seq`) and what a replay needs beside that event (`body`). The
/// store keeps it as it is given, and reads the event with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    /// `None` in records written before they referred to their event (the
    /// body then holds the whole outcome).
    pub audit_seq: Option<i64>,
    /// The event `audit_seq` names, as read with the record (not stored
    /// with it; `None` when saving, or when the event is not there).
    pub event: Option<String>,
}

/// A licence row as stored, its instants, customer and state still text.
pub(super) type Row = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
);

pub(super) fn from_row(row: Row) -> Result<LicenseRow, StoreError> {
    let (id, reseller, product, customer, seats, starts_at, expires_at, decision_id, token) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
    );
    let json = |text: Option<String>| text.as_deref().map(parse_json).transpose();
    let state = LicenseState {
        standing: Standing::parse(&row.9)
            .ok_or_else(|| StoreError::Corrupt(format!("licence status {:?}", row.9)))?,
        status_reason: json(row.10)?,
        ended_by: json(row.11)?,
        renewal_blocked: json(row.12)?,
        impact_review: json(row.13)?,
        status_idx: row.14,
    };
    Ok(LicenseRow {
        id,
        reseller,
        product,
        customer: parse_json(&customer)?,
        seats,
        starts_at: parse_instant(&starts_at)?,
        expires_at: parse_instant(&expires_at)?,
        decision_id,
        token,
        state,
        version: Some(row.15),
    })
}

macro_rules! license_columns {
    () => {
        (
            licenses::id,
            licenses::reseller,
            licenses::product,
            licenses::customer,
            licenses::seats,
            licenses::starts_at,
            licenses::expires_at,
            licenses::decision_id,
            licenses::token,
            licenses::status,
            licenses::status_reason,
            licenses::ended_by,
            licenses::renewal_blocked,
            licenses::impact_review,
            licenses::status_idx,
            licenses::updated_at,
        )
    };
}
pub(super) use license_columns;

/// The live record of an idempotency key, inside a ledger write.
pub fn idempotency_in(
    conn: &mut DbConn,
    reseller: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row = idempotency_keys::table
        .left_join(
            audit_events::table.on(audit_events::seq.nullable().eq(idempotency_keys::audit_seq)),
        )
        .filter(idempotency_keys::reseller.eq(reseller))
        .filter(idempotency_keys::idem_key.eq(key))
        .filter(idempotency_keys::expires_at.gt(format_instant(now)))
        .select((
            idempotency_keys::fingerprint,
            idempotency_keys::status,
            idempotency_keys::body,
            idempotency_keys::audit_seq,
            audit_events::event.nullable(),
        ))
        .first::<(String, i32, String, Option<i64>, Option<String>)>(conn)
        .optional()?;
    Ok(row.map(|(fingerprint, status, body, audit_seq, event)| {
        stored_record(fingerprint, status, body, audit_seq, event)
    }))
}

/// An idempotency record as read (with its event's text, if it has one).
fn stored_record(
    fingerprint: String,
    status: i32,
    body: String,
    audit_seq: Option<i64>,
    event: Option<String>,
) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint,
        status: u16::try_from(status).unwrap_or(500),
        audit_seq,
        event,
        body,
    }
}

/// A page of licence rows as stored, in id order after `after` (for
/// verification, which compares them with the chain as they are).
pub(super) fn raw_page(conn: &mut DbConn, after: &str, limit: i64) -> Result<Vec<Row>, StoreError> {
    Ok(licenses::table
        .filter(licenses::id.gt(after))
        .order(licenses::id.asc())
        .limit(limit)
        .select(license_columns!())
        .load::<Row>(conn)?)
}

/// One licence, read inside a write.
pub fn license_in(conn: &mut DbConn, id: &str) -> Result<Option<LicenseRow>, StoreError> {
    licenses::table
        .filter(licenses::id.eq(id))
        .select(license_columns!())
        .first::<Row>(conn)
        .optional()?
        .map(from_row)
        .transpose()
}

/// What a licence search narrows by (`None`: any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseSearch {
    pub reseller: Option<String>,
    pub product: Option<String>,
    /// The stored status: `active`, `ended`, `suspended` or `revoked`.
    pub status: Option<String>,
}

impl Store {
    pub fn license(&self, id: &str) -> Result<Option<LicenseRow>, StoreError> {
        let mut conn = self.conn()?;
        license_in(&mut conn, id)
    }

    /// A page of licences in id (= creation) order, after the cursor `after`;
    /// one tenant's, or every tenant's for `None`. A row that does not read
    /// back is left out and logged (see the module docs).
    pub fn licenses(
        &self,
        reseller: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<LicenseRow>, StoreError> {
        let search = LicenseSearch {
            reseller: reseller.map(str::to_string),
            ..LicenseSearch::default()
        };
        self.search_licenses(&search, after, limit)
    }

    /// [`Store::licenses`] narrowed by `search` (each field given must
    /// match; the reseller and product ones use their indexes).
    pub fn search_licenses(
        &self,
        search: &LicenseSearch,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<LicenseRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = licenses::table
            .select(license_columns!())
            .order(licenses::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(reseller) = &search.reseller {
            query = query.filter(licenses::reseller.eq(reseller.clone()));
        }
        if let Some(product) = &search.product {
            query = query.filter(licenses::product.eq(product.clone()));
        }
        if let Some(status) = &search.status {
            query = query.filter(licenses::status.eq(status.clone()));
        }
        if let Some(after) = after {
            query = query.filter(licenses::id.gt(after.to_string()));
        }
        let rows = query.load::<Row>(&mut *conn)?;
        Ok(Page::read(
            "licenses",
            rows,
            limit,
            |r| r.0.clone(),
            from_row,
        ))
    }

    /// The licences of status list `list` that are not valid: each one's
    /// status-list index and standing, for the indices in
    /// `[list * LIST_SIZE, (list + 1) * LIST_SIZE)`, in index order. An
    /// active licence (valid, `0`) is not read: the query reads the partial
    /// index `licenses_not_valid`, so a list costs what is set in it, not
    /// the licences it holds. (Its predicate is written as SQL text, as the
    /// index's is, not as a bound parameter: a planner can match a partial
    /// index only to a condition it can read.)
    pub fn status_list_entries(&self, list: i64) -> Result<Vec<(i64, Standing)>, StoreError> {
        let size = crate::status_list::LIST_SIZE;
        let (from, to) = match (list.checked_mul(size), list.checked_add(1)) {
            (Some(from), Some(next)) if list >= 0 => (from, next.saturating_mul(size)),
            _ => return Ok(Vec::new()),
        };
        let mut conn = self.conn()?;
        let rows = licenses::table
            .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
                "status <> 'active'",
            ))
            .filter(licenses::status_idx.ge(from))
            .filter(licenses::status_idx.lt(to))
            .order(licenses::status_idx.asc())
            .select((licenses::status_idx, licenses::status))
            .load::<(Option<i64>, String)>(&mut *conn)?;
        rows.into_iter()
            .filter_map(|(idx, status)| idx.map(|idx| (idx, status)))
            .map(|(idx, status)| {
                let standing = Standing::parse(&status).ok_or_else(|| {
                    StoreError::Corrupt(format!("licence status {status:?} at index {idx}"))
                })?;
                Ok((idx, standing))
            })
            .collect()
    }

    /// The highest status-list index a licence holds (`None`: none holds
    /// one yet). The lists that exist are `0..=highest / LIST_SIZE`.
    pub fn highest_status_idx(&self) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn()?;
        Ok(licenses::table
            .select(diesel::dsl::max(licenses::status_idx))
            .first::<Option<i64>>(&mut *conn)?)
    }

    /// The live record of an idempotency key.
    pub fn idempotency(
        &self,
        reseller: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut conn = self.conn()?;
        idempotency_in(&mut conn, reseller, key, Utc::now())
    }

    /// What a licence request reads before its write, on one connection:
    /// the live record of its idempotency key (if it has one), and the
    /// licence it renews (`Some` if it renews one, whether found or not).
    pub fn before_license_write(
        &self,
        reseller: &str,
        key: Option<&str>,
        renews: Option<&str>,
    ) -> Result<Before, StoreError> {
        let mut conn = self.conn()?;
        let found = match key {
            Some(key) => idempotency_in(&mut conn, reseller, key, Utc::now())?,
            None => None,
        };
        if found.is_some() {
            return Ok((found, None));
        }
        let read = renews.map(|id| license_in(&mut conn, id)).transpose()?;
        Ok((None, read))
    }

    /// [`Store::before_license_write`] for many requests at once, in two
    /// queries on `conn` (their keys' records, then the licences those
    /// without a record renew); the answers in the order asked. On
    /// PostgreSQL, `conn` should plan each query for its arrays (a plan
    /// kept for any array scans the whole table: [`super::lookups`]). A
    /// key is another tenant's as well only by chance: a record answers
    /// the request of its own tenant alone. A licence that does not read
    /// back fails the whole call (each request then reads on its own, see
    /// [`super::lookups`]).
    pub fn before_license_writes(
        conn: &mut DbConn,
        asks: &[&Ask],
    ) -> Result<Vec<Before>, StoreError> {
        use std::collections::HashMap;
        let keys: Vec<&str> = asks.iter().filter_map(|a| a.key.as_deref()).collect();
        let mut records: HashMap<(String, String), IdempotencyRecord> = HashMap::new();
        if !keys.is_empty() {
            let mut resellers: Vec<&str> = asks
                .iter()
                .filter(|a| a.key.is_some())
                .map(|a| a.reseller.as_str())
                .collect();
            resellers.sort_unstable();
            resellers.dedup();
            let rows = idempotency_keys::table
                .left_join(
                    audit_events::table
                        .on(audit_events::seq.nullable().eq(idempotency_keys::audit_seq)),
                )
                .filter(idempotency_keys::reseller.eq_any(&resellers))
                .filter(idempotency_keys::idem_key.eq_any(&keys))
                .filter(idempotency_keys::expires_at.gt(format_instant(Utc::now())))
                .select((
                    idempotency_keys::reseller,
                    idempotency_keys::idem_key,
                    idempotency_keys::fingerprint,
                    idempotency_keys::status,
                    idempotency_keys::body,
                    idempotency_keys::audit_seq,
                    audit_events::event.nullable(),
                ))
                .load::<(
                    String,
                    String,
                    String,
                    i32,
                    String,
                    Option<i64>,
                    Option<String>,
                )>(conn)?;
            for (reseller, key, fingerprint, status, body, audit_seq, event) in rows {
                let record = stored_record(fingerprint, status, body, audit_seq, event);
                records.insert((reseller, key), record);
            }
        }
        let found: Vec<Option<IdempotencyRecord>> = asks
            .iter()
            .map(|a| {
                a.key
                    .as_ref()
                    .and_then(|k| records.get(&(a.reseller.clone(), k.clone())).cloned())
            })
            .collect();
        let ids: Vec<&str> = asks
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .filter_map(|(a, _)| a.renews.as_deref())
            .collect();
        let mut read: HashMap<String, LicenseRow> = HashMap::new();
        if !ids.is_empty() {
            for row in licenses::table
                .filter(licenses::id.eq_any(&ids))
                .select(license_columns!())
                .load::<Row>(conn)?
            {
                let row = from_row(row)?;
                read.insert(row.id.clone(), row);
            }
        }
        Ok(asks
            .iter()
            .zip(found)
            .map(|(a, found)| match found {
                Some(found) => (Some(found), None),
                None => (None, a.renews.as_ref().map(|id| read.get(id).cloned())),
            })
            .collect())
    }

    /// Forgets idempotency records past their 24 hours.
    pub fn purge_idempotency(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        Ok(diesel::delete(
            idempotency_keys::table
                .filter(idempotency_keys::expires_at.le(format_instant(Utc::now()))),
        )
        .execute(&mut *conn)?)
    }
}
