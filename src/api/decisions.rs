//! Preflight decisions: ask the gate, get an explained and audited answer.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{scope, tenant, ApiError, FieldError, PendingBody, State};
use crate::auth::Principal;
use crate::domain::Customer;
use crate::domain::{Sku, Transaction};
use crate::gate::Question;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PreflightBody {
    transaction: Transaction,
    product: Sku,
    customer: Customer,
    /// Evaluate at another instant (what-if); RFC 3339 with an offset.
    #[serde(default)]
    as_of: Option<DateTime<FixedOffset>>,
}

/// `POST /v1/decisions`: a preflight. Records the decision and its audit
/// event; creates nothing else.
pub async fn create(
    state: State,
    principal: Principal,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&state, &principal).await?;
    let req: PreflightBody = body.json().await?;
    let problems = req.customer.problems("customer");
    if !problems.is_empty() {
        return Err(ApiError::Validation(
            problems
                .into_iter()
                .map(|(f, m)| FieldError::new(f, m))
                .collect(),
        ));
    }
    let question = Question {
        transaction: req.transaction,
        product: req.product,
        customer: req.customer,
        as_of: req.as_of.map(|t| t.with_timezone(&Utc).trunc_subsecs(6)),
    };
    let decision = state
        .gate
        .preflight(&principal.actor(), &tenant, &question)
        .await?;
    crate::telemetry::record_decision(&decision.id);
    Ok(HttpResponse::Ok().json(json!({ "decision": decision })))
}

/// `GET /v1/decisions/{id}`: a tenant reads its own; compliance reads all.
pub async fn get(
    state: State,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let own = scope(&state, &principal).await?;
    let id = super::path_id(path)?;
    let st = Arc::clone(&state);
    let stored = web::block(move || st.store.decision(id.as_str())).await??;
    match stored {
        Some(d) if own.as_ref().is_none_or(|t| t.as_str() == d.reseller) => {
            let mut body = json!({ "decision": d.body });
            if let Some(review) = super::reviews::review_state(&d) {
                // The tenant learns the outcome; the reviewer's note, name and
                // the facts attested stay with compliance.
                body["review"] = match own {
                    None => review,
                    Some(_) => {
                        let keep = [
                            "status",
                            "outcome",
                            "decision_id",
                            "license_id",
                            "resolved_at",
                        ];
                        let mut shown = serde_json::Map::new();
                        for k in keep {
                            if let Some(v) = review.get(k).filter(|v| !v.is_null()) {
                                shown.insert(k.to_string(), v.clone());
                            }
                        }
                        serde_json::Value::Object(shown)
                    }
                };
            }
            Ok(HttpResponse::Ok().json(body))
        }
        _ => Err(ApiError::NotFound),
    }
}
