//! A licence's lifecycle: revoking it (its reseller, or compliance), and
//! suspending and reinstating it (compliance). Each change writes the
//! licence as it now stands and its audit event in one transaction; the
//! status lists, which read the stored standing, change with it.
//!
//! What each change asks of where the licence stands:
//!
//! | change     | from                 | to          |
//! |------------|----------------------|-------------|
//! | revoke     | active, suspended    | revoked     |
//! | suspend    | active               | suspended   |
//! | reinstate  | suspended            | active, if the gate allows it now |
//!
//! Anything else (reviving a revoked or ended licence, suspending one that
//! is not active) is [`GateError::NotActive`] and changes nothing.
//! Reinstating is screened like a renewal, at the server's instant, on the
//! stored customer facts: a licence the gate would now refuse stays
//! suspended (the refusal is recorded), and one it would allow only up to
//! a service end is capped to it (a new token).
//!
//! [`change_standing`] is the write every change of standing shares,
//! impact runs included: the licence as the change leaves it, with its
//! audit event recording it whole.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};

use super::licenses::{license_subject, sign, License};
use super::{Gate, GateError, Question};
use crate::audit::state::Tenant;
use crate::domain::{Actor, Customer, Outcome, ResellerId, Sku, Standing, Transaction};
use crate::policy::Decision;
use crate::signing::LicenseSigner;
use crate::store::audit::{append_event, NewEvent};
use crate::store::decisions::record_decision;
use crate::store::licenses::LicenseRow;
use crate::store::{format_instant, Head, StoreError};

/// A change of a licence's standing, as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifecycleAction {
    Revoke { reason: String },
    Suspend { reason: String },
    Reinstate,
}

/// Who asks, for which licence. `tenant` is the caller's own tenant for a
/// reseller (who acts on its own licences only), `None` for compliance.
#[derive(Clone, Debug)]
pub struct LifecycleRequest {
    pub actor: Actor,
    pub tenant: Option<ResellerId>,
    pub license_id: String,
    pub action: LifecycleAction,
}

/// How a change of standing turned out.
#[derive(Clone, Debug, PartialEq)]
pub enum LifecycleOutcome {
    /// Revoked, suspended, or reinstated (with the decision that allowed it).
    Changed {
        license: Box<License>,
        decision: Option<Decision>,
    },
    /// Not reinstated: the gate refuses the licence now. It stays suspended.
    Prohibited { decision: Decision },
    /// Not reinstated: the customer's nexus cannot be decided on the stored
    /// facts. It stays suspended (resolve its impact review with attested
    /// facts instead).
    InReview { decision: Decision },
}

/// A licence as a change of standing leaves it, with its audit event:
/// `action` (`license.revoke`, `impact.ended`, …), `subject` the event's
/// subject (its `license` member is set here, recording the licence whole).
pub(super) struct StandingChange {
    pub(super) license: LicenseRow,
    /// The decision behind the licence when it was read.
    pub(super) read_decision: String,
    pub(super) event: NewEvent,
}

/// Writes a change of standing: the licence row, and its audit event
/// (returned: its `seq`). The event's `reseller` column is set here, to the
/// tenant verification reads from the event itself ([`Tenant::of`]): any
/// other value would be an `index_mismatch` on the event.
pub(super) fn change_standing(
    head: &mut Head,
    change: StandingChange,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let StandingChange {
        license,
        read_decision,
        mut event,
    } = change;
    event.subject["license"] = full_subject(&license);
    event.reseller = match Tenant::of(&json!({"action": event.action, "subject": event.subject})) {
        Tenant::Named(tenant) => tenant,
        Tenant::OfDecision(_) => None,
    };
    head.update_license(&license, &read_decision)?;
    let version = head.catalog_version().to_string();
    append_event(head, event, &version, now)
}

/// The licence as an event that is not its decision's records it: whole,
/// with the reseller, product, customer and decision that a decision event
/// keeps beside it.
pub(super) fn full_subject(row: &LicenseRow) -> Value {
    let mut subject = license_subject(row);
    subject["reseller"] = json!(row.reseller);
    subject["product"] = json!(row.product);
    subject["customer"] = row.customer.clone();
    subject["decision_id"] = json!(row.decision_id);
    subject
}

/// Why and by whom, as `status_reason` keeps it.
fn status_reason(reason: &str, actor: &Actor, at: DateTime<Utc>) -> Value {
    json!({
        "reason": reason,
        "by": {"sub": actor.sub, "role": actor.role, "reseller": actor.reseller},
        "at": format_instant(at),
    })
}

/// Re-signs `row`'s token (its term or standing changed).
pub(super) fn resign(
    signer: &LicenseSigner,
    row: &mut LicenseRow,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let customer = row
        .customer
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    row.token = sign(signer, row, &customer, now).map_err(StoreError::Corrupt)?;
    Ok(())
}

/// What the lifecycle write did.
enum Done {
    Changed(Box<LicenseRow>, Option<Decision>),
    Refused(Decision),
    NotActive(Standing),
}

