//! The console's catalogue room: resellers, organisations (with their
//! relationships), products and designations, read-only for compliance and
//! editable for admins, as in the API's role matrix. One generic page set
//! over the API's `Entry` trait: a form shows an entry's top-level fields
//! (`Entry::FIELDS`), the body it posts is parsed as the admin API parses
//! `PUT /v1/<plural>/{id}`, and the change goes through the same use case
//! (`Gate::change_catalog`), audited with the signed-in admin as actor.
//! Problems come back on the field they are about.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::{Map, Value};

use super::pages::{field_problems, layout, problem_list, text, url_escape, FieldProblem};
use super::session::{csrf_matches, Session};
use super::{page, refused, same_origin, see_other, signed_in_as, Gatekeeping};
use crate::api::catalog::{commit, render, Entry, FieldKind};
use crate::api::{ApiError, Body, State};
use crate::auth::Role;
use crate::domain::Actor;
use crate::policy::{DesignationSpec, OrganizationSpec, ProductSpec, ResellerSpec};

const READERS: &[Role] = &[Role::Compliance, Role::Admin];

/// The room's routes: the overview, and each kind's under
/// `/console/catalogue/<plural>`.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/catalogue", web::get().to(overview));
    kind::<ResellerSpec>(cfg);
    kind::<OrganizationSpec>(cfg);
    kind::<ProductSpec>(cfg);
    kind::<DesignationSpec>(cfg);
}

fn kind<E: Entry>(cfg: &mut web::ServiceConfig) {
    let base = format!("/catalogue/{}", E::PLURAL);
    cfg.route(&format!("{base}/new"), web::get().to(new_entry::<E>))
        .route(&base, web::post().to(put::<E>))
        .route(&format!("{base}/{{id}}"), web::get().to(entry::<E>));
}

/// What a kind is called on the pages.
fn title_of(plural: &str) -> &'static str {
    match plural {
        "resellers" => "Resellers",
        "organizations" => "Organisations",
        "products" => "Products",
        _ => "Designations",
    }
}

/// An entry's line in the overview: its name or title.
fn label(entry: &Value) -> String {
    ["name", "title"]
        .iter()
        .map(|k| text(entry, k))
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}

fn listed<E: Entry>(catalog: &crate::policy::CatalogData) -> Vec<Value> {
    E::entries(catalog)
        .iter()
        .map(|(id, spec)| render(id, spec))
        .collect()
}

