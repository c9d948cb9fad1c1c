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
//!
//! One room per table family: `migrations` (the schema and the seed),
//! [`catalog`], [`audit`] (the chain: appends, reads, verification),
//! [`decisions`] (with the review queue), [`licenses`] (with idempotency
//! records), [`checkpoints`], [`events`] (the outbox), [`webhooks`] (the
//! endpoints), [`deliveries`] (the webhook delivery's bookkeeping) and
//! [`stats`] (the gauges, readiness); the
//! writer is [`ledger`] with the locked `head`. This file keeps what they
//! share: the connection manager, [`StoreError`], [`Store`] and the instants.

pub mod audit;
pub mod catalog;
pub mod checkpoints;
mod commit;
pub mod decisions;
pub mod deliveries;
pub mod events;
mod head;
pub mod impact;
pub mod ledger;
pub mod licenses;
pub mod lookups;
mod migrations;
pub mod schema;
pub mod stats;
pub mod webhooks;

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use serde_json::Value;

use crate::config::DatabaseUrl;
use crate::policy::CatalogIssue;
use schema::ledger_head;

pub use head::Head;

/// One connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Postgres(diesel::pg::PgConnection),
    Sqlite(diesel::sqlite::SqliteConnection),
}

/// How long a SQLite writer queues for the lock before it fails.
pub(crate) const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 10000;";

/// Opens connections of the backend the URL names (never by trial and error).
#[derive(Debug, Clone)]
pub struct Manager {
    url: DatabaseUrl,
    /// How long a PostgreSQL statement may wait for a lock before it fails
    /// (`lock_timeout`); `None` waits as long as it takes.
    lock_timeout: Option<Duration>,
}

impl Manager {
    fn probe(conn: &mut DbConn) -> Result<(), diesel::result::Error> {
        diesel::sql_query("SELECT 1").execute(conn).map(|_| ())
    }
}

/// How long a pooled connection that answered its probe (`SELECT 1`) is
/// handed out without another: a connection that died meanwhile (a
/// database restart, `pg_terminate_backend`) fails the requests that get
/// it, as `503`, for at most this long before it is replaced, or until any
/// other connection fails its probe (see `Store::probe_epoch`).
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Marks a pooled connection broken, so that the pool drops it when it is
/// returned (`has_broken`) instead of handing it out again.
fn discard(conn: &mut PooledConn) {
    use diesel::connection::TransactionManager;
    <DbConn as Connection>::TransactionManager::transaction_manager_status_mut(conn).set_in_error();
}

/// When a pooled connection last answered its probe, and the pool's probe
/// epoch then (in its r2d2 extensions, kept across check-outs).
struct Probed {
    at: std::time::Instant,
    epoch: u64,
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

    /// A prepared `SELECT 1` (parsed and planned once per connection, not
    /// at every check-out as a simple query would be). The pool does not
    /// call it at check-out: [`Store::conn`] does, at most every
    /// [`PROBE_EVERY`] per connection.
    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        Manager::probe(conn).map_err(r2d2::Error::QueryError)
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

/// What the store tells how long something took; the caller records it
/// (the store knows no metrics types).
pub type Timing = std::sync::Arc<dyn Fn(Duration) + Send + Sync>;

/// The shared handle to the database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: DatabaseUrl,
    /// Told the time spent waiting for each pooled connection.
    pool_wait: Option<Timing>,
    /// PostgreSQL's `lock_timeout` on every connection the store opens.
    lock_timeout: Option<Duration>,
    /// Moved on whenever a pooled connection fails its probe: a connection
    /// probed in an earlier epoch is probed again before it is handed out,
    /// however recently. What killed one connection (a database restart, a
    /// failover, `pg_terminate_backend` of every session) has likely killed
    /// the others, so once one probe fails none of them is handed out
    /// unprobed, rather than each failing requests until its own
    /// [`PROBE_EVERY`] has passed.
    probe_epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
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
            // A connection is tested (`SELECT 1`) when checked out, at most
            // every PROBE_EVERY (`Store::conn`), so one that died with a
            // database restart is replaced, not handed out for long.
            .test_on_check_out(false)
            .build(Manager {
                url: url.clone(),
                lock_timeout,
            })?;
        Ok(Store {
            pool,
            url: url.clone(),
            pool_wait: None,
            lock_timeout,
            probe_epoch: std::sync::Arc::default(),
        })
    }

    /// Whether the database is PostgreSQL (else SQLite).
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.url, DatabaseUrl::Postgres(_))
    }

    /// How long a statement waits for a lock before it fails (`None`: as
    /// long as it takes).
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.lock_timeout
    }

    /// Tells `observe` the time spent waiting for each pooled connection.
    pub fn with_pool_wait(mut self, observe: impl Fn(Duration) + Send + Sync + 'static) -> Store {
        self.pool_wait = Some(std::sync::Arc::new(observe));
        self
    }

    /// A pooled connection that answered a `SELECT 1` within the last
    /// [`PROBE_EVERY`], since the last probe of any connection failed (the
    /// probe epoch). One that does not answer is marked broken, so the
    /// pool drops it, the epoch moves on, and the next is taken, up to the
    /// pool's size and once more. (The pool's own test at every check-out was a round trip per
    /// request: without it issuance ran 1.13 and renewal 1.15 times as fast.)
    fn conn(&self) -> Result<PooledConn, StoreError> {
        // A request waits for a connection no longer than for a lock.
        self.conn_within(self.lock_timeout)
    }

    /// [`Store::conn`], waiting at most `bound` (`None`: the pool's
    /// connection timeout) for each connection it takes.
    fn conn_within(&self, bound: Option<Duration>) -> Result<PooledConn, StoreError> {
        let started = std::time::Instant::now();
        let deadline = bound.map(|bound| started + bound);
        let mut attempts = self.pool.max_size() + 1;
        let conn = loop {
            let got = match deadline {
                Some(deadline) => self
                    .pool
                    .get_timeout(deadline.saturating_duration_since(std::time::Instant::now())),
                None => self.pool.get(),
            };
            let mut conn = match got {
                Ok(conn) => conn,
                Err(e) => break Err(e.into()),
            };
            let epoch = self.probe_epoch.load(Ordering::Acquire);
            let probed = PooledConn::extensions(&conn)
                .get::<Probed>()
                .is_some_and(|p| p.epoch == epoch && p.at.elapsed() < PROBE_EVERY);
            if probed {
                break Ok(conn);
            }
            match Manager::probe(&mut conn) {
                Ok(()) => {
                    let at = std::time::Instant::now();
                    PooledConn::extensions_mut(&mut conn).insert(Probed { at, epoch });
                    break Ok(conn);
                }
                Err(e) => {
                    self.probe_epoch.fetch_add(1, Ordering::AcqRel);
                    discard(&mut conn);
                    attempts -= 1;
                    if attempts == 0 {
                        break Err(StoreError::from(e));
                    }
                }
            }
        };
        if let Some(observe) = &self.pool_wait {
            observe(started.elapsed());
        }
        conn
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

/// A page of a listing (licences, reviews, audit events, checkpoints): the
/// rows that read back, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    /// The id of the page's last stored row when the page is full (read
    /// back or not): the cursor of the next page. `None` at the end.
    pub next: Option<String>,
    /// How many stored rows of the page did not read back (left out).
    pub unreadable: u64,
}

