//! What the metrics read from the database (on the refresher's timer, never
//! per scrape), and the readiness probe.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::{exists, not};
use diesel::prelude::*;

use super::schema::{audit_checkpoints, decisions, impact_runs, licenses};
use super::{DbConn, Store, StoreError, SQLITE_BUSY_TIMEOUT};
use crate::metrics::{DatabaseStats, ImpactRunStats};

impl Store {
    /// `(connections, idle)` of the pool.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }

    /// Whether the database answers within `timeout`, takes writes, and
    /// has its migrations applied.
    pub fn ready(&self, timeout: Duration) -> bool {
        let writable = self
            .conn_within(Some(timeout))
            .ok()
            .is_some_and(|mut conn| writable(&mut conn, timeout));
        writable && self.migrations_applied().unwrap_or(false)
    }

    /// The gauges the metrics read at scrape time.
    pub fn stats(&self, timeout: Duration) -> Result<DatabaseStats, StoreError> {
        if !self.ready(timeout) {
            return Ok(DatabaseStats::default());
        }
        let mut conn = self.conn()?;
        let review_queue_depth = decisions::table
            .filter(decisions::review_status.eq("open"))
            .count()
            .get_result::<i64>(&mut *conn)?;
        let newest: Option<String> = audit_checkpoints::table
            .select(audit_checkpoints::at)
            .order(audit_checkpoints::seq.desc())
            .first(&mut *conn)
            .optional()?;
        let checkpoint_at_ms = newest
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&Utc).timestamp_millis());
        let license_audit_mismatch = licenses::table
            .filter(not(exists(
                decisions::table.filter(decisions::id.eq(licenses::decision_id)),
            )))
            .count()
            .get_result::<i64>(&mut *conn)?;
        let impact = impact_run_stats(&mut conn)?;
        let webhooks = super::deliveries::webhook_stats(&mut conn)?;
        Ok(DatabaseStats {
            ready: true,
            review_queue_depth,
            checkpoint_at_ms,
            license_audit_mismatch,
            impact,
            webhooks,
        })
    }
}

/// The trigger kind of a complete run, told by its key's prefix
/// (`catalog:<version>`, `rule:<designation>/<rule>/<instant>`; the same
/// kinds as the `kind` of its trigger). SQL, so that counting complete runs
/// reads no JSON and returns one row per kind.
const KIND_OF_KEY: &str = "CASE WHEN trigger_key LIKE 'catalog:%' THEN 'catalog_change' \
     WHEN trigger_key LIKE 'rule:%' THEN 'rule_effective' ELSE 'unknown' END";

/// Impact runs by trigger kind and state, and when the oldest still running
/// started. The running runs are read whole through `impact_runs_running`
/// (there are few: a run lasts seconds); the complete ones are only counted,
/// by kind, in the database.
fn impact_run_stats(conn: &mut DbConn) -> Result<ImpactRunStats, StoreError> {
    use diesel::dsl::{count_star, sql};
    use diesel::sql_types::Text;
    let mut stats = ImpactRunStats::default();
    let running: Vec<(String, String)> = impact_runs::table
        .filter(impact_runs::status.eq("running"))
        .select((impact_runs::trigger_spec, impact_runs::at))
        .load(conn)?;
    for (spec, at) in running {
        // A row that does not read still counts, as `unknown`: it is
        // running, and nothing here may fail the other gauges.
        let kind = serde_json::from_str::<serde_json::Value>(&spec)
            .ok()
            .and_then(|t| t["kind"].as_str().map(String::from))
            .unwrap_or_else(|| "unknown".into());
        *stats.runs.entry((kind, "running".into())).or_default() += 1;
        if let Ok(at) = DateTime::parse_from_rfc3339(&at) {
            let at = at.with_timezone(&Utc).timestamp_millis();
            stats.oldest_running_at_ms = Some(stats.oldest_running_at_ms.map_or(at, |o| o.min(at)));
        }
    }
    let complete: Vec<(String, i64)> = impact_runs::table
        .filter(impact_runs::status.eq("complete"))
        .group_by(sql::<Text>(KIND_OF_KEY))
        .select((sql::<Text>(KIND_OF_KEY), count_star()))
        .load(conn)?;
    for (kind, n) in complete {
        *stats.runs.entry((kind, "complete".into())).or_default() += n;
    }
    Ok(stats)
}

/// Whether a write could begin on `conn` now. A database that answers reads
/// but refuses every write (a standby after a failover, a database set
/// read-only, a read-only file) is not ready.
fn writable(conn: &mut DbConn, timeout: Duration) -> bool {
    use diesel::connection::SimpleConnection;
    // BACKEND-SPECIFIC: how each database says it would refuse a write.
    match conn {
        DbConn::Postgres(pg) => {
            #[derive(QueryableByName)]
            struct ReadOnly {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                read_only: bool,
            }
            // A standby is in recovery; `default_transaction_read_only`
            // (set by an operator, or by a provider when storage is full)
            // makes every transaction read-only.
            diesel::sql_query(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on' \
                 AS read_only",
            )
            .get_result::<ReadOnly>(pg)
            .is_ok_and(|r| !r.read_only)
        }
        DbConn::Sqlite(lite) => {
            // Taking the write lock fails on a read-only file, or when
            // another writer holds it past the probe's timeout; nothing is
            // written.
            let probe = format!("PRAGMA busy_timeout = {};", timeout.as_millis());
            let began =
                lite.batch_execute(&probe).is_ok() && lite.batch_execute("BEGIN IMMEDIATE").is_ok();
            if began {
                let _ = lite.batch_execute("ROLLBACK");
            }
            let _ = lite.batch_execute(SQLITE_BUSY_TIMEOUT);
            began
        }
    }
}

/// The background reader of the gauges that come from the database. A
/// scrape of `/metrics` only renders what it last read, so scrapes cost no
/// query, however many licences there are and however often Prometheus (or
/// anyone: `/metrics` needs no token) asks. Dropping it stops it.
pub struct StatsRefresher {
    /// Held for its `Drop`, which stops the thread.
    _running: crate::periodic::Periodic,
}

impl StatsRefresher {
    /// Reads the gauges now and then every `every`, each read bounded by
    /// `timeout`; `serving` says whether the service serves its catalogue
    /// (else `gatekeeper_ready` is 0 whatever the database says). Each
    /// reading, and how long it took, goes to `record` (the caller's
    /// metrics).
    pub fn start(
        store: Store,
        every: Duration,
        timeout: Duration,
        serving: impl Fn() -> bool + Send + 'static,
        record: impl Fn(&DatabaseStats, Duration) + Send + 'static,
    ) -> std::io::Result<Self> {
        crate::periodic::Periodic::start("stats-refresher", every, true, move || {
            let started = std::time::Instant::now();
            let mut stats = store.stats(timeout).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the database's gauges");
                DatabaseStats::default()
            });
            stats.ready &= serving();
            record(&stats, started.elapsed());
        })
        .map(|running| StatsRefresher { _running: running })
    }
}
