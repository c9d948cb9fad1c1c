//! The compliance console: server-rendered pages under `/console/` for
//! compliance officers and admins, beside the API and on the same use cases
//! (`Gate`), so that every action is audited with the signed-in person as
//! its actor.
//!
//! Sign-in is through the identity provider (`oidc`: authorization code with
//! PKCE, when `GATEKEEPER_CONSOLE_CLIENT_ID` is set), or, in development mode
//! only, local (a name and a role). Without either the console is not served
//! (`404`).
//!
//! What it holds so far (issue 18 is under way): the review queue, each case
//! with its evidence (request, parties, reasons with designation, rule,
//! citation, instant and lineage path), and its resolution (approve with
//! attested facts, or reject, with a note); licences; the audit trail.
//!
//! Safe by default:
//! - **Session:** a signed cookie (`session`), `HttpOnly`, `SameSite=Strict`,
//!   `Path=/console`, and `Secure` unless in development mode on loopback.
//! - **State changes** (every `POST`): the session's CSRF token in the form,
//!   and an `Origin` (or `Sec-Fetch-Site: same-origin`) of this service;
//!   otherwise `403` and nothing done.
//! - **Every answer:** a Content-Security-Policy allowing only this origin's
//!   stylesheet (no script, no inline style), `no-store`, no framing, the
//!   referrer to this origin only (`no-referrer` would make browsers send
//!   `Origin: null` with the forms, which the origin check then refuses);
//!   everything interpolated is escaped (maud).
//! - **Roles:** compliance and admin sign in; resellers and integrators are
//!   refused. Resolving a review is compliance's, as in the API.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::Markup;
use serde::Deserialize;
use serde_json::Value;

use crate::api::lifecycle::reason_problem;
use crate::api::reviews::{resolution_problems, review_item};
use crate::api::{ApiError, AppState, State};
use crate::auth::Role;
use crate::domain::{Actor, Customer, PlainText, ResellerId, Sku};
use crate::gate::{
    License, LifecycleAction, LifecycleOutcome, LifecycleRequest, Resolution, ReviewResolution,
};
use crate::store::licenses::LicenseSearch;

mod catalogue;
mod impact;
pub mod oidc;
mod pages;
pub mod session;

use oidc::{ConsoleClient, Failure, CALLBACK_PATH, LOGIN_COOKIE};
use pages::FieldProblem;
use session::{csrf_matches, tokens_match, Session, Sessions, COOKIE};

/// The console's settings, in the serving state.
#[derive(Clone, Debug)]
pub struct Console {
    sessions: Sessions,
    /// Development mode: the local sign-in, and `Secure` relaxed on loopback.
    development: bool,
    /// The sign-in through the identity provider, when configured.
    client: Option<ConsoleClient>,
}

impl Console {
    /// The console of a service in development mode (`development`) or not,
    /// signing sessions with `key`, signing people in through `client` when
    /// given. `None` when neither sign-in is available.
    pub fn new(key: [u8; 32], development: bool, client: Option<ConsoleClient>) -> Option<Self> {
        (development || client.is_some()).then(|| Console {
            sessions: Sessions::new(key),
            development,
            client,
        })
    }
}

/// The stylesheet, the console's only asset.
const STYLESHEET: &str = include_str!("console.css");

/// Where a person starts: the review queue for compliance, the catalogue
/// for admins.
fn start_page(session: &Session) -> &'static str {
    match session.role {
        Role::Compliance => "/console/reviews",
        _ => "/console/catalogue",
    }
}

