//! A decision as it is recorded and shown: the engine's [`Verdict`] with its identity (id,
//! transaction, instant, catalogue version) and, once the store has appended its audit event,
//! that event's `seq`.
//!
//! It stays this type from the gate to the store, which encodes it exactly once, into the audit
//! event and the decision row; the API renders the same type after the commit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Reason, Verdict};
use crate::domain::{Outcome, Transaction};

/// A recorded decision. Its JSON is the `decision` object of the contract (keys sorted, as every
/// object the service writes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub transaction: Transaction,
    pub outcome: Outcome,
    /// The instant the decision was taken at.
    pub as_of: DateTime<Utc>,
    /// A what-if question (asked at an `as_of` of the caller's choosing) is marked wherever its
    /// decision is shown; a decision at the server's own instant carries no mark.
    #[serde(default, skip_serializing_if = "is_false")]
    pub what_if: bool,
    pub reasons: Vec<Reason>,
    pub constraints: Constraints,
    /// The catalogue version decided on.
    pub policy_version: String,
    /// The `seq` of the decision's audit event: `None` until the store records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<i64>,
}

/// What an allowed transaction must respect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// The instant a licence's term must end by, if any.
    pub not_after: Option<DateTime<Utc>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Decision {
    /// The decision `verdict` makes, not yet recorded.
    pub fn new(
        id: String,
        transaction: Transaction,
        verdict: Verdict,
        as_of: DateTime<Utc>,
        what_if: bool,
        catalog_version: i64,
    ) -> Decision {
        Decision {
            id,
            transaction,
            outcome: verdict.outcome,
            as_of,
            what_if,
            reasons: verdict.reasons,
            constraints: Constraints {
                not_after: verdict.not_after,
            },
            policy_version: catalog_version.to_string(),
            audit_seq: None,
        }
    }

    /// Whether the decision opens a review: a `review` outcome of a real transaction (a
    /// what-if question is not a transaction to review).
    pub fn is_reviewable(&self) -> bool {
        self.outcome == Outcome::Review && !self.what_if
    }

    /// The JSON object, as the audit event carries it and callers see it.
    pub fn to_json(&self) -> serde_json::Value {
        // A struct of strings, numbers and enums: it always encodes.
        serde_json::to_value(self).unwrap_or_default()
    }
}
