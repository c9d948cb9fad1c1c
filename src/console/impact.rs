//! The console's impact room: the runs re-screening made (each with the
//! licences it acted on and the decision it took for each), and previews of
//! a catalogue change before anyone makes it. Compliance and admins, as in
//! the API (`GET /v1/impact-runs…`, `POST /v1/impact-previews`); a preview
//! goes through the same parsing and use case (`Gate::preview_impact`), so
//! it is audited (`impact.preview`) with the signed-in person as actor.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::pages::{field_problems, layout, problem_list, text, url_escape, FieldProblem};
use super::session::Session;
use super::{checked, page, read, refused, signed_in_as, Gatekeeping};
use crate::api::impact::{action_json, preview_changes, preview_json, run_json};
use crate::api::{ApiError, Body, State};
use crate::auth::Role;
use crate::domain::{Actor, PlainText};

/// Who reads runs and previews.
const READERS: &[Role] = &[Role::Compliance, Role::Admin];

/// Runs and licences shown a page at a time.
const PAGE: i64 = 100;

#[derive(Deserialize)]
pub(super) struct CursorQuery {
    #[serde(default)]
    cursor: Option<String>,
}

/// A cursor as the API takes it: plain text only.
fn cursor(query: &CursorQuery) -> Result<Option<String>, ApiError> {
    match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => PlainText::parse(c)
            .map(|_| Some(c.to_string()))
            .map_err(|e| ApiError::field("cursor", e.to_string())),
    }
}

/// The runs, oldest first, as `GET /v1/impact-runs` lists them.
pub(super) async fn runs(
    state: State,
    req: HttpRequest,
    query: web::Query<CursorQuery>,
) -> HttpResponse {
    let session = match signed_in_as(&state, &req, READERS) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let after = match cursor(&query) {
        Ok(c) => c,
        Err(e) => return refused(&session, &e),
    };
    let answer = read(&state, move |st| {
        st.store.impact_runs(after.as_deref(), PAGE)
    })
    .await;
    match answer {
        Ok(found) => {
            let shown: Vec<Value> = found.rows.iter().map(|r| run_json(r, &r.counts)).collect();
            page(
                StatusCode::OK,
                runs_page(&session, &shown, found.next.as_deref()),
            )
        }
        Err(e) => refused(&session, &e),
    }
}

/// One run, with the licences it acted on (a page at a time) and each one's
/// decision.
pub(super) async fn run(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<CursorQuery>,
) -> HttpResponse {
    let session = match signed_in_as(&state, &req, READERS) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let id = id.into_inner();
    if PlainText::parse(&id).is_err() {
        return refused(&session, &ApiError::NotFound);
    }
    let after = match cursor(&query) {
        Ok(c) => c,
        Err(e) => return refused(&session, &e),
    };
    let answer = read(&state, move |st| {
        let Some(run) = st.store.impact_run(&id)? else {
            return Ok(None);
        };
        let acted = st.store.impact_actions(&id, None, after.as_deref(), PAGE)?;
        let mut licenses: Vec<Value> = Vec::with_capacity(acted.rows.len());
        for action in &acted.rows {
            let decision = st.store.decision(&action.decision_id)?;
            licenses.push(action_json(action, decision.as_ref().map(|d| &d.body)));
        }
        Ok(Some((run_json(&run, &run.counts), licenses, acted.next)))
    })
    .await;
    match answer {
        Ok(Some((run, licenses, next))) => page(
            StatusCode::OK,
            run_page(&session, &run, &licenses, next.as_deref()),
        ),
        Ok(None) => refused(&session, &ApiError::NotFound),
        Err(e) => refused(&session, &e),
    }
}

/// What the preview form starts with: one change, as the admin API takes
/// it, to edit. Its `path` is an instance of `PUT /v1/organizations/{id}`
/// (openapi.yaml), not a route of its own.
const EXAMPLE: &str = r#"[
  {
    "op": "put",
    "path": "/v1/organizations/example-labs",
    "body": {"name": "Example Labs", "country": "RU"}
  }
]"#;