/// Every console route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .route("", web::get().to(home))
            .route("/", web::get().to(home))
            .route("/static/console.css", web::get().to(stylesheet))
            .route("/sign-in", web::get().to(sign_in_page))
            .route("/sign-in", web::post().to(sign_in))
            .route("/sign-in/provider", web::get().to(sign_in_at_provider))
            .route("/callback", web::get().to(callback))
            .route("/sign-out", web::post().to(sign_out))
            .route("/reviews", web::get().to(queue))
            .route("/reviews/{id}", web::get().to(review))
            .route("/reviews/{id}", web::post().to(resolve))
            .route("/audit", web::get().to(audit))
            .route("/audit/export", web::get().to(export))
            .route("/audit/verification", web::get().to(verification))
            .route("/licenses", web::get().to(licenses))
            .route("/licenses/{id}", web::get().to(license))
            .route("/licenses/{id}/{action}", web::post().to(change_license))
            .route("/impact", web::get().to(impact::runs))
            .route("/impact/preview", web::get().to(impact::preview_form))
            .route("/impact/preview", web::post().to(impact::preview))
            .route("/impact/{id}", web::get().to(impact::run))
            .configure(catalogue::routes)
            .default_service(web::to(|| async {
                page(StatusCode::NOT_FOUND, not_found())
            })),
    );
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn not_found() -> Markup {
    pages::problem(None, 404, "There is no such page.")
}

/// An HTML answer with the console's headers.
fn page(status: StatusCode, body: Markup) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    headers(&mut response);
    response
        .content_type("text/html; charset=utf-8")
        .body(body.into_string())
}

fn headers(response: &mut actix_web::HttpResponseBuilder) {
    response
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
}

/// A `303` to `to`, with the console's headers (and a cookie, if given).
fn see_other(to: &str, cookie: Option<String>) -> HttpResponse {
    let mut response = HttpResponse::SeeOther();
    headers(&mut response);
    response.insert_header((header::LOCATION, to));
    if let Some(cookie) = cookie {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.insert_header((header::SET_COOKIE, value));
        }
    }
    response.finish()
}

/// The console of the serving state, when it is served.
fn console(state: &State) -> Option<&Console> {
    state.console.as_ref()
}

/// The request's session, if its cookie holds one.
fn session_of(console: &Console, req: &HttpRequest) -> Option<Session> {
    cookies(req, COOKIE).find_map(|value| console.sessions.open_cookie(value, now()))
}

/// The session's `Set-Cookie` value for `value` (empty and expired to sign
/// out).
fn cookie(console: &Console, req: &HttpRequest, value: &str, max_age: i64) -> String {
    set_cookie(console, req, (COOKIE, "/console", "Strict"), value, max_age)
}

/// The login's `Set-Cookie` value (see `oidc`: `Lax`, the callback only).
fn login_cookie(console: &Console, req: &HttpRequest, value: &str, max_age: i64) -> String {
    set_cookie(
        console,
        req,
        (LOGIN_COOKIE, CALLBACK_PATH, "Lax"),
        value,
        max_age,
    )
}

/// A `Set-Cookie` value for the cookie `(name, path, same_site)`: always
/// `HttpOnly`, and `Secure` unless in development mode from loopback.
fn set_cookie(
    console: &Console,
    req: &HttpRequest,
    (name, path, same_site): (&str, &str, &str),
    value: &str,
    max_age: i64,
) -> String {
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let secure = if console.development && loopback {
        ""
    } else {
        "; Secure"
    };
    format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    )
}

/// The value of the request's cookie `name`, each one in turn.
fn cookies<'r>(req: &'r HttpRequest, name: &'r str) -> impl Iterator<Item = &'r str> + 'r {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Whether a state-changing request comes from this service's own pages:
/// its `Origin` is this service's, or (without one) the browser says
/// `Sec-Fetch-Site: same-origin`.
fn same_origin(req: &HttpRequest) -> bool {
    let info = req.connection_info();
    let ours = format!("{}://{}", info.scheme(), info.host());
    match req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    {
        Some(origin) => origin == ours,
        None => {
            req.headers()
                .get("sec-fetch-site")
                .and_then(|s| s.to_str().ok())
                == Some("same-origin")
        }
    }
}

/// The session of a page that needs one, or where to go instead.
enum Gatekeeping {
    In(Console, Session),
    Out(HttpResponse),
}

