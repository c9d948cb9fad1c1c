//! Licences: issue and renew through the gate (idempotent), read, list, and
//! the public keys that verify licence tokens.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::problem_body;
use super::paging::not_a_parameter;
use super::{path_id, scope, tenant, ApiError, FieldError, Paging, Params, PendingBody, State};
use crate::audit::canonical_json;
use crate::auth::Principal;
use crate::domain::{json_integer, Customer, PlainText, Sku};
use crate::gate::terms::{MAX_SEATS, MAX_TERM_DAYS};
use crate::gate::{License, LicenseAction, LicenseOutcome, LicenseRequest, Licensed};

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;
const MAX_KEY_LEN: usize = 255;

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IssueBody {
    product: Sku,
    customer: Customer,
    #[serde(deserialize_with = "json_integer")]
    seats: i64,
    #[serde(deserialize_with = "json_integer")]
    term_days: i64,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RenewBody {
    #[serde(deserialize_with = "json_integer")]
    term_days: i64,
    #[serde(default)]
    customer: Option<Customer>,
}

/// The `Idempotency-Key` header: required, 1 to 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::IdempotencyKeyRequired(
                "Licence writes need an Idempotency-Key header: a unique value per request (a UUID), \
                 sent again unchanged on every retry."
                    .into(),
            )
        })?
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_string();
    if value.is_empty() || value.len() > MAX_KEY_LEN || !value.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(ApiError::IdempotencyKeyRequired(format!(
            "The Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters."
        )));
    }
    Ok(value)
}

/// A digest of what a request asks: its route and its body, canonically.
fn fingerprint(route: &str, body: &impl serde::Serialize) -> String {
    let value = serde_json::to_value(body).unwrap_or(Value::Null);
    let text = format!("{route}\n{}", canonical_json(&value));
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn check_terms(
    seats: Option<i64>,
    term_days: i64,
    customer: Option<&Customer>,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(seats) = seats {
        if !(1..=MAX_SEATS).contains(&seats) {
            errors.push(FieldError::new(
                "seats",
                format!("must be from 1 to {MAX_SEATS}"),
            ));
        }
    }
    if !(1..=MAX_TERM_DAYS).contains(&term_days) {
        errors.push(FieldError::new(
            "term_days",
            format!("must be from 1 to {MAX_TERM_DAYS}"),
        ));
    }
    if let Some(customer) = customer {
        errors.extend(
            customer
                .problems("customer")
                .into_iter()
                .map(|(f, m)| FieldError::new(f, m)),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// The status and body of each outcome: what is returned, and returned
/// again to every retry with the same idempotency key.
pub fn render(outcome: &LicenseOutcome) -> (u16, Value) {
    match outcome {
        LicenseOutcome::Issued { license, decision } => {
            (201, json!({ "license": license, "decision": decision }))
        }
        LicenseOutcome::Renewed { license, decision } => {
            (200, json!({ "license": license, "decision": decision }))
        }
        LicenseOutcome::Prohibited { decision } => {
            let mut body = problem_body(
                403,
                "prohibited_transaction",
                "Prohibited transaction",
                "The law prohibits this transaction; the decision says why. No licence was written.",
            );
            body["decision"] = json!(decision);
            (403, body)
        }
        LicenseOutcome::InReview { decision } => (202, json!({ "decision": decision })),
    }
}

fn respond(licensed: Licensed) -> HttpResponse {
    crate::telemetry::record_decision(&licensed.outcome.decision().id);
    let (status, body) = render(&licensed.outcome);
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.content_type(if status.is_client_error() || status.is_server_error() {
        "application/problem+json"
    } else {
        "application/json"
    });
    if licensed.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.body(body.to_string())
}

/// `POST /v1/licenses`
pub async fn issue(
    state: State,
    principal: Principal,
    req: HttpRequest,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&state, &principal).await?;
    let key = idempotency_key(&req)?;
    let body: IssueBody = body.json().await?;
    check_terms(Some(body.seats), body.term_days, Some(&body.customer))?;
    let request = LicenseRequest::new(
        principal.actor(),
        tenant,
        key,
        fingerprint("POST /v1/licenses", &body),
        LicenseAction::Issue {
            product: body.product,
            customer: body.customer,
            seats: body.seats,
            term_days: body.term_days,
        },
    );
    Ok(respond(state.gate.license(request).await?))
}

/// `POST /v1/licenses/{id}/renewals`
pub async fn renew(
    state: State,
    principal: Principal,
    req: HttpRequest,
    path: web::Path<String>,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&state, &principal).await?;
    let license_id = String::from(path_id(path)?);
    let key = idempotency_key(&req)?;
    let body: RenewBody = body.json().await?;
    check_terms(None, body.term_days, body.customer.as_ref())?;
    let request = LicenseRequest::new(
        principal.actor(),
        tenant,
        key,
        fingerprint(&format!("POST /v1/licenses/{license_id}/renewals"), &body),
        LicenseAction::Renew {
            license_id,
            term_days: body.term_days,
            customer: body.customer,
        },
    );
    Ok(respond(state.gate.license(request).await?))
}

/// The tenant whose licences the caller may read: its own, or every
/// tenant's (`None`) for compliance.
async fn reader(state: &State, principal: &Principal) -> Result<Option<String>, ApiError> {
    Ok(scope(state, principal).await?.map(|t| t.to_string()))
}

/// `GET /v1/licenses/{id}`
pub async fn get(
    state: State,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let own = reader(&state, &principal).await?;
    let id = path_id(path)?;
    let st = Arc::clone(&state);
    let found = web::block(move || st.store.license(id.as_str())).await??;
    match found {
        Some(l) if own.as_ref().is_none_or(|t| *t == l.reseller) => {
            Ok(HttpResponse::Ok().json(json!(License::from_row(&l, chrono::Utc::now()))))
        }
        _ => Err(ApiError::NotFound),
    }
}

/// `GET /v1/licenses?cursor=&limit=`
pub async fn list(
    state: State,
    principal: Principal,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    let own = reader(&state, &principal).await?;
    let paging = Paging::<PlainText>::read(query, DEFAULT_PAGE, MAX_PAGE, |name, _| {
        Err(not_a_parameter(name))
    })?;
    let st = Arc::clone(&state);
    let page = web::block(move || {
        st.store.licenses(
            own.as_deref(),
            paging.cursor.as_ref().map(|c| c.as_str()),
            paging.limit,
        )
    })
    .await??;
    // A row that does not read back is left out (and logged by the store),
    // never a 500 for the page; `next` still moves past it.
    state
        .metrics
        .unreadable_rows_total
        .with_label_values(&["licenses"])
        .inc_by(page.unreadable);
    let now = chrono::Utc::now();
    let licenses: Vec<License> = page
        .rows
        .iter()
        .map(|l| License::from_row(l, now))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "licenses": licenses, "next": page.next })))
}

/// `GET /v1/keys`: the public keys that verify licence tokens (JWKS): the
/// configured ones, never rows of the database. No token needed: products
/// verify their licences offline.
pub async fn keys(state: State) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "keys": state.gate.keys() })))
}