pub(super) async fn preview_form(state: State, req: HttpRequest) -> HttpResponse {
    match signed_in_as(&state, &req, READERS) {
        Gatekeeping::In(_, session) => {
            page(StatusCode::OK, preview_page(&session, EXAMPLE, &[], None))
        }
        Gatekeeping::Out(r) => r,
    }
}

#[derive(Deserialize)]
pub(super) struct PreviewForm {
    csrf: String,
    #[serde(default)]
    changes: String,
}

/// Runs a preview of the changes in the form, as `POST /v1/impact-previews`
/// does (a form, so CSRF-checked like every `POST`, though it changes
/// nothing but the trail).
pub(super) async fn preview(
    state: State,
    req: HttpRequest,
    form: web::Form<PreviewForm>,
) -> HttpResponse {
    let session = match checked(&state, &req, &form.csrf) {
        Gatekeeping::In(_, s) if READERS.contains(&s.role) => s,
        Gatekeeping::In(_, s) => return refused(&s, &ApiError::Forbidden),
        Gatekeeping::Out(r) => return r,
    };
    let body = Body(web::Bytes::from(format!(
        "{{\"changes\": {}\n}}",
        form.changes
    )));
    let changes = match preview_changes(&body) {
        Ok(changes) => changes,
        Err(e) => {
            let problems = field_problems(e, "changes");
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                preview_page(&session, &form.changes, &problems, None),
            );
        }
    };
    let actor = Actor {
        sub: session.sub.clone(),
        role: session.role.as_str().to_string(),
        reseller: None,
    };
    match state.gate.preview_impact(actor, changes).await {
        Ok(preview) => page(
            StatusCode::OK,
            preview_page(&session, &form.changes, &[], Some(&preview_json(&preview))),
        ),
        Err(e) => {
            let e = ApiError::from(e);
            match e {
                ApiError::Validation(errors) => {
                    let problems: Vec<FieldProblem> = errors
                        .into_iter()
                        .map(|e| FieldProblem {
                            field: e.field,
                            message: e.message,
                        })
                        .collect();
                    page(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        preview_page(&session, &form.changes, &problems, None),
                    )
                }
                other => refused(&session, &other),
            }
        }
    }
}

/// A run's counts, as a list.
fn counts(run: &Value) -> Markup {
    html! {
        dl class="counts" {
            @for key in ["ended", "capped", "renewal_blocked", "review"] {
                dt { (key.replace('_', " ")) } dd { (text(&run["counts"], key)) }
            }
        }
    }
}

/// What a trigger was, in words.
fn trigger(run: &Value) -> String {
    let t = &run["trigger"];
    match text(t, "kind").as_str() {
        "catalog" => format!("catalogue version {}", text(t, "policy_version")),
        "rule" => format!(
            "rule {} of {} taking effect",
            text(t, "rule"),
            text(t, "designation")
        ),
        "preview" => format!("preview on catalogue version {}", text(t, "policy_version")),
        other => other.to_string(),
    }
}

fn runs_page(session: &Session, runs: &[Value], next: Option<&str>) -> Markup {
    layout(
        "Impact runs",
        Some(session),
        html! {
            p {
                "Each catalogue change and each rule instant re-screens the licences already issued. "
                a href="/console/impact/preview" { "Preview a change" }
                " before making it."
            }
            @if runs.is_empty() {
                p { "No impact runs yet." }
            } @else {
                table {
                    caption { (runs.len()) " runs, oldest first" }
                    thead {
                        tr {
                            th scope="col" { "Run" }
                            th scope="col" { "Trigger" }
                            th scope="col" { "At" }
                            th scope="col" { "Status" }
                            th scope="col" { "Checked" }
                            th scope="col" { "Ended" }
                            th scope="col" { "Capped" }
                            th scope="col" { "Renewal blocked" }
                            th scope="col" { "Review" }
                        }
                    }
                    tbody {
                        @for r in runs {
                            @let id = text(r, "id");
                            tr {
                                td { a href={ "/console/impact/" (url_escape(&id)) } { (id) } }
                                td { (trigger(r)) }
                                td { (text(r, "at")) }
                                td { (text(r, "status")) }
                                td { (text(r, "licenses_checked")) }
                                @for key in ["ended", "capped", "renewal_blocked", "review"] {
                                    td { (text(&r["counts"], key)) }
                                }
                            }
                        }
                    }
                }
                @if let Some(next) = next {
                    p { a href={ "/console/impact?cursor=" (url_escape(next)) } { "Next page" } }
                }
            }
        },
    )
}

