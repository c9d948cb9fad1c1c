//! The HTTP surface: thin handlers that parse, authorise, call the gate and
//! map the result. Routes are registered in [`routes`] only.

pub mod audit;
pub(crate) mod catalog;
mod decisions;
pub mod error;
mod events;
pub(crate) mod impact;
mod licenses;
pub(crate) mod lifecycle;
pub mod limits;
mod ops;
mod paging;
pub(crate) mod reviews;
mod status_lists;
mod webhooks;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

pub use error::{ApiError, FieldError, MAX_BODY_BYTES};
pub use paging::{Paging, Seq};

use crate::auth::{Authenticator, Principal, Role};
use crate::domain::{Actor, PlainText, ResellerId};
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::policy::{DesignationSpec, OrganizationSpec, ProductSpec, ResellerSpec};
use crate::store::Store;

/// What every handler shares.
pub struct AppState {
    pub gate: Gate,
    /// The database, for what handlers read from it directly (listings,
    /// single rows, readiness, verification).
    pub store: Store,
    pub auth: Authenticator,
    pub metrics: Metrics,
    /// Per-tenant request limits; `None` when off.
    pub limiter: Option<limits::RateLimiter>,
    /// Per-address limits on failed authentications; `None` when off.
    pub auth_failures: Option<limits::RateLimiter>,
    /// The `/v1` requests being handled, and the cap on them.
    pub in_flight: limits::InFlight,
    /// How long a request body may take to arrive (`408` past it).
    pub request_timeout: std::time::Duration,
    /// One warning line now and then for failed authentications, not one
    /// each.
    pub auth_failure_log: crate::telemetry::Sampled,
    /// The database's last readiness answer, reused briefly.
    pub readiness: ops::Readiness,
    /// The compliance console, when it is served (`None`: `/console/` is
    /// `404`).
    pub console: Option<crate::console::Console>,
}

pub type State = web::Data<Arc<AppState>>;

