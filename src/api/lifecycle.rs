//! A licence's lifecycle: `POST /v1/licenses/{id}/revocation` (its reseller,
//! or compliance), `POST` and `DELETE /v1/licenses/{id}/suspension`
//! (compliance; `DELETE` reinstates, screened like a renewal).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::problem_body;
use super::{path_id, scope, ApiError, FieldError, PendingBody, State};
use crate::auth::{Principal, Role};
use crate::domain::ResellerId;
use crate::gate::{LifecycleAction, LifecycleOutcome, LifecycleRequest};

/// The longest reason kept, in characters.
pub const MAX_REASON: usize = 2000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonBody {
    reason: String,
}

/// The reason given: said, and not too long (`422` on `reason` otherwise).
async fn reason(body: PendingBody) -> Result<String, ApiError> {
    let body: ReasonBody = body.json().await?;
    match reason_problem(&body.reason) {
        Some(problem) => Err(ApiError::Validation(vec![problem])),
        None => Ok(body.reason),
    }
}

/// What is wrong with a reason, if anything (the API's `422` and the
/// console's field error alike).
pub(crate) fn reason_problem(reason: &str) -> Option<FieldError> {
    if reason.trim().is_empty() {
        Some(FieldError::new(
            "reason",
            "say why: the reason is kept with the licence and in the audit trail",
        ))
    } else if reason.chars().count() > MAX_REASON {
        Some(FieldError::new(
            "reason",
            format!("must be at most {MAX_REASON} characters"),
        ))
    } else {
        None
    }
}

async fn change(
    state: State,
    principal: Principal,
    own: Option<ResellerId>,
    license_id: String,
    action: LifecycleAction,
) -> Result<HttpResponse, ApiError> {
    // A reseller acts on its own licences only (another's is `404`).
    let request = LifecycleRequest {
        actor: principal.actor(),
        tenant: own,
        license_id,
        action,
    };
    Ok(match state.gate.change_lifecycle(request).await? {
        LifecycleOutcome::Changed { license, decision } => {
            let mut body = json!({ "license": license });
            if let Some(decision) = decision {
                body["decision"] = json!(decision);
            }
            HttpResponse::Ok().json(body)
        }
        LifecycleOutcome::Prohibited { decision } => {
            let mut body = problem_body(
                403,
                "prohibited_transaction",
                "Prohibited transaction",
                "The law prohibits serving this licence now; the decision says why. It stays \
                 suspended.",
            );
            body["decision"] = json!(decision);
            HttpResponse::Forbidden()
                .content_type("application/problem+json")
                .body(body.to_string())
        }
        LifecycleOutcome::InReview { decision } => {
            HttpResponse::Accepted().json(json!({ "decision": decision }))
        }
    })
}

/// `POST /v1/licenses/{id}/revocation` `{"reason"}`: final.
pub async fn revoke(
    state: State,
    principal: Principal,
    path: web::Path<String>,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Reseller, Role::Integrator, Role::Compliance])?;
    // The tenant whose licences the caller may change, resolved before the
    // body is read.
    let own = scope(&state, &principal).await?;
    let license_id = String::from(path_id(path)?);
    let reason = reason(body).await?;
    change(
        state,
        principal,
        own,
        license_id,
        LifecycleAction::Revoke { reason },
    )
    .await
}

/// `POST /v1/licenses/{id}/suspension` `{"reason"}`.
pub async fn suspend(
    state: State,
    principal: Principal,
    path: web::Path<String>,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let license_id = String::from(path_id(path)?);
    let reason = reason(body).await?;
    change(
        state,
        principal,
        None,
        license_id,
        LifecycleAction::Suspend { reason },
    )
    .await
}

/// `DELETE /v1/licenses/{id}/suspension`: reinstate, if the gate allows.
pub async fn reinstate(
    state: State,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let license_id = String::from(path_id(path)?);
    change(
        state,
        principal,
        None,
        license_id,
        LifecycleAction::Reinstate,
    )
    .await
}
