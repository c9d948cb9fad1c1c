//! Storage: every SQL statement of the service lives below this module.
//!
//! One connection type ([`DbConn`], a diesel `MultiConnection`) serves both
//! backends, so every query is written once. Backend-specific code is kept
//! to the places marked `BACKEND-SPECIFIC`: connection set-up, migrations.
//!
//! Every write goes through `locked` inside a transaction (the service's
//! through the [`ledger::Ledger`], set-up's through `Store::write`): it locks
//! the one-row `ledger_head` first (which serialises the audit hash chain and
//! the catalogue version across threads, processes and replicas), and
//! commits what it records together with its audit events, or nothing.

pub mod checkpoints;
mod head;
pub mod ledger;
pub mod licenses;
pub mod reviews;
pub mod schema;
pub mod stats;
mod verify;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audit;
use crate::config::DatabaseUrl;
use crate::domain::{DesignationId, OrgId, Outcome, ResellerId, Sku};
use crate::policy::{
    Catalog, CatalogData, CatalogIssue, Decision, DesignationSpec, OrganizationSpec, ProductSpec,
    RelationshipSpec, ResellerSpec,
};
use schema::{audit_events, decisions, ledger_head};

/// One connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Postgres(diesel::pg::PgConnection),
    Sqlite(diesel::sqlite::SqliteConnection),
}

/// How long a SQLite writer queues for the lock before it fails.
pub(crate) const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 10000;";

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Opens connections of the backend the URL names (never by trial and error).
#[derive(Debug, Clone)]
pub struct Manager {
    url: DatabaseUrl,
    /// How long a PostgreSQL statement may wait for a lock before it fails
    /// (`lock_timeout`); `None` waits as long as it takes.
    lock_timeout: Option<Duration>,
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        // BACKEND-SPECIFIC: connection set-up.
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let mut conn = diesel::pg::PgConnection::establish(url)
                    .map_err(r2d2::Error::ConnectionError)?;
                // A lock held elsewhere (a table locked by hand, a stuck
                // replica) fails the statement in bounded time instead of
                // holding the request that waits on it.
                if let Some(wait) = self.lock_timeout {
                    conn.batch_execute(&format!("SET lock_timeout = {}", wait.as_millis().max(1)))
                        .map_err(r2d2::Error::QueryError)?;
                }
                Ok(DbConn::Postgres(conn))
            }
            DatabaseUrl::Sqlite(path) => {
                let mut conn = diesel::sqlite::SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the writer; FULL makes every
                // commit durable before it is acknowledged; the busy timeout
                // makes concurrent writers queue for the lock instead of failing.
                // LIKE is case-sensitive, as on PostgreSQL.
                conn.batch_execute(SQLITE_BUSY_TIMEOUT)
                    .and_then(|()| {
                        conn.batch_execute(
                            "PRAGMA case_sensitive_like = ON; PRAGMA journal_mode = WAL; \
                             PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                        )
                    })
                    .map_err(r2d2::Error::QueryError)?;
                Ok(DbConn::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        use diesel::connection::TransactionManager;
        <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(conn)
    }
}

type Pool = r2d2::Pool<Manager>;
type PooledConn = r2d2::PooledConnection<Manager>;

/// Why a store operation did not happen. Nothing is written in any case.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The change would leave the catalogue invalid.
    #[error("the catalogue change is invalid")]
    Invalid(Vec<CatalogIssue>),
    /// The thing to change or read does not exist.
    #[error("not found")]
    NotFound,
    /// Another process changed the catalogue since the snapshot was taken.
    #[error("the catalogue snapshot is stale")]
    Stale,
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] r2d2::PoolError),
    /// Stored data that does not parse: a bug or a hand edit.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The batch this write was part of did not commit.
    #[error("the write's batch failed: {0}")]
    BatchFailed(String),
    /// The write may or may not be recorded: no answer came in time (its
    /// batch may still commit), or the database's answer to the commit was
    /// lost.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// What the write was based on changed meanwhile (e.g. a licence was
    /// renewed by another request): read again and retry.
    #[error("a concurrent write changed what this one read")]
    Conflict,
    /// The review to resolve is not open (any more).
    #[error("the review is not open")]
    ReviewNotOpen,
    /// The stored catalogue is not the one the audit chain records: it was
    /// edited behind the service's back, and is neither served nor changed.
    #[error("the audit chain does not vouch for the stored catalogue: {0}")]
    Unvouched(String),
}

