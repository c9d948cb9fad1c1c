//! The step every use case shares: decide a question for a tenant on a
//! catalogue snapshot (the pure engine), and plan the decision's record
//! with its audit event.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;

use super::{Gate, GateError, Question};
use crate::domain::{Actor, Customer, ResellerId};
use crate::policy::{self, Catalog, Decision, Party};
use crate::store::audit::NewEvent;
use crate::store::decisions::NewDecision;

/// A customer as the engine sees a party: where, and whether a U.S. person.
fn party(customer: &Customer) -> Party {
    Party {
        country: customer.country.clone(),
        us_person: customer.us_person,
    }
}

impl Gate {
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
        plan_decision(catalog, actor, tenant, question, action, now)
    }
}

/// [`Gate::decide`], for a write that decides inside the ledger (an impact
/// run's chunk), where no `Gate` is at hand.
pub(super) fn plan_decision(
    catalog: &Catalog,
    actor: &Actor,
    tenant: &ResellerId,
    question: &Question,
    action: &str,
    now: Option<DateTime<Utc>>,
) -> Result<NewDecision, GateError> {
    {
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
