//! Preflight: may this tenant do this transaction of this product for this
//! customer? Decided on the newest committed catalogue and recorded with
//! its audit event before it is answered.

use chrono::{DateTime, Utc};

use super::reviews::{ReviewClose, Settled};
use super::{Gate, GateError, RETRIES};
use crate::domain::{Actor, Customer, Outcome, ResellerId, Sku, Transaction};
use crate::policy::Decision;
use crate::store::decisions::record_decision;
use crate::store::StoreError;

/// What a caller asks the gate about.
#[derive(Clone, Debug)]
pub struct Question {
    pub transaction: Transaction,
    pub product: Sku,
    pub customer: Customer,
    /// The instant to decide at; `None` is now.
    pub as_of: Option<DateTime<Utc>>,
}

impl Gate {
    /// A preflight: takes a decision for `tenant` and records it with its
    /// audit event; returns the recorded decision.
    pub async fn preflight(
        &self,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
    ) -> Result<Decision, GateError> {
        Ok(self
            .preflight_closing(actor, tenant, question, None)
            .await?
            .0)
    }

    /// A preflight that may resolve a review in the same write; returns the
    /// decision and the review's final state.
    pub(super) async fn preflight_closing(
        &self,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
        closes: Option<&ReviewClose>,
    ) -> Result<(Decision, Option<serde_json::Value>), GateError> {
        let mut catalog = self.serving_catalog()?;
        for _ in 0..RETRIES {
            // Check and decide.
            let record = match self.decide(
                &catalog,
                actor,
                tenant,
                question,
                "decision.preflight",
                None,
            ) {
                Err(e) if e.may_be_stale() => match self.newer_than(&catalog).await? {
                    Some(fresh) => {
                        catalog = fresh;
                        continue;
                    }
                    None => return Err(e),
                },
                other => other?,
            };
            let outcome = record.decision.outcome;
            if closes.is_some() && outcome == Outcome::Review {
                return Err(GateError::StillInReview);
            }
            // Plan the write: the decision, and the review it closes.
            let settled: Option<Settled> =
                closes.map(|c| c.settle(&record.decision.id, outcome, None));
            let review = settled.as_ref().map(|s| s.review.clone());
            let version = catalog.version();
            // Commit.
            let committed = self
                .commit(move |conn, head| {
                    let decision = record_decision(head, version, record.clone())?;
                    if let Some(settled) = &settled {
                        settled.write(conn, head)?;
                    }
                    Ok(decision)
                })
                .await;
            // Report.
            match committed {
                Ok(decision) => {
                    self.observe(&decision);
                    return Ok((decision, review));
                }
                Err(StoreError::Stale) => catalog = self.reload().await?,
                Err(StoreError::ReviewNotOpen) => return Err(GateError::ReviewResolved),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Stale.into())
    }
}
