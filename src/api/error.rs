//! Every error the API returns, mapped to its status and stable code in one
//! place, rendered as `application/problem+json` (RFC 9457).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::gate::terms::MAX_EXPIRY_YEARS;
use crate::gate::GateError;
use crate::policy::CatalogIssue;
use crate::store::StoreError;

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (or not one JSON value).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A query parameter or header is unusable.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// A request body in a content coding the service does not decode.
    #[error("unsupported content encoding")]
    UnsupportedEncoding,
    /// Well-formed but invalid: the fields say what and where.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden")]
    Forbidden,
    #[error("unknown reseller")]
    UnknownReseller,
    #[error("not found")]
    NotFound,
    /// With the methods the route takes.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// A licence write without an `Idempotency-Key` header (or a bad one).
    #[error("idempotency key required: {0}")]
    IdempotencyKeyRequired(String),
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    #[error("idempotency key in flight")]
    IdempotencyKeyInFlight,
    #[error("review resolved already")]
    ReviewResolved,
    /// What was asked makes no sense for where the licence stands (renewing
    /// a revoked licence, suspending an ended one).
    #[error("licence not in a state for this: {0}")]
    LicenseState(String),
    /// The caller's tenant (or compliance) has as many webhook endpoints as
    /// one owner may.
    #[error("at most {0} webhook endpoints")]
    WebhookEndpointLimit(i64),
    /// The tenant's request rate is over its limit.
    #[error("rate limited")]
    RateLimited(super::limits::Refused),
    /// The body did not arrive within the request timeout.
    #[error("request body timed out")]
    BodyTimeout(std::time::Duration),
    /// Too many requests in flight in this process: try again.
    #[error("overloaded")]
    Overloaded,
    /// The database is unreachable or busy: try again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Callers' tokens cannot be verified: the identity provider's keys are
    /// missing or stale (`/readyz`).
    #[error("keys unavailable: {0}")]
    KeysUnavailable(String),
    /// The database did not confirm the write; it may still be recorded.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A bug or corrupt data; the cause goes to the log, never to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedEncoding => "unsupported_content_encoding",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::UnknownReseller => "unknown_reseller",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::IdempotencyKeyRequired(_) => "idempotency_key_required",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            ApiError::ReviewResolved => "review_resolved",
            ApiError::LicenseState(_) => "license_state_conflict",
            ApiError::WebhookEndpointLimit(_) => "webhook_endpoint_limit",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::KeysUnavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn title_and_detail(&self) -> (&'static str, String) {
        match self {
            ApiError::MalformedJson(m) => (
                "Malformed JSON",
                format!("The request body is not valid JSON: {m}."),
            ),
            ApiError::BadRequest(m) => ("Bad request", m.clone()),
            ApiError::PayloadTooLarge => (
                "Payload too large",
                format!("Request bodies are limited to {MAX_BODY_BYTES} bytes."),
            ),
            ApiError::UnsupportedEncoding => (
                "Unsupported content encoding",
                "Request bodies are taken without a content coding (Content-Encoding absent or identity).".into(),
            ),
            ApiError::Validation(_) => (
                "Validation failed",
                "One or more fields are invalid; see errors.".into(),
            ),
            ApiError::Unauthorized(m) => (
                "Unauthorized",
                format!("A valid bearer token is required: {m}."),
            ),
            ApiError::Forbidden => ("Forbidden", "Your role may not do this.".into()),
            ApiError::UnknownReseller => (
                "Unknown reseller",
                "The reseller named by your token is not registered.".into(),
            ),
            ApiError::NotFound => ("Not found", "There is nothing here for you.".into()),
            ApiError::MethodNotAllowed(_) => (
                "Method not allowed",
                "This route does not take that method.".into(),
            ),
            ApiError::IdempotencyKeyRequired(m) => ("Idempotency key required", m.clone()),
            ApiError::IdempotencyKeyReused => (
                "Idempotency key reused",
                "This Idempotency-Key was used for a different request; use a new key for a new request.".into(),
            ),
            ApiError::RateLimited(r) if r.policy == super::limits::ADDRESS_FAILURES => (
                "Too many requests",
                format!(
                    "Too many failed authentications from your address (the limit is {} a second, bursts of {}); retry after the time in Retry-After with a valid token.",
                    r.limit.rate, r.limit.burst
                ),
            ),
            ApiError::RateLimited(r) => (
                "Too many requests",
                format!(
                    "Your requests are over the limit of {} a second (bursts of {}); retry after the time in Retry-After.",
                    r.limit.rate, r.limit.burst
                ),
            ),
            ApiError::BodyTimeout(t) => (
                "Request timeout",
                format!(
                    "The request body did not arrive within {} s; nothing was recorded.",
                    t.as_secs()
                ),
            ),
            ApiError::Overloaded => (
                "Service overloaded",
                "The service is handling as many requests as it takes at once; nothing was recorded. Retry shortly.".into(),
            ),
            ApiError::ReviewResolved => (
                "Review resolved already",
                "This review has been resolved; a review is resolved once.".into(),
            ),
            ApiError::LicenseState(why) => ("Not possible for this licence now", why.clone()),
            ApiError::WebhookEndpointLimit(max) => (
                "Too many webhook endpoints",
                format!(
                    "You have {max} webhook endpoints, the most one tenant (or compliance) may have; disabled ones count until deleted. Delete one (DELETE /v1/webhook-endpoints/{{id}}) before creating another; nothing was recorded."
                ),
            ),
            ApiError::IdempotencyKeyInFlight => (
                "Request in flight",
                "The first request with this Idempotency-Key is still being processed; retry shortly.".into(),
            ),
            ApiError::Unavailable(_) => (
                "Service unavailable",
                "The service cannot reach its database; nothing was recorded. Retry later.".into(),
            ),
            ApiError::KeysUnavailable(reason) => (
                "Service unavailable",
                format!("Callers' tokens cannot be verified: {reason}. Retry later."),
            ),
            ApiError::OutcomeUnknown(_) => (
                "Service unavailable",
                "The database did not confirm the request in time; it may still be recorded. Retry later, with the same Idempotency-Key for a licence, to get its result.".into(),
            ),
            ApiError::Internal(_) => (
                "Internal error",
                "The service failed; nothing was recorded.".into(),
            ),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::BadRequest(_)
            | ApiError::IdempotencyKeyRequired(_) => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::IdempotencyKeyInFlight
            | ApiError::ReviewResolved
            | ApiError::LicenseState(_)
            | ApiError::WebhookEndpointLimit(_) => StatusCode::CONFLICT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::UnknownReseller => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::KeysUnavailable(_)
            | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(error = %cause, "database unavailable"),
            ApiError::OutcomeUnknown(cause) => {
                tracing::warn!(error = %cause, "database did not confirm a write")
            }
            // Failed authentication is logged, sampled, where the token is
            // verified; the provider's failures, by its refresher.
            ApiError::Unauthorized(_) | ApiError::KeysUnavailable(_) => {}
            // A refusal is logged by its code and the fields it names, never by
            // its message: a validation message may quote the caller's value (a
            // customer's name or id), which stays out of the logs.
            refused => {
                let fields: Vec<&str> = match refused {
                    ApiError::Validation(errors) => {
                        errors.iter().map(|e| e.field.as_str()).collect()
                    }
                    _ => Vec::new(),
                };
                tracing::warn!(
                    status = status.as_u16(),
                    code = refused.code(),
                    fields = ?fields,
                    "request refused"
                );
            }
        }
        let (title, detail) = self.title_and_detail();
        let mut body = problem_body(status.as_u16(), self.code(), title, &detail);
        if let ApiError::Validation(errors) = self {
            body["errors"] = serde_json::json!(errors);
        }
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::Unavailable(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::KeysUnavailable(_)
            | ApiError::IdempotencyKeyInFlight => {
                response.insert_header((header::RETRY_AFTER, "2"));
            }
            ApiError::Overloaded => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::BodyTimeout(_) => {
                // The rest of the body may still be on its way: do not read it.
                response.insert_header((header::CONNECTION, "close"));
            }
            ApiError::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::UnsupportedEncoding => {
                // RFC 7694: the codings the service takes.
                response.insert_header((header::ACCEPT_ENCODING, "identity"));
            }
            ApiError::RateLimited(r) => {
                response.insert_header((header::RETRY_AFTER, r.retry_after_secs.to_string()));
                // draft-ietf-httpapi-ratelimit-headers: the policy, and what is left.
                response.insert_header((
                    "RateLimit-Policy",
                    format!("\"{}\";q={};w=1", r.policy, r.limit.burst),
                ));
                response.insert_header((
                    "RateLimit",
                    format!("\"{}\";r=0;t={}", r.policy, r.retry_after_secs),
                ));
            }
            _ => {}
        }
        response.body(body.to_string())
    }
}