/// Every route of the service. `openapi.yaml` documents exactly these.
///
/// The router tries resources in the order they are registered, and each
/// pattern with a parameter that it passes costs a regex match (about 2.4%
/// of the machine's time during preflights when `/v1/decisions` came after
/// six such patterns): the write paths come first, the rest as the
/// reference reads. No two patterns match the same path, so the order
/// changes no answer.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/decisions", "POST").route(web::post().to(decisions::create)))
        .service(
            resource("/v1/licenses", "GET, POST")
                .route(web::get().to(licenses::list))
                .route(web::post().to(licenses::issue)),
        )
        .service(
            resource("/v1/licenses/{id}/renewals", "POST").route(web::post().to(licenses::renew)),
        )
        .service(resource("/healthz", "GET").route(web::get().to(ops::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(ops::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
        .service(
            resource("/v1/resellers", "GET").route(web::get().to(catalog::list::<ResellerSpec>)),
        )
        .service(
            resource("/v1/resellers/{id}", "GET, PUT")
                .route(web::get().to(catalog::get::<ResellerSpec>))
                .route(web::put().to(catalog::put::<ResellerSpec>)),
        )
        .service(
            resource("/v1/organizations", "GET")
                .route(web::get().to(catalog::list::<OrganizationSpec>)),
        )
        .service(
            resource("/v1/organizations/{id}", "GET, PUT")
                .route(web::get().to(catalog::get::<OrganizationSpec>))
                .route(web::put().to(catalog::put::<OrganizationSpec>)),
        )
        .service(
            resource(
                "/v1/organizations/{id}/relationships/{target}",
                "GET, PUT, DELETE",
            )
            .route(web::get().to(catalog::get_relationship))
            .route(web::put().to(catalog::put_relationship))
            .route(web::delete().to(catalog::delete_relationship)),
        )
        .service(resource("/v1/products", "GET").route(web::get().to(catalog::list::<ProductSpec>)))
        .service(
            resource("/v1/products/{sku}", "GET, PUT")
                .route(web::get().to(catalog::get::<ProductSpec>))
                .route(web::put().to(catalog::put::<ProductSpec>)),
        )
        .service(
            resource("/v1/designations", "GET")
                .route(web::get().to(catalog::list::<DesignationSpec>)),
        )
        .service(
            resource("/v1/designations/{id}", "GET, PUT")
                .route(web::get().to(catalog::get::<DesignationSpec>))
                .route(web::put().to(catalog::put::<DesignationSpec>)),
        )
        .service(resource("/v1/decisions/{id}", "GET").route(web::get().to(decisions::get)))
        .service(resource("/v1/licenses/{id}", "GET").route(web::get().to(licenses::get)))
        .service(
            resource("/v1/licenses/{id}/revocation", "POST")
                .route(web::post().to(lifecycle::revoke)),
        )
        .service(
            resource("/v1/licenses/{id}/suspension", "POST, DELETE")
                .route(web::post().to(lifecycle::suspend))
                .route(web::delete().to(lifecycle::reinstate)),
        )
        .service(resource("/v1/keys", "GET").route(web::get().to(licenses::keys)))
        .service(resource("/v1/status-lists/{k}", "GET").route(web::get().to(status_lists::get)))
        .service(resource("/v1/reviews", "GET").route(web::get().to(reviews::list)))
        .service(resource("/v1/reviews/{id}", "POST").route(web::post().to(reviews::resolve)))
        .service(resource("/v1/impact-previews", "POST").route(web::post().to(impact::preview)))
        .service(resource("/v1/impact-runs", "GET").route(web::get().to(impact::list)))
        .service(resource("/v1/impact-runs/{id}", "GET").route(web::get().to(impact::get)))
        .service(
            resource("/v1/impact-runs/{id}/licenses", "GET").route(web::get().to(impact::licenses)),
        )
        .service(resource("/v1/events", "GET").route(web::get().to(events::list)))
        .service(
            resource("/v1/webhook-endpoints", "GET, POST")
                .route(web::get().to(webhooks::list))
                .route(web::post().to(webhooks::create)),
        )
        .service(
            resource("/v1/webhook-endpoints/{id}", "GET, DELETE")
                .route(web::get().to(webhooks::get))
                .route(web::delete().to(webhooks::delete)),
        )
        .service(
            resource("/v1/webhook-endpoints/{id}/rotation", "POST")
                .route(web::post().to(webhooks::rotate)),
        )
        .service(resource("/v1/audit", "GET").route(web::get().to(audit::list)))
        .service(resource("/v1/audit/verify", "GET").route(web::get().to(audit::verify)))
        .service(
            resource("/v1/audit/checkpoints", "GET, POST")
                .route(web::get().to(audit::checkpoints))
                .route(web::post().to(audit::sign_checkpoint)),
        );
}

/// Only `/metrics`, for a separate metrics listener.
pub fn metrics_only(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", "GET").route(web::get().to(ops::metrics)));
}

/// A resource whose other methods answer `405` as problem+json, with the
/// `Allow` header listing `allow` (RFC 9110).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<String, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// Answers every unrouted path.
pub async fn not_found() -> Result<String, ApiError> {
    Err(ApiError::NotFound)
}

/// The query parameters of a request, each given at most once: a parameter
/// given twice is `422` naming it (rather than one of its values silently
/// winning). A listing still refuses the names it does not take.
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub fn into_inner(self) -> HashMap<String, String> {
        self.0
    }

    /// Parses a query string (without the `?`).
    pub fn parse(query: &str) -> Result<Params, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| ApiError::BadRequest(format!("the query string is malformed: {e}")))?
            .into_inner();
        let mut params = HashMap::with_capacity(pairs.len());
        let mut repeated = BTreeSet::new();
        for (name, value) in pairs {
            match params.entry(name) {
                Entry::Occupied(given) => {
                    repeated.insert(given.key().clone());
                }
                Entry::Vacant(first) => {
                    first.insert(value);
                }
            }
        }
        if repeated.is_empty() {
            Ok(Params(params))
        } else {
            Err(ApiError::Validation(
                repeated
                    .into_iter()
                    .map(|name| FieldError::new(name, REPEATED_PARAMETER))
                    .collect(),
            ))
        }
    }
}

