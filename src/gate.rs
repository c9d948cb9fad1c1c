//! The gate: the catalogue snapshot in memory, and the use cases that
//! combine the pure engine with the store: decide, then record the decision
//! with its audit event (and the licence, and the idempotency record) in one
//! ledger write, against the newest committed catalogue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::domain::{CountryCode, Outcome, PlainName, PlainText, ResellerId, Sku, Transaction};
use crate::licenses::{capped_term_end, license_json, LicenseSigner};
use crate::metrics::Metrics;
use crate::policy::{self, Catalog, Party, Verdict};
use crate::store::ledger::Ledger;
use crate::store::licenses::{IdempotencyRecord, LicenseRow};
use crate::store::reviews::resolve_review;
use crate::store::{
    apply_catalog_changes, record_decision, Actor, CatalogChange, NewDecision, NewEvent, Store,
    StoreError,
};

/// How often a write is re-done when what it was based on changed before it
/// committed (the catalogue, or a licence being renewed).
const RETRIES: usize = 5;

/// The end customer of a transaction, as the reseller describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// The reseller's own reference for the customer.
    pub id: String,
    pub name: String,
    pub country: CountryCode,
    #[serde(default)]
    pub us_person: Option<bool>,
}

impl Customer {
    /// Checks what serde cannot: non-empty, bounded strings without control
    /// or format characters ([`PlainText`] for the id, [`PlainName`] for the
    /// name). Returns `(field, message)` pairs, with fields prefixed by `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let id = PlainText::parse(&self.id).err();
        let name = PlainName::parse(&self.name).err();
        for (field, value, max, plain) in
            [("id", &self.id, 128, id), ("name", &self.name, 256, name)]
        {
            if value.trim().is_empty() {
                out.push((format!("{prefix}.{field}"), "must not be empty".to_string()));
            } else if value.chars().count() > max {
                out.push((
                    format!("{prefix}.{field}"),
                    format!("must be at most {max} characters"),
                ));
            } else if let Some(rule) = plain {
                out.push((format!("{prefix}.{field}"), rule));
            }
        }
        out
    }

    fn party(&self) -> Party {
        Party {
            country: self.country.clone(),
            us_person: self.us_person,
        }
    }
}

/// What a caller asks the gate about.
#[derive(Clone, Debug)]
pub struct Question {
    pub transaction: Transaction,
    pub product: Sku,
    pub customer: Customer,
    /// The instant to decide at; `None` is now.
    pub as_of: Option<DateTime<Utc>>,
}

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

/// How a licence request turned out, for the API to render.
#[derive(Debug, Clone, Copy)]
pub enum LicenseOutcome<'a> {
    Issued {
        license: &'a Value,
        decision: &'a Value,
    },
    Renewed {
        license: &'a Value,
        decision: &'a Value,
    },
    Prohibited {
        decision: &'a Value,
    },
    InReview {
        decision: &'a Value,
    },
}

/// Renders an outcome as the HTTP status and body that are returned, and
/// replayed to every retry with the same idempotency key.
pub type Render = fn(LicenseOutcome<'_>) -> (u16, Value);

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
    pub closes: Option<ReviewClose>,
}

/// An open review that a new decision resolves: closed in the very write
/// that records the decision (and the licence), or not at all.
#[derive(Clone, Debug)]
pub struct ReviewClose {
    /// The decision under review.
    pub decision_id: String,
    /// The resolution as asked: resolution, note, reviewer, customer.
    pub base: Value,
    pub reviewer: Actor,
    pub tenant: String,
}

impl ReviewClose {
    /// The review's final state and its audit event, given the new decision.
    fn settle(
        &self,
        decision_id: &str,
        outcome: Outcome,
        license_id: Option<&str>,
    ) -> (String, Value, NewEvent) {
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
        (status.to_string(), review, event)
    }