/// Who did something, as recorded in audit events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    pub role: String,
    pub reseller: Option<String>,
}

impl Actor {
    /// The service itself (the shipped catalogue).
    pub fn system() -> Self {
        Actor {
            sub: "gatekeeper".into(),
            role: "system".into(),
            reseller: None,
        }
    }
}

/// One change to the catalogue.
#[derive(Clone, Debug)]
pub enum CatalogChange {
    PutReseller(ResellerId, ResellerSpec),
    PutOrganization(OrgId, OrganizationSpec),
    PutRelationship(OrgId, OrgId, RelationshipSpec),
    DeleteRelationship(OrgId, OrgId),
    PutProduct(Sku, ProductSpec),
    PutDesignation(DesignationId, DesignationSpec),
}

impl CatalogChange {
    /// A put of one entry from its `kind`, `id` and `spec` (the request body
    /// of its admin route), as a catalogue event's subject holds them; an
    /// invalid one is an error message.
    pub fn put(kind: &str, id: &str, spec: Value) -> Result<CatalogChange, String> {
        fn body<T: serde::de::DeserializeOwned>(spec: Value) -> Result<T, String> {
            serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))
        }
        Ok(match kind {
            "reseller" => CatalogChange::PutReseller(ResellerId::parse(id)?, body(spec)?),
            "organization" => CatalogChange::PutOrganization(OrgId::parse(id)?, body(spec)?),
            "product" => CatalogChange::PutProduct(Sku::parse(id)?, body(spec)?),
            "designation" => CatalogChange::PutDesignation(DesignationId::parse(id)?, body(spec)?),
            "relationship" => {
                let (source, target) = id
                    .split_once('/')
                    .ok_or_else(|| format!("a relationship's id is source/target, not {id:?}"))?;
                CatalogChange::PutRelationship(
                    OrgId::parse(source)?,
                    OrgId::parse(target)?,
                    body(spec)?,
                )
            }
            other => return Err(format!("unknown kind {other:?}")),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            CatalogChange::PutReseller(..) => "reseller",
            CatalogChange::PutOrganization(..) => "organization",
            CatalogChange::PutRelationship(..) | CatalogChange::DeleteRelationship(..) => {
                "relationship"
            }
            CatalogChange::PutProduct(..) => "product",
            CatalogChange::PutDesignation(..) => "designation",
        }
    }

    fn id(&self) -> String {
        match self {
            CatalogChange::PutReseller(id, _) => id.to_string(),
            CatalogChange::PutOrganization(id, _) => id.to_string(),
            CatalogChange::PutRelationship(s, t, _) | CatalogChange::DeleteRelationship(s, t) => {
                format!("{s}/{t}")
            }
            CatalogChange::PutProduct(sku, _) => sku.to_string(),
            CatalogChange::PutDesignation(id, _) => id.to_string(),
        }
    }

    /// Applies the change to `data`; returns whether it created the entry.
    fn apply(&self, data: &mut CatalogData) -> Result<bool, StoreError> {
        Ok(match self.clone() {
            CatalogChange::PutReseller(id, spec) => data.resellers.insert(id, spec).is_none(),
            CatalogChange::PutOrganization(id, spec) => {
                data.organizations.insert(id, spec).is_none()
            }
            CatalogChange::PutRelationship(s, t, spec) => {
                data.relationships.insert((s, t), spec.kind).is_none()
            }
            CatalogChange::DeleteRelationship(s, t) => {
                data.relationships
                    .remove(&(s, t))
                    .ok_or(StoreError::NotFound)?;
                false
            }
            CatalogChange::PutProduct(sku, spec) => data.products.insert(sku, spec).is_none(),
            CatalogChange::PutDesignation(id, spec) => data.designations.insert(id, spec).is_none(),
        })
    }

    fn spec_json(&self) -> Result<Option<Value>, serde_json::Error> {
        match self {
            CatalogChange::PutReseller(_, s) => serde_json::to_value(s).map(Some),
            CatalogChange::PutOrganization(_, s) => serde_json::to_value(s).map(Some),
            CatalogChange::PutRelationship(_, _, s) => serde_json::to_value(s).map(Some),
            CatalogChange::DeleteRelationship(..) => Ok(None),
            CatalogChange::PutProduct(_, s) => serde_json::to_value(s).map(Some),
            CatalogChange::PutDesignation(_, s) => serde_json::to_value(s).map(Some),
        }
    }
}