/// The members every problem+json body has.
pub fn problem_body(status: u16, code: &str, title: &str, detail: &str) -> serde_json::Value {
    serde_json::json!({
        "type": format!("urn:license-gatekeeper:problem:{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(issues) => ApiError::Validation(issues_to_fields(&issues)),
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Stale => ApiError::Unavailable("the catalogue kept changing".into()),
            // Issue 3: a database error at any point is 503 with Retry-After
            // (nothing was written; the cause goes to the log).
            StoreError::Database(e) => ApiError::Unavailable(e.to_string()),
            StoreError::Pool(e) => ApiError::Unavailable(e.to_string()),
            StoreError::Corrupt(m) => ApiError::Internal(m),
            StoreError::BatchFailed(m) => ApiError::Unavailable(m),
            StoreError::OutcomeUnknown(m) => ApiError::OutcomeUnknown(m),
            StoreError::Conflict => ApiError::Unavailable("the licence kept changing".into()),
            StoreError::ReviewNotOpen => ApiError::ReviewResolved,
            StoreError::Unvouched(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::UnknownReseller => ApiError::UnknownReseller,
            GateError::UnknownProduct => {
                ApiError::field("product", "no product with this SKU is in the catalogue")
            }
            GateError::NotFound => ApiError::NotFound,
            GateError::KeyReused => ApiError::IdempotencyKeyReused,
            GateError::KeyInFlight => ApiError::IdempotencyKeyInFlight,
            GateError::ReviewResolved => ApiError::ReviewResolved,
            GateError::StillInReview => ApiError::field(
                "customer.us_person",
                "attest whether the customer is a U.S. person: with these facts the decision is still a review",
            ),
            GateError::CustomerChanged => ApiError::field(
                "customer.id",
                "must stay the customer of the licence (or of the request under review): facts about \
                 the same customer may be updated, never its id; a licence for another customer is a \
                 new issue",
            ),
            GateError::TermTooLong { max_days } => ApiError::field(
                "term_days",
                match max_days {
                    0 => format!(
                        "would make the licence expire more than {MAX_EXPIRY_YEARS} years from now; \
                         it cannot be extended further yet"
                    ),
                    n => format!(
                        "would make the licence expire more than {MAX_EXPIRY_YEARS} years from now; \
                         at most {n} days can be added now"
                    ),
                },
            ),
            GateError::Signing(cause) => ApiError::Internal(cause),
            GateError::Invalid(fields) => ApiError::Validation(
                fields
                    .into_iter()
                    .map(|(field, message)| FieldError::new(field, message))
                    .collect(),
            ),
            GateError::NotActive(standing) => ApiError::LicenseState(format!(
                "The licence is {standing}: only an active licence can be renewed or suspended, \
                 only a suspended one reinstated, and a revoked or ended licence stays so."
            )),
            GateError::EndpointLimit { max } => ApiError::WebhookEndpointLimit(max),
            GateError::Store(e) => e.into(),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(format!("blocking task failed: {e}"))
    }
}

/// Catalogue issues as request-body field errors. Issues about the entity
/// being written name its body fields; issues elsewhere say where they are.
pub fn issues_to_fields(issues: &[CatalogIssue]) -> Vec<FieldError> {
    issues
        .iter()
        .map(|i| FieldError::new(i.field.clone(), i.message.clone()))
        .collect()
}