    /// The audit event of the review's resolution.
    fn event(&self, action: &str, review: &Value) -> NewEvent {
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

/// A response to replay as it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The response was stored for an earlier request with the same key.
    pub replayed: bool,
}

/// Why the gate could not answer.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the reseller is not registered")]
    UnknownReseller,
    #[error("the product is not in the catalogue")]
    UnknownProduct,
    #[error("no such licence for this tenant")]
    NotFound,
    #[error("the idempotency key was used for another request")]
    KeyReused,
    #[error("the first request with this idempotency key is still in flight")]
    KeyInFlight,
    #[error("the review is resolved already")]
    ReviewResolved,
    #[error("the attested facts still leave the customer's nexus unknown")]
    StillInReview,
    /// A renewal, or a reviewer's attested facts, name another customer
    /// than the licence's (or the reviewed request's): a licence never
    /// moves to another customer; that is a new issue, screened as one.
    #[error("a licence keeps its customer")]
    CustomerChanged,
    /// The licence would expire more than [`crate::licenses::MAX_EXPIRY_YEARS`]
    /// years after the request; `max_days` is the longest term that would
    /// not (0: none).
    #[error("the term would end the licence too late")]
    TermTooLong { max_days: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GateError {
    /// Whether a newer catalogue (committed by another process) could
    /// answer differently: an unknown product or reseller may be new.
    fn may_be_stale(&self) -> bool {
        matches!(self, GateError::UnknownProduct | GateError::UnknownReseller)
    }
}

/// What a licence write found or did.
enum Written {
    Fresh(u16, Value),
    Existing(IdempotencyRecord),
    /// Nothing: the renewal, extended from the licence as it then stood,
    /// would have run past the cap (at most `max_days` more).
    TooLong {
        max_days: i64,
    },
}

/// The catalogue snapshot, the store, and the ledger writer.
pub struct Gate {
    store: Store,
    ledger: Ledger,
    catalog: ArcSwap<Catalog>,
    metrics: Metrics,
    signer: Arc<LicenseSigner>,
    /// The licence keys published at `GET /v1/keys` and trusted for signed
    /// checkpoints: the configured ones only.
    keys: Vec<serde_json::Value>,
    /// Idempotency keys whose first request this process is handling.
    in_flight: Mutex<HashSet<(String, String)>>,
    /// Why the stored catalogue is not served: the audit chain does not
    /// vouch for it (`None` while it does).
    unvouched: Mutex<Option<String>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("catalog_version", &self.catalog.load().version())
            .finish_non_exhaustive()
    }
}

/// Holds an idempotency key as in flight until dropped.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<(String, String)>>,
    key: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::BatchFailed(format!("a blocking task failed: {e}")))?
}

impl Gate {
    /// Loads the committed catalogue. `keys` are the licence keys the
    /// configuration names (see [`crate::startup::published_keys`]).
    pub fn open(
        store: Store,
        ledger: Ledger,
        signer: Arc<LicenseSigner>,
        keys: Vec<serde_json::Value>,
        metrics: Metrics,
    ) -> Result<Gate, StoreError> {
        // A catalogue the chain does not vouch for is not served: the
        // service starts, not ready, and answers every decision with 503.
        let (catalog, unvouched) = match store.load_catalog() {
            Ok(catalog) => (catalog, None),
            Err(StoreError::Unvouched(reason)) => {
                tracing::error!(%reason, "not serving the stored catalogue");
                let empty = Catalog::build(0, Default::default()).map_err(StoreError::Invalid)?;
                (empty, Some(reason))
            }
            Err(e) => return Err(e),
        };
        metrics.catalog_installed(catalog.version());
        Ok(Gate {
            store,
            ledger,
            catalog: ArcSwap::from_pointee(catalog),
            metrics,
            signer,
            keys,
            in_flight: Mutex::new(HashSet::new()),
            unvouched: Mutex::new(unvouched),
        })
    }

    /// Why the stored catalogue is not served, if it is not: the audit chain
    /// does not vouch for it. Cleared only by a restart once it does.
    pub fn unvouched(&self) -> Option<String> {
        self.unvouched.lock().ok().and_then(|u| u.clone())
    }