/// The licences a run acted on (or a preview would), each with its
/// decision.
fn acted_table(licenses: &[Value], caption: &str) -> Markup {
    html! {
        @if licenses.is_empty() {
            p { "No licence was acted on." }
        } @else {
            table {
                caption { (licenses.len()) " " (caption) }
                thead {
                    tr {
                        th scope="col" { "Licence" }
                        th scope="col" { "Reseller" }
                        th scope="col" { "Product" }
                        th scope="col" { "Action" }
                        th scope="col" { "Not after" }
                        th scope="col" { "Decision" }
                        th scope="col" { "Why" }
                    }
                }
                tbody {
                    @for l in licenses {
                        @let id = text(l, "license_id");
                        tr {
                            td { a href={ "/console/licenses/" (url_escape(&id)) } { (id) } }
                            td { (text(l, "reseller")) }
                            td { code { (text(l, "product")) } }
                            td { (text(l, "action").replace('_', " ")) }
                            td { (text(l, "not_after")) }
                            td { (text(&l["decision"], "outcome")) }
                            td {
                                @if let Some(reasons) = l["decision"]["reasons"].as_array() {
                                    @for r in reasons {
                                        (text(r, "designation")) ", rule " (text(r, "rule")) ". "
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn run_page(session: &Session, run: &Value, licenses: &[Value], next: Option<&str>) -> Markup {
    let id = text(run, "id");
    layout(
        &format!("Impact run {id}"),
        Some(session),
        html! {
            dl {
                dt { "Trigger" } dd { (trigger(run)) }
                dt { "At" } dd { (text(run, "at")) }
                dt { "Status" } dd { (text(run, "status")) }
                dt { "Licences checked" } dd { (text(run, "licenses_checked")) }
                dt { "Completed" } dd { (text(run, "completed_at")) }
            }
            h2 { "What it did" }
            (counts(run))
            h2 { "Licences acted on" }
            (acted_table(licenses, "licences, in id order"))
            @if let Some(next) = next {
                p { a href={ "/console/impact/" (url_escape(&id)) "?cursor=" (url_escape(next)) } { "Next page" } }
            }
        },
    )
}

fn preview_page(
    session: &Session,
    changes: &str,
    problems: &[FieldProblem],
    result: Option<&Value>,
) -> Markup {
    layout(
        "Preview a catalogue change",
        Some(session),
        html! {
            p {
                "What a change would do to the licences already issued, decided on the catalogue "
                "with the change applied. Nothing is changed; the preview itself is recorded in "
                "the audit trail."
            }
            (problem_list(problems))
            form method="post" action="/console/impact/preview" {
                input type="hidden" name="csrf" value=(session.csrf);
                div class="field" {
                    label for="changes" { "Changes (JSON)" }
                    p id="changes-hint" class="hint" {
                        "A list of changes, each as the admin API takes it: "
                        code { "op" } " (" code { "put" } " or " code { "delete" } "), "
                        code { "path" } " (such as " code { "/v1/products/{sku}" } ") and "
                        code { "body" } ". Up to 100."
                    }
                    textarea id="changes" name="changes" rows="12" cols="80" spellcheck="false"
                        aria-describedby="changes-hint"
                        aria-invalid=[(!problems.is_empty()).then_some("true")] {
                        (changes)
                    }
                }
                button type="submit" { "Preview" }
            }
            @if let Some(r) = result {
                section aria-labelledby="result" {
                    h2 id="result" { "What it would do" }
                    p role="status" {
                        (text(r, "licenses_checked")) " licences checked on catalogue version "
                        (text(&r["trigger"], "policy_version")) "."
                    }
                    (counts(r))
                    (acted_table(r["licenses"].as_array().map(Vec::as_slice).unwrap_or(&[]), "licences it would act on"))
                }
            }
        },
    )
}