fn signed_in(state: &State, req: &HttpRequest) -> Gatekeeping {
    let Some(console) = console(state) else {
        return Gatekeeping::Out(page(StatusCode::NOT_FOUND, not_found()));
    };
    match session_of(console, req) {
        Some(session) => Gatekeeping::In(console.clone(), session),
        None => Gatekeeping::Out(see_other("/console/sign-in", None)),
    }
}

/// The refusal of a form that did not come from this console's pages.
fn not_this_console(session: &Session) -> HttpResponse {
    page(
        StatusCode::FORBIDDEN,
        pages::problem(
            Some(session),
            403,
            "This form did not come from this console (its security token or origin does not \
             match); nothing was done. Reload the page and try again.",
        ),
    )
}

/// A state change's checks: signed in, same origin, the CSRF token.
fn checked(state: &State, req: &HttpRequest, csrf: &str) -> Gatekeeping {
    match signed_in(state, req) {
        Gatekeeping::In(console, session) => {
            if same_origin(req) && csrf_matches(&session, csrf) {
                Gatekeeping::In(console, session)
            } else {
                Gatekeeping::Out(not_this_console(&session))
            }
        }
        out => out,
    }
}

async fn home(state: State, req: HttpRequest) -> HttpResponse {
    match signed_in(&state, &req) {
        Gatekeeping::In(_, session) => see_other(start_page(&session), None),
        Gatekeeping::Out(response) => response,
    }
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(STYLESHEET)
}

/// The ways in this console offers.
fn ways_in(console: &Console) -> pages::WaysIn {
    pages::WaysIn {
        provider: console.client.is_some(),
        local: console.development,
    }
}

async fn sign_in_page(state: State) -> HttpResponse {
    match console(&state) {
        Some(c) => page(StatusCode::OK, pages::sign_in(ways_in(c), None)),
        None => page(StatusCode::NOT_FOUND, not_found()),
    }
}

/// The address the provider sends the browser back to: this service's
/// origin as the browser reached it, and the callback's path.
fn redirect_uri(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}{CALLBACK_PATH}", info.scheme(), info.host())
}

/// Starts a sign-in at the provider: the login sealed in its cookie, and
/// the browser sent to the provider's authorization endpoint.
async fn sign_in_at_provider(state: State, req: HttpRequest) -> HttpResponse {
    let Some((console, client)) =
        console(&state).and_then(|c| c.client.as_ref().map(|client| (c, client)))
    else {
        return page(StatusCode::NOT_FOUND, not_found());
    };
    let login = console.sessions.begin_login(redirect_uri(&req), now());
    match client.authorization_url(&login) {
        Ok(to) => {
            let sealed = console.sessions.seal_login(&login);
            see_other(
                &to,
                Some(login_cookie(
                    console,
                    &req,
                    &sealed,
                    session::LOGIN_LIFETIME,
                )),
            )
        }
        Err(failure) => sign_in_failed(console, &req, &failure),
    }
}

/// A sign-in that did not end in a session, said on the sign-in page.
fn sign_in_failed(console: &Console, req: &HttpRequest, failure: &Failure) -> HttpResponse {
    let (status, message) = match failure {
        Failure::NoEndpoints => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The identity provider cannot be reached now (its discovery document has not been \
             read). Try again in a minute."
                .to_string(),
        ),
        Failure::Exchange(why) => {
            tracing::warn!(error = %why, "console sign-in: the code exchange failed");
            (
                StatusCode::BAD_GATEWAY,
                "The identity provider did not complete the sign-in. Try again; if it keeps \
                 failing, tell your administrator (the service's log says why)."
                    .to_string(),
            )
        }
        Failure::IdToken(why) => (
            StatusCode::UNAUTHORIZED,
            format!("The identity provider's answer was not accepted: {why}."),
        ),
    };
    refused_sign_in(console, req, status, &message)
}