async fn overview(state: State, req: HttpRequest) -> HttpResponse {
    let session = match signed_in_as(&state, &req, READERS) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let catalog = match state.gate.fresh_catalog().await {
        Ok(c) => c,
        Err(e) => return refused(&session, &e.into()),
    };
    let data = catalog.data();
    let kinds = [
        (
            ResellerSpec::PLURAL,
            ResellerSpec::ID_FIELD,
            listed::<ResellerSpec>(data),
        ),
        (
            OrganizationSpec::PLURAL,
            OrganizationSpec::ID_FIELD,
            listed::<OrganizationSpec>(data),
        ),
        (
            ProductSpec::PLURAL,
            ProductSpec::ID_FIELD,
            listed::<ProductSpec>(data),
        ),
        (
            DesignationSpec::PLURAL,
            DesignationSpec::ID_FIELD,
            listed::<DesignationSpec>(data),
        ),
    ];
    let relationships: Vec<(String, String, String)> = data
        .relationships
        .iter()
        .map(|((source, target), kind)| {
            let kind = serde_json::to_value(kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_string))
                .unwrap_or_default();
            (source.to_string(), kind, target.to_string())
        })
        .collect();
    let admin = session.role == Role::Admin;
    let body = html! {
        p {
            "Catalogue version " strong { (catalog.version().to_string()) } ". "
            @if admin {
                "Every change is audited, and re-screens the licences it reaches; "
                a href="/console/impact/preview" { "preview a change" } " first."
            } @else {
                "Read-only: admins change the catalogue."
            }
        }
        @for (plural, id_field, entries) in &kinds {
            section aria-labelledby=(plural) {
                h2 id=(plural) { (title_of(plural)) }
                @if admin {
                    p { a href={ "/console/catalogue/" (plural) "/new" } { "Add to " (title_of(plural).to_lowercase()) } }
                }
                @if entries.is_empty() {
                    p { "None." }
                } @else {
                    ul class="entries" {
                        @for e in entries {
                            @let id = text(e, id_field);
                            li { a href={ "/console/catalogue/" (plural) "/" (url_escape(&id)) } { code { (id) } } " " (label(e)) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="relationships" {
            h2 id="relationships" { "Relationships" }
            p { "What one organisation is to another (a designation covering affiliates follows them). Changed through the API: " code { "PUT /v1/organizations/{id}/relationships/{target}" } "." }
            @if relationships.is_empty() {
                p { "None." }
            } @else {
                table {
                    caption { (relationships.len()) " relationships" }
                    thead { tr { th scope="col" { "Organisation" } th scope="col" { "Is" } th scope="col" { "Of" } } }
                    tbody {
                        @for (source, kind, target) in &relationships {
                            tr { td { code { (source) } } td { (kind.replace('_', " ")) } td { code { (target) } } }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout("Catalogue", Some(&session), body))
}

/// One entry: its fields, and for an admin the form that replaces it.
async fn entry<E: Entry>(state: State, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let session = match signed_in_as(&state, &req, READERS) {
        Gatekeeping::In(_, s) => s,
        Gatekeeping::Out(r) => return r,
    };
    let Ok(id) = E::parse_id(&id.into_inner()) else {
        return refused(&session, &ApiError::NotFound);
    };
    let catalog = match state.gate.fresh_catalog().await {
        Ok(c) => c,
        Err(e) => return refused(&session, &e.into()),
    };
    let Some(spec) = E::entries(catalog.data()).get(&id) else {
        return refused(&session, &ApiError::NotFound);
    };
    let shown = render(&id, spec);
    let values = form_values::<E>(&shown);
    page(
        StatusCode::OK,
        entry_page::<E>(&session, Some(&id.to_string()), &values, &[], None),
    )
}

/// An empty form for a new entry (admins).
async fn new_entry<E: Entry>(state: State, req: HttpRequest) -> HttpResponse {
    match signed_in_as(&state, &req, &[Role::Admin]) {
        Gatekeeping::In(_, session) => page(
            StatusCode::OK,
            entry_page::<E>(&session, None, &HashMap::new(), &[], None),
        ),
        Gatekeeping::Out(r) => r,
    }
}

/// The form's value of each field of a stored entry.
fn form_values<E: Entry>(shown: &Value) -> HashMap<String, String> {
    let mut values = HashMap::new();
    values.insert("id".to_string(), text(shown, E::ID_FIELD));
    for (name, kind) in E::FIELDS {
        let value = match (kind, shown.get(*name)) {
            (_, None | Some(Value::Null)) => String::new(),
            (FieldKind::Json, Some(v)) => serde_json::to_string_pretty(v).unwrap_or_default(),
            (_, Some(_)) => text(shown, name),
        };
        values.insert((*name).to_string(), value);
    }
    values
}

/// The body a form describes: each field by its kind, an empty text or
/// JSON field left out. A field whose JSON does not parse is a problem on
/// that field.
fn body_of<E: Entry>(form: &HashMap<String, String>) -> Result<Value, Vec<FieldProblem>> {
    let mut body = Map::new();
    let mut problems = Vec::new();
    for (name, kind) in E::FIELDS {
        let given = form.get(*name).map(|v| v.trim()).unwrap_or("");
        let value = match kind {
            FieldKind::Text if given.is_empty() => continue,
            FieldKind::Text => Value::String(given.to_string()),
            FieldKind::Flag => Value::Bool(given == "true"),
            FieldKind::Json if given.is_empty() => continue,
            FieldKind::Json => match serde_json::from_str(given) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(FieldProblem {
                        field: (*name).to_string(),
                        message: format!("is not JSON ({e})"),
                    });
                    continue;
                }
            },
        };
        body.insert((*name).to_string(), value);
    }
    if problems.is_empty() {
        Ok(Value::Object(body))
    } else {
        Err(problems)
    }
}

/// Creates or replaces an entry (admins), as `PUT /v1/<plural>/{id}` does.
async fn put<E: Entry>(
    state: State,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
    let session = match signed_in_as(&state, &req, &[Role::Admin]) {
        Gatekeeping::In(_, s) if same_origin(&req) && csrf_matches(&s, csrf) => s,
        Gatekeeping::In(_, s) => return super::not_this_console(&s),
        Gatekeeping::Out(r) => return r,
    };
    let form = form.into_inner();
    let raw_id = form
        .get("id")
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    // An entry's own form shows its id fixed, whatever the answer.
    let existing = form.get("existing").is_some_and(|v| v == "true");
    let again = |problems: Vec<FieldProblem>| {
        let id = existing.then_some(raw_id.as_str());
        page(
            StatusCode::UNPROCESSABLE_ENTITY,
            entry_page::<E>(&session, id, &form, &problems, None),
        )
    };
    let id = match E::parse_id(&raw_id) {
        Ok(id) => id,
        Err(m) => {
            return again(vec![FieldProblem {
                field: "id".into(),
                message: m,
            }])
        }
    };
    let body = match body_of::<E>(&form) {
        Ok(b) => b,
        Err(problems) => return again(problems),
    };
    let spec: E = match Body(web::Bytes::from(body.to_string())).json() {
        Ok(spec) => spec,
        Err(e) => return again(field_problems(e, "body")),
    };
    let actor = Actor {
        sub: session.sub.clone(),
        role: session.role.as_str().to_string(),
        reseller: None,
    };
    match commit(
        &state,
        actor,
        E::KIND,
        id.to_string(),
        E::change(id.clone(), spec),
    )
    .await
    {
        Ok(_) => see_other(
            &format!(
                "/console/catalogue/{}/{}",
                E::PLURAL,
                url_escape(&id.to_string())
            ),
            None,
        ),
        Err(ApiError::Validation(errors)) => {
            again(field_problems(ApiError::Validation(errors), "body"))
        }
        Err(e) => refused(&session, &e),
    }
}

/// The top-level field a problem is about (`rules[0].effective_from` is
/// about `rules`).
fn field_of(problem: &FieldProblem) -> &str {
    problem
        .field
        .split(['.', '['])
        .next()
        .unwrap_or(&problem.field)
}

/// One field of the form (or, read-only, of the entry), with its problems.
fn field(
    name: &str,
    kind: FieldKind,
    value: &str,
    problems: &[&FieldProblem],
    editable: bool,
) -> Markup {
    let error_id = format!("{name}-error");
    let described = (!problems.is_empty()).then_some(error_id.as_str());
    html! {
        div class="field" {
            label for=(name) { (name.replace('_', " ")) }
            @if !problems.is_empty() {
                ul id=(error_id) class="error" {
                    @for p in problems { li { @if p.field != name { code { (p.field) } ": " } (p.message) } }
                }
            }
            @match kind {
                FieldKind::Json => {
                    textarea id=(name) name=(name) rows="6" cols="70" spellcheck="false"
                        readonly[!editable] aria-describedby=[described]
                        aria-invalid=[described.map(|_| "true")] { (value) }
                }
                FieldKind::Flag => {
                    select id=(name) name=(name) disabled[!editable] aria-describedby=[described] {
                        option value="false" selected[value != "true"] { "false" }
                        option value="true" selected[value == "true"] { "true" }
                    }
                }
                FieldKind::Text => {
                    input id=(name) name=(name) type="text" value=(value) readonly[!editable]
                        aria-describedby=[described] aria-invalid=[described.map(|_| "true")];
                }
            }
        }
    }
}

fn entry_page<E: Entry>(
    session: &Session,
    id: Option<&str>,
    values: &HashMap<String, String>,
    problems: &[FieldProblem],
    notice: Option<&str>,
) -> Markup {
    let editable = session.role == Role::Admin;
    let value = |k: &str| values.get(k).cloned().unwrap_or_default();
    let on = |name: &str| -> Vec<&FieldProblem> {
        problems.iter().filter(|p| field_of(p) == name).collect()
    };
    let known: Vec<&str> = std::iter::once("id")
        .chain(E::FIELDS.iter().map(|(n, _)| *n))
        .collect();
    let elsewhere: Vec<FieldProblem> = problems
        .iter()
        .filter(|p| !known.contains(&field_of(p)))
        .map(|p| FieldProblem {
            field: p.field.clone(),
            message: p.message.clone(),
        })
        .collect();
    let title = match id {
        Some(id) => format!("{} {id}", E::KIND),
        None if !value("id").is_empty() => format!("{} {}", E::KIND, value("id")),
        None => format!("New {}", E::KIND),
    };
    let fields = html! {
        @let id_problems = on("id");
        (field("id", FieldKind::Text, &value("id"), &id_problems, editable && id.is_none()))
        @for (name, kind) in E::FIELDS {
            (field(name, *kind, &value(name), &on(name), editable))
        }
    };
    layout(
        &title,
        Some(session),
        html! {
            p { a href="/console/catalogue" { "Back to the catalogue" } }
            @if let Some(n) = notice { p class="notice" role="status" { (n) } }
            (problem_list(&elsewhere))
            @if !problems.is_empty() && elsewhere.is_empty() {
                p class="error" role="alert" { "Nothing was changed: see the fields marked below." }
            }
            @if editable {
                form method="post" action={ "/console/catalogue/" (E::PLURAL) } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    @if id.is_some() { input type="hidden" name="existing" value="true"; }
                    (fields)
                    button type="submit" { @if id.is_some() { "Save" } @else { "Add" } }
                }
            } @else {
                (fields)
            }
        },
    )
}
