//! A licence request's write, planned before the commit and run by the
//! ledger under the locked head: the idempotency check, a renewal's term
//! and token from the licence as it then stands, the decision, the licence,
//! the review it closes and the idempotency record, all in one transaction.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};

use super::outcome::{License, LicenseOutcome};
use super::Written;
use crate::domain::{Outcome, Standing};
use crate::gate::reviews::Settled;
use crate::gate::terms::capped_term_end;
use crate::signing::{LicenseClaims, LicenseSigner, LICENSE_ISSUER};
use crate::store::decisions::{record_decision, NewDecision};
use crate::store::licenses::LicenseRow;
use crate::store::{DbConn, Head, StoreError};

/// A licence request's write, planned: run by the ledger under the locked
/// head (again, if its batch is re-run).
pub(super) struct LicenseWrite {
    pub(super) tenant: String,
    pub(super) key: Option<String>,
    pub(super) fingerprint: String,
    pub(super) license_id: String,
    pub(super) record: NewDecision,
    /// The catalogue version decided on.
    pub(super) version: i64,
    /// The licence to write if the decision allows (a renewal's term and
    /// token still to be set from the licence as it stands).
    pub(super) license: Option<LicenseRow>,
    pub(super) renewal: Option<Renewal>,
    pub(super) settled: Option<Settled>,
    /// Signs the licence's token in the write, once its status-list index
    /// is known.
    pub(super) signer: Arc<LicenseSigner>,
    pub(super) customer_id: String,
}

impl LicenseWrite {
    pub(super) fn write(&self, conn: &mut DbConn, head: &mut Head) -> Result<Written, StoreError> {
        let now = Utc::now();
        if let Some(key) = &self.key {
            if let Some(found) = head.idempotency(conn, &self.tenant, key, now)? {
                return Ok(Written::Existing(found));
            }
        }
        let (mut record, mut license) = (self.record.clone(), self.license.clone());
        let mut replaces = None;
        if let Some(row) = license.as_mut() {
            if let Some(renewal) = &self.renewal {
                match renewal.apply(conn, head, row, now)? {
                    Ok(read) => replaces = Some(read),
                    // Nothing is written: no decision, no licence.
                    Err(refused) => return Ok(refused),
                }
            }
            if row.state.status_idx.is_none() {
                row.state.status_idx = Some(head.allocate_status_idx(conn)?);
            }
            row.token = match sign(&self.signer, row, &self.customer_id, now) {
                Ok(token) => token,
                Err(cause) => return Ok(Written::Unsigned(cause)),
            };
        }
        record.event.subject["license"] = match &license {
            Some(row) => license_subject(row),
            None => json!({ "id": self.license_id }),
        };
        let decision = record_decision(head, self.version, record)?;
        let outcome = match (license, replaces) {
            (Some(row), None) => {
                head.insert_license(&row)?;
                LicenseOutcome::Issued {
                    license: License::from_row(&row, now),
                    decision,
                }
            }
            (Some(row), Some(read)) => {
                head.update_license(&row, &read)?;
                LicenseOutcome::Renewed {
                    license: License::from_row(&row, now),
                    decision,
                }
            }
            (None, _) if decision.outcome == Outcome::Deny => {
                LicenseOutcome::Prohibited { decision }
            }
            (None, _) => LicenseOutcome::InReview { decision },
        };
        if let Some(settled) = &self.settled {
            settled.write(conn, head)?;
        }
        if let Some(key) = &self.key {
            head.save_idempotency(&self.tenant, key, &outcome.record(&self.fingerprint), now);
        }
        Ok(Written::Fresh(Box::new(outcome)))
    }
}

/// What a renewal needs to extend the licence inside its write.
pub(super) struct Renewal {
    /// The licence as the request read it (see [`Head::license_as_read`]).
    pub(super) read: LicenseRow,
    /// The caller sent new customer facts (else the decision was taken on
    /// the stored ones, which must not have changed since).
    pub(super) customer_given: bool,
    pub(super) term_days: i64,
    pub(super) not_after: Option<DateTime<Utc>>,
    /// The request's instant, which the expiry may run at most
    /// [`crate::gate::terms::MAX_EXPIRY_YEARS`] years past.
    pub(super) requested_at: DateTime<Utc>,
    pub(super) customer_id: String,
}

impl Renewal {
    /// Extends `row` from the licence as it now stands (under the ledger
    /// lock); returns the decision id it replaces, or (`Err`) why nothing
    /// is written: the licence is no longer active, or the longest term
    /// that would have kept it under the cap when this one does not. (The
    /// token is signed by the write, after.)
    fn apply(
        &self,
        conn: &mut DbConn,
        head: &Head,
        row: &mut LicenseRow,
        now: DateTime<Utc>,
    ) -> Result<Result<String, Written>, StoreError> {
        let fresh = head
            .license_as_read(conn, &self.read)?
            .ok_or(StoreError::Conflict)?;
        if !self.customer_given && fresh.customer != row.customer {
            // Another renewal changed the facts this one was decided on.
            return Err(StoreError::Conflict);
        }
        if fresh.customer.get("id").and_then(Value::as_str) != Some(self.customer_id.as_str()) {
            // Not the licence's customer (any more?): decide again, from the
            // licence as it stands.
            return Err(StoreError::Conflict);
        }
        if fresh.state.standing != Standing::Active {
            return Ok(Err(Written::NotActive(fresh.state.standing)));
        }
        row.starts_at = fresh.starts_at;
        row.seats = fresh.seats;
        row.version = fresh.version.clone();
        // Renewed: the gate allows it now, so an impact run's block or
        // review no longer holds it.
        row.state = fresh.state.clone();
        row.state.renewal_blocked = None;
        row.state.impact_review = None;
        // From the later of now and the current expiry (which concurrent
        // renewals may have moved since the decision), never past the
        // decision's `not_after` (which may cut a licence that already ran
        // past a service end decided since), and never past the cap.
        row.expires_at = match capped_term_end(
            fresh.expires_at.max(now.trunc_subsecs(6)),
            self.term_days,
            self.not_after,
            self.requested_at,
        ) {
            Ok(end) => end,
            Err(max_days) => return Ok(Err(Written::TooLong { max_days })),
        };
        Ok(Ok(fresh.decision_id))
    }
}

/// Signs the token of licence `row` (with its `status` claim, once it has
/// a status-list index).
pub(in crate::gate) fn sign(
    signer: &LicenseSigner,
    row: &LicenseRow,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<String, String> {
    signer
        .sign(&LicenseClaims {
            iss: LICENSE_ISSUER,
            sub: &row.id,
            aud: &row.product,
            product: &row.product,
            reseller: &row.reseller,
            customer: customer_id,
            seats: row.seats,
            iat: now.timestamp(),
            nbf: row.starts_at.timestamp(),
            exp: row.expires_at.timestamp(),
            status: row.state.status_idx.map(|idx| signer.status_claim(idx)),
        })
        .map_err(|e| format!("signing a licence: {e}"))
}

/// The licence as its events record it (a decision's, or a change of its
/// standing): what verification holds the stored licence to (the token by
/// its SHA-256, and where it stands).
pub(in crate::gate) fn license_subject(row: &LicenseRow) -> Value {
    use sha2::Digest as _;
    let mut subject = json!({
        "id": row.id, "seats": row.seats,
        "starts_at": row.starts_at, "expires_at": row.expires_at,
        "token_sha256": hex::encode(sha2::Sha256::digest(row.token.as_bytes())),
    });
    if let (Value::Object(subject), Value::Object(state)) = (&mut subject, row.state.to_json()) {
        subject.extend(state);
    }
    subject
}