/// The sign-in page with `message`, the login cookie cleared.
fn refused_sign_in(
    console: &Console,
    req: &HttpRequest,
    status: StatusCode,
    message: &str,
) -> HttpResponse {
    let mut response = page(status, pages::sign_in(ways_in(console), Some(message)));
    if let Ok(v) = HeaderValue::from_str(&login_cookie(console, req, "", 0)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The provider's answer: the login checked, the code exchanged, the ID
/// token verified, the role one the console serves; then the session.
async fn callback(
    state: State,
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let Some((console, client)) =
        console(&state).and_then(|c| c.client.as_ref().map(|client| (c, client)))
    else {
        return page(StatusCode::NOT_FOUND, not_found());
    };
    let refuse = |status, message: &str| refused_sign_in(console, &req, status, message);
    if let Some(error) = &query.error {
        let why = query.error_description.as_deref().unwrap_or(error);
        let why: String = why.chars().filter(|c| !c.is_control()).take(300).collect();
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("The identity provider did not sign you in: {why}"),
        );
    }
    let Some(login) =
        cookies(&req, LOGIN_COOKIE).find_map(|value| console.sessions.open_login(value, now()))
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "This sign-in did not start here, or took more than ten minutes. Sign in again.",
        );
    };
    let (Some(code), Some(given)) = (query.code.as_deref(), query.state.as_deref()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer lacks its code or state. Sign in again.",
        );
    };
    if !tokens_match(&login.state, given) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer is not for this sign-in (state). Sign in again.",
        );
    }
    let (principal, name) = match client.finish(&login, code).await {
        Ok(found) => found,
        Err(failure) => return sign_in_failed(console, &req, &failure),
    };
    if !matches!(principal.role, Role::Compliance | Role::Admin) {
        return refuse(StatusCode::FORBIDDEN, NOT_FOR_TENANTS);
    }
    let mut session = console.sessions.open(principal.sub, principal.role, now());
    session.name = name;
    let sealed = console.sessions.seal(&session);
    // A page, not a redirect: the session cookie is `SameSite=Strict`, and
    // a redirect would still be part of the provider's cross-site navigation.
    let mut response = page(StatusCode::OK, pages::signed_in(&session));
    for value in [
        cookie(console, &req, &sealed, session::LIFETIME),
        login_cookie(console, &req, "", 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// Why a reseller or integrator is not signed in.
const NOT_FOR_TENANTS: &str =
    "The console is for compliance officers and admins; resellers and integrators use the API.";

#[derive(Deserialize)]
struct SignIn {
    name: String,
    role: String,
}

/// Development mode's local sign-in: compliance or admin, by name.
async fn sign_in(state: State, req: HttpRequest, form: web::Form<SignIn>) -> HttpResponse {
    let Some(console) = console(&state).filter(|c| c.development) else {
        return page(StatusCode::NOT_FOUND, not_found());
    };
    if !same_origin(&req) {
        return page(
            StatusCode::FORBIDDEN,
            pages::sign_in(
                ways_in(console),
                Some("This sign-in did not come from this console."),
            ),
        );
    }
    let name = form.name.trim();
    let valid_name =
        !name.is_empty() && name.chars().count() <= 100 && !name.chars().any(|c| c.is_control());
    if !valid_name {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::sign_in(
                ways_in(console),
                Some("Give your name (at most 100 characters)."),
            ),
        );
    }
    let role = match Role::parse(&form.role) {
        Some(role @ (Role::Compliance | Role::Admin)) => role,
        _ => {
            return page(
                StatusCode::FORBIDDEN,
                pages::sign_in(ways_in(console), Some(NOT_FOR_TENANTS)),
            )
        }
    };
    let session = console
        .sessions
        .open(format!("console:{name}"), role, now());
    let value = console.sessions.seal(&session);
    see_other(
        start_page(&session),
        Some(cookie(console, &req, &value, session::LIFETIME)),
    )
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

async fn sign_out(state: State, req: HttpRequest, form: web::Form<Csrf>) -> HttpResponse {
    match checked(&state, &req, &form.csrf) {
        Gatekeeping::In(console, _) => {
            see_other("/console/sign-in", Some(cookie(&console, &req, "", 0)))
        }
        Gatekeeping::Out(response) => response,
    }
}

/// A refusal of the API's use cases, as a page.
fn refused(session: &Session, e: &ApiError) -> HttpResponse {
    use actix_web::ResponseError;
    let status = e.status_code();
    let message = match e {
        ApiError::NotFound => "There is no such review.".to_string(),
        ApiError::Forbidden => "Your role may not do this.".to_string(),
        ApiError::ReviewResolved => "This review was resolved already.".to_string(),
        ApiError::Validation(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ if status.is_server_error() => {
            "The service could not do this now. Try again in a moment.".to_string()
        }
        other => other.to_string(),
    };
    page(
        status,
        pages::problem(Some(session), status.as_u16(), &message),
    )
}

#[derive(Deserialize)]
struct QueueQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

/// The review queue: open cases first by default, oldest first.
async fn queue(state: State, req: HttpRequest, query: web::Query<QueueQuery>) -> HttpResponse {
    let session = match compliance(&state, &req) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let status = query.status.clone().unwrap_or_else(|| "open".into());
    let filter = match status.as_str() {
        "open" | "approved" | "denied" | "rejected" => Some(status.clone()),
        "all" => None,
        _ => {
            return refused(
                &session,
                &ApiError::field("status", "must be open, approved, denied, rejected or all"),
            )
        }
    };
    // A cursor with control or format characters never reaches the database.
    if let Some(Err(e)) = query.cursor.as_deref().map(PlainText::parse) {
        return refused(&session, &ApiError::field("cursor", e.to_string()));
    }
    let cursor = query.cursor.clone();
    let answer = read(&state, move |st| {
        st.store.reviews(filter.as_deref(), cursor.as_deref(), 100)
    })
    .await;
    match answer {
        Ok(found) => {
            let items: Vec<Value> = found.rows.iter().map(review_item).collect();
            page(
                StatusCode::OK,
                pages::queue(&session, &status, &items, found.next.as_deref()),
            )
        }
        Err(e) => refused(&session, &e),
    }
}

/// Runs a store read off the request's thread: its answer, or the API's
/// error for a failure.
async fn read<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&AppState) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = Arc::clone(state);
    Ok(web::block(move || f(&st)).await??)
}

/// A case in review, as listed, or `NotFound`.
async fn case(state: &State, id: String) -> Result<Value, ApiError> {
    // As in the API's paths: an id no decision can have is not looked up.
    PlainText::parse(&id).map_err(|_| ApiError::NotFound)?;
    let stored = read(state, move |st| st.store.decision(&id)).await?;
    stored
        .filter(|d| d.review_status.is_some())
        .map(|d| review_item(&d))
        .ok_or(ApiError::NotFound)
}

async fn review(state: State, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let session = match compliance(&state, &req) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    match case(&state, id.into_inner()).await {
        Ok(item) => page(
            StatusCode::OK,
            pages::review(&session, &item, &[], "", None),
        ),
        Err(e) => refused(&session, &e),
    }
}

#[derive(Deserialize)]
struct ResolveForm {
    csrf: String,
    resolution: Resolution,
    #[serde(default)]
    note: String,
    /// `""` (not attested), `"true"` or `"false"`.
    #[serde(default)]
    us_person: String,
}

/// Resolves a case through the same use case as `POST /v1/reviews/{id}`,
/// with the signed-in person as the reviewer.
async fn resolve(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<ResolveForm>,
) -> HttpResponse {
    let (_, session) = match checked(&state, &req, &form.csrf) {
        Gatekeeping::In(c, s) => (c, s),
        Gatekeeping::Out(r) => return r,
    };
    if session.role != Role::Compliance {
        return refused(&session, &ApiError::Forbidden);
    }
    let id = id.into_inner();
    let item = match case(&state, id.clone()).await {
        Ok(item) => item,
        Err(e) => return refused(&session, &e),
    };
    // Attested facts: the customer under review, with `us_person` as the
    // reviewer states it.
    let attested = match form.us_person.as_str() {
        "true" | "false" => serde_json::from_value::<Customer>(item["request"]["customer"].clone())
            .ok()
            .map(|mut c| {
                c.us_person = Some(form.us_person == "true");
                c
            }),
        _ => None,
    };
    let problems = resolution_problems(&form.note, attested.as_ref());
    if !problems.is_empty() {
        let shown: Vec<FieldProblem> = problems
            .into_iter()
            .map(|p| FieldProblem {
                field: p.field,
                message: p.message,
            })
            .collect();
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::review(&session, &item, &shown, &form.note, None),
        );
    }
    let resolved = state
        .gate
        .resolve_review(ReviewResolution {
            reviewer: Actor {
                sub: session.sub.clone(),
                role: session.role.as_str().to_string(),
                reseller: None,
            },
            decision_id: id.clone(),
            resolution: form.resolution,
            note: form.note.clone(),
            customer: attested,
        })
        .await
        .map_err(ApiError::from);
    match resolved {
        Ok(_) => see_other(&format!("/console/reviews/{id}"), None),
        Err(e) => refused(&session, &e),
    }
}

