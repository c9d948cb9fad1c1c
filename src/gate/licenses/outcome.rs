//! What a licence request reports: the typed outcome `api/` renders, the
//! licence as callers see it, and the idempotency record that lets a retry
//! with the same key report the same outcome again (with the set of keys
//! whose first request is still in flight here).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::GateError;
use crate::domain::Standing;
use crate::metrics::Metrics;
use crate::policy::Decision;
use crate::store::licenses::{IdempotencyRecord, LicenseRow, LicenseState};
use crate::store::{parse_instant, StoreError};

/// Where a licence stands at the instant it is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    Active,
    /// Its term ran out.
    Expired,
    /// A designation ended its service (`ended_by`).
    Ended,
    Suspended,
    Revoked,
}

/// A licence as callers see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct License {
    pub id: String,
    pub product: String,
    pub reseller: String,
    /// The customer facts the latest decision was taken on.
    pub customer: Value,
    pub seats: i64,
    pub starts_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: LicenseStatus,
    /// Why it is suspended or revoked, and by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<Value>,
    /// The designation rule that ended its service, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<Value>,
    /// An impact run found it will not be renewed: the rule, run and instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_blocked: Option<Value>,
    /// The impact review it waits on, and when it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact_review: Option<Value>,
    pub decision_id: String,
    pub token: String,
}

impl License {
    /// The stored licence as shown at `now`.
    pub fn from_row(row: &LicenseRow, now: DateTime<Utc>) -> License {
        License {
            id: row.id.clone(),
            product: row.product.clone(),
            reseller: row.reseller.clone(),
            customer: row.customer.clone(),
            seats: row.seats,
            starts_at: row.starts_at,
            expires_at: row.expires_at,
            status: match row.state.standing {
                Standing::Active if now < row.expires_at => LicenseStatus::Active,
                Standing::Active => LicenseStatus::Expired,
                Standing::Ended => LicenseStatus::Ended,
                Standing::Suspended => LicenseStatus::Suspended,
                Standing::Revoked => LicenseStatus::Revoked,
            },
            status_reason: row.state.status_reason.clone(),
            ended_by: row.state.ended_by.clone(),
            renewal_blocked: row.state.renewal_blocked.clone(),
            impact_review: row.state.impact_review.clone(),
            decision_id: row.decision_id.clone(),
            token: row.token.clone(),
        }
    }
}

/// How a licence request turned out.
#[derive(Clone, Debug, PartialEq)]
pub enum LicenseOutcome {
    Issued {
        license: License,
        decision: Decision,
    },
    Renewed {
        license: License,
        decision: Decision,
    },
    /// Refused: nothing but the decision was written.
    Prohibited { decision: Decision },
    /// Sent to review: nothing but the decision was written.
    InReview { decision: Decision },
}

/// What idempotency records written before they referred to their audit
/// event kept of an outcome, beside its kind (read, no longer written).
#[derive(Deserialize)]
struct Kept {
    decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    license: Option<License>,
}

impl LicenseOutcome {
    pub fn decision(&self) -> &Decision {
        match self {
            LicenseOutcome::Issued { decision, .. }
            | LicenseOutcome::Renewed { decision, .. }
            | LicenseOutcome::Prohibited { decision }
            | LicenseOutcome::InReview { decision } => decision,
        }
    }

    /// The licence written, if one was.
    pub fn license(&self) -> Option<&License> {
        match self {
            LicenseOutcome::Issued { license, .. } | LicenseOutcome::Renewed { license, .. } => {
                Some(license)
            }
            _ => None,
        }
    }

    /// The kind of outcome as the idempotency record's `status` column
    /// keeps it. The numbers are those of the HTTP statuses the API
    /// answers each kind with: records written before outcomes were typed
    /// kept the response itself, under the same numbers, and replay alike.
    fn code(&self) -> u16 {
        match self {
            LicenseOutcome::Issued { .. } => 201,
            LicenseOutcome::Renewed { .. } => 200,
            LicenseOutcome::Prohibited { .. } => 403,
            LicenseOutcome::InReview { .. } => 202,
        }
    }

