//! Reviews: a compliance officer resolves a decision that needed one.
//! Rejecting closes it; approving re-decides with the attested customer
//! facts and, when that allows, does what was asked (the preflight, the
//! issue or the renewal), closing the review in the very write that
//! records the new decision, or not at all.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::licenses::{License, LicenseAction, LicenseRequest};
use super::{blocking, Gate, GateError, Question};
use crate::domain::Actor;
use crate::domain::{Customer, Outcome, ResellerId, Sku, Transaction};
use crate::policy::Decision;
use crate::store::audit::NewEvent;
use crate::store::decisions::resolve_review;
use crate::store::StoreError;

/// How a compliance officer resolves a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Re-decide with the attested customer facts and, if allowed, do what
    /// was asked (issue or renew the licence).
    Approve,
    /// Close the review: nothing is done.
    Reject,
}

/// A review's resolution, as asked.
#[derive(Clone, Debug)]
pub struct ReviewResolution {
    pub reviewer: Actor,
    pub decision_id: String,
    pub resolution: Resolution,
    pub note: String,
    /// The customer facts the reviewer attests; `None` keeps those asked with.
    pub customer: Option<Customer>,
}

/// How a review ended: its final state, and on approval the new decision
/// and the licence it wrote, if any.
#[derive(Clone, Debug)]
pub struct ReviewResolved {
    pub review: Value,
    pub decision: Option<Decision>,
    pub license: Option<License>,
}

/// An open review that a new decision resolves: closed in the very write
/// that records the decision (and the licence), or not at all.
#[derive(Clone, Debug)]
pub(super) struct ReviewClose {
    /// The decision under review.
    decision_id: String,
    /// The resolution as asked: resolution, note, reviewer, customer.
    base: Value,
    reviewer: Actor,
    tenant: String,
}

/// A review's final state and its audit event, planned for the write.
#[derive(Clone, Debug)]
pub(super) struct Settled {
    pub under_review: String,
    pub status: &'static str,
    pub review: Value,
    pub event: NewEvent,
}

impl Settled {
    /// Closes the review inside the write.
    pub(super) fn write(
        &self,
        conn: &mut crate::store::DbConn,
        head: &mut crate::store::Head,
    ) -> Result<i64, StoreError> {
        resolve_review(
            conn,
            head,
            &self.under_review,
            self.status,
            &self.review,
            self.event.clone(),
        )
    }
}

impl ReviewClose {
    /// The review's final state and its audit event, given the new decision.
    pub(super) fn settle(
        &self,
        decision_id: &str,
        outcome: Outcome,
        license_id: Option<&str>,
    ) -> Settled {
        let status = match outcome {
            Outcome::Allow => "approved",
            _ => "denied",
        };
        let mut review = self.base.clone();
        review["status"] = json!(status);
        review["decision_id"] = json!(decision_id);
        review["outcome"] = json!(outcome);
        review["license_id"] = json!(license_id);
        let event = self.event("review.approve", &review);
        Settled {
            under_review: self.decision_id.clone(),
            status,
            review,
            event,
        }
    }

    /// The decision under review.
    pub(super) fn decision_id(&self) -> &str {
        &self.decision_id
    }

    /// The audit event of the review's resolution.
    pub(super) fn event(&self, action: &str, review: &Value) -> NewEvent {
        let mut subject = review.clone();
        subject["kind"] = json!("review");
        subject["id"] = json!(self.decision_id);
        NewEvent {
            action: action.into(),
            actor: self.reviewer.clone(),
            outcome: None,
            decision: None,
            subject,
            reseller: Some(self.tenant.clone()),
        }
    }
}

