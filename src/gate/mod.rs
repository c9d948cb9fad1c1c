//! The gate: the use cases, one room each, that combine the pure engine
//! with the store. Each reads top to bottom: check, decide, plan the write,
//! commit it through the ledger, report a typed outcome that `api/`
//! renders after the commit. The gate knows no HTTP and no SQL.
//!
//! - [`preflight`]: a decision, recorded with its audit event (the
//!   decision step itself, which every use case shares, is `decide.rs`);
//! - [`licenses`]: issuing and renewing a licence, idempotently;
//! - [`lifecycle`]: revoking, suspending and reinstating a licence;
//! - [`impact`]: impact runs, re-screening the licences a catalogue
//!   change or a rule instant reaches;
//! - [`status_lists`]: the licences' signed status lists;
//! - [`reviews`]: resolving a review (approval re-decides and acts);
//! - [`checkpoints`]: signed checkpoints over the audit chain's head;
//! - [`webhooks`]: the webhook endpoints events are delivered to;
//! - [`delivery`]: the webhook delivery worker;
//! - [`terms`]: licence-term arithmetic.
//!
//! This file holds what they share: the [`Gate`] with its catalogue
//! snapshot (swapped in whole, reloaded when another replica committed a
//! newer one, refused when the audit chain does not vouch for it), the
//! bridge to the blocking store, the commit, and [`GateError`].

pub mod checkpoints;
mod decide;
pub mod delivery;
pub mod impact;
pub mod licenses;
pub mod lifecycle;
pub mod preflight;
pub mod reviews;
pub mod status_lists;
pub mod terms;
pub mod webhooks;

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::domain::Actor;
use crate::domain::{Outcome, ResellerId};
use crate::metrics::Metrics;
use crate::policy::{Catalog, CatalogChange, Decision};
use crate::signing::LicenseSigner;
use crate::store::catalog::apply_catalog_changes;
use crate::store::ledger::Ledger;
use crate::store::{DbConn, Head, Store, StoreError};

pub use licenses::{
    License, LicenseAction, LicenseOutcome, LicenseRequest, LicenseStatus, Licensed,
};
pub use lifecycle::{LifecycleAction, LifecycleOutcome, LifecycleRequest};
pub use preflight::Question;
pub use reviews::{Resolution, ReviewResolution, ReviewResolved};
pub use webhooks::{CreatedEndpoint, Endpoint, NewEndpoint, RotatedEndpoint};

/// How often a write is re-done when what it was based on changed before it
/// committed (the catalogue, or a licence being renewed).
const RETRIES: usize = 5;

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
    /// The licence would expire more than [`terms::MAX_EXPIRY_YEARS`]
    /// years after the request; `max_days` is the longest term that would
    /// not (0: none).
    #[error("the term would end the licence too late")]
    TermTooLong { max_days: i64 },
    /// The licence is not active (ended, suspended or revoked): it cannot
    /// be renewed, and a lifecycle change that makes no sense for where it
    /// stands (reviving a revoked licence) is refused.
    #[error("the licence is {0}")]
    NotActive(crate::domain::Standing),
    /// What was asked does not make a valid catalogue (a preview's
    /// changes): the fields and why.
    #[error("invalid: {0:?}")]
    Invalid(Vec<(String, String)>),
    /// The licence token could not be signed: nothing was written.
    #[error("signing the licence token failed: {0}")]
    Signing(String),
    /// The owner has [`webhooks::MAX_ENDPOINTS`] webhook endpoints already.
    #[error("at most {max} webhook endpoints")]
    EndpointLimit { max: i64 },
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

/// The catalogue snapshot, the store, and the ledger writer.
pub struct Gate {
    store: Store,
    ledger: Ledger,
    /// The reads before a licence write, batched across requests.
    lookups: crate::store::lookups::Lookups,
    catalog: ArcSwap<Catalog>,
    metrics: Metrics,
    signer: Arc<LicenseSigner>,
    /// The licence keys published at `GET /v1/keys` and trusted for signed
    /// checkpoints: the configured ones only.
    keys: Vec<serde_json::Value>,
    /// Idempotency keys whose first request this process is handling.
    in_flight: licenses::InFlightKeys,
    /// Why the stored catalogue is not served: the audit chain does not
    /// vouch for it (`None` while it does).
    unvouched: Mutex<Option<String>>,
    /// Held while this process advances impact runs (one runner at a time
    /// here; replicas share the work through the ledger).
    impact_runner: tokio::sync::Mutex<()>,
    /// Wakes the impact runner (a catalogue change opened a run).
    pub impact_wake: tokio::sync::Notify,
    /// Licences an impact run re-decides per write.
    impact_chunk: i64,
    /// Whether webhook endpoints may be `http` and reach private addresses.
    webhook_allow_private: bool,
    /// Wakes the webhook delivery worker: notified after each ledger write
    /// that committed (it may have made events).
    pub delivery_wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("catalog_version", &self.catalog.load().version())
            .finish_non_exhaustive()
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::BatchFailed(format!("a blocking task failed: {e}")))?
}

