//! Impact runs as stored: one row a run (its trigger, the products and
//! resellers it reaches, how far it has got and what it did) and one row
//! per licence it acted on, each written in the transaction that acts.
//!
//! Exactly once per (trigger, licence): a trigger opens at most one run
//! (`trigger_key` is unique, and a run is opened under the ledger's lock);
//! a run advances in chunks, each one ledger write that reads the run's
//! cursor, acts on the next licences after it, records each action
//! (primary key `(run_id, license_id)`) and moves the cursor, or does none
//! of it. So a run interrupted by a crash resumes at its cursor, and two
//! replicas advancing the same run take turns on the lock, the second
//! finding the cursor the first left.
//!
//! The licences a run reaches are found through indexes, never by reading
//! every licence: by product (`licenses_by_product`) and by reseller
//! (`licenses_by_reseller`), active or suspended only.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::licenses::{from_row, license_columns, license_in, LicenseRow, Row};
use super::schema::{impact_actions, impact_clock, impact_runs, licenses};
use super::{format_instant, parse_instant, parse_json, DbConn, Page, Store, StoreError};

/// What a run counts, by action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub ended: i64,
    pub capped: i64,
    pub renewal_blocked: i64,
    pub review: i64,
}

impl Counts {
    pub fn add(&mut self, action: &str) {
        match action {
            "ended" => self.ended += 1,
            "capped" => self.capped += 1,
            "renewal_blocked" => self.renewal_blocked += 1,
            "review" => self.review += 1,
            _ => {}
        }
    }
}

/// What a run reaches: licences of these products, and of these resellers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reached {
    pub products: Vec<String>,
    pub resellers: Vec<String>,
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub trigger_key: String,
    /// `{"kind", "policy_version", "designation"?, "rule"?, "audit_seq"?}`.
    pub trigger: Value,
    pub at: DateTime<Utc>,
    pub reach: Reached,
    /// `running` or `complete`.
    pub status: String,
    pub cursor: String,
    pub licenses_checked: i64,
    pub counts: Counts,
    pub completed_at: Option<DateTime<Utc>>,
    /// The `seq` of the event that opened it.
    pub audit_seq: i64,
}

/// A run to open.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub id: String,
    pub trigger_key: String,
    pub trigger: Value,
    pub at: DateTime<Utc>,
    pub reach: Reached,
}

/// One licence a run acted on.
#[derive(Clone, Debug, PartialEq, Insertable, Queryable)]
#[diesel(table_name = impact_actions)]
pub struct ActionRow {
    pub run_id: String,
    pub license_id: String,
    pub reseller: String,
    pub product: String,
    pub action: String,
    pub not_after: Option<String>,
    pub decision_id: String,
    pub audit_seq: i64,
}

type Stored = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    i64,
);

macro_rules! run_columns {
    () => {
        (
            impact_runs::id,
            impact_runs::trigger_key,
            impact_runs::trigger_spec,
            impact_runs::at,
            impact_runs::reach,
            impact_runs::status,
            impact_runs::cursor,
            impact_runs::licenses_checked,
            impact_runs::ended,
            impact_runs::capped,
            impact_runs::renewal_blocked,
            impact_runs::review,
            impact_runs::completed_at,
            impact_runs::audit_seq,
        )
    };
}

fn from_stored(r: Stored) -> Result<RunRow, StoreError> {
    let reach: Reached = serde_json::from_str(&r.4)
        .map_err(|e| StoreError::Corrupt(format!("impact run reach: {e}")))?;
    Ok(RunRow {
        id: r.0,
        trigger_key: r.1,
        trigger: parse_json(&r.2)?,
        at: parse_instant(&r.3)?,
        reach,
        status: r.5,
        cursor: r.6,
        licenses_checked: r.7,
        counts: Counts {
            ended: r.8,
            capped: r.9,
            renewal_blocked: r.10,
            review: r.11,
        },
        completed_at: r.12.as_deref().map(parse_instant).transpose()?,
        audit_seq: r.13,
    })
}

/// A stored run: its id, its opening event's `seq`, and the run, or why it
/// does not read back.
pub(in crate::store) type StoredRun = (String, i64, Result<RunRow, StoreError>);

/// Every run as stored, in id order (verification names a row that does
/// not read back).
pub(in crate::store) fn all_runs(conn: &mut DbConn) -> Result<Vec<StoredRun>, StoreError> {
    let rows = impact_runs::table
        .order(impact_runs::id.asc())
        .select(run_columns!())
        .load::<Stored>(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.0.clone(), r.13, from_stored(r)))
        .collect())
}