    /// The idempotency record of this outcome for a request: the audit
    /// event that carries the decision and the licence as written, and the
    /// one thing the event does not carry, the licence's token (the event
    /// keeps its digest).
    pub(super) fn record(&self, fingerprint: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: fingerprint.to_string(),
            status: self.code(),
            body: self.license().map(|l| l.token.clone()).unwrap_or_default(),
            audit_seq: self.decision().audit_seq,
            event: None,
        }
    }

    /// The outcome an idempotency record stands for, as first reported:
    /// rebuilt from the event it names (which must be `tenant`'s and carry
    /// the outcome's decision), or, for a record written before records
    /// named their event, read from its body (fields it does not need, such
    /// as an older record's problem fields, are ignored).
    fn from_record(record: &IdempotencyRecord, tenant: &str) -> Result<LicenseOutcome, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("idempotency record: {e}"));
        let (decision, license) = match (record.audit_seq, &record.event) {
            (None, _) => {
                let kept: Kept =
                    serde_json::from_str(&record.body).map_err(|e| corrupt(e.to_string()))?;
                (kept.decision, kept.license)
            }
            (Some(seq), None) => return Err(corrupt(format!("its audit event {seq} is missing"))),
            (Some(seq), Some(event)) => from_event(event, &record.body, tenant)
                .map_err(|e| corrupt(format!("event {seq}: {e}")))?,
        };
        Ok(match (record.status, license) {
            (201, Some(license)) => LicenseOutcome::Issued { license, decision },
            (200, Some(license)) => LicenseOutcome::Renewed { license, decision },
            (403, None) => LicenseOutcome::Prohibited { decision },
            (202, None) => LicenseOutcome::InReview { decision },
            (status, _) => return Err(corrupt(format!("no outcome of kind {status}"))),
        })
    }
}

/// The decision an event carries, and the licence it records as written
/// (with `token`), shown as at the event's instant, as it was first shown.
fn from_event(
    event: &str,
    token: &str,
    tenant: &str,
) -> Result<(Decision, Option<License>), String> {
    let mut event: Value = serde_json::from_str(event).map_err(|e| e.to_string())?;
    let text =
        |event: &Value, at: &str| event.pointer(at).and_then(Value::as_str).map(str::to_owned);
    if text(&event, "/subject/reseller/id").as_deref() != Some(tenant) {
        return Err("not this tenant's".into());
    }
    let decision: Decision = serde_json::from_value(event["decision"].take())
        .map_err(|e| format!("its decision: {e}"))?;
    let Some(license) = event
        .pointer("/subject/license")
        .filter(|l| l.get("token_sha256").is_some())
    else {
        return Ok((decision, None));
    };
    let instant = |at: &str| -> Result<DateTime<Utc>, String> {
        let t = text(&event, at).ok_or_else(|| format!("no {at}"))?;
        parse_instant(&t).map_err(|e| format!("{at}: {e}"))
    };
    let optional = |name: &str| license.get(name).filter(|v| !v.is_null()).cloned();
    let standing = text(license, "/status")
        .and_then(|s| Standing::parse(&s))
        .ok_or("no standing")?;
    let row = LicenseRow {
        id: text(license, "/id").ok_or("no licence id")?,
        reseller: tenant.to_owned(),
        product: text(&event, "/subject/product").ok_or("no product")?,
        customer: event
            .pointer("/subject/customer")
            .cloned()
            .ok_or("no customer")?,
        seats: license
            .get("seats")
            .and_then(Value::as_i64)
            .ok_or("no seats")?,
        starts_at: instant("/subject/license/starts_at")?,
        expires_at: instant("/subject/license/expires_at")?,
        decision_id: decision.id.clone(),
        token: token.to_owned(),
        state: LicenseState {
            standing,
            status_reason: optional("status_reason"),
            ended_by: optional("ended_by"),
            renewal_blocked: optional("renewal_blocked"),
            impact_review: optional("impact_review"),
            status_idx: license.get("status_idx").and_then(Value::as_i64),
        },
        version: None,
    };
    Ok((decision, Some(License::from_row(&row, instant("/at")?))))
}

/// A licence request's outcome, as reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Licensed {
    pub outcome: LicenseOutcome,
    /// The outcome was recorded for an earlier request with the same key.
    pub replayed: bool,
}

/// Idempotency keys whose first request this process is handling.
#[derive(Debug, Default)]
pub(in crate::gate) struct InFlightKeys(Mutex<HashSet<(String, String)>>);

impl InFlightKeys {
    /// Holds `key` of `tenant` until the guard drops, unless it is held.
    pub(super) fn hold(&self, tenant: &str, key: &str) -> Option<InFlight<'_>> {
        let key = (tenant.to_string(), key.to_string());
        // Inserts and removals are whole: a poisoned set is still sound.
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !set.insert(key.clone()) {
            return None;
        }
        // The guard is made only once the lock is released: its `Drop`
        // takes the lock again.
        drop(set);
        Some(InFlight { keys: self, key })
    }
}

/// Holds an idempotency key as in flight until dropped.
pub(super) struct InFlight<'a> {
    keys: &'a InFlightKeys,
    key: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut set = self.keys.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.remove(&self.key);
    }
}

/// The outcome recorded for an earlier request with the same key, if this
/// request is the same one.
pub(super) fn replay(
    found: &IdempotencyRecord,
    tenant: &str,
    fingerprint: &str,
    metrics: &Metrics,
) -> Result<Licensed, GateError> {
    if found.fingerprint != fingerprint {
        return Err(GateError::KeyReused);
    }
    let outcome = LicenseOutcome::from_record(found, tenant)?;
    metrics.idempotent_replays_total.inc();
    Ok(Licensed {
        outcome,
        replayed: true,
    })
}
