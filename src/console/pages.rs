//! The console's pages, rendered on the server with maud: everything
//! interpolated is escaped, no page carries a script or an inline style
//! (the Content-Security-Policy forbids both), and every form field has its
//! label.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::Session;
use crate::auth::Role;

/// An API error as a form's problems: its field errors, or one problem on
/// `whole` (the field holding the whole body) saying what it is.
pub fn field_problems(e: crate::api::ApiError, whole: &str) -> Vec<FieldProblem> {
    match e {
        crate::api::ApiError::Validation(errors) => errors
            .into_iter()
            .map(|e| FieldProblem {
                field: e.field,
                message: e.message,
            })
            .collect(),
        other => vec![FieldProblem {
            field: whole.into(),
            message: other.to_string(),
        }],
    }
}

/// A field's problem, shown beside it.
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// The frame of every page: a skip link, the navigation, the sign-out form.
pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · license-gatekeeper console" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                a class="skip" href="#main" { "Skip to the content" }
                header {
                    p class="brand" { "license-gatekeeper" }
                    @if let Some(s) = session {
                        nav aria-label="Console" {
                            ul {
                                @if s.role == Role::Compliance {
                                    li { a href="/console/reviews" { "Review queue" } }
                                    li { a href="/console/licenses" { "Licences" } }
                                }
                                li { a href="/console/impact" { "Impact" } }
                                @if s.role == Role::Compliance {
                                    li { a href="/console/audit" { "Audit trail" } }
                                }
                                li { a href="/console/catalogue" { "Catalogue" } }
                            }
                        }
                        form method="post" action="/console/sign-out" class="signout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span { "Signed in as " strong { (s.shown_name()) } " (" (s.role.as_str()) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The ways in a console offers.
#[derive(Clone, Copy, Debug)]
pub struct WaysIn {
    /// Through the identity provider (`GATEKEEPER_CONSOLE_CLIENT_ID`).
    pub provider: bool,
    /// Development mode's local sign-in: a name and a role, no password
    /// (the service runs with development keys; the page says so).
    pub local: bool,
}

/// The sign-in page, with a problem said at the top.
pub fn sign_in(ways: WaysIn, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(p) = problem {
                p class="error" role="alert" { (p) }
            }
            @if ways.provider {
                p {
                    a class="button" href="/console/sign-in/provider" {
                        "Sign in with your identity provider"
                    }
                }
            }
            @if ways.local {
                p class="warning" {
                    "Development mode: anyone who reaches this page can sign in. "
                    "In production the console signs in through your OpenID provider."
                }
                form method="post" action="/console/sign-in" {
                    div class="field" {
                        label for="name" { "Your name" }
                        input id="name" name="name" type="text" required autocomplete="name" maxlength="100";
                    }
                    div class="field" {
                        label for="role" { "Role" }
                        select id="role" name="role" {
                            option value="compliance" { "Compliance officer" }
                            option value="admin" { "Admin" }
                        }
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// After the provider's sign-in: the queue, opened from this origin (so
/// the `SameSite=Strict` session cookie goes with it).
pub fn signed_in(session: &Session) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content={ "0;url=" (super::start_page(session)) };
                title { "Signed in · license-gatekeeper console" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                main id="main" {
                    h1 { "Signed in" }
                    p {
                        "You are signed in as " strong { (session.shown_name()) }
                        " (" (session.role.as_str()) "). "
                        a href=(super::start_page(session)) { "Continue" }
                    }
                }
            }
        }
    }
}

pub(super) fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The review queue: one row a case, with a link to its evidence.
pub fn queue(session: &Session, status: &str, reviews: &[Value], next: Option<&str>) -> Markup {
    layout(
        "Review queue",
        Some(session),
        html! {
            form method="get" action="/console/reviews" class="filters" {
                div class="field" {
                    label for="status" { "Status" }
                    select id="status" name="status" {
                        @for s in ["open", "approved", "denied", "rejected", "all"] {
                            option value=(s) selected[s == status] { (s) }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            @if reviews.is_empty() {
                p { "No reviews with this status." }
            } @else {
                table {
                    caption { (reviews.len()) " cases, oldest first" }
                    thead {
                        tr {
                            th scope="col" { "Case" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Reseller" }
                            th scope="col" { "Product" }
                            th scope="col" { "Customer" }
                            th scope="col" { "Asked at" }
                            th scope="col" { "Due" }
                            th scope="col" { "Status" }
                        }
                    }
                    tbody {
                        @for r in reviews {
                            @let id = text(&r["decision"], "id");
                            tr {
                                td { a href={ "/console/reviews/" (id) } { (id) } }
                                td { (text(r, "kind")) }
                                td { (text(r, "reseller")) }
                                td { (text(&r["request"], "product")) }
                                td { (text(&r["request"]["customer"], "name")) }
                                td { (text(&r["decision"], "as_of")) }
                                td { (text(r, "due")) }
                                td { (text(&r["review"], "status")) }
                            }
                        }
                    }
                }
                @if let Some(next) = next {
                    p { a href={ "/console/reviews?status=" (status) "&cursor=" (next) } { "Next page" } }
                }
            }
        },
    )
}

/// A lineage path as steps: the product asked about, then each product or
/// organisation it reaches and how (component, vendor, parent, OEM, …).
fn path(steps: &[Value]) -> Markup {
    html! {
        ol class="path" {
            @for (i, step) in steps.iter().enumerate() {
                li {
                    @if i > 0 {
                        span class="via" { "via " (text(step, "via")) " → " }
                    }
                    span class="kind" { (text(step, "kind")) " " }
                    code { (text(step, "id")) }
                }
            }
        }
    }
}

/// One case with its evidence, and (while open) the form that resolves it.
pub fn review(
    session: &Session,
    item: &Value,
    problems: &[FieldProblem],
    note: &str,
    done: Option<&str>,
) -> Markup {
    let decision = &item["decision"];
    let request = &item["request"];
    let customer = &request["customer"];
    let id = text(decision, "id");
    let open = text(&item["review"], "status") == "open";
    let problem = |field: &str| problems.iter().find(|p| p.field == field);
    html! {
        (layout(&format!("Review {id}"), Some(session), html! {
            @if let Some(done) = done {
                p class="notice" role="status" { (done) }
            }
            @if !problems.is_empty() {
                div class="error" role="alert" {
                    p { "The review was not resolved:" }
                    ul { @for p in problems { li { a href={ "#" (p.field) } { (p.message) } } } }
                }
            }
            section aria-labelledby="request" {
                h2 id="request" { "The request" }
                dl {
                    dt { "Kind" } dd { (text(item, "kind")) }
                    dt { "Transaction" } dd { (text(decision, "transaction")) }
                    dt { "Product" } dd { code { (text(request, "product")) } }
                    dt { "Seats" } dd { (text(request, "seats")) }
                    dt { "Term (days)" } dd { (text(request, "term_days")) }
                    dt { "Decided at" } dd { (text(decision, "as_of")) }
                    dt { "Outcome" } dd { (text(decision, "outcome")) }
                    @if item.get("due").is_some() {
                        dt { "Due" } dd { (text(item, "due")) " (the licence is suspended if this is not resolved by then)" }
                    }
                }
            }
            section aria-labelledby="parties" {
                h2 id="parties" { "The parties" }
                dl {
                    dt { "Reseller" } dd { (text(item, "reseller")) }
                    dt { "Customer" } dd { (text(customer, "name")) " (" code { (text(customer, "id")) } ")" }
                    dt { "Customer's country" } dd { (text(customer, "country")) }
                    dt { "U.S. person" } dd {
                        @match customer.get("us_person").and_then(Value::as_bool) {
                            Some(true) => "yes",
                            Some(false) => "no",
                            None => "not stated",
                        }
                    }
                }
            }
            section aria-labelledby="reasons" {
                h2 id="reasons" { "Why it is in review" }
                @for reason in decision["reasons"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    article class="reason" {
                        h3 { (text(reason, "code")) }
                        dl {
                            dt { "Designation" } dd { (text(reason, "designation")) }
                            dt { "Rule" } dd { (text(reason, "rule")) }
                            dt { "Citation" } dd { (text(reason, "citation")) }
                            dt { "In effect from" } dd { (text(reason, "effective_from")) }
                            dt { "Party" } dd { (text(reason, "party")) }
                        }
                        @if let Some(steps) = reason["path"].as_array() {
                            h4 { "Lineage path" }
                            (path(steps))
                        }
                    }
                }
            }
            section aria-labelledby="resolution" {
                h2 id="resolution" { "Resolution" }
                @if open {
                    form method="post" action={ "/console/reviews/" (id) } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        fieldset {
                            legend { "Decision" }
                            div class="choice" {
                                input type="radio" id="approve" name="resolution" value="approve" checked;
                                label for="approve" { "Approve: decide again with the facts attested below" }
                            }
                            div class="choice" {
                                input type="radio" id="reject" name="resolution" value="reject";
                                label for="reject" { "Reject: nothing is issued" }
                            }
                        }
                        div class="field" {
                            label for="us_person" { "Attested: is the customer a U.S. person?" }
                            select id="us_person" name="us_person" {
                                option value="" { "Not attested" }
                                option value="false" { "No" }
                                option value="true" { "Yes" }
                            }
                        }
                        div class="field" {
                            label for="note" { "Note (kept in the audit trail)" }
                            @if let Some(p) = problem("note") {
                                p class="field-error" id="note-error" { (p.message) }
                                textarea id="note" name="note" rows="4" required aria-invalid="true" aria-describedby="note-error" { (note) }
                            } @else {
                                textarea id="note" name="note" rows="4" required { (note) }
                            }
                        }
                        button type="submit" { "Resolve" }
                    }
                } @else {
                    dl {
                        dt { "Status" } dd { (text(&item["review"], "status")) }
                        dt { "Note" } dd { (text(&item["review"], "note")) }
                        dt { "By" } dd { (text(&item["review"]["reviewer"], "sub")) }
                        dt { "At" } dd { (text(&item["review"], "resolved_at")) }
                    }
                }
            }
        }))
    }
}

/// A refusal or a failure, as a page.
pub fn problem(session: Option<&Session>, status: u16, message: &str) -> Markup {
    layout(
        &format!("{status}"),
        session,
        html! {
            p role="alert" { (message) }
            p { a href="/console/reviews" { "Back to the review queue" } }
        },
    )
}

/// The licences, newest last, a row each with a link to its page.
pub fn licenses(
    session: &Session,
    asked: &std::collections::BTreeMap<String, String>,
    licenses: &[Value],
    next: Option<&str>,
    problems: &[FieldProblem],
) -> Markup {
    let value = |k: &str| asked.get(k).cloned().unwrap_or_default();
    let query: String = asked
        .iter()
        .filter(|(k, _)| k.as_str() != "cursor")
        .map(|(k, v)| format!("&{}={}", k, url_escape(v)))
        .collect();
    layout(
        "Licences",
        Some(session),
        html! {
            (problem_list(problems))
            form method="get" action="/console/licenses" class="filters" {
                (filter_field("id", "Licence id", &value("id"), "lic_…"))
                (filter_field("reseller", "Reseller", &value("reseller"), "acme-resale"))
                (filter_field("product", "Product (SKU)", &value("product"), "KAV-2024"))
                div class="field" {
                    label for="status" { "Status" }
                    select id="status" name="status" {
                        option value="" { "any" }
                        @for s in LICENSE_STATUSES {
                            option value=(s) selected[value("status") == *s] { (s) }
                        }
                    }
                }
                button type="submit" { "Search" }
            }
            @if licenses.is_empty() {
                p { "No licences match." }
            } @else {
                table {
                    caption { (licenses.len()) " licences" }
                    thead {
                        tr {
                            th scope="col" { "Licence" }
                            th scope="col" { "Reseller" }
                            th scope="col" { "Product" }
                            th scope="col" { "Customer" }
                            th scope="col" { "Seats" }
                            th scope="col" { "Expires" }
                            th scope="col" { "Status" }
                        }
                    }
                    tbody {
                        @for l in licenses {
                            @let id = text(l, "id");
                            tr {
                                td { a href={ "/console/licenses/" (id) } { (id) } }
                                td { (text(l, "reseller")) }
                                td { (text(l, "product")) }
                                td { (text(&l["customer"], "name")) }
                                td { (text(l, "seats")) }
                                td { (text(l, "expires_at")) }
                                td { (text(l, "status")) }
                            }
                        }
                    }
                }
                @if let Some(next) = next {
                    p { a href={ "/console/licenses?cursor=" (url_escape(next)) (query) } { "Next page" } }
                }
            }
        },
    )
}

/// The most events a licence's history shows.
pub const HISTORY_LIMIT: usize = 100;

/// The stored statuses a licence search takes.
pub const LICENSE_STATUSES: &[&str] = &["active", "suspended", "revoked", "ended"];

/// Problems with a form's fields, listed at the top.
pub(super) fn problem_list(problems: &[FieldProblem]) -> Markup {
    html! {
        @if !problems.is_empty() {
            div class="error" role="alert" {
                ul { @for p in problems { li { (p.field) ": " (p.message) } } }
            }
        }
    }
}

/// Audit events as a table, in chain order.
fn events_table(events: &[Value], caption: &str) -> Markup {
    html! {
        table {
            caption { (events.len()) " " (caption) }
            thead {
                tr {
                    th scope="col" { "Seq" }
                    th scope="col" { "At" }
                    th scope="col" { "Action" }
                    th scope="col" { "Actor" }
                    th scope="col" { "Reseller" }
                    th scope="col" { "Outcome" }
                }
            }
            tbody {
                @for e in events {
                    tr {
                        td { (text(e, "seq")) }
                        td { (text(e, "at")) }
                        td { code { (text(e, "action")) } }
                        td { (text(&e["actor"], "sub")) " (" (text(&e["actor"], "role")) ")" }
                        td { (text(&e["actor"], "reseller")) }
                        td { (text(&e["decision"], "outcome")) }
                    }
                }
            }
        }
    }
}

/// A reason field, with its problem if it has one.
fn reason_field(id: &str, problem: Option<&FieldProblem>, reason: &str) -> Markup {
    html! {
        div class="field" {
            label for=(id) { "Reason (kept with the licence and in the audit trail)" }
            @if let Some(p) = problem {
                p class="field-error" id={ (id) "-error" } { (p.message) }
                textarea id=(id) name="reason" rows="3" required aria-invalid="true" aria-describedby={ (id) "-error" } { (reason) }
            } @else {
                textarea id=(id) name="reason" rows="3" required { (reason) }
            }
        }
    }
}

/// One licence: its facts, its state, and what compliance may do to it.
/// `problem` is a field error of the action `failed` (its form shows it).
pub fn license(
    session: &Session,
    l: &Value,
    history: &[Value],
    failed: Option<(&str, &FieldProblem, &str)>,
    outcome: Option<&str>,
) -> Markup {
    let id = text(l, "id");
    let status = text(l, "status");
    let problem_for = |action: &str| failed.filter(|(a, _, _)| *a == action).map(|(_, p, _)| p);
    let reason_for = |action: &str| {
        failed
            .filter(|(a, _, _)| *a == action)
            .map(|(_, _, r)| r.to_string())
            .unwrap_or_default()
    };
    layout(
        &format!("Licence {id}"),
        Some(session),
        html! {
            @if let Some(o) = outcome {
                p class="notice" role="status" { (o) }
            }
            dl {
                dt { "Reseller" } dd { (text(l, "reseller")) }
                dt { "Product" } dd { code { (text(l, "product")) } }
                dt { "Customer" } dd { (text(&l["customer"], "name")) " (" code { (text(&l["customer"], "id")) } ", " (text(&l["customer"], "country")) ")" }
                dt { "Seats" } dd { (text(l, "seats")) }
                dt { "Starts" } dd { (text(l, "starts_at")) }
                dt { "Expires" } dd { (text(l, "expires_at")) }
                dt { "Status" } dd { (status) }
                @if let Some(reason) = l.get("status_reason") {
                    dt { "Why" } dd { (text(reason, "reason")) " (by " (text(&reason["by"], "sub")) ", " (text(reason, "at")) ")" }
                }
                @if let Some(ended) = l.get("ended_by") {
                    dt { "Ended by" } dd { (text(ended, "designation")) ", rule " (text(ended, "rule")) ", at " (text(ended, "at")) }
                }
                dt { "Decision" } dd { code { (text(l, "decision_id")) } }
            }
            @if status == "active" {
                section aria-labelledby="suspend" {
                    h2 id="suspend" { "Suspend" }
                    form method="post" action={ "/console/licenses/" (id) "/suspension" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        (reason_field("suspend-reason", problem_for("suspension"), &reason_for("suspension")))
                        button type="submit" { "Suspend the licence" }
                    }
                }
            }
            @if status == "suspended" {
                section aria-labelledby="reinstate" {
                    h2 id="reinstate" { "Reinstate" }
                    p { "Reinstating goes through the gate like a renewal: a licence the law now prohibits stays suspended." }
                    form method="post" action={ "/console/licenses/" (id) "/reinstatement" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Reinstate the licence" }
                    }
                }
            }
            @if status == "active" || status == "suspended" {
                section aria-labelledby="revoke" {
                    h2 id="revoke" { "Revoke" }
                    p { "Revoking is final." }
                    form method="post" action={ "/console/licenses/" (id) "/revocation" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        (reason_field("revoke-reason", problem_for("revocation"), &reason_for("revocation")))
                        button type="submit" { "Revoke the licence" }
                    }
                }
            }
            section aria-labelledby="history" {
                h2 id="history" { "History" }
                p { "Every audit event that names this licence: its decisions, issue and renewals, suspensions, reinstatements, revocation, and what impact runs did to it." }
                @if history.is_empty() {
                    p { "No events name this licence." }
                } @else {
                    (events_table(history, "events, in chain order"))
                    @if history.len() >= HISTORY_LIMIT {
                        p { "The first " (HISTORY_LIMIT) " are shown; the audit trail has the rest." }
                    }
                }
            }
        },
    )
}

/// A text filter of the trail, labelled, keeping what was asked.
pub(super) fn filter_field(name: &str, label: &str, value: &str, hint: &str) -> Markup {
    html! {
        div class="field" {
            label for=(name) { (label) }
            input id=(name) name=(name) type="text" value=(value) placeholder=(hint);
        }
    }
}

/// The audit trail: the API's filters, a page of events, the exports, the
/// latest checkpoint, and the way to the verification.
pub fn audit(
    session: &Session,
    asked: &std::collections::BTreeMap<String, String>,
    events: &[Value],
    next: Option<&str>,
    checkpoint: Option<&Value>,
    problems: &[FieldProblem],
) -> Markup {
    let value = |k: &str| asked.get(k).cloned().unwrap_or_default();
    let query: String = asked
        .iter()
        .filter(|(k, _)| k.as_str() != "after")
        .map(|(k, v)| format!("&{}={}", k, url_escape(v)))
        .collect();
    layout(
        "Audit trail",
        Some(session),
        html! {
            (problem_list(problems))
            section aria-labelledby="checkpoint" {
                h2 id="checkpoint" { "Latest checkpoint" }
                @if let Some(c) = checkpoint {
                    dl {
                        dt { "Up to event" } dd { (text(c, "seq")) }
                        dt { "Signed at" } dd { (text(c, "at")) }
                        dt { "Key" } dd { code { (text(c, "kid")) } }
                        dt { "Chain hash" } dd { code { (text(c, "hash")) } }
                    }
                } @else {
                    p { "No checkpoint has been signed yet." }
                }
                p { a href="/console/audit/verification" { "Verify the whole chain now" } }
            }
            form method="get" action="/console/audit" class="filters" {
                (filter_field("action", "Action", &value("action"), "review.*"))
                div class="field" {
                    label for="outcome" { "Outcome" }
                    select id="outcome" name="outcome" {
                        option value="" { "any" }
                        @for o in ["allow", "deny", "review"] {
                            option value=(o) selected[value("outcome") == o] { (o) }
                        }
                    }
                }
                (filter_field("reseller", "Reseller", &value("reseller"), "acme-resale"))
                (filter_field("from", "From (RFC 3339)", &value("from"), "2026-01-01T00:00:00Z"))
                (filter_field("to", "To (RFC 3339)", &value("to"), "2026-12-31T23:59:59Z"))
                button type="submit" { "Filter" }
            }
            p {
                "Export every matching event: "
                a href={ "/console/audit/export?format=ndjson" (query) } { "NDJSON" }
                " · "
                a href={ "/console/audit/export?format=csv" (query) } { "CSV" }
            }
            @if events.is_empty() {
                p { "No events match." }
            } @else {
                (events_table(events, "events, in chain order"))
                @if let Some(next) = next {
                    p { a href={ "/console/audit?after=" (next) (query) } { "Next page" } }
                }
            }
        },
    )
}

/// The chain's verification, as `GET /v1/audit/verify` reports it.
pub fn verification(session: &Session, report: &Value) -> Markup {
    let ok = report["ok"].as_bool() == Some(true);
    layout(
        "Verification of the audit chain",
        Some(session),
        html! {
            @if ok {
                p class="notice" role="status" { "The chain verifies: every event links to the one before it, and every signed checkpoint matches." }
            } @else {
                p class="error" role="alert" { "The chain does NOT verify. Keep this page and the exports; see the runbook." }
            }
            dl {
                dt { "Events checked" } dd { (text(report, "events_checked")) }
                dt { "Checkpoints checked" } dd { (text(report, "checkpoints_checked")) }
                dt { "Head" } dd { (text(&report["head"], "seq")) " " code { (text(&report["head"], "hash")) } }
                @if !ok {
                    dt { "First invalid event" } dd { (text(report, "first_invalid_seq")) }
                    dt { "Reason" } dd { (text(report, "reason")) }
                    dt { "Row" } dd { (text(report, "row")) }
                }
            }
            p { a href="/console/audit" { "Back to the audit trail" } }
        },
    )
}

/// A query value, percent-encoded for a link.
pub(super) fn url_escape(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