/// What a committed catalogue change produced.
#[derive(Debug)]
pub struct Applied {
    /// The new snapshot, built from the committed state.
    pub catalog: Catalog,
    /// For each change, in order: whether it created its entry.
    pub created: Vec<bool>,
    pub audit_seqs: Vec<i64>,
}

/// An audit event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub action: String,
    pub actor: Actor,
    pub outcome: Option<Outcome>,
    pub decision: Option<Value>,
    pub subject: Value,
    /// The tenant the event concerns, for filtering.
    pub reseller: Option<String>,
}

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

/// Events read per query when streaming the whole trail.
const EXPORT_PAGE: i64 = 1000;

/// Filters of the audit listing.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after: Option<i64>,
    /// Only events with `seq` up to this one.
    pub until: Option<i64>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// Only what-if decisions (`true`), or only events that are not one
    /// (`false`).
    pub what_if: Option<bool>,
    pub reseller: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

pub use head::Head;
use head::{DecisionRow, EventRow};

/// Timestamps are stored as RFC 3339 text in UTC with microseconds, which
/// sorts correctly and reads the same on both backends. RFC 3339 has
/// four-digit years: only instants of the years 0000 to 9999 (see
/// [`storable`]) come out in a form [`parse_instant`] reads back, so an
/// instant that comes from a request (a licence's term) is written through
/// [`format_storable`], which refuses the others; clock readings are well
/// inside.
pub fn format_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The latest instant the store writes and reads back:
/// 9999-12-31T23:59:59.999999Z.
pub fn latest_storable() -> DateTime<Utc> {
    use chrono::TimeZone as _;
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .and_then(|t| t.checked_add_signed(chrono::Duration::microseconds(999_999)))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Whether [`format_instant`] writes `at` in a form [`parse_instant`] reads
/// back: its year is 0000 to 9999.
pub fn storable(at: DateTime<Utc>) -> bool {
    use chrono::Datelike as _;
    (0..=9999).contains(&at.year())
}

/// [`format_instant`], for an instant that must read back: one outside the
/// years 0000 to 9999 is refused (a bug upstream: the gate caps terms long
/// before that), never written.
pub fn format_storable(at: DateTime<Utc>) -> Result<String, StoreError> {
    if storable(at) {
        Ok(format_instant(at))
    } else {
        Err(StoreError::Corrupt(format!(
            "refusing to store the instant {at:?}: outside the years 0000 to 9999, it would not read back"
        )))
    }
}

/// Reads an instant as [`format_instant`] writes it (any RFC 3339 text).
/// Anything else is [`StoreError::Corrupt`]: a bug, or a hand edit.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("instant {text:?}: {e}")))
}

