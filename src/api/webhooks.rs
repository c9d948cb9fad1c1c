//! Webhook endpoints: `POST` and `GET /v1/webhook-endpoints`, `GET` and
//! `DELETE /v1/webhook-endpoints/{id}`, `POST
//! /v1/webhook-endpoints/{id}/rotation`. A reseller or integrator manages
//! its own tenant's endpoints, compliance its own (every tenant's events);
//! admins none. Another owner's endpoint is `404`. The secret is in the
//! answers of the creation and the rotation only.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::paging::not_a_parameter;
use super::{path_id, scope, ApiError, Paging, Params, PendingBody, State};
use crate::auth::{Principal, Role};
use crate::domain::{PlainText, ResellerId};
use crate::gate::webhooks::MAX_ENDPOINTS;
use crate::gate::NewEndpoint;

/// The most endpoints a page lists (an owner has at most
/// [`MAX_ENDPOINTS`], so the default page holds them all).
const MAX_PAGE: i64 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    /// `None` (left out, or `null`): every type.
    #[serde(default)]
    event_types: Option<Vec<String>>,
}

/// A rotation takes no body; an empty object is allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {}

/// Whose endpoints the caller manages: its own tenant's (a reseller's or
/// integrator's, registered, taken from its rate limit), or compliance's
/// (`None`). Admins manage none (`403`). Resolved before a body is read.
async fn owner(state: &State, principal: &Principal) -> Result<Option<ResellerId>, ApiError> {
    principal.require(&[Role::Reseller, Role::Integrator, Role::Compliance])?;
    scope(state, principal).await
}

/// `POST /v1/webhook-endpoints` `{"url", "event_types"?}`: `201` with the
/// endpoint and its secret.
pub async fn create(
    state: State,
    principal: Principal,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &principal).await?;
    let body: CreateBody = body.json().await?;
    let created = state
        .gate
        .create_webhook_endpoint(NewEndpoint {
            actor: principal.actor(),
            owner,
            url: body.url,
            event_types: body.event_types,
        })
        .await?;
    let mut reply = json!(created.endpoint);
    reply["secret"] = json!(created.secret);
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/v1/webhook-endpoints/{}", created.endpoint.id),
        ))
        .json(reply))
}

/// `GET /v1/webhook-endpoints?limit=&cursor=`: the caller's endpoints.
pub async fn list(
    state: State,
    principal: Principal,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &principal).await?;
    let paging = Paging::<PlainText>::read(query, MAX_ENDPOINTS, MAX_PAGE, |name, _| {
        Err(not_a_parameter(name))
    })?;
    let cursor = paging.cursor.map(String::from);
    let page = state
        .gate
        .webhook_endpoints(owner, cursor, paging.limit)
        .await?;
    state
        .metrics
        .unreadable_rows_total
        .with_label_values(&["webhook_endpoints"])
        .inc_by(page.unreadable);
    Ok(HttpResponse::Ok().json(json!({ "webhook_endpoints": page.rows, "next": page.next })))
}

/// `GET /v1/webhook-endpoints/{id}`
pub async fn get(
    state: State,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &principal).await?;
    let id = String::from(path_id(path)?);
    let endpoint = state.gate.webhook_endpoint(owner, id).await?;
    Ok(HttpResponse::Ok().json(json!(endpoint)))
}

/// `DELETE /v1/webhook-endpoints/{id}`: `204`.
pub async fn delete(
    state: State,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &principal).await?;
    let id = String::from(path_id(path)?);
    state
        .gate
        .delete_webhook_endpoint(principal.actor(), owner, id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/webhook-endpoints/{id}/rotation`: `200` with the endpoint, its
/// new secret and when the previous one stops signing.
pub async fn rotate(
    state: State,
    principal: Principal,
    path: web::Path<String>,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&state, &principal).await?;
    let id = String::from(path_id(path)?);
    let body = body.read().await?;
    if !body.0.trim_ascii().is_empty() {
        body.json::<RotateBody>()?;
    }
    let rotated = state
        .gate
        .rotate_webhook_secret(principal.actor(), owner, id)
        .await?;
    let mut reply = json!(rotated.endpoint);
    reply["secret"] = json!(rotated.secret);
    reply["previous_secret_expires_at"] = json!(rotated.previous_secret_expires_at);
    Ok(HttpResponse::Ok().json(reply))
}