/// What a parameter given twice is told.
pub const REPEATED_PARAMETER: &str = "must be given at most once";

impl FromRequest for Params {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Params, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Params::parse(req.query_string()))
    }
}

/// An id the service made, from a path (a decision, licence or review id):
/// one with a control or format character names nothing, so `404` without
/// asking the database (PostgreSQL cannot even compare a NUL).
pub fn path_id(path: web::Path<String>) -> Result<PlainText, ApiError> {
    PlainText::try_from(path.into_inner()).map_err(|_| ApiError::NotFound)
}

/// Refuses a request body in a content coding the service does not decode
/// (anything but `identity`) with `415`, before the body is read: actix-web
/// is built without its decompression features, so such a body would reach
/// the JSON parser as it is. A request without a body may carry the header.
pub fn refuse_encoded_body(req: &HttpRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    let has_body = headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || headers
            .get(actix_web::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() != b"0");
    if !has_body {
        return Ok(());
    }
    for value in headers.get_all(actix_web::http::header::CONTENT_ENCODING) {
        let codings = value.to_str().unwrap_or("?");
        if codings
            .split(',')
            .map(str::trim)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        {
            return Err(ApiError::UnsupportedEncoding);
        }
    }
    Ok(())
}

/// [`refuse_encoded_body`] as middleware, for every route.
pub async fn encoded_bodies(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    match refuse_encoded_body(req.request()) {
        Ok(()) => next.call(req).await.map(|r| r.map_into_left_body()),
        Err(e) => Ok(req.error_response(e).map_into_right_body()),
    }
}

/// A request body, read: what [`PendingBody::read`] returns.
pub struct Body(pub web::Bytes);

/// A request body not yet read. Handlers read it only after they have
/// authorised the caller and taken from its tenant's limit, so that a caller
/// that may not make the request, or has made too many, never holds a
/// connection open by sending its body slowly. Reading takes at most
/// `GATEKEEPER_REQUEST_TIMEOUT` (`408` past it) and [`MAX_BODY_BYTES`]
/// (`413` past that, at once when `Content-Length` says so).
pub struct PendingBody {
    payload: Payload,
    declared: Option<usize>,
    timeout: std::time::Duration,
}

impl FromRequest for PendingBody {
    type Error = ApiError;
    type Future = std::future::Ready<Result<PendingBody, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let timeout = req
            .app_data::<State>()
            .map(|s| s.request_timeout)
            .unwrap_or(DEFAULT_BODY_TIMEOUT);
        std::future::ready(Ok(PendingBody {
            payload: payload.take(),
            declared,
            timeout,
        }))
    }
}

/// The body timeout where no application state says otherwise.
const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl PendingBody {
    /// Reads the whole body: `413` past [`MAX_BODY_BYTES`], `408` when it
    /// has not arrived within the request timeout.
    pub async fn read(mut self) -> Result<Body, ApiError> {
        if self.declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(ApiError::PayloadTooLarge);
        }
        let timeout = self.timeout;
        let read = async move {
            let mut body = web::BytesMut::new();
            while let Some(chunk) = self.payload.next().await {
                let chunk =
                    chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(ApiError::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Body(body.freeze()))
        };
        actix_web::rt::time::timeout(timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout(timeout))?
    }

    /// Reads the body and parses it as `T` ([`Body::json`]).
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        self.read().await?.json()
    }
}