/// The shared handle to the database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: DatabaseUrl,
    /// Where the time spent waiting for a pooled connection is recorded.
    pool_wait: Option<prometheus::Histogram>,
    /// PostgreSQL's `lock_timeout` on every connection the store opens.
    lock_timeout: Option<Duration>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool on the database. Fails if no connection can be made.
    /// Statements wait for locks as long as it takes.
    pub fn connect(url: &DatabaseUrl, pool_size: u32) -> anyhow::Result<Store> {
        Store::open(url, pool_size, None)
    }

    /// Opens a pool whose PostgreSQL statements give up waiting for a lock
    /// after `lock_timeout` (the service's: requests answer in bounded time).
    pub fn connect_bounded(
        url: &DatabaseUrl,
        pool_size: u32,
        lock_timeout: Duration,
    ) -> anyhow::Result<Store> {
        Store::open(url, pool_size, Some(lock_timeout))
    }

    fn open(
        url: &DatabaseUrl,
        pool_size: u32,
        lock_timeout: Option<Duration>,
    ) -> anyhow::Result<Store> {
        if let DatabaseUrl::Sqlite(path) = url {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
        }
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(Duration::from_secs(5))
            // A connection is tested (`SELECT 1`) when checked out, so one
            // that died with a database restart is replaced, not handed out.
            .test_on_check_out(true)
            .build(Manager {
                url: url.clone(),
                lock_timeout,
            })?;
        Ok(Store {
            pool,
            url: url.clone(),
            pool_wait: None,
            lock_timeout,
        })
    }

    /// How long a statement waits for a lock before it fails (`None`: as
    /// long as it takes).
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.lock_timeout
    }

    /// Records the time spent waiting for pooled connections in `histogram`.
    pub fn with_pool_wait(mut self, histogram: prometheus::Histogram) -> Store {
        self.pool_wait = Some(histogram);
        self
    }

    fn conn(&self) -> Result<PooledConn, StoreError> {
        let timer = self.pool_wait.as_ref().map(|h| h.start_timer());
        // A request waits for a connection no longer than for a lock.
        let conn = match self.lock_timeout {
            Some(bound) => self.pool.get_timeout(bound),
            None => self.pool.get(),
        };
        drop(timer);
        Ok(conn?)
    }

    /// Runs pending migrations, then installs the shipped catalogue into a
    /// new database (through the audited write path, as `system`).
    pub fn migrate(&self) -> anyhow::Result<()> {
        // With nothing pending, touch nothing: a service role that may not
        // create tables (deploy/postgres-roles.sql) starts all the same.
        if self.migrations_applied().unwrap_or(false) {
            return self.seed();
        }
        // A connection of its own with no lock timeout: a replica waits for
        // another's migration however long it takes (seeding a new
        // database, below, is bounded like any write).
        let mut conn = Manager {
            url: self.url.clone(),
            lock_timeout: None,
        }
        .connect()?;
        // BACKEND-SPECIFIC: migrations, and PostgreSQL's lock that keeps two
        // replicas from migrating at once.
        match &mut conn {
            DbConn::Postgres(pg) => {
                pg.batch_execute("SELECT pg_advisory_lock(7474001)")?;
                let result = pg
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("migrating PostgreSQL: {e}"));
                pg.batch_execute("SELECT pg_advisory_unlock(7474001)")?;
                result?;
            }
            DbConn::Sqlite(lite) => {
                lite.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map_err(|e| anyhow::anyhow!("migrating SQLite: {e}"))?;
            }
        }
        drop(conn);
        self.seed()
    }

    /// Whether every migration is applied, read from diesel's bookkeeping
    /// table without creating it (as `pending_migrations` would).
    pub fn migrations_applied(&self) -> Result<bool, StoreError> {
        use diesel::migration::MigrationSource;
        let mut conn = self.conn()?;
        // BACKEND-SPECIFIC: the embedded migrations of the backend.
        let wanted = match &*conn {
            DbConn::Postgres(_) => {
                MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS).map(versions)
            }
            DbConn::Sqlite(_) => {
                MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
                    .map(versions)
            }
        }
        .map_err(|e| StoreError::Corrupt(format!("reading the embedded migrations: {e}")))?;
        let applied: Vec<String> = match schema::__diesel_schema_migrations::table
            .select(schema::__diesel_schema_migrations::version)
            .load(&mut *conn)
        {
            Ok(applied) => applied,
            // No bookkeeping table yet: nothing is applied.
            Err(diesel::result::Error::DatabaseError(..)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        Ok(wanted.iter().all(|v| applied.contains(v)))
    }

    fn seed(&self) -> anyhow::Result<()> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Seed {
            organizations: BTreeMap<OrgId, OrganizationSpec>,
            designations: BTreeMap<DesignationId, DesignationSpec>,
        }
        // Seeded already (read without a lock, so that a replica starts
        // while another holds the ledger head for a while).
        if self.catalog_version()? != 0 {
            return Ok(());
        }
        let seed: Seed = serde_json::from_str(include_str!("seed.json"))?;
        let mut changes: Vec<CatalogChange> = seed
            .organizations
            .into_iter()
            .map(|(id, spec)| CatalogChange::PutOrganization(id, spec))
            .collect();
        changes.extend(
            seed.designations
                .into_iter()
                .map(|(id, spec)| CatalogChange::PutDesignation(id, spec)),
        );
        match self.apply_changes_if(&Actor::system(), changes, |head| head.catalog_version == 0) {
            Ok(_) => Ok(()),
            Err(StoreError::Stale) => Ok(()), // already seeded
            Err(StoreError::Invalid(issues)) => {
                anyhow::bail!("the shipped catalogue is invalid: {issues:?}")
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the committed catalogue and builds its snapshot. The version
    /// and every table are read in one snapshot of the database, so a
    /// change committing meanwhile is either wholly in or wholly out. A
    /// catalogue the audit chain does not vouch for is
    /// [`StoreError::Unvouched`] (see [`verify::vouch_catalog`]).
    pub fn load_catalog(&self) -> Result<Catalog, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let (version, data) = conn.transaction(|conn| {
            // BACKEND-SPECIFIC: PostgreSQL's default isolation gives each
            // statement its own snapshot; SQLite's transactions are snapshots.
            if let DbConn::Postgres(pg) = conn {
                pg.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            }
            let (seq, hash, version) = ledger_head::table
                .select((
                    ledger_head::seq,
                    ledger_head::hash,
                    ledger_head::catalog_version,
                ))
                .first::<(i64, String, i64)>(conn)?;
            // A catalogue row that does not even parse was edited behind
            // the service's back: not served, like any other such edit.
            let data = load_catalog_data(conn).map_err(|e| match e {
                StoreError::Corrupt(what) => StoreError::Unvouched(what),
                other => other,
            })?;
            verify::vouch_catalog(conn, (seq, &hash), version, &data)?;
            Ok::<_, StoreError>((version, data))
        })?;
        build_catalog(version, data)
    }

    /// The committed catalogue version (cheap: one row).
    pub fn catalog_version(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(ledger_head::table
            .select(ledger_head::catalog_version)
            .first::<i64>(&mut *conn)?)
    }

    /// Commits catalogue changes as `actor` in one audited write, outside
    /// the service (the CLI's `catalog import`): one event per change, and
    /// the catalogue's digest on the last. Invalid changes write nothing.
    pub fn import_catalog(
        &self,
        actor: &Actor,
        changes: Vec<CatalogChange>,
    ) -> Result<Applied, StoreError> {
        self.apply_changes_if(actor, changes, |_| true)
    }

    fn apply_changes_if(
        &self,
        actor: &Actor,
        changes: Vec<CatalogChange>,
        precondition: impl Fn(&Head) -> bool,
    ) -> Result<Applied, StoreError> {
        self.write(|conn, head| {
            if !precondition(head) {
                return Err(StoreError::Stale);
            }
            apply_catalog_changes(conn, head, actor, &changes)
        })
    }

    /// Reads one decision.
    pub fn decision(&self, id: &str) -> Result<Option<StoredDecision>, StoreError> {
        let mut conn = self.conn()?;
        decisions::table
            .filter(decisions::id.eq(id))
            .select(reviews::DECISION_COLUMNS)
            .first::<reviews::DecisionRow>(&mut *conn)
            .optional()?
            .map(reviews::from_row)
            .transpose()
    }

    /// Reads a page of audit events, in `seq` order, as exported.
    pub fn audit_events(&self, filter: &AuditFilter, limit: i64) -> Result<Vec<Value>, StoreError> {
        Ok(self
            .audit_rows(filter, limit)?
            .into_iter()
            .map(|(_, event)| event)
            .collect())
    }

    /// A page of events with their `seq` column (which paging follows,
    /// whatever the stored event says). A stored event that is not JSON
    /// comes out as `null`, for the verifier to call malformed.
    fn audit_rows(
        &self,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<(i64, Value)>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = audit_events::table
            .select((audit_events::seq, audit_events::event, audit_events::hash))
            .order(audit_events::seq.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = filter.after {
            query = query.filter(audit_events::seq.gt(after));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit_events::seq.le(until));
        }
        if let Some(action) = &filter.action {
            query = match action.strip_suffix(".*") {
                Some(prefix) => {
                    let escaped = prefix
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_");
                    query.filter(
                        audit_events::action
                            .like(format!("{escaped}.%"))
                            .escape('\\'),
                    )
                }
                None => query.filter(audit_events::action.eq(action.clone())),
            };
        }
        if let Some(outcome) = &filter.outcome {
            query = query.filter(audit_events::outcome.eq(outcome.clone()));
        }
        if let Some(what_if) = filter.what_if {
            query = query.filter(audit_events::what_if.eq(what_if));
        }
        if let Some(reseller) = &filter.reseller {
            query = query.filter(audit_events::reseller.eq(reseller.clone()));
        }
        if let Some(from) = filter.from {
            query = query.filter(audit_events::at.ge(format_instant(from)));
        }
        if let Some(to) = filter.to {
            query = query.filter(audit_events::at.lt(format_instant(to)));
        }
        let rows = query.load::<(i64, String, String)>(&mut *conn)?;
        Ok(rows
            .into_iter()
            .map(|(seq, event, hash)| (seq, verify::exported(&event, &hash)))
            .collect())
    }

    /// Calls `f` with every event matching `filter`, in `seq` order, a
    /// page at a time (so memory stays bounded however many there are),
    /// until `f` returns false.
    pub fn for_each_event(
        &self,
        filter: &AuditFilter,
        mut f: impl FnMut(&Value) -> bool,
    ) -> Result<(), StoreError> {
        let mut filter = filter.clone();
        loop {
            let page = self.audit_rows(&filter, EXPORT_PAGE)?;
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            for (_, event) in &page {
                if !f(event) {
                    return Ok(());
                }
            }
            filter.after = Some(last);
        }
    }

    /// Runs `f` in a transaction of its own that has locked the ledger head
    /// (see [`locked`]). The service writes through the [`ledger::Ledger`]
    /// instead; this is for set-up and tools.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut DbConn, &mut Head) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        conn.transaction(|conn| locked(conn, f))
    }
}

