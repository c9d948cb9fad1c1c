//! What the metrics read from the database at scrape time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::{exists, not};
use diesel::prelude::*;

use super::schema::{audit_checkpoints, decisions, licenses};
use super::{Store, StoreError};
use crate::metrics::DatabaseStats;

impl Store {
    /// `(connections, idle)` of the pool.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }

    /// Whether the database answers within `timeout` and migrations are
    /// applied.
    pub fn ready(&self, timeout: Duration) -> bool {
        let answers = self
            .pool
            .get_timeout(timeout)
            .ok()
            .map(|mut conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute("SELECT 1").is_ok()
            })
            .unwrap_or(false);
        answers && self.migrations_applied().unwrap_or(false)
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
        let checkpoint_age_seconds = newest
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| (Utc::now() - at.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0);
        let license_audit_mismatch = licenses::table
            .filter(not(exists(
                decisions::table.filter(decisions::id.eq(licenses::decision_id)),
            )))
            .count()
            .get_result::<i64>(&mut *conn)?;
        Ok(DatabaseStats {
            ready: true,
            review_queue_depth,
            checkpoint_age_seconds,
            license_audit_mismatch,
        })
    }
}