/// The signed-in compliance officer of a page, or where to go instead.
fn compliance(state: &State, req: &HttpRequest) -> Gatekeeping {
    signed_in_as(state, req, &[Role::Compliance])
}

/// The signed-in person of a page that `roles` may read (as the API's role
/// matrix says), or where to go instead.
fn signed_in_as(state: &State, req: &HttpRequest, roles: &[Role]) -> Gatekeeping {
    match signed_in(state, req) {
        Gatekeeping::In(_, s) if !roles.contains(&s.role) => {
            Gatekeeping::Out(refused(&s, &ApiError::Forbidden))
        }
        other => other,
    }
}

/// Every tenant's licences, as `GET /v1/licenses` lists them for
/// compliance, narrowed by reseller, product and status; a licence id goes
/// straight to its page.
async fn licenses(
    state: State,
    req: HttpRequest,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let session = match compliance(&state, &req) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let asked = asked(&query);
    let (search, cursor) = match license_search(&asked) {
        Ok(LicenseQuery::One(id)) => return see_other(&format!("/console/licenses/{id}"), None),
        Ok(LicenseQuery::Search(search, cursor)) => (search, cursor),
        Err(problems) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::licenses(&session, &asked, &[], None, &problems),
            )
        }
    };
    let answer = read(&state, move |st| {
        st.store.search_licenses(&search, cursor.as_deref(), 100)
    })
    .await;
    match answer {
        Ok(found) => {
            let now = chrono::Utc::now();
            let shown: Vec<Value> = found
                .rows
                .iter()
                .filter_map(|l| serde_json::to_value(License::from_row(l, now)).ok())
                .collect();
            page(
                StatusCode::OK,
                pages::licenses(&session, &asked, &shown, found.next.as_deref(), &[]),
            )
        }
        Err(e) => refused(&session, &e),
    }
}