/// Inside an open transaction: locks the ledger head, runs `f` with it, and
/// writes the head back. Any error rolls back with the transaction.
pub(crate) fn locked<T>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn, &mut Head) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // The first statement is a write, so that SQLite takes its write lock
    // now (waiting politely) and PostgreSQL locks the row.
    let lock = diesel::update(ledger_head::table.filter(ledger_head::id.eq(1)))
        .set(ledger_head::seq.eq(ledger_head::seq));
    let columns = (
        ledger_head::seq,
        ledger_head::hash,
        ledger_head::catalog_version,
    );
    // BACKEND-SPECIFIC: PostgreSQL locks and reads in one round trip.
    let (seq, hash, catalog_version) = match conn {
        DbConn::Postgres(pg) => lock
            .returning(columns)
            .get_result::<(i64, String, i64)>(pg)?,
        DbConn::Sqlite(_) => {
            lock.execute(conn)?;
            ledger_head::table
                .filter(ledger_head::id.eq(1))
                .select(columns)
                .first::<(i64, String, i64)>(conn)?
        }
    };
    let mut head = Head::new(seq, hash, catalog_version);
    let out = f(conn, &mut head)?;
    head.flush(conn)?;
    diesel::update(ledger_head::table.filter(ledger_head::id.eq(1)))
        .set((
            ledger_head::seq.eq(head.seq),
            ledger_head::hash.eq(&head.hash),
            ledger_head::catalog_version.eq(head.catalog_version),
        ))
        .execute(conn)?;
    Ok(out)
}