/// The run of a trigger, if one was opened (inside a write).
pub fn run_of_trigger(conn: &mut DbConn, key: &str) -> Result<Option<RunRow>, StoreError> {
    impact_runs::table
        .filter(impact_runs::trigger_key.eq(key))
        .select(run_columns!())
        .first::<Stored>(conn)
        .optional()?
        .map(from_stored)
        .transpose()
}

/// A run, read inside a write.
pub fn run_in(conn: &mut DbConn, id: &str) -> Result<Option<RunRow>, StoreError> {
    impact_runs::table
        .filter(impact_runs::id.eq(id))
        .select(run_columns!())
        .first::<Stored>(conn)
        .optional()?
        .map(from_stored)
        .transpose()
}

/// Inserts a new run (its opening event is the caller's, `audit_seq`);
/// `complete` for a run with nothing to check.
pub fn insert_run(
    conn: &mut DbConn,
    run: &NewRun,
    audit_seq: i64,
    complete: bool,
) -> Result<(), StoreError> {
    let reach =
        serde_json::to_string(&run.reach).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let at = format_instant(run.at);
    diesel::insert_into(impact_runs::table)
        .values((
            impact_runs::id.eq(&run.id),
            impact_runs::trigger_key.eq(&run.trigger_key),
            impact_runs::trigger_spec.eq(run.trigger.to_string()),
            impact_runs::at.eq(&at),
            impact_runs::reach.eq(reach),
            impact_runs::status.eq(if complete { "complete" } else { "running" }),
            impact_runs::completed_at.eq(complete.then_some(at.clone())),
            impact_runs::audit_seq.eq(audit_seq),
        ))
        .execute(conn)?;
    Ok(())
}

/// The next licences after `cursor` that `reach` reaches, active or
/// suspended, in id order: at most `limit` of each index's, merged, so the
/// first `limit` of the merge are the next `limit` overall.
pub fn reached_after(
    conn: &mut DbConn,
    reach: &Reached,
    cursor: &str,
    limit: i64,
) -> Result<Vec<LicenseRow>, StoreError> {
    let live = ["active", "suspended"];
    // One keyset query per product and per reseller, each down its own
    // index ((product, id), (reseller, id)), whole rows.
    let next = |conn: &mut DbConn, by_product: Option<&str>, by_reseller: Option<&str>| {
        let mut query = licenses::table
            .filter(licenses::id.gt(cursor.to_string()))
            .filter(licenses::status.eq_any(live))
            .order(licenses::id.asc())
            .limit(limit)
            .select(license_columns!())
            .into_boxed();
        if let Some(product) = by_product {
            query = query.filter(licenses::product.eq(product.to_string()));
        }
        if let Some(reseller) = by_reseller {
            query = query.filter(licenses::reseller.eq(reseller.to_string()));
        }
        query.load::<Row>(conn)
    };
    let mut rows: Vec<Row> = Vec::new();
    for product in &reach.products {
        rows.extend(next(conn, Some(product), None)?);
    }
    for reseller in &reach.resellers {
        rows.extend(next(conn, None, Some(reseller))?);
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|a, b| a.0 == b.0);
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    rows.into_iter().map(from_row).collect()
}

/// Records the licences a chunk acted on, and moves the run on (its cursor,
/// what it checked and did; `completed_at` once it has checked them all).
pub fn advance_run(
    conn: &mut DbConn,
    run: &RunRow,
    actions: &[ActionRow],
    completed_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    for chunk in actions.chunks(500) {
        // BACKEND-SPECIFIC: diesel's multi-backend connection does not
        // build batch inserts.
        match conn {
            DbConn::Postgres(pg) => diesel::insert_into(impact_actions::table)
                .values(chunk)
                .execute(pg)?,
            DbConn::Sqlite(lite) => diesel::insert_into(impact_actions::table)
                .values(chunk)
                .execute(lite)?,
        };
    }
    let c = run.counts;
    diesel::update(impact_runs::table.filter(impact_runs::id.eq(&run.id)))
        .set((
            impact_runs::cursor.eq(&run.cursor),
            impact_runs::licenses_checked.eq(run.licenses_checked),
            impact_runs::ended.eq(c.ended),
            impact_runs::capped.eq(c.capped),
            impact_runs::renewal_blocked.eq(c.renewal_blocked),
            impact_runs::review.eq(c.review),
            impact_runs::status.eq(if completed_at.is_some() {
                "complete"
            } else {
                "running"
            }),
            impact_runs::completed_at.eq(completed_at.map(format_instant)),
        ))
        .execute(conn)?;
    Ok(())
}

