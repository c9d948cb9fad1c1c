//! Licences: issuing and renewing one through the gate, idempotently. The
//! decision, its audit event, the licence and the idempotency record commit
//! together or not at all; the typed outcome is reported to `api/`, which
//! renders it after the commit, and the idempotency record keeps what a
//! replay needs to report the same outcome again (the audit event that
//! carries it, and the licence's token).
//!
//! A renewal's term and token are computed inside the write, from the
//! licence as it then stands (under the ledger lock): concurrent renewals
//! each extend it, none is lost, and none has to be retried. An issue's
//! term and token are computed once, before the write.

mod outcome;
mod write;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};

use outcome::replay;
pub(super) use outcome::InFlightKeys;
pub use outcome::{License, LicenseOutcome, LicenseStatus, Licensed};
pub(super) use write::{license_subject, sign};
use write::{LicenseWrite, Renewal};

use super::reviews::ReviewClose;
use super::terms::capped_term_end;
use super::{blocking, Gate, GateError, Question, RETRIES};
use crate::domain::Actor;
use crate::domain::{Customer, Outcome, ResellerId, Sku, Standing, Transaction};
use crate::policy::Catalog;
use crate::store::decisions::NewDecision;
use crate::store::licenses::{Ask, IdempotencyRecord, LicenseRow};
use crate::store::StoreError;
use std::sync::Arc;

/// A licence to issue or renew.
#[derive(Clone, Debug)]
pub enum LicenseAction {
    Issue {
        product: Sku,
        customer: Customer,
        seats: i64,
        term_days: i64,
    },
    Renew {
        license_id: String,
        term_days: i64,
        /// Updated customer facts; `None` keeps the stored ones.
        customer: Option<Customer>,
    },
}

impl LicenseAction {
    /// What was asked, as the decision keeps it (a review's approval acts
    /// on it).
    fn recorded(&self) -> Value {
        match self {
            LicenseAction::Issue {
                product,
                customer,
                seats,
                term_days,
            } => json!({"kind": "license.issue", "product": product, "customer": customer,
                        "seats": seats, "term_days": term_days}),
            LicenseAction::Renew {
                license_id,
                term_days,
                customer,
            } => json!({"kind": "license.renew", "license_id": license_id,
                        "term_days": term_days, "customer": customer}),
        }
    }
}

/// An idempotent licence request of a tenant.
#[derive(Clone, Debug)]
pub struct LicenseRequest {
    pub actor: Actor,
    pub tenant: ResellerId,
    /// `None` only for a review's approval, which the review itself keeps
    /// from acting twice.
    pub idempotency_key: Option<String>,
    /// A digest of the request (route and canonical body): the same key
    /// with another fingerprint is a reuse.
    pub fingerprint: String,
    pub action: LicenseAction,
    /// The review this request resolves, closed in the same write.
    pub(super) closes: Option<ReviewClose>,
}

impl LicenseRequest {
    /// A request of the API: no review to close.
    pub fn new(
        actor: Actor,
        tenant: ResellerId,
        idempotency_key: String,
        fingerprint: String,
        action: LicenseAction,
    ) -> LicenseRequest {
        LicenseRequest {
            actor,
            tenant,
            idempotency_key: Some(idempotency_key),
            fingerprint,
            action,
            closes: None,
        }
    }
}

/// What a licence write found or did.
pub(super) enum Written {
    Fresh(Box<LicenseOutcome>),
    Existing(IdempotencyRecord),
    /// Nothing: the renewal, extended from the licence as it then stood,
    /// would have run past the cap (at most `max_days` more).
    TooLong {
        max_days: i64,
    },
    /// Nothing: the licence's token could not be signed.
    Unsigned(String),
    /// Nothing: the licence to renew is not active (ended, suspended or
    /// revoked since it was read).
    NotActive(Standing),
}