/// Commits catalogue changes with one audit event each (a ledger write).
pub fn apply_catalog_changes(
    conn: &mut DbConn,
    head: &mut Head,
    actor: &Actor,
    changes: &[CatalogChange],
) -> Result<Applied, StoreError> {
    head.immediate(conn)?;
    let mut data = load_catalog_data(conn)?;
    // A catalogue edited behind the service's back is not built on: the
    // change would launder the edit into the chain.
    verify::vouch_catalog(conn, (head.seq, &head.hash), head.catalog_version, &data)?;
    let mut created = Vec::with_capacity(changes.len());
    for change in changes {
        created.push(change.apply(&mut data)?);
    }
    // The last event of the commit records the catalogue it leaves.
    let digest = audit::state::catalog_digest(&data);
    let version = head.catalog_version + 1;
    let catalog = Catalog::build(version, data).map_err(StoreError::Invalid)?;
    let now = Utc::now();
    let mut audit_seqs = Vec::with_capacity(changes.len());
    let last = changes.len().saturating_sub(1);
    for (i, (change, was_created)) in changes.iter().zip(&created).enumerate() {
        write_catalog_row(conn, change, now)?;
        let spec = change
            .spec_json()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let change_word = match (change, was_created) {
            (CatalogChange::DeleteRelationship(..), _) => "delete",
            (_, true) => "create",
            (_, false) => "replace",
        };
        let mut subject = serde_json::json!({
            "kind": change.kind(), "id": change.id(), "change": change_word,
        });
        if let Some(spec) = spec {
            subject["spec"] = spec;
        }
        // The whole catalogue as the commit leaves it, on its last event.
        if i == last {
            subject["catalog_digest"] = Value::from(digest.as_str());
        }
        let verb = if change_word == "delete" {
            "delete"
        } else {
            "put"
        };
        let reseller = match change {
            CatalogChange::PutReseller(id, _) => Some(id.to_string()),
            _ => None,
        };
        let event = NewEvent {
            action: format!("catalog.{}.{verb}", change.kind()),
            actor: actor.clone(),
            outcome: None,
            decision: None,
            subject,
            reseller,
        };
        audit_seqs.push(append_event(head, event, &version.to_string(), now)?);
    }
    head.catalog_version = version;
    Ok(Applied {
        catalog,
        created,
        audit_seqs,
    })
}