/// A licence search as asked: one licence by id, or a search and its
/// cursor.
enum LicenseQuery {
    One(String),
    Search(LicenseSearch, Option<String>),
}

/// The search form's fields checked as the API checks identifiers.
fn license_search(
    asked: &std::collections::BTreeMap<String, String>,
) -> Result<LicenseQuery, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let mut search = LicenseSearch::default();
    let mut cursor = None;
    let mut problem = |field: &str, message: String| {
        problems.push(FieldProblem {
            field: field.into(),
            message,
        })
    };
    for (name, value) in asked {
        let value = value.trim();
        match name.as_str() {
            "id" => match PlainText::parse(value) {
                Ok(_) => return Ok(LicenseQuery::One(url_path_escape(value))),
                Err(e) => problem("id", e.to_string()),
            },
            "reseller" => match ResellerId::parse(value) {
                Ok(id) => search.reseller = Some(id.to_string()),
                Err(e) => problem("reseller", e),
            },
            "product" => match Sku::parse(value) {
                Ok(sku) => search.product = Some(sku.to_string()),
                Err(e) => problem("product", e),
            },
            "status" if pages::LICENSE_STATUSES.contains(&value) => {
                search.status = Some(value.to_string())
            }
            "status" => problem(
                "status",
                format!("must be one of {}", pages::LICENSE_STATUSES.join(", ")),
            ),
            "cursor" => match PlainText::parse(value) {
                Ok(_) => cursor = Some(value.to_string()),
                Err(e) => problem("cursor", e.to_string()),
            },
            other => problem(other, "is not a field of this search".into()),
        }
    }
    if problems.is_empty() {
        Ok(LicenseQuery::Search(search, cursor))
    } else {
        Err(problems)
    }
}