/// How far rule instants have been swept (inside a write), and moves it to
/// `to`. `None` the first time: nothing was swept before (and instants
/// already past then are not swept: the catalogue changes that put them
/// were screened when they were made).
pub fn sweep_clock(
    conn: &mut DbConn,
    to: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let was: Option<String> = impact_clock::table
        .filter(impact_clock::id.eq(1))
        .select(impact_clock::swept_to)
        .first(conn)
        .optional()?;
    let to_text = format_instant(to);
    match &was {
        Some(_) => {
            diesel::update(impact_clock::table.filter(impact_clock::id.eq(1)))
                .set(impact_clock::swept_to.eq(&to_text))
                .execute(conn)?;
        }
        None => {
            diesel::insert_into(impact_clock::table)
                .values((impact_clock::id.eq(1), impact_clock::swept_to.eq(&to_text)))
                .execute(conn)?;
        }
    }
    was.as_deref().map(parse_instant).transpose()
}

/// Licences waiting on an impact review and still active, after `after` in
/// id order, at most `limit` (through the partial index
/// `licenses_in_impact_review`).
pub fn in_impact_review(
    conn: &mut DbConn,
    after: &str,
    limit: i64,
) -> Result<Vec<LicenseRow>, StoreError> {
    let ids: Vec<String> = licenses::table
        .filter(licenses::impact_review.is_not_null())
        .filter(licenses::status.eq("active"))
        .filter(licenses::id.gt(after))
        .order(licenses::id.asc())
        .limit(limit)
        .select(licenses::id)
        .load(conn)?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = license_in(conn, &id)? {
            rows.push(row);
        }
    }
    Ok(rows)
}

impl Store {
    /// How far rule instants have been swept (`None`: never), read without
    /// the ledger: the runner takes the ledger only when there is work.
    pub fn impact_swept_to(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut conn = self.conn()?;
        let was: Option<String> = impact_clock::table
            .filter(impact_clock::id.eq(1))
            .select(impact_clock::swept_to)
            .first(&mut *conn)
            .optional()?;
        was.as_deref().map(parse_instant).transpose()
    }

    /// Whether any active licence waits on an impact review (one lapsed
    /// review may need its licence suspended).
    pub fn any_in_impact_review(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let found: Option<String> = licenses::table
            .filter(licenses::impact_review.is_not_null())
            .filter(licenses::status.eq("active"))
            .select(licenses::id)
            .first(&mut *conn)
            .optional()?;
        Ok(found.is_some())
    }

    /// The runs not yet complete, oldest first.
    pub fn running_impact_runs(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        Ok(impact_runs::table
            .filter(impact_runs::status.eq("running"))
            .order(impact_runs::id.asc())
            .select(impact_runs::id)
            .load(&mut *conn)?)
    }

    pub fn impact_run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        let mut conn = self.conn()?;
        run_in(&mut conn, id)
    }

    /// A page of runs, oldest first, after the cursor `after` (a run id).
    pub fn impact_runs(&self, after: Option<&str>, limit: i64) -> Result<Page<RunRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = impact_runs::table
            .select(run_columns!())
            .order(impact_runs::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(impact_runs::id.gt(after.to_string()));
        }
        let rows = query.load::<Stored>(&mut *conn)?;
        Ok(Page::read(
            "impact_runs",
            rows,
            limit,
            |r| r.0.clone(),
            from_stored,
        ))
    }

    /// A page of the licences run `run` acted on (one tenant's, or every
    /// tenant's for `None`), in licence id order after `after`.
    pub fn impact_actions(
        &self,
        run: &str,
        reseller: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<ActionRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = impact_actions::table
            .filter(impact_actions::run_id.eq(run.to_string()))
            .order(impact_actions::license_id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(reseller) = reseller {
            query = query.filter(impact_actions::reseller.eq(reseller.to_string()));
        }
        if let Some(after) = after {
            query = query.filter(impact_actions::license_id.gt(after.to_string()));
        }
        let rows = query.load::<ActionRow>(&mut *conn)?;
        Ok(Page::read(
            "impact_actions",
            rows,
            limit,
            |r| r.license_id.clone(),
            Ok,
        ))
    }

    /// One tenant's counts of what run `run` did.
    pub fn impact_counts_of(&self, run: &str, reseller: &str) -> Result<Counts, StoreError> {
        let mut conn = self.conn()?;
        let actions: Vec<String> = impact_actions::table
            .filter(impact_actions::run_id.eq(run))
            .filter(impact_actions::reseller.eq(reseller))
            .select(impact_actions::action)
            .load(&mut *conn)?;
        let mut counts = Counts::default();
        for action in &actions {
            counts.add(action);
        }
        Ok(counts)
    }

    /// Licences reached by `reach`, active or suspended, for a preview
    /// (read only; every page).
    pub fn reached_licenses(&self, reach: &Reached) -> Result<Vec<LicenseRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = reached_after(&mut conn, reach, &cursor, 1000)?;
            let Some(last) = page.last().map(|r| r.id.clone()) else {
                break;
            };
            all.extend(page);
            cursor = last;
        }
        Ok(all)
    }
}