/// Records a decision and its audit event (a ledger write), if the
/// catalogue it was taken on is still the newest committed one (else
/// [`StoreError::Stale`]). Returns the decision with its `audit_seq`. The
/// decision is encoded here, once, for the event and the row.
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
    let body = decision.to_json();
    let row_body = body.to_string();
    let mut event = new.event;
    event.decision = Some(body);
    // What a review's approval will act on (seats, term) is vouched for by
    // the chain like the rest of the decision.
    if new.reviewable {
        event.subject["request"] = new.request.clone();
    }
    append_event(head, event, &catalog_version.to_string(), now)?;
    head.push_decision(DecisionRow {
        id: decision.id.clone(),
        reseller: new.reseller,
        transaction_kind: decision.transaction.as_str().to_string(),
        outcome: decision.outcome.as_str(),
        body: row_body,
        audit_seq: head.seq,
        created_at: format_instant(now),
        request: Some(new.request.to_string()),
        review_status: new.reviewable.then_some("open"),
    });
    Ok(decision)
}

fn versions<DB: diesel::backend::Backend>(
    migrations: Vec<Box<dyn diesel::migration::Migration<DB>>>,
) -> Vec<String> {
    migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect()
}

fn parse_json(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn build_catalog(version: i64, data: CatalogData) -> Result<Catalog, StoreError> {
    Catalog::build(version, data).map_err(|issues| {
        StoreError::Corrupt(format!(
            "the stored catalogue does not validate: {issues:?}"
        ))
    })
}

fn load_specs<T: serde::de::DeserializeOwned, K: Ord>(
    rows: Vec<(String, String)>,
    key: impl Fn(&str) -> Result<K, String>,
) -> Result<BTreeMap<K, T>, StoreError> {
    rows.into_iter()
        .map(|(id, spec)| {
            let k = key(&id).map_err(|e| StoreError::Corrupt(format!("key {id:?}: {e}")))?;
            let v = serde_json::from_str(&spec)
                .map_err(|e| StoreError::Corrupt(format!("entry {id:?}: {e}")))?;
            Ok((k, v))
        })
        .collect()
}

pub(crate) fn load_catalog_data(conn: &mut DbConn) -> Result<CatalogData, StoreError> {
    use schema::{designations, organizations, products, relationships, resellers};
    let resellers = load_specs(
        resellers::table
            .select((resellers::id, resellers::spec))
            .load(conn)?,
        ResellerId::parse,
    )?;
    let organizations = load_specs(
        organizations::table
            .select((organizations::id, organizations::spec))
            .load(conn)?,
        OrgId::parse,
    )?;
    let products = load_specs(
        products::table
            .select((products::sku, products::spec))
            .load(conn)?,
        Sku::parse,
    )?;
    let designations = load_specs(
        designations::table
            .select((designations::id, designations::spec))
            .load(conn)?,
        DesignationId::parse,
    )?;
    let mut rels = BTreeMap::new();
    let rows: Vec<(String, String, String)> = relationships::table
        .select((
            relationships::source,
            relationships::target,
            relationships::kind,
        ))
        .load(conn)?;
    for (source, target, kind) in rows {
        let corrupt =
            |e: String| StoreError::Corrupt(format!("relationship {source}/{target}: {e}"));
        let spec: RelationshipSpec = serde_json::from_value(serde_json::json!({ "kind": kind }))
            .map_err(|e| corrupt(e.to_string()))?;
        rels.insert(
            (
                OrgId::parse(&source).map_err(corrupt)?,
                OrgId::parse(&target).map_err(corrupt)?,
            ),
            spec.kind,
        );
    }
    Ok(CatalogData {
        resellers,
        organizations,
        relationships: rels,
        products,
        designations,
    })
}

/// Inserts or replaces the row of one catalogue entry (or deletes it).
fn write_catalog_row(
    conn: &mut DbConn,
    change: &CatalogChange,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    use schema::{designations, organizations, products, relationships, resellers};
    let now = format_instant(now);
    let spec = change
        .spec_json()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
        .map(|v| v.to_string())
        .unwrap_or_default();
    // Plain delete-then-insert keeps the SQL portable across both backends.
    macro_rules! replace {
        ($table:ident, $key:ident, $id:expr) => {{
            diesel::delete($table::table.filter($table::$key.eq($id))).execute(conn)?;
            diesel::insert_into($table::table)
                .values((
                    $table::$key.eq($id),
                    $table::spec.eq(&spec),
                    $table::updated_at.eq(&now),
                ))
                .execute(conn)?;
        }};
    }
    match change {
        CatalogChange::PutReseller(id, _) => replace!(resellers, id, id.as_str()),
        CatalogChange::PutOrganization(id, _) => replace!(organizations, id, id.as_str()),
        CatalogChange::PutProduct(sku, _) => replace!(products, sku, sku.as_str()),
        CatalogChange::PutDesignation(id, _) => replace!(designations, id, id.as_str()),
        CatalogChange::PutRelationship(s, t, spec) => {
            diesel::delete(
                relationships::table
                    .filter(relationships::source.eq(s.as_str()))
                    .filter(relationships::target.eq(t.as_str())),
            )
            .execute(conn)?;
            diesel::insert_into(relationships::table)
                .values((
                    relationships::source.eq(s.as_str()),
                    relationships::target.eq(t.as_str()),
                    relationships::kind.eq(spec.kind.as_str()),
                    relationships::updated_at.eq(&now),
                ))
                .execute(conn)?;
        }
        CatalogChange::DeleteRelationship(s, t) => {
            diesel::delete(
                relationships::table
                    .filter(relationships::source.eq(s.as_str()))
                    .filter(relationships::target.eq(t.as_str())),
            )
            .execute(conn)?;
        }
    }
    Ok(())
}

/// Appends one event to the chain under the locked head; returns its `seq`.
fn append_event(
    head: &mut Head,
    event: NewEvent,
    policy_version: &str,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let seq = head.seq + 1;
    let id = uuid::Uuid::now_v7().to_string();
    let at_text = format_instant(at);
    let mut map = Map::new();
    map.insert("seq".into(), Value::from(seq));
    map.insert("id".into(), Value::from(id.clone()));
    map.insert("at".into(), Value::from(at_text.clone()));
    map.insert("action".into(), Value::from(event.action.clone()));
    map.insert(
        "actor".into(),
        serde_json::to_value(&event.actor).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    );
    if let Some(outcome) = event.outcome {
        map.insert("outcome".into(), Value::from(outcome.as_str()));
    }
    if let Some(decision) = event.decision {
        map.insert("decision".into(), decision);
    }
    map.insert("subject".into(), event.subject);
    map.insert("policy_version".into(), Value::from(policy_version));
    map.insert("prev_hash".into(), Value::from(head.hash.clone()));
    let event_value = Value::Object(map);
    let what_if = audit::state::is_what_if(&event_value);
    let (text, hash) = audit::canonical_and_hash(&event_value);
    head.push_event(EventRow {
        seq,
        id,
        at: at_text,
        action: event.action,
        outcome: event.outcome.map(|o| o.as_str()),
        reseller: event.reseller,
        event: text,
        prev_hash: head.hash.clone(),
        hash: hash.clone(),
        what_if,
    });
    head.seq = seq;
    head.hash = hash;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_instant_written_reads_back_and_no_other_is_written() {
        let first = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap();
        let last = latest_storable();
        assert_eq!(format_instant(last), "9999-12-31T23:59:59.999999Z");
        for at in [
            first,
            last,
            Utc.with_ymd_and_hms(2025, 2, 28, 1, 2, 3).unwrap(),
        ] {
            let text = format_storable(at).unwrap();
            assert_eq!(parse_instant(&text).unwrap(), at, "{text}");
        }
        // Past either end the text would not read back: never written.
        for at in [
            last + Duration::microseconds(1),
            first - Duration::microseconds(1),
        ] {
            assert!(!storable(at));
            assert!(parse_instant(&format_instant(at)).is_err());
            assert!(matches!(format_storable(at), Err(StoreError::Corrupt(_))));
        }
        assert!(parse_instant("+10001-01-01T00:00:00Z").is_err());
    }

    proptest! {
        #[test]
        fn format_and_parse_are_symmetric_over_the_years_0000_to_9999(
            micros in 0..=(latest_storable().timestamp_micros()
                - Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap().timestamp_micros()),
        ) {
            let at = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap() + Duration::microseconds(micros);
            let text = format_storable(at).unwrap();
            prop_assert_eq!(parse_instant(&text).unwrap(), at);
        }
    }
}