    /// Stops serving the stored catalogue, which the chain does not vouch
    /// for: logged, and readiness red from now on.
    fn refuse_catalog(&self, reason: String) -> StoreError {
        tracing::error!(%reason, "not serving the stored catalogue");
        if let Ok(mut unvouched) = self.unvouched.lock() {
            *unvouched = Some(reason.clone());
        }
        StoreError::Unvouched(reason)
    }

    /// The snapshot to decide on, unless the stored catalogue is not served.
    fn serving_catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        match self.unvouched() {
            Some(reason) => Err(StoreError::Unvouched(reason)),
            None => Ok(self.catalog()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The licence keys the service publishes and trusts: those its
    /// configuration names, never rows of the database.
    pub fn keys(&self) -> &[serde_json::Value] {
        &self.keys
    }

    /// Signs a checkpoint over the chain's head now (or returns the one
    /// that already covers it).
    pub async fn checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>, StoreError> {
        let (store, signer) = (self.store.clone(), Arc::clone(&self.signer));
        blocking(move || crate::checkpoints::sign_now(&store, &signer)).await
    }

    /// The current snapshot (cheap: an `Arc` clone).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Re-reads the committed catalogue and swaps it in if it is newer.
    pub async fn reload(&self) -> Result<Arc<Catalog>, StoreError> {
        let store = self.store.clone();
        let fresh = match blocking(move || store.load_catalog()).await {
            Err(StoreError::Unvouched(reason)) => return Err(self.refuse_catalog(reason)),
            other => other?,
        };
        Ok(self.install(fresh))
    }

    fn install(&self, fresh: Catalog) -> Arc<Catalog> {
        let fresh = Arc::new(fresh);
        self.catalog.rcu(|current| {
            if current.version() >= fresh.version() {
                Arc::clone(current)
            } else {
                Arc::clone(&fresh)
            }
        });
        let installed = self.catalog();
        self.metrics.catalog_installed(installed.version());
        installed
    }

    /// Runs a write through the ledger, timing it.
    async fn commit<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut crate::store::DbConn, &mut crate::store::Head) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let timer = self.metrics.audit_append_seconds.start_timer();
        let result = self.ledger.submit(write).await;
        timer.observe_duration();
        if let Err(
            StoreError::Database(_)
            | StoreError::Pool(_)
            | StoreError::BatchFailed(_)
            | StoreError::OutcomeUnknown(_)
            | StoreError::Corrupt(_),
        ) = &result
        {
            self.metrics.audit_append_failures_total.inc();
        }
        result
    }

    /// Commits catalogue changes (audited) and swaps in the new snapshot.
    pub async fn change_catalog(
        &self,
        actor: Actor,
        changes: Vec<CatalogChange>,
    ) -> Result<Vec<bool>, StoreError> {
        let applied = match self
            .commit(move |conn, head| apply_catalog_changes(conn, head, &actor, &changes))
            .await
        {
            Err(StoreError::Unvouched(reason)) => return Err(self.refuse_catalog(reason)),
            other => other?,
        };
        if let Some(seq) = applied.audit_seqs.last() {
            self.metrics.audit_head_seq.set(*seq);
        }
        self.install(applied.catalog);
        Ok(applied.created)
    }

    /// Whether a tenant is registered, looking again in the database before
    /// saying no (another replica may have registered it a moment ago).
    pub async fn is_registered(&self, reseller: &ResellerId) -> Result<bool, StoreError> {
        if self.serving_catalog()?.reseller(reseller).is_some() {
            return Ok(true);
        }
        Ok(self.fresh_catalog().await?.reseller(reseller).is_some())
    }

    /// A newer committed catalogue than `catalog`, if there is one.
    async fn newer_than(&self, catalog: &Catalog) -> Result<Option<Arc<Catalog>>, StoreError> {
        let fresh = self.fresh_catalog().await?;
        Ok((fresh.version() > catalog.version()).then_some(fresh))
    }

