//! Preflight: may this tenant do this transaction of this product for this
//! customer? Decided on the newest committed catalogue and recorded with
//! its audit event before it is answered. Also the decision step every
//! other use case shares ([`Gate::decide`]).

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;

use super::reviews::{ReviewClose, Settled};
use super::{Gate, GateError, RETRIES};
use crate::domain::Actor;
use crate::domain::{Customer, Outcome, ResellerId, Sku, Transaction};
use crate::policy::{self, Catalog, Decision, Party};
use crate::store::audit::NewEvent;
use crate::store::decisions::{record_decision, NewDecision};
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

/// A customer as the engine sees a party: where, and whether a U.S. person.
fn party(customer: &Customer) -> Party {
    Party {
        country: customer.country.clone(),
        us_person: customer.us_person,
    }
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

    /// Decides `question` for `tenant` on `catalog` and plans its record
    /// (audited as `action`). `now` pins the server clock (licences); else
    /// `question.as_of` or now.
    pub(super) fn decide(
        &self,
        catalog: &Catalog,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
        action: &str,
        now: Option<DateTime<Utc>>,
    ) -> Result<NewDecision, GateError> {
        let reseller = catalog.reseller(tenant).ok_or(GateError::UnknownReseller)?;
        // Microseconds, as every stored instant.
        let at = now
            .or(question.as_of)
            .unwrap_or_else(|| Utc::now().trunc_subsecs(6));
        let request = policy::Request {
            transaction: question.transaction,
            product: question.product.clone(),
            customer: party(&question.customer),
            reseller: Party {
                country: reseller.country.clone(),
                us_person: Some(reseller.us_person),
            },
        };
        let verdict =
            policy::decide(catalog, &request, at).map_err(|_| GateError::UnknownProduct)?;
        let what_if = question.as_of.is_some();
        let decision = Decision::new(
            uuid::Uuid::now_v7().to_string(),
            question.transaction,
            verdict,
            at,
            what_if,
            catalog.version(),
        );
        let subject = json!({
            "kind": "decision",
            "id": decision.id,
            "transaction": question.transaction,
            "product": question.product,
            "customer": question.customer,
            "reseller": {"id": tenant, "country": reseller.country, "us_person": reseller.us_person},
            "what_if": what_if,
        });
        Ok(NewDecision {
            request: json!({
                "kind": "preflight",
                "transaction": question.transaction,
                "product": question.product,
                "customer": question.customer,
            }),
            reseller: tenant.to_string(),
            reviewable: decision.is_reviewable(),
            event: NewEvent {
                action: action.to_string(),
                actor: actor.clone(),
                outcome: Some(decision.outcome),
                decision: None,
                subject,
                reseller: Some(tenant.to_string()),
            },
            decision,
        })
    }
}