impl Gate {
    /// Resolves an open review: records the resolution (audited, with the
    /// reviewer as actor) and, on approval, the new decision and whatever it
    /// allows.
    pub async fn resolve_review(
        &self,
        input: ReviewResolution,
    ) -> Result<ReviewResolved, GateError> {
        // Check: the review is open, and the attested facts are about the
        // customer under review.
        let store = self.store.clone();
        let id = input.decision_id.clone();
        let stored = blocking(move || store.decision(&id))
            .await?
            .filter(|d| d.review_status.is_some())
            .ok_or(GateError::NotFound)?;
        if stored.review_status.as_deref() != Some("open") {
            return Err(GateError::ReviewResolved);
        }
        let tenant = ResellerId::parse(&stored.reseller).map_err(StoreError::Corrupt)?;
        let request = stored
            .request
            .clone()
            .ok_or_else(|| StoreError::Corrupt("a review without its request".into()))?;
        let kind = request.get("kind").and_then(Value::as_str);
        // The licence a renewal under review would renew.
        let renewed = match kind {
            Some("license.renew") => {
                let store = self.store.clone();
                let license_id: String = field(&request, "license_id")?;
                Some(
                    blocking(move || store.license(&license_id))
                        .await?
                        .ok_or(GateError::NotFound)?,
                )
            }
            _ => None,
        };
        let asked: Option<Customer> = field(&request, "customer")?;
        // The attested facts are about the customer under review (the
        // renewed licence's, or the one asked about), never another one.
        let reviewed_id = match &renewed {
            Some(license) => license.customer.get("id").and_then(Value::as_str),
            None => asked.as_ref().map(|c| c.id.as_str()),
        };
        // (An impact review's customer is its licence's: checked there.)
        if let Some(attested) = input
            .customer
            .as_ref()
            .filter(|_| kind != Some("impact.review"))
        {
            if reviewed_id != Some(attested.id.as_str()) {
                return Err(GateError::CustomerChanged);
            }
        }
        let mut customer: Option<Customer> = input.customer.clone().or(asked);
        let base = json!({
            "resolution": input.resolution,
            "note": input.note,
            "reviewer": {"sub": input.reviewer.sub, "role": input.reviewer.role},
            "resolved_at": crate::store::format_instant(Utc::now()),
            "customer": input.customer,
        });
        let closes = ReviewClose {
            decision_id: input.decision_id.clone(),
            base: base.clone(),
            reviewer: input.reviewer.clone(),
            tenant: tenant.to_string(),
        };
        if kind == Some("impact.review") {
            // A licence an impact run reached: its own resolution.
            return self
                .resolve_impact_review(&input, &stored.body, tenant, &request, closes, base)
                .await;
        }
        if input.resolution == Resolution::Reject {
            // Plan, commit, report: the review closes, nothing else happens.
            let mut review = base;
            review["status"] = json!("rejected");
            let settled = Settled {
                under_review: input.decision_id.clone(),
                status: "rejected",
                event: closes.event("review.reject", &review),
                review: review.clone(),
            };
            match self
                .commit(move |conn, head| settled.write(conn, head))
                .await
            {
                Ok(_) => {}
                Err(StoreError::ReviewNotOpen) => return Err(GateError::ReviewResolved),
                Err(e) => return Err(e.into()),
            }
            return Ok(ReviewResolved {
                review,
                decision: None,
                license: None,
            });
        }
        // Approve: decide again on the attested facts, and do what was asked
        // through its own use case, which closes the review in its write.
        // Nothing is written when the facts would leave it in review again.
        let (transaction, product) = match (kind, &renewed) {
            (Some("license.renew"), Some(license)) => {
                if customer.is_none() {
                    // Renewed without new facts: the licence's own.
                    customer = Some(field(&json!({"c": license.customer}), "c")?);
                }
                (
                    Transaction::Renew,
                    Sku::parse(&license.product).map_err(StoreError::Corrupt)?,
                )
            }
            (Some("license.issue"), _) => (Transaction::Issue, field(&request, "product")?),
            _ => (field(&request, "transaction")?, field(&request, "product")?),
        };
        let customer = customer.ok_or(GateError::NotFound)?;
        match kind {
            Some("preflight") => {
                let question = Question {
                    transaction,
                    product,
                    customer,
                    as_of: None,
                };
                let (decision, review) = self
                    .preflight_closing(&input.reviewer, &tenant, &question, Some(&closes))
                    .await?;
                Ok(ReviewResolved {
                    review: review.unwrap_or_default(),
                    decision: Some(decision),
                    license: None,
                })
            }
            Some(kind @ ("license.issue" | "license.renew")) => {
                let action = if kind == "license.issue" {
                    LicenseAction::Issue {
                        product,
                        customer,
                        seats: field(&request, "seats")?,
                        term_days: field(&request, "term_days")?,
                    }
                } else {
                    LicenseAction::Renew {
                        license_id: field(&request, "license_id")?,
                        term_days: field(&request, "term_days")?,
                        customer: Some(customer),
                    }
                };
                let licensed = self
                    .license(LicenseRequest {
                        actor: input.reviewer.clone(),
                        tenant: tenant.clone(),
                        idempotency_key: None,
                        fingerprint: String::new(),
                        action,
                        closes: Some(closes.clone()),
                    })
                    .await?;
                let decision = licensed.outcome.decision().clone();
                let license = licensed.outcome.license().cloned();
                let settled = closes.settle(
                    &decision.id,
                    decision.outcome,
                    license.as_ref().map(|l| l.id.as_str()),
                );
                Ok(ReviewResolved {
                    review: settled.review,
                    decision: Some(decision),
                    license,
                })
            }
            _ => Err(StoreError::Corrupt("a review of an unknown request".into()).into()),
        }
    }
}

/// A field of a stored request.
fn field<T: serde::de::DeserializeOwned>(request: &Value, name: &str) -> Result<T, GateError> {
    serde_json::from_value(request.get(name).cloned().unwrap_or(Value::Null))
        .map_err(|e| StoreError::Corrupt(format!("review request, {name}: {e}")).into())
}