    /// The snapshot, reloaded first if another process committed a newer
    /// catalogue (one small read when nothing changed).
    pub async fn fresh_catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        let current = self.serving_catalog()?;
        let store = self.store.clone();
        let committed = blocking(move || store.catalog_version()).await?;
        if committed > current.version() {
            self.reload().await
        } else {
            Ok(current)
        }
    }

    fn observe(&self, decision: &Value, transaction: Transaction, outcome: Outcome) {
        if let Some(seq) = decision.get("audit_seq").and_then(Value::as_i64) {
            self.metrics.audit_head_seq.set(seq);
        }
        self.metrics
            .decisions_total
            .with_label_values(&[transaction.as_str(), outcome.as_str()])
            .inc();
        if outcome == Outcome::Deny {
            for reason in decision["reasons"].as_array().into_iter().flatten() {
                let designation = reason["designation"].as_str().unwrap_or_default();
                let rule = reason["rule"].as_str().unwrap_or_default();
                self.metrics
                    .refusals_total
                    .with_label_values(&[designation, rule])
                    .inc();
            }
        }
    }

    /// A preflight: takes a decision for `tenant` and records it with its
    /// audit event; returns the decision object.
    pub async fn preflight(
        &self,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
    ) -> Result<Value, GateError> {
        Ok(self
            .preflight_closing(actor, tenant, question, None)
            .await?
            .0)
    }

    /// A preflight that may resolve a review in the same write; returns the
    /// decision and the review's final state.
    async fn preflight_closing(
        &self,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
        closes: Option<&ReviewClose>,
    ) -> Result<(Value, Option<Value>), GateError> {
        let mut catalog = self.serving_catalog()?;
        for _ in 0..RETRIES {
            let prepared = self.prepare(
                &catalog,
                actor,
                tenant,
                question,
                "decision.preflight",
                None,
            );
            let (record, verdict) = match prepared {
                Err(e) if e.may_be_stale() => match self.newer_than(&catalog).await? {
                    Some(fresh) => {
                        catalog = fresh;
                        continue;
                    }
                    None => return Err(e),
                },
                other => other?,
            };
            let version = catalog.version();
            if closes.is_some() && verdict.outcome == Outcome::Review {
                return Err(GateError::StillInReview);
            }
            let settled = closes.map(|c| c.settle(&record.id, verdict.outcome, None));
            let (under_review, review) = (
                closes.map(|c| c.decision_id.clone()),
                settled.as_ref().map(|(_, review, _)| review.clone()),
            );
            match self
                .commit(move |conn, head| {
                    let body = record_decision(head, version, record.clone())?;
                    if let (Some(id), Some((status, review, event))) = (&under_review, &settled) {
                        resolve_review(conn, head, id, status, review, event.clone())?;
                    }
                    Ok(body)
                })
                .await
            {
                Ok(body) => {
                    self.observe(&body, question.transaction, verdict.outcome);
                    return Ok((body, review));
                }
                Err(StoreError::Stale) => catalog = self.reload().await?,
                Err(StoreError::ReviewNotOpen) => return Err(GateError::ReviewResolved),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Stale.into())
    }

    /// Issues or renews a licence through the gate, idempotently: the
    /// decision, its audit event, the licence and the idempotency record
    /// commit together or not at all.
    pub async fn license(
        &self,
        request: LicenseRequest,
        render: Render,
    ) -> Result<Reply, GateError> {
        let tenant = request.tenant.to_string();
        let mut _guard = None;
        if let Some(key) = request.idempotency_key.clone() {
            if let Some(found) = {
                let (store, t, k) = (self.store.clone(), tenant.clone(), key.clone());
                blocking(move || store.idempotency(&t, &k)).await?
            } {
                return replay(found, &request.fingerprint, &self.metrics);
            }
            let mut set = self
                .in_flight
                .lock()
                .map_err(|_| StoreError::BatchFailed("the in-flight set is poisoned".into()))?;
            if !set.insert((tenant.clone(), key.clone())) {
                return Err(GateError::KeyInFlight);
            }
            _guard = Some(InFlight {
                set: &self.in_flight,
                key: (tenant.clone(), key),
            });
        }
        let mut catalog = self.serving_catalog()?;
        for _ in 0..RETRIES {
            match self.license_once(&catalog, &request, render).await {
                Ok(Written::Fresh(status, body)) => {
                    return Ok(Reply {
                        status,
                        body,
                        replayed: false,
                    })
                }
                Ok(Written::Existing(found)) => {
                    return replay(found, &request.fingerprint, &self.metrics)
                }
                Ok(Written::TooLong { max_days }) => {
                    return Err(GateError::TermTooLong { max_days })
                }
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

    async fn license_once(
        &self,
        catalog: &Catalog,
        request: &LicenseRequest,
        render: Render,
    ) -> Result<Written, GateError> {
        let now = Utc::now().trunc_subsecs(6);
        let tenant = request.tenant.to_string();
        // What is asked, and (for a renewal) the licence as it stands.
        let (question, current, seats, term_days) = match &request.action {
            LicenseAction::Issue {
                product,
                customer,
                seats,
                term_days,
            } => (
                Question {
                    transaction: Transaction::Issue,
                    product: product.clone(),
                    customer: customer.clone(),
                    as_of: None,
                },
                None,
                *seats,
                *term_days,
            ),
            LicenseAction::Renew {
                license_id,
                term_days,
                customer,
            } => {
                let store = self.store.clone();
                let id = license_id.clone();
                let current = blocking(move || store.license(&id))
                    .await?
                    .filter(|l| l.reseller == tenant)
                    .ok_or(GateError::NotFound)?;
                let stored: Customer = serde_json::from_value(current.customer.clone())
                    .map_err(|e| StoreError::Corrupt(format!("licence customer: {e}")))?;
                // Updated facts about the same customer, never another one.
                let customer = match customer {
                    Some(c) if c.id != stored.id => return Err(GateError::CustomerChanged),
                    Some(c) => c.clone(),
                    None => stored,
                };
                let product = Sku::parse(&current.product).map_err(StoreError::Corrupt)?;
                (
                    Question {
                        transaction: Transaction::Renew,
                        product,
                        customer,
                        as_of: None,
                    },
                    Some(current.clone()),
                    current.seats,
                    *term_days,
                )
            }
        };
        let action = match question.transaction {
            Transaction::Issue => "decision.issue",
            Transaction::Renew => "decision.renew",
        };
        let license_id = current
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (mut record, verdict) = self.prepare(
            catalog,
            &request.actor,
            &request.tenant,
            &question,
            action,
            Some(now),
        )?;
        record.request = match &request.action {
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
        };
        // The licence this decision would write, if it allows.
        let license = match verdict.outcome {
            Outcome::Allow => {
                // From now, or for a renewal from the later of now and the
                // current expiry; never past the decision's `not_after`
                // (which may cut a licence that already ran past a service
                // end decided since), and refused past the cap.
                let (starts_at, from) = match &current {
                    None => (now, now),
                    Some(c) => (c.starts_at, c.expires_at.max(now)),
                };
                let expires_at = capped_term_end(from, term_days, verdict.not_after, now)
                    .map_err(|max_days| GateError::TermTooLong { max_days })?;
                let mut row = LicenseRow {
                    id: license_id.clone(),
                    reseller: tenant.clone(),
                    product: question.product.to_string(),
                    customer: serde_json::to_value(&question.customer)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    seats,
                    starts_at,
                    expires_at,
                    decision_id: record.id.clone(),
                    token: String::new(),
                };
                row.token = self
                    .signer
                    .sign(&row, &question.customer.id, now)
                    .map_err(|e| StoreError::Corrupt(format!("{e:#}")))?;
                record.event.subject["license"] = license_subject(&row);
                Some(row)
            }
            _ => {
                record.event.subject["license"] = json!({ "id": license_id });
                None
            }
        };
        let version = catalog.version();
        let key = request.idempotency_key.clone();
        let fingerprint = request.fingerprint.clone();
        // A renewal's term is computed again inside the write, from the
        // licence as it then stands: concurrent renewals each extend it,
        // none is lost, and none has to be retried.
        let renewal = current.as_ref().map(|_| Renewal {
            customer_given: matches!(
                &request.action,
                LicenseAction::Renew {
                    customer: Some(_),
                    ..
                }
            ),
            term_days,
            not_after: verdict.not_after,
            requested_at: now,
            customer_id: question.customer.id.clone(),
            signer: Arc::clone(&self.signer),
        });
        let outcome = verdict.outcome;
        if request.closes.is_some() && outcome == Outcome::Review {
            return Err(GateError::StillInReview);
        }
        let settled = request.closes.as_ref().map(|c| {
            let written_id = license.as_ref().map(|l| l.id.as_str());
            (
                c.decision_id.clone(),
                c.settle(&record.id, outcome, written_id),
            )
        });
        let written = self
            .commit(move |conn, head| {
                let now = Utc::now();
                if let Some(key) = &key {
                    if let Some(found) = head.idempotency(conn, &tenant, key, now)? {
                        return Ok(Written::Existing(found));
                    }
                }
                let (mut record, mut license) = (record.clone(), license.clone());
                let mut read_decision = None;
                if let (Some(row), Some(plan)) = (license.as_mut(), &renewal) {
                    match plan.apply(conn, head, row, now)? {
                        Ok(read) => read_decision = Some(read),
                        // Nothing is written: no decision, no licence.
                        Err(max_days) => return Ok(Written::TooLong { max_days }),
                    }
                    record.event.subject["license"] = license_subject(row);
                }
                let decision = record_decision(head, version, record)?;
                let (status, body) = match (&license, read_decision) {
                    (Some(row), None) => {
                        head.insert_license(row)?;
                        let license = license_json(row, now);
                        render(LicenseOutcome::Issued {
                            license: &license,
                            decision: &decision,
                        })
                    }
                    (Some(row), Some(read)) => {
                        head.renew_license(row, &read)?;
                        let license = license_json(row, now);
                        render(LicenseOutcome::Renewed {
                            license: &license,
                            decision: &decision,
                        })
                    }
                    (None, _) if outcome == Outcome::Deny => render(LicenseOutcome::Prohibited {
                        decision: &decision,
                    }),
                    (None, _) => render(LicenseOutcome::InReview {
                        decision: &decision,
                    }),
                };
                if let Some((under_review, (review_status, review, event))) = &settled {
                    resolve_review(
                        conn,
                        head,
                        under_review,
                        review_status,
                        review,
                        event.clone(),
                    )?;
                }
                if let Some(key) = &key {
                    let stored = IdempotencyRecord {
                        fingerprint: fingerprint.clone(),
                        status,
                        body: body.to_string(),
                    };
                    head.save_idempotency(&tenant, key, &stored, now);
                }
                Ok(Written::Fresh(status, body))
            })
            .await?;
        if let Written::Fresh(_, body) = &written {
            if let Some(decision) = body.get("decision") {
                self.observe(decision, question.transaction, outcome);
            }
        }
        Ok(written)
    }

    /// Decides `question` for `tenant` on `catalog` and prepares its record.
    /// `now` pins the server clock (licences); else `question.as_of` or now.
    fn prepare(
        &self,
        catalog: &Catalog,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
        action: &str,
        now: Option<DateTime<Utc>>,
    ) -> Result<(NewDecision, Verdict), GateError> {
        let reseller = catalog.reseller(tenant).ok_or(GateError::UnknownReseller)?;
        // Microseconds, as every stored instant.
        let at = now
            .or(question.as_of)
            .unwrap_or_else(|| Utc::now().trunc_subsecs(6));
        let request = policy::Request {
            transaction: question.transaction,
            product: question.product.clone(),
            customer: question.customer.party(),
            reseller: Party {
                country: reseller.country.clone(),
                us_person: Some(reseller.us_person),
            },
        };
        let verdict: Verdict =
            policy::decide(catalog, &request, at).map_err(|_| GateError::UnknownProduct)?;
        let id = uuid::Uuid::now_v7().to_string();
        let mut body = Map::new();
        body.insert("id".into(), json!(id));
        body.insert("transaction".into(), json!(question.transaction));
        body.insert("outcome".into(), json!(verdict.outcome));
        body.insert("as_of".into(), json!(at));
        // A what-if question is marked wherever its decision is shown; a
        // decision at the server's own instant carries no mark (as before).
        if question.as_of.is_some() {
            body.insert("what_if".into(), json!(true));
        }
        body.insert("reasons".into(), json!(verdict.reasons));
        body.insert(
            "constraints".into(),
            json!({ "not_after": verdict.not_after }),
        );
        body.insert(
            "policy_version".into(),
            json!(catalog.version().to_string()),
        );
        let subject = json!({
            "kind": "decision",
            "id": id,
            "transaction": question.transaction,
            "product": question.product,
            "customer": question.customer,
            "reseller": {"id": tenant, "country": reseller.country, "us_person": reseller.us_person},
            "what_if": question.as_of.is_some(),
        });
        let record = NewDecision {
            request: json!({
                "kind": "preflight",
                "transaction": question.transaction,
                "product": question.product,
                "customer": question.customer,
            }),
            id,
            reseller: tenant.to_string(),
            transaction: question.transaction.as_str().to_string(),
            outcome: verdict.outcome,
            body,
            event: NewEvent {
                action: action.to_string(),
                actor: actor.clone(),
                outcome: Some(verdict.outcome),
                decision: None,
                subject,
                reseller: Some(tenant.to_string()),
            },
        };
        Ok((record, verdict))
    }
}

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

impl Gate {
    /// Resolves an open review: records the resolution (audited, with the
    /// reviewer as actor) and, on approval, the new decision and whatever it
    /// allows. Returns `{"review", "decision", "license"?}`.
    pub async fn resolve_review(
        &self,
        input: ReviewResolution,
        render: Render,
    ) -> Result<Value, GateError> {
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
        if let Some(attested) = &input.customer {
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
        let (result, review) = match input.resolution {
            Resolution::Reject => {
                let mut review = base;
                review["status"] = json!("rejected");
                let event = closes.event("review.reject", &review);
                let (id, stored) = (input.decision_id.clone(), review.clone());
                match self
                    .commit(move |conn, head| {
                        resolve_review(conn, head, &id, "rejected", &stored, event.clone())
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(StoreError::ReviewNotOpen) => return Err(GateError::ReviewResolved),
                    Err(e) => return Err(e.into()),
                }
                (json!({}), review)
            }
            Resolution::Approve => {
                // Nothing is written when the attested facts would leave the
                // decision in review again.
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
                let question = Question {
                    transaction,
                    product,
                    customer: customer.clone(),
                    as_of: None,
                };
                match kind {
                    Some("preflight") => {
                        let (decision, review) = self
                            .preflight_closing(&input.reviewer, &tenant, &question, Some(&closes))
                            .await?;
                        (json!({ "decision": decision }), review.unwrap_or_default())
                    }
                    Some(kind @ ("license.issue" | "license.renew")) => {
                        let action = if kind == "license.issue" {
                            LicenseAction::Issue {
                                product: question.product.clone(),
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
                        let reply = self
                            .license(
                                LicenseRequest {
                                    actor: input.reviewer.clone(),
                                    tenant: tenant.clone(),
                                    idempotency_key: None,
                                    fingerprint: String::new(),
                                    action,
                                    closes: Some(closes.clone()),
                                },
                                render,
                            )
                            .await?;
                        // The decision, and the licence if one was written
                        // (a refusal's problem fields stay out of it).
                        let decision = &reply.body["decision"];
                        let outcome: Outcome = serde_json::from_value(decision["outcome"].clone())
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        let license_id = reply.body["license"]["id"].as_str();
                        let (_, review, _) = closes.settle(
                            decision["id"].as_str().unwrap_or_default(),
                            outcome,
                            license_id,
                        );
                        let mut result = json!({ "decision": decision });
                        if let Some(license) = reply.body.get("license") {
                            result["license"] = license.clone();
                        }
                        (result, review)
                    }
                    _ => {
                        return Err(
                            StoreError::Corrupt("a review of an unknown request".into()).into()
                        )
                    }
                }
            }
        };
        let mut out = result;
        out["review"] = review;
        Ok(out)
    }
}

/// What a renewal needs to extend the licence inside its write.
struct Renewal {
    /// The caller sent new customer facts (else the decision was taken on
    /// the stored ones, which must not have changed since).
    customer_given: bool,
    term_days: i64,
    not_after: Option<DateTime<Utc>>,
    /// The request's instant, which the expiry may run at most
    /// [`crate::licenses::MAX_EXPIRY_YEARS`] years past.
    requested_at: DateTime<Utc>,
    customer_id: String,
    signer: Arc<LicenseSigner>,
}

impl Renewal {
    /// Extends `row` from the licence as it now stands (under the ledger
    /// lock); returns the decision id it replaces, or (`Err`) the longest
    /// term that would have kept it under the cap when this one does not.
    fn apply(
        &self,
        conn: &mut crate::store::DbConn,
        head: &crate::store::Head,
        row: &mut LicenseRow,
        now: DateTime<Utc>,
    ) -> Result<Result<String, i64>, StoreError> {
        let fresh = head.license(conn, &row.id)?.ok_or(StoreError::Conflict)?;
        if !self.customer_given && fresh.customer != row.customer {
            // Another renewal changed the facts this one was decided on.
            return Err(StoreError::Conflict);
        }
        if fresh.customer.get("id").and_then(Value::as_str) != Some(self.customer_id.as_str()) {
            // Not the licence's customer (any more?): decide again, from the
            // licence as it stands.
            return Err(StoreError::Conflict);
        }
        row.starts_at = fresh.starts_at;
        row.seats = fresh.seats;
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
            Err(max_days) => return Ok(Err(max_days)),
        };
        row.token = self
            .signer
            .sign(row, &self.customer_id, now)
            .map_err(|e| StoreError::Corrupt(format!("{e:#}")))?;
        Ok(Ok(fresh.decision_id))
    }
}

/// The licence as its decision event records it: what verification holds
/// the stored licence to (the token by its SHA-256).
fn license_subject(row: &LicenseRow) -> Value {
    use sha2::Digest as _;
    json!({
        "id": row.id, "seats": row.seats,
        "starts_at": row.starts_at, "expires_at": row.expires_at,
        "token_sha256": hex::encode(sha2::Sha256::digest(row.token.as_bytes())),
    })
}

/// A field of a stored request.
fn field<T: serde::de::DeserializeOwned>(request: &Value, name: &str) -> Result<T, GateError> {
    serde_json::from_value(request.get(name).cloned().unwrap_or(Value::Null))
        .map_err(|e| StoreError::Corrupt(format!("review request, {name}: {e}")).into())
}

/// The stored first response to a key, if this request is the same one.
fn replay(
    found: IdempotencyRecord,
    fingerprint: &str,
    metrics: &Metrics,
) -> Result<Reply, GateError> {
    if found.fingerprint != fingerprint {
        return Err(GateError::KeyReused);
    }
    let body = serde_json::from_str(&found.body)
        .map_err(|e| StoreError::Corrupt(format!("idempotency record: {e}")))?;
    metrics.idempotent_replays_total.inc();
    Ok(Reply {
        status: found.status,
        body,
        replayed: true,
    })
}
