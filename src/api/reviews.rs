//! The review queue, for compliance: decisions whose outcome was `review`.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::paging::not_a_parameter;
use super::{path_id, ApiError, FieldError, Paging, Params, PendingBody, State};
use crate::auth::{Principal, Role};
use crate::domain::{Customer, PlainText};
use crate::gate::{Resolution, ReviewResolution};
use crate::store::decisions::StoredDecision;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
const MAX_NOTE: usize = 4000;

/// A decision in review, as listed: the decision, its tenant, what was
/// asked, and the review's state.
pub(crate) fn review_item(d: &StoredDecision) -> Value {
    let asked = d
        .request
        .as_ref()
        .and_then(|r| r.get("kind"))
        .and_then(Value::as_str);
    // What is under review: a licence an impact run reached (due by when),
    // or the transaction asked (issue, renew, preflight).
    let kind = match asked {
        Some("impact.review") => "impact",
        Some("license.issue") => "issue",
        Some("license.renew") => "renew",
        _ => "preflight",
    };
    let mut item = json!({
        "kind": kind,
        "decision": d.body,
        "reseller": d.reseller,
        "request": d.request,
        "review": review_state(d),
    });
    if let Some(due) = d.request.as_ref().and_then(|r| r.get("due")) {
        item["due"] = due.clone();
    }
    item
}

/// The state of a decision's review: `{"status": "open"}` until resolved.
pub fn review_state(d: &StoredDecision) -> Option<Value> {
    match (&d.review_status, &d.review) {
        (_, Some(review)) => Some(review.clone()),
        (Some(status), None) => Some(json!({ "status": status })),
        (None, None) => None,
    }
}

/// `GET /v1/reviews?status=&cursor=&limit=`: open reviews by default.
pub async fn list(
    state: State,
    principal: Principal,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let mut status = Some("open".to_string());
    let paging = Paging::<PlainText>::read(query, DEFAULT_PAGE, MAX_PAGE, |name, value| {
        match name {
            "status" => match value.as_str() {
                "open" | "approved" | "denied" | "rejected" => status = Some(value),
                "all" => status = None,
                _ => {
                    return Err(ApiError::field(
                        "status",
                        "must be open, approved, denied, rejected or all",
                    ))
                }
            },
            other => return Err(not_a_parameter(other)),
        }
        Ok(())
    })?;
    let st = Arc::clone(&state);
    let page = web::block(move || {
        st.store.reviews(
            status.as_deref(),
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
        .with_label_values(&["decisions"])
        .inc_by(page.unreadable);
    let reviews: Vec<Value> = page.rows.iter().map(review_item).collect();
    Ok(HttpResponse::Ok().json(json!({ "reviews": reviews, "next": page.next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveBody {
    resolution: Resolution,
    note: String,
    #[serde(default)]
    customer: Option<Customer>,
}

/// What is wrong with a resolution's note and attested facts (the API's
/// `422` and the console's field errors alike).
pub(crate) fn resolution_problems(note: &str, customer: Option<&Customer>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if note.trim().is_empty() {
        errors.push(FieldError::new(
            "note",
            "say why: the note is kept in the audit trail",
        ));
    } else if note.chars().count() > MAX_NOTE {
        errors.push(FieldError::new(
            "note",
            format!("must be at most {MAX_NOTE} characters"),
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
    errors
}

/// `POST /v1/reviews/{decision_id}`: approve (re-decide with the attested
/// customer facts and, if allowed, do what was asked) or reject. Once.
pub async fn resolve(
    state: State,
    principal: Principal,
    path: web::Path<String>,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let decision_id = String::from(path_id(path)?);
    let body: ResolveBody = body.json().await?;
    let errors = resolution_problems(&body.note, body.customer.as_ref());
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let resolved = state
        .gate
        .resolve_review(ReviewResolution {
            reviewer: principal.actor(),
            decision_id,
            resolution: body.resolution,
            note: body.note,
            customer: body.customer,
        })
        .await?;
    // The review, and on approval the new decision and the licence written.
    let mut shown = json!({ "review": resolved.review });
    if let Some(decision) = resolved.decision {
        shown["decision"] = json!(decision);
    }
    if let Some(license) = resolved.license {
        shown["license"] = json!(license);
    }
    Ok(HttpResponse::Ok().json(shown))
}