/// `text` as one path segment.
fn url_path_escape(text: &str) -> String {
    pages::url_escape(text).replace('+', "%20")
}

/// One licence as shown, or `NotFound`.
async fn stored_license(state: &State, id: String) -> Result<Value, ApiError> {
    PlainText::parse(&id).map_err(|_| ApiError::NotFound)?;
    let found = read(state, move |st| st.store.license(&id)).await?;
    found
        .and_then(|l| serde_json::to_value(License::from_row(&l, chrono::Utc::now())).ok())
        .ok_or(ApiError::NotFound)
}

/// A licence's history: the audit events naming it, in chain order (its
/// reseller's events, searched for its id).
async fn history(state: &State, license: &Value) -> Result<Vec<Value>, ApiError> {
    let filter = crate::store::audit::AuditFilter {
        reseller: license["reseller"].as_str().map(str::to_string),
        mentions: license["id"].as_str().map(str::to_string),
        ..Default::default()
    };
    let limit = pages::HISTORY_LIMIT as i64;
    Ok(read(state, move |st| st.store.audit_events(&filter, limit))
        .await?
        .rows)
}

/// A licence's page: the licence, with its history.
async fn license_page(
    state: &State,
    session: &Session,
    (status, shown): (StatusCode, Value),
    failed: Option<(&str, &FieldProblem, &str)>,
    outcome: Option<&str>,
) -> HttpResponse {
    match history(state, &shown).await {
        Ok(events) => page(
            status,
            pages::license(session, &shown, &events, failed, outcome),
        ),
        Err(e) => refused(session, &e),
    }
}

async fn license(state: State, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let session = match compliance(&state, &req) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    match stored_license(&state, id.into_inner()).await {
        Ok(l) => license_page(&state, &session, (StatusCode::OK, l), None, None).await,
        Err(e) => refused(&session, &e),
    }
}

#[derive(Deserialize)]
struct ReasonForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// Suspends, reinstates or revokes a licence through the same use case as
/// the API's lifecycle routes, with the signed-in person as the actor.
async fn change_license(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<ReasonForm>,
) -> HttpResponse {
    let session = match checked(&state, &req, &form.csrf) {
        Gatekeeping::In(_, s) if s.role == Role::Compliance => s,
        Gatekeeping::In(_, s) => return refused(&s, &ApiError::Forbidden),
        Gatekeeping::Out(r) => return r,
    };
    let (id, verb) = path.into_inner();
    let shown = match stored_license(&state, id.clone()).await {
        Ok(l) => l,
        Err(e) => return refused(&session, &e),
    };
    let action = match verb.as_str() {
        "suspension" | "revocation" => {
            if let Some(p) = reason_problem(&form.reason) {
                let problem = FieldProblem {
                    field: p.field,
                    message: p.message,
                };
                return license_page(
                    &state,
                    &session,
                    (StatusCode::UNPROCESSABLE_ENTITY, shown),
                    Some((verb.as_str(), &problem, &form.reason)),
                    None,
                )
                .await;
            }
            let reason = form.reason.clone();
            match verb.as_str() {
                "suspension" => LifecycleAction::Suspend { reason },
                _ => LifecycleAction::Revoke { reason },
            }
        }
        "reinstatement" => LifecycleAction::Reinstate,
        _ => return page(StatusCode::NOT_FOUND, not_found()),
    };
    let request = LifecycleRequest {
        actor: Actor {
            sub: session.sub.clone(),
            role: session.role.as_str().to_string(),
            reseller: None,
        },
        tenant: None,
        license_id: id.clone(),
        action,
    };
    let outcome = match state.gate.change_lifecycle(request).await {
        Ok(outcome) => outcome,
        Err(e) => return refused(&session, &ApiError::from(e)),
    };
    let said = match outcome {
        LifecycleOutcome::Changed { .. } => {
            return see_other(&format!("/console/licenses/{id}"), None)
        }
        LifecycleOutcome::Prohibited { .. } => (
            StatusCode::FORBIDDEN,
            "The law prohibits serving this licence now: it stays suspended.",
        ),
        LifecycleOutcome::InReview { .. } => (
            StatusCode::ACCEPTED,
            "The reinstatement needs a review: it is in the review queue, and the licence stays \
             suspended meanwhile.",
        ),
    };
    match stored_license(&state, id).await {
        Ok(l) => license_page(&state, &session, (said.0, l), None, Some(said.1)).await,
        Err(e) => refused(&session, &e),
    }
}

