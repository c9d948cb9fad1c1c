//! The gate: the catalogue snapshot in memory, and the use cases that
//! combine the pure engine with the store (decide, then record with the
//! audit event, against the newest committed catalogue).

use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::domain::{CountryCode, ResellerId, Sku, Transaction};
use crate::metrics::Metrics;
use crate::policy::{self, Catalog, Party, Verdict};
use crate::store::{Actor, Applied, CatalogChange, NewDecision, NewEvent, Store, StoreError};

/// How often a decision is re-taken when another process changed the
/// catalogue between the decision and its recording.
const STALE_RETRIES: usize = 5;

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
    /// Checks what serde cannot: non-empty, bounded strings. Returns
    /// `(field, message)` pairs, with fields prefixed by `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (field, value, max) in [("id", &self.id, 128), ("name", &self.name, 256)] {
            if value.trim().is_empty() {
                out.push((format!("{prefix}.{field}"), "must not be empty".to_string()));
            } else if value.chars().count() > max {
                out.push((
                    format!("{prefix}.{field}"),
                    format!("must be at most {max} characters"),
                ));
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

/// Why the gate could not answer.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the reseller is not registered")]
    UnknownReseller,
    #[error("the product is not in the catalogue")]
    UnknownProduct,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The catalogue snapshot and the store behind it.
pub struct Gate {
    store: Store,
    catalog: ArcSwap<Catalog>,
    metrics: Metrics,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("catalog_version", &self.catalog.load().version())
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Loads the committed catalogue.
    pub fn open(store: Store, metrics: Metrics) -> Result<Gate, StoreError> {
        let catalog = store.load_catalog()?;
        Ok(Gate {
            store,
            catalog: ArcSwap::from_pointee(catalog),
            metrics,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current snapshot (cheap: an `Arc` clone).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Re-reads the committed catalogue and swaps it in if it is newer.
    pub fn reload(&self) -> Result<Arc<Catalog>, StoreError> {
        let fresh = self.store.load_catalog()?;
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
        self.catalog()
    }

    /// Commits catalogue changes (audited) and swaps in the new snapshot.
    pub fn change_catalog(
        &self,
        actor: &Actor,
        changes: Vec<CatalogChange>,
    ) -> Result<Vec<bool>, StoreError> {
        let timer = self.metrics.audit_append_seconds.start_timer();
        let Applied {
            catalog,
            created,
            audit_seqs,
        } = self.store.apply_changes(actor, changes)?;
        timer.observe_duration();
        if let Some(seq) = audit_seqs.last() {
            self.metrics.audit_head_seq.set(*seq);
        }
        self.install(catalog);
        Ok(created)
    }

    /// Whether a tenant is registered, looking again in the database before
    /// saying no (another replica may have registered it a moment ago).
    pub fn is_registered(&self, reseller: &ResellerId) -> Result<bool, StoreError> {
        if self.catalog().reseller(reseller).is_some() {
            return Ok(true);
        }
        Ok(self.reload()?.reseller(reseller).is_some())
    }

    /// Takes a decision for `tenant`, records it with its audit event, and
    /// returns the decision object.
    pub fn decide(
        &self,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
        action: &str,
    ) -> Result<Value, GateError> {
        let mut catalog = self.catalog();
        for _ in 0..STALE_RETRIES {
            let record = self.prepare(&catalog, actor, tenant, question, action)?;
            let labels = [
                record.transaction.clone(),
                record.outcome.as_str().to_string(),
            ];
            let timer = self.metrics.audit_append_seconds.start_timer();
            match self.store.record_decision(catalog.version(), record) {
                Ok(body) => {
                    timer.observe_duration();
                    if let Some(seq) = body.get("audit_seq").and_then(Value::as_i64) {
                        self.metrics.audit_head_seq.set(seq);
                    }
                    self.metrics
                        .decisions_total
                        .with_label_values(&labels)
                        .inc();
                    return Ok(body);
                }
                Err(StoreError::Stale) => catalog = self.reload()?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Stale.into())
    }

    fn prepare(
        &self,
        catalog: &Catalog,
        actor: &Actor,
        tenant: &ResellerId,
        question: &Question,
        action: &str,
    ) -> Result<NewDecision, GateError> {
        let reseller = catalog.reseller(tenant).ok_or(GateError::UnknownReseller)?;
        // Microseconds, as every stored instant.
        let at = question
            .as_of
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
        Ok(NewDecision {
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
        })
    }
}