impl Body {
    /// Parses the body as `T`: not JSON is `400`; JSON of the wrong shape
    /// (unknown or missing fields, wrong types, invalid values, a number too
    /// large for a double such as `1e400`) is `422` naming the field.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(&self.0);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = strip_position(&inner.to_string());
            match inner.classify() {
                serde_json::error::Category::Data => {
                    ApiError::field(field_of(&path, &message), message)
                }
                // Valid JSON (RFC 8259 sets no range) whose value cannot be held: serde_json
                // reports it as a syntax error, which only its message tells apart.
                serde_json::error::Category::Syntax if message == NUMBER_OUT_OF_RANGE => {
                    ApiError::field(field_of(&path, &message), message)
                }
                _ => ApiError::MalformedJson(message),
            }
        })?;
        de.end()
            .map_err(|e| ApiError::MalformedJson(strip_position(&e.to_string())))?;
        Ok(value)
    }
}

/// The request bodies whose types are private to their handlers.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuzzBody {
    Preflight,
    LicenseIssue,
    LicenseRenewal,
    ReviewResolution,
}

/// Parses `bytes` as the handler for `kind` does ([`Body::json`]); for the
/// fuzz targets in `fuzz/` only.
#[doc(hidden)]
pub fn parse_body_for_fuzzing(kind: FuzzBody, bytes: &[u8]) -> Result<(), ApiError> {
    let body = Body(web::Bytes::copy_from_slice(bytes));
    match kind {
        FuzzBody::Preflight => body.json::<decisions::PreflightBody>().map(drop),
        FuzzBody::LicenseIssue => body.json::<licenses::IssueBody>().map(drop),
        FuzzBody::LicenseRenewal => body.json::<licenses::RenewBody>().map(drop),
        FuzzBody::ReviewResolution => body.json::<reviews::ResolveBody>().map(drop),
    }
}

/// The field a serde error is about: its path, completed with the name of
/// a missing field (serde reports those at the parent object).
fn field_of(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(name)) => name.to_string(),
        (".", None) => "body".to_string(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (parent, None) => parent.to_string(),
    }
}

/// serde_json's message for a number beyond the range of a double (`1e400`).
const NUMBER_OUT_OF_RANGE: &str = "number out of range";

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Principal, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

/// Verifies the caller's token. An address whose failed authentications
/// are over their limit is refused (`429`) before its token is looked at;
/// each failure is counted in `gatekeeper_auth_failures_total{reason}` and
/// logged now and then, never once per request (a flood of bad tokens must
/// not be a flood of log lines).
async fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<State>()
        .ok_or_else(|| ApiError::Internal("no application state".into()))?;
    let address = req.peer_addr().map(|a| a.ip().to_string());
    if let (Some(limiter), Some(address)) = (&state.auth_failures, &address) {
        if let Some(refused) = limiter.refused(address) {
            state.metrics.auth_failure("address_limited");
            return Err(ApiError::RateLimited(refused));
        }
    }
    verify_bearer(state, req).await.inspect_err(|(reason, error)| {
        state.metrics.auth_failure(reason);
        // A token refused because the provider's keys are missing or stale
        // is not the caller's failure: it does not count against its address.
        if let (Some(limiter), Some(address), false) = (
            &state.auth_failures,
            &address,
            *reason == "keys_unavailable",
        ) {
            let _ = limiter.take(address);
        }
        if let Some(suppressed) = state.auth_failure_log.due() {
            tracing::warn!(
                reason,
                address = address.as_deref().unwrap_or("unknown"),
                error = %error,
                suppressed,
                "authentication failed (one line every {}s; `suppressed` counts the failures not logged since the last)",
                crate::telemetry::Sampled::EVERY.as_secs()
            );
        }
    })
    .map_err(|(_, error)| error)
}