/// The trail's filters as asked: empty form fields dropped (a form sends
/// every field), `format` kept apart.
fn asked(
    query: &std::collections::HashMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    query
        .iter()
        .filter(|(k, v)| !v.trim().is_empty() && k.as_str() != "format")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The API's checks of the filters, as field problems.
fn filter_of(
    asked: &std::collections::BTreeMap<String, String>,
) -> Result<(crate::store::audit::AuditFilter, i64), Vec<FieldProblem>> {
    let params: std::collections::HashMap<String, String> =
        asked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    crate::api::audit::parse_filter(&params).map_err(|e| match e {
        ApiError::Validation(errors) => errors
            .into_iter()
            .map(|e| FieldProblem {
                field: e.field,
                message: e.message,
            })
            .collect(),
        other => vec![FieldProblem {
            field: "filter".into(),
            message: other.to_string(),
        }],
    })
}

/// The audit trail, a page at a time, with the API's filters.
async fn audit(
    state: State,
    req: HttpRequest,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let session = match compliance(&state, &req) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let asked = asked(&query);
    let latest = read(&state, move |st| st.store.latest_checkpoint()).await;
    let checkpoint = match latest {
        Ok(c) => c.and_then(|c| serde_json::to_value(c).ok()),
        Err(e) => return refused(&session, &e),
    };
    let (filter, limit) = match filter_of(&asked) {
        Ok(f) => f,
        Err(problems) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::audit(&session, &asked, &[], None, checkpoint.as_ref(), &problems),
            )
        }
    };
    let answer = read(&state, move |st| st.store.audit_events(&filter, limit)).await;
    match answer {
        Ok(found) => page(
            StatusCode::OK,
            pages::audit(
                &session,
                &asked,
                &found.rows,
                found.next.as_deref(),
                checkpoint.as_ref(),
                &[],
            ),
        ),
        Err(e) => refused(&session, &e),
    }
}

/// Every matching event, streamed as the API exports it (NDJSON in the
/// chain's canonical form, which `gatekeeper audit verify --file` checks,
/// or CSV), as a download.
async fn export(
    state: State,
    req: HttpRequest,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let session = match compliance(&state, &req) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    use crate::api::audit::Export;
    let (format, name) = match query.get("format").map(String::as_str) {
        Some("csv") => (Export::Csv, "audit.csv"),
        _ => (Export::Ndjson, "audit.ndjson"),
    };
    let (filter, _) = match filter_of(&asked(&query)) {
        Ok(f) => f,
        Err(problems) => {
            let message = problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; ");
            return refused(&session, &ApiError::field("filter", message));
        }
    };
    let mut response = crate::api::audit::stream(state.store.clone(), filter, format);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The whole chain verified now, as `GET /v1/audit/verify` does.
async fn verification(state: State, req: HttpRequest) -> HttpResponse {
    let session = match compliance(&state, &req) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let report = read(&state, move |st| st.store.verify_chain(&[], st.gate.keys())).await;
    match report {
        Ok(report) => page(
            StatusCode::OK,
            pages::verification(&session, &report.to_json()),
        ),
        Err(e) => refused(&session, &e),
    }
}
