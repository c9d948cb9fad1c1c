//! Verification of the outbox (see [`super::verify`]): every event is the
//! one `audit::outbox::derive` makes of its audit event, read page by page
//! beside the chain (its data is not stored but derived so when read, by
//! `store::events`). An event row that differs from its derivation, one that
//! derives from nothing (or from an audit event before the outbox began),
//! and a missing one are `state_mismatch` naming `events/{seq}`; except
//! that an event may be missing once its audit event is older than the
//! shortest retention (30 days): it may have been purged.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::outbox::derive;
use crate::store::events::{events_of_audit, made_as, outbox_seq};
use crate::store::schema::{events, outbox_start};
use crate::store::{format_instant, DbConn, StoreError};

/// The shortest retention: an event younger than this is never purged.
pub const MIN_RETENTION_DAYS: i64 = 30;

/// Where the outbox began, and from when an event may have been purged.
pub(super) struct OutboxCheck {
    start: i64,
    purgeable_before: String,
}

impl OutboxCheck {
    pub(super) fn new(conn: &mut DbConn, now: DateTime<Utc>) -> Result<OutboxCheck, StoreError> {
        let start = outbox_start::table
            .select(outbox_start::audit_seq)
            .first::<i64>(conn)
            .optional()?
            .unwrap_or(0);
        Ok(OutboxCheck {
            start,
            purgeable_before: format_instant(now - chrono::Duration::days(MIN_RETENTION_DAYS)),
        })
    }

    /// The first event that differs from its derivation among those of the
    /// audit events in `(after, last]`, given as `(seq, exported event,
    /// reseller column)`: its row name and the audit `seq` at fault.
    pub(super) fn page(
        &self,
        conn: &mut DbConn,
        after: i64,
        last: i64,
        page: &[(i64, serde_json::Value, Option<String>)],
    ) -> Result<Option<(String, Option<i64>)>, StoreError> {
        let mut stored = events_of_audit(conn, after, last)?.into_iter().peekable();
        for (seq, event, tenant) in page {
            let derived = if *seq > self.start {
                derive(event, tenant.as_deref())
            } else {
                Vec::new()
            };
            let purgeable = event
                .get("at")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|at| at < self.purgeable_before.as_str());
            // Rows of earlier audit events than this one derive from nothing.
            if let Some(row) = stored.next_if(|row| row.5 < *seq) {
                return Ok(Some((format!("events/{}", row.0), Some(row.5))));
            }
            for (n, want) in derived.iter().enumerate() {
                let want_seq = outbox_seq(*seq, n);
                match stored.next_if(|row| row.5 == *seq) {
                    // The data is not stored: it is read from the audit
                    // event, as derived here.
                    Some((got_seq, id, event_type, reseller, created_at, _)) => {
                        let same = got_seq == want_seq
                            && made_as(want, &id, &event_type, reseller.as_deref(), &created_at);
                        if !same {
                            return Ok(Some((format!("events/{got_seq}"), Some(*seq))));
                        }
                    }
                    None if purgeable => break,
                    None => return Ok(Some((format!("events/{want_seq}"), Some(*seq)))),
                }
            }
            // More rows than the audit event makes.
            if let Some(row) = stored.next_if(|row| row.5 == *seq) {
                return Ok(Some((format!("events/{}", row.0), Some(*seq))));
            }
        }
        Ok(stored
            .next()
            .map(|row| (format!("events/{}", row.0), Some(row.5))))
    }

    /// An event whose audit event is past the chain's head.
    pub(super) fn beyond(
        &self,
        conn: &mut DbConn,
        head: i64,
    ) -> Result<Option<(String, Option<i64>)>, StoreError> {
        Ok(events::table
            .filter(events::audit_seq.gt(head))
            .select(events::seq)
            .order(events::seq.asc())
            .first::<i64>(conn)
            .optional()?
            .map(|seq| (format!("events/{seq}"), None)))
    }
}
