//! Verification of what the store holds: the audit chain (its links, its
//! recorded head, signed checkpoints).

use diesel::prelude::*;
use serde_json::Value;

use super::schema::audit_events;
use super::{AuditFilter, Store, StoreError};
use crate::audit;

impl Store {
    /// Checks the whole stored chain, page by page: its links, that it ends
    /// at the recorded head, and that it agrees with every signed checkpoint
    /// (those in the database and `extra` ones kept elsewhere), whose
    /// signatures must verify with `trusted_keys`: the keys the operator
    /// configured, never rows of the database.
    pub fn verify_chain(
        &self,
        extra: &[audit::Checkpoint],
        trusted_keys: &[Value],
    ) -> Result<audit::Report, StoreError> {
        // Checkpoints, then the head: every checkpoint in the database is
        // then at or below the head. Events committed while the chain is
        // read lie beyond the head and are left for the next verification.
        let mut checkpoints = self.all_checkpoints()?;
        let (seq, hash) = self.head()?;
        checkpoints.extend_from_slice(extra);
        let mut verifier = audit::Verifier::with_checkpoints(&checkpoints, trusted_keys);
        let filter = AuditFilter {
            until: Some(seq),
            ..AuditFilter::default()
        };
        self.for_each_event(&filter, |event| verifier.push(event))?;
        let mut report = verifier.finish_at((seq, &hash));
        // Events past the recorded head that were there before it was read
        // (none can be: each write moves the head with its events) were
        // slipped in behind the service's back.
        if report.ok {
            let beyond: i64 = {
                let mut conn = self.conn()?;
                audit_events::table
                    .filter(audit_events::seq.gt(seq))
                    .select(diesel::dsl::min(audit_events::seq))
                    .first::<Option<i64>>(&mut *conn)?
                    .unwrap_or(0)
            };
            let (now, _) = self.head()?;
            if beyond > 0 && beyond > now {
                report.ok = false;
                report.first_invalid_seq = Some(seq + 1);
                report.fault = Some(audit::Fault::HeadMismatch);
            }
        }
        Ok(report)
    }
}