impl Gate {
    /// Loads the committed catalogue. `keys` are the licence keys the
    /// configuration names (`startup::published_keys` reads them).
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
        let lookups = crate::store::lookups::Lookups::start(store.clone()).map_err(|e| {
            StoreError::BatchFailed(format!("could not start the licence reads: {e}"))
        })?;
        Ok(Gate {
            store,
            ledger,
            lookups,
            catalog: ArcSwap::from_pointee(catalog),
            metrics,
            signer,
            keys,
            in_flight: Default::default(),
            unvouched: Mutex::new(unvouched),
            impact_runner: Default::default(),
            impact_wake: Default::default(),
            impact_chunk: impact::CHUNK,
            webhook_allow_private: false,
            delivery_wake: Default::default(),
        })
    }

    /// Re-decides `chunk` licences per impact-run write (at least 1).
    pub fn with_impact_chunk(mut self, chunk: i64) -> Gate {
        self.impact_chunk = chunk.max(1);
        self
    }

    /// Why the stored catalogue is not served, if it is not: the audit chain
    /// does not vouch for it. Cleared only by a restart once it does.
    pub fn unvouched(&self) -> Option<String> {
        // The value is replaced whole, so a panic elsewhere cannot leave it
        // half-written: a poisoned lock still holds a good value.
        self.unvouched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops serving the stored catalogue, which the chain does not vouch
    /// for: logged, and readiness red from now on.
    fn refuse_catalog(&self, reason: String) -> StoreError {
        tracing::error!(%reason, "not serving the stored catalogue");
        *self
            .unvouched
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        StoreError::Unvouched(reason)
    }

    /// The snapshot to decide on, unless the stored catalogue is not served.
    fn serving_catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        match self.unvouched() {
            Some(reason) => Err(StoreError::Unvouched(reason)),
            None => Ok(self.catalog()),
        }
    }

    /// The licence keys the service publishes and trusts: those its
    /// configuration names, never rows of the database.
    pub fn keys(&self) -> &[serde_json::Value] {
        &self.keys
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

    /// Runs a write through the ledger, timing it.
    async fn commit<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConn, &mut Head) -> Result<T, StoreError> + Send + 'static,
    {
        let timer = self.metrics.audit_append_seconds.start_timer();
        let result = self.ledger.submit(write).await;
        timer.observe_duration();
        if result.is_ok() {
            self.delivery_wake.notify_one();
        }
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
            .commit(move |conn, head| {
                let applied = apply_catalog_changes(conn, head, &actor, &changes)?;
                let run = impact::open_run_for(conn, head, &applied)?;
                Ok((applied, run))
            })
            .await
        {
            Err(StoreError::Unvouched(reason)) => return Err(self.refuse_catalog(reason)),
            other => other?,
        };
        let (applied, run) = applied;
        if let Some(seq) = applied.audit_seqs.last() {
            self.metrics.audit_head_seq.set(*seq);
        }
        self.install(applied.catalog);
        if run.is_some() {
            self.impact_wake.notify_one();
        }
        Ok(applied.created)
    }

    /// Counts a recorded decision (and a refusal's reasons) in the metrics.
    fn observe(&self, decision: &Decision) {
        if let Some(seq) = decision.audit_seq {
            self.metrics.audit_head_seq.set(seq);
        }
        self.metrics
            .decisions_total
            .with_label_values(&[decision.transaction.as_str(), decision.outcome.as_str()])
            .inc();
        if decision.outcome == Outcome::Deny {
            for reason in &decision.reasons {
                self.metrics
                    .refusals_total
                    .with_label_values(&[reason.designation.as_str(), reason.rule.as_str()])
                    .inc();
            }
        }
    }
}