/// The bearer token's principal, or why there is none (a reason for the
/// metric, and the `401`). A token naming a `kid` the identity provider's
/// set does not hold waits for one shared, rate-limited refresh of the set.
async fn verify_bearer(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Principal, (&'static str, ApiError)> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            (
                "missing_token",
                ApiError::Unauthorized("the Authorization header is missing".into()),
            )
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            (
                "malformed_header",
                ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".into()),
            )
        })?;
    state
        .auth
        .authenticate(token)
        .await
        .map_err(|e| (e.reason, ApiError::Unauthorized(e.message)))
}

impl Principal {
    /// `403 forbidden` unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            sub: self.sub.clone(),
            role: self.role.as_str().to_string(),
            reseller: self.reseller.as_ref().map(|r| r.to_string()),
        }
    }
}

/// The caller's tenant, which must be registered (`403 unknown_reseller`).
/// Only resellers and integrators have one.
async fn tenant(state: &State, principal: &Principal) -> Result<ResellerId, ApiError> {
    principal.require(&[Role::Reseller, Role::Integrator])?;
    let id = principal
        .reseller
        .clone()
        .ok_or(ApiError::UnknownReseller)?;
    crate::telemetry::record_tenant(id.as_str());
    if let Some(limiter) = &state.limiter {
        limiter.take(id.as_str()).map_err(ApiError::RateLimited)?;
    }
    if state.gate.is_registered(&id).await? {
        Ok(id)
    } else {
        Err(ApiError::UnknownReseller)
    }
}

/// The tenant the caller acts for: its own (as [`tenant`]: registered,
/// taken from its rate limit), or every tenant's (`None`) for compliance.
/// Handlers that read a body resolve it first (see [`PendingBody`]).
async fn scope(state: &State, principal: &Principal) -> Result<Option<ResellerId>, ApiError> {
    match principal.role {
        Role::Compliance => Ok(None),
        _ => tenant(state, principal).await.map(Some),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn fields(kind: FuzzBody, body: &str) -> Result<(), Vec<(String, String)>> {
        parse_body_for_fuzzing(kind, body.as_bytes()).map_err(|e| match e {
            ApiError::Validation(errors) => {
                errors.into_iter().map(|e| (e.field, e.message)).collect()
            }
            other => panic!("{body}: {other:?}"),
        })
    }

    #[test]
    fn integer_fields_take_numbers_without_a_fractional_part() {
        let issue = |seats: &str, term_days: &str| {
            fields(
                FuzzBody::LicenseIssue,
                &format!(
                    r#"{{"product": "KAV", "customer": {{"id": "c", "name": "n", "country": "DE"}},
                         "seats": {seats}, "term_days": {term_days}}}"#
                ),
            )
        };
        assert_eq!(issue("3", "30"), Ok(()));
        assert_eq!(issue("3.0", "30.0"), Ok(()));
        assert_eq!(issue("3e0", "3e1"), Ok(()));
        for (seats, term_days, field) in [
            ("2.5", "30", "seats"),
            ("3", "30.5", "term_days"),
            ("1e19", "30", "seats"),
            ("9223372036854775808", "30", "seats"),
            ("1e400", "30", "seats"),
            ("3", "-1e400", "term_days"),
            ("\"3\"", "30", "seats"),
        ] {
            let errors = issue(seats, term_days).unwrap_err();
            assert_eq!(errors.len(), 1, "{seats} {term_days}: {errors:?}");
            assert_eq!(errors[0].0, field, "{seats} {term_days}: {errors:?}");
        }
        let renew = |term_days: &str| {
            fields(
                FuzzBody::LicenseRenewal,
                &format!(r#"{{"term_days": {term_days}}}"#),
            )
        };
        assert_eq!(renew("30.0"), Ok(()));
        let errors = renew("30.25").unwrap_err();
        assert_eq!(errors[0].0, "term_days");
        assert_eq!(errors[0].1, crate::domain::INTEGER_RULE);
        // Malformed JSON is still 400.
        assert!(matches!(
            parse_body_for_fuzzing(FuzzBody::LicenseRenewal, b"{\"term_days\": 3.}"),
            Err(ApiError::MalformedJson(_))
        ));
    }
}