impl Gate {
    /// Issues or renews a licence through the gate, idempotently.
    pub async fn license(&self, request: LicenseRequest) -> Result<Licensed, GateError> {
        let tenant = request.tenant.to_string();
        let mut _guard = None;
        // The key's record and the licence to renew, read together, in a
        // batch with other requests' (`store::lookups`).
        let renews = match &request.action {
            LicenseAction::Renew { license_id, .. } => Some(license_id.clone()),
            LicenseAction::Issue { .. } => None,
        };
        let (found, mut read) = self
            .lookups
            .before_license_write(Ask {
                reseller: tenant.clone(),
                key: request.idempotency_key.clone(),
                renews,
            })
            .await?;
        if let Some(key) = request.idempotency_key.clone() {
            // A retry is answered from its record without deciding again.
            if let Some(found) = found {
                return replay(&found, &tenant, &request.fingerprint, &self.metrics);
            }
            _guard = Some(
                self.in_flight
                    .hold(&tenant, &key)
                    .ok_or(GateError::KeyInFlight)?,
            );
        }
        let mut catalog = self.serving_catalog()?;
        for _ in 0..RETRIES {
            match self.license_once(&catalog, &request, read.take()).await {
                Ok(Written::Fresh(outcome)) => {
                    return Ok(Licensed {
                        outcome: *outcome,
                        replayed: false,
                    })
                }
                Ok(Written::Existing(found)) => {
                    return replay(&found, &tenant, &request.fingerprint, &self.metrics)
                }
                Ok(Written::TooLong { max_days }) => {
                    return Err(GateError::TermTooLong { max_days })
                }
                Ok(Written::Unsigned(cause)) => return Err(GateError::Signing(cause)),
                Ok(Written::NotActive(standing)) => return Err(GateError::NotActive(standing)),
                Err(GateError::Store(StoreError::Stale)) => catalog = self.reload().await?,
                Err(GateError::Store(StoreError::Conflict)) => continue,
                Err(GateError::Store(StoreError::ReviewNotOpen)) => {
                    return Err(GateError::ReviewResolved)
                }
                Err(e) if e.may_be_stale() => match self.newer_than(&catalog).await? {
                    Some(fresh) => catalog = fresh,
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Stale.into())
    }

    /// One attempt on `catalog`: check, decide, plan, commit, report.
    /// `read` is the licence to renew as already read, if it was (else it
    /// is read here).
    async fn license_once(
        &self,
        catalog: &Catalog,
        request: &LicenseRequest,
        read: Option<Option<LicenseRow>>,
    ) -> Result<Written, GateError> {
        let now = Utc::now().trunc_subsecs(6);
        // Check: what is asked, and (for a renewal) the licence as it stands.
        let asked = self.asked(request, read).await?;
        let action = match asked.question.transaction {
            Transaction::Issue => "decision.issue",
            Transaction::Renew => "decision.renew",
        };
        // Decide.
        let mut record = self.decide(
            catalog,
            &request.actor,
            &request.tenant,
            &asked.question,
            action,
            Some(now),
        )?;
        record.request = request.action.recorded();
        let outcome = record.decision.outcome;
        if request.closes.is_some() && outcome == Outcome::Review {
            return Err(GateError::StillInReview);
        }
        // Plan the write.
        let plan = self.plan(request, asked, record, catalog.version(), now)?;
        // Commit.
        let written = self
            .commit(move |conn, head| plan.write(conn, head))
            .await?;
        // Report.
        if let Written::Fresh(outcome) = &written {
            self.observe(outcome.decision());
        }
        Ok(written)
    }

    /// What a licence request asks, read against the licence it renews
    /// (`read`, or read now).
    async fn asked(
        &self,
        request: &LicenseRequest,
        read: Option<Option<LicenseRow>>,
    ) -> Result<Asked, GateError> {
        Ok(match &request.action {
            LicenseAction::Issue {
                product,
                customer,
                seats,
                term_days,
            } => Asked {
                question: Question {
                    transaction: Transaction::Issue,
                    product: product.clone(),
                    customer: customer.clone(),
                    as_of: None,
                },
                current: None,
                seats: *seats,
                term_days: *term_days,
            },
            LicenseAction::Renew {
                license_id,
                term_days,
                customer,
            } => {
                let tenant = request.tenant.to_string();
                let current = match read {
                    Some(read) => read,
                    None => {
                        let (store, id) = (self.store.clone(), license_id.clone());
                        blocking(move || store.license(&id)).await?
                    }
                };
                let current = current
                    .filter(|l| l.reseller == tenant)
                    .ok_or(GateError::NotFound)?;
                if current.state.standing != Standing::Active {
                    return Err(GateError::NotActive(current.state.standing));
                }
                let stored: Customer = serde_json::from_value(current.customer.clone())
                    .map_err(|e| StoreError::Corrupt(format!("licence customer: {e}")))?;
                // Updated facts about the same customer, never another one.
                let customer = match customer {
                    Some(c) if c.id != stored.id => return Err(GateError::CustomerChanged),
                    Some(c) => c.clone(),
                    None => stored,
                };
                let product = Sku::parse(&current.product).map_err(StoreError::Corrupt)?;
                Asked {
                    question: Question {
                        transaction: Transaction::Renew,
                        product,
                        customer,
                        as_of: None,
                    },
                    seats: current.seats,
                    term_days: *term_days,
                    current: Some(current),
                }
            }
        })
    }

    /// Plans the write of a decided licence request: the licence it would
    /// write if it allows (an issue's term and token now, a renewal's in
    /// the write), and the review it closes.
    fn plan(
        &self,
        request: &LicenseRequest,
        asked: Asked,
        record: NewDecision,
        version: i64,
        now: DateTime<Utc>,
    ) -> Result<LicenseWrite, GateError> {
        let decision = &record.decision;
        let license_id = asked
            .current
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let customer_id = asked.question.customer.id.clone();
        let license = match decision.outcome {
            Outcome::Allow => {
                let mut row = LicenseRow {
                    id: license_id.clone(),
                    reseller: request.tenant.to_string(),
                    product: asked.question.product.to_string(),
                    customer: serde_json::to_value(&asked.question.customer)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    seats: asked.seats,
                    starts_at: now,
                    expires_at: now,
                    decision_id: decision.id.clone(),
                    token: String::new(),
                    state: Default::default(),
                    version: None,
                };
                if asked.current.is_none() {
                    // From now, never past the decision's `not_after`, and
                    // refused past the cap.
                    row.expires_at =
                        capped_term_end(now, asked.term_days, decision.constraints.not_after, now)
                            .map_err(|max_days| GateError::TermTooLong { max_days })?;
                }
                Some(row)
            }
            _ => None,
        };
        let renewal = asked.current.as_ref().map(|read| Renewal {
            read: read.clone(),
            customer_given: matches!(
                &request.action,
                LicenseAction::Renew {
                    customer: Some(_),
                    ..
                }
            ),
            term_days: asked.term_days,
            not_after: decision.constraints.not_after,
            requested_at: now,
            customer_id: customer_id.clone(),
        });
        let settled = request.closes.as_ref().map(|c| {
            let written = license.as_ref().map(|l| l.id.as_str());
            c.settle(&decision.id, decision.outcome, written)
        });
        Ok(LicenseWrite {
            tenant: request.tenant.to_string(),
            key: request.idempotency_key.clone(),
            fingerprint: request.fingerprint.clone(),
            license_id,
            record,
            version,
            license,
            renewal,
            settled,
            signer: Arc::clone(&self.signer),
            customer_id,
        })
    }
}

/// What a licence request asks, with the licence it renews.
struct Asked {
    question: Question,
    current: Option<LicenseRow>,
    seats: i64,
    term_days: i64,
}