impl Gate {
    /// Revokes, suspends or reinstates a licence.
    pub async fn change_lifecycle(
        &self,
        request: LifecycleRequest,
    ) -> Result<LifecycleOutcome, GateError> {
        let mut catalog = self.serving_catalog()?;
        for _ in 0..super::RETRIES {
            // Check: the licence, the caller's to act on.
            let store = self.store.clone();
            let id = request.license_id.clone();
            let current = super::blocking(move || store.license(&id))
                .await?
                .filter(|l| {
                    request
                        .tenant
                        .as_ref()
                        .is_none_or(|t| t.as_str() == l.reseller)
                })
                .ok_or(GateError::NotFound)?;
            let now = Utc::now().trunc_subsecs(6);
            // Decide (a reinstatement only), on the stored facts.
            let decided = match request.action {
                LifecycleAction::Reinstate => {
                    let tenant =
                        ResellerId::parse(&current.reseller).map_err(StoreError::Corrupt)?;
                    let customer: Customer = serde_json::from_value(current.customer.clone())
                        .map_err(|e| StoreError::Corrupt(format!("licence customer: {e}")))?;
                    let question = Question {
                        transaction: Transaction::Renew,
                        product: Sku::parse(&current.product).map_err(StoreError::Corrupt)?,
                        customer,
                        as_of: None,
                    };
                    let mut record = self.decide(
                        &catalog,
                        &request.actor,
                        &tenant,
                        &question,
                        "decision.reinstate",
                        Some(now),
                    )?;
                    // Recorded, never reviewable: the licence's own impact
                    // review (if any) is where attested facts go.
                    record.reviewable = false;
                    record.request = json!({"kind": "license.reinstate", "license_id": current.id});
                    Some(record)
                }
                _ => None,
            };
            let (action, signer) = (request.action.clone(), self.signer.clone());
            let (actor, version) = (request.actor.clone(), catalog.version());
            let id = current.id.clone();
            let result = self
                .commit(move |conn, head| {
                    let now = Utc::now();
                    let mut row = head.license(conn, &id)?.ok_or(StoreError::Conflict)?;
                    let read = row.decision_id.clone();
                    let standing = row.state.standing;
                    let (verb, to) = match &action {
                        LifecycleAction::Revoke { reason }
                            if matches!(standing, Standing::Active | Standing::Suspended) =>
                        {
                            ("license.revoke", Some((Standing::Revoked, reason.as_str())))
                        }
                        LifecycleAction::Suspend { reason } if standing == Standing::Active => (
                            "license.suspend",
                            Some((Standing::Suspended, reason.as_str())),
                        ),
                        LifecycleAction::Reinstate if standing == Standing::Suspended => {
                            ("decision.reinstate", None)
                        }
                        _ => return Ok(Done::NotActive(standing)),
                    };
                    if let Some((to, reason)) = to {
                        row.state.standing = to;
                        row.state.status_reason = Some(status_reason(reason, &actor, now));
                        let event = NewEvent {
                            action: verb.to_string(),
                            actor: actor.clone(),
                            outcome: None,
                            decision: None,
                            subject: json!({"kind": "license", "id": row.id}),
                            // Set by `change_standing`.
                            reseller: None,
                        };
                        change_standing(
                            head,
                            StandingChange {
                                license: row.clone(),
                                read_decision: read,
                                event,
                            },
                            now,
                        )?;
                        return Ok(Done::Changed(Box::new(row), None));
                    }
                    // Reinstating: the decision, and the licence if it allows.
                    let Some(mut record) = decided.clone() else {
                        return Err(StoreError::Corrupt(
                            "a reinstatement without its decision".into(),
                        ));
                    };
                    let outcome = record.decision.outcome;
                    if outcome != Outcome::Allow {
                        record.event.subject["license"] = json!({"id": row.id});
                        return Ok(Done::Refused(record_decision(head, version, record)?));
                    }
                    row.state.standing = Standing::Active;
                    row.state.status_reason = None;
                    // The gate allows it now: an impact review it waited on
                    // no longer holds it (the review stays in the queue, and
                    // resolving it acts on nothing), nor a renewal block.
                    row.state.impact_review = None;
                    row.state.renewal_blocked = None;
                    row.decision_id = record.decision.id.clone();
                    if row.state.status_idx.is_none() {
                        row.state.status_idx = Some(head.allocate_status_idx(conn)?);
                    }
                    if let Some(not_after) = record.decision.constraints.not_after {
                        if not_after < row.expires_at {
                            row.expires_at = not_after;
                        }
                    }
                    resign(&signer, &mut row, now)?;
                    record.event.subject["license"] = full_subject(&row);
                    let decision = record_decision(head, version, record)?;
                    head.update_license(&row, &read)?;
                    Ok(Done::Changed(Box::new(row), Some(decision)))
                })
                .await;
            let now = Utc::now();
            return match result {
                Ok(Done::Changed(row, decision)) => {
                    if let Some(decision) = &decision {
                        self.observe(decision);
                    }
                    Ok(LifecycleOutcome::Changed {
                        license: Box::new(License::from_row(&row, now)),
                        decision,
                    })
                }
                Ok(Done::Refused(decision)) => {
                    self.observe(&decision);
                    Ok(match decision.outcome {
                        Outcome::Deny => LifecycleOutcome::Prohibited { decision },
                        _ => LifecycleOutcome::InReview { decision },
                    })
                }
                Ok(Done::NotActive(standing)) => Err(GateError::NotActive(standing)),
                Err(StoreError::Stale) => {
                    catalog = self.reload().await?;
                    continue;
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => Err(e.into()),
            };
        }
        Err(StoreError::Stale.into())
    }
}