impl<T> Page<T> {
    /// Reads a page of stored rows (at most `limit`) with `read`, leaving
    /// out and logging each row that does not read back (named by `id`):
    /// one bad row never fails the page, nor ends the listing early.
    fn read<R>(
        table: &'static str,
        stored: Vec<R>,
        limit: i64,
        id: impl Fn(&R) -> String,
        read: impl Fn(R) -> Result<T, StoreError>,
    ) -> Page<T> {
        let full = i64::try_from(stored.len()).is_ok_and(|n| n == limit);
        let next = stored.last().filter(|_| full).map(&id);
        let mut rows = Vec::with_capacity(stored.len());
        let mut unreadable = 0;
        for row in stored {
            let row_id = id(&row);
            match read(row) {
                Ok(row) => rows.push(row),
                Err(error) => {
                    unreadable += 1;
                    tracing::error!(
                        table,
                        id = %row_id,
                        %error,
                        "a stored row does not read back: left out of the listing"
                    );
                }
            }
        }
        Page {
            rows,
            next,
            unreadable,
        }
    }

    /// A page of rows that always read back (audit events, which come out
    /// as `null` rather than fail, and checkpoints): the cursor of the next
    /// page is the last row's `key` when the page is full, as for
    /// [`Page::read`].
    fn of(rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Page<T> {
        let full = i64::try_from(rows.len()).is_ok_and(|n| n == limit);
        let next = rows.last().filter(|_| full).map(key);
        Page {
            rows,
            next,
            unreadable: 0,
        }
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

fn parse_json(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
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

    /// Once one pooled connection fails its probe, the others are probed
    /// before they are handed out, however recently they answered theirs: at
    /// a database restart every session ends at once, and a connection
    /// probed a moment before would otherwise fail the requests that get it
    /// until its own `PROBE_EVERY` has passed. PostgreSQL only (with
    /// `TEST_DATABASE_URL`): the three connections' sessions are ended by
    /// `pg_terminate_backend`, as a restart would.
    #[test]
    fn once_a_probe_fails_no_connection_is_handed_out_unprobed() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        let store = Store::connect(&DatabaseUrl::parse(&url).unwrap(), 3).unwrap();
        let pid = |conn: &mut PooledConn| -> i32 {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
                "pg_backend_pid()",
            ))
            .get_result(&mut **conn)
            .unwrap()
        };
        // Three connections, each just probed; the one returned last (the
        // pool hands its idle connections out last in, first out) as if
        // probed long ago.
        let mut held: Vec<PooledConn> = (0..3).map(|_| store.conn().unwrap()).collect();
        let pids: Vec<i32> = held.iter_mut().map(pid).collect();
        let long_ago = std::time::Instant::now()
            .checked_sub(PROBE_EVERY * 10)
            .expect("the clock has run for a second");
        PooledConn::extensions_mut(&mut held[2]).insert(Probed {
            at: long_ago,
            epoch: 0,
        });
        for conn in held.drain(..) {
            drop(conn);
        }
        let mut admin = diesel::PgConnection::establish(&url).unwrap();
        let list = pids
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({list})"
        ))
        .execute(&mut admin)
        .unwrap();
        let mut gone = || {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
                "(SELECT count(*) FROM pg_stat_activity WHERE pid IN ({list}))"
            )))
            .get_result::<i64>(&mut admin)
            .unwrap()
                == 0
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gone() {
            assert!(
                std::time::Instant::now() < deadline,
                "the sessions did not end"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The stale one fails its probe; the two probed a moment ago are
        // then probed too rather than handed out, and fail theirs: every
        // connection handed out answers.
        for n in 0..3 {
            let mut conn = store.conn().unwrap();
            assert!(Manager::probe(&mut conn).is_ok(), "connection {n}");
            held.push(conn);
        }
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
