//! Impact runs, as the compliance officer reads them: `GET /v1/impact-runs`,
//! `GET /v1/impact-runs/{id}` and `GET /v1/impact-runs/{id}/licenses`; and
//! `POST /v1/impact-previews`, the same report on a candidate catalogue.
//!
//! Compliance and admins read every run. A reseller reads a run's licences
//! only where they are its own, and the run's counts only of those.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::paging::{not_a_parameter, After};
use super::{path_id, tenant, ApiError, Body, FieldError, Paging, Params, PendingBody, State};
use crate::auth::{Principal, Role};
use crate::domain::{OrgId, PlainText};
use crate::policy::CatalogChange;
use crate::store::impact::{ActionRow, Counts, RunRow};

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// A run as the report shows it (with `counts` given: a tenant's own).
pub fn run_json(run: &RunRow, counts: &Counts) -> Value {
    json!({
        "id": run.id,
        "trigger": run.trigger,
        "at": run.at,
        "status": run.status,
        "licenses_checked": run.licenses_checked,
        "counts": counts,
        "completed_at": run.completed_at,
    })
}

/// The tenant the caller reads as (`None`: every tenant), or `403`.
async fn reader(state: &State, principal: &Principal) -> Result<Option<String>, ApiError> {
    match principal.role {
        Role::Compliance | Role::Admin => Ok(None),
        _ => Ok(Some(tenant(state, principal).await?.to_string())),
    }
}

/// `GET /v1/impact-runs?after=&limit=` (compliance, admin): oldest first.
pub async fn list(
    state: State,
    principal: Principal,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance, Role::Admin])?;
    let paging = Paging::<After>::read(query, DEFAULT_PAGE, MAX_PAGE, |name, _| {
        Err(not_a_parameter(name))
    })?;
    let st = Arc::clone(&state);
    let page = web::block(move || {
        st.store
            .impact_runs(paging.cursor.as_ref().map(|c| c.0.as_str()), paging.limit)
    })
    .await??;
    let runs: Vec<Value> = page.rows.iter().map(|r| run_json(r, &r.counts)).collect();
    Ok(HttpResponse::Ok().json(json!({ "runs": runs, "next": page.next })))
}

/// `GET /v1/impact-runs/{id}`: a reseller sees its own licences' counts.
pub async fn get(
    state: State,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let own = reader(&state, &principal).await?;
    let tenant_view = own.is_some();
    let id = String::from(path_id(path)?);
    let st = Arc::clone(&state);
    let found = web::block(move || {
        let Some(run) = st.store.impact_run(&id)? else {
            return Ok(None);
        };
        let counts = match &own {
            Some(tenant) => st.store.impact_counts_of(&run.id, tenant)?,
            None => run.counts,
        };
        Ok::<_, crate::store::StoreError>(Some((run, counts)))
    })
    .await??;
    match found {
        Some((run, counts)) => {
            let mut shown = run_json(&run, &counts);
            if tenant_view {
                // A count over every tenant's licences: not a tenant's to see.
                shown["licenses_checked"] = Value::Null;
            }
            Ok(HttpResponse::Ok().json(shown))
        }
        None => Err(ApiError::NotFound),
    }
}

/// An acted-on licence as the report shows it, with its decision.
pub(crate) fn action_json(action: &ActionRow, decision: Option<&Value>) -> Value {
    let mut entry = json!({
        "license_id": action.license_id,
        "reseller": action.reseller,
        "product": action.product,
        "action": action.action,
        "decision": decision,
    });
    if let Some(not_after) = &action.not_after {
        entry["not_after"] = json!(not_after);
    }
    entry
}

/// `GET /v1/impact-runs/{id}/licenses?cursor=&limit=`: in licence id order;
/// a reseller's own only.
pub async fn licenses(
    state: State,
    principal: Principal,
    path: web::Path<String>,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    let own = reader(&state, &principal).await?;
    let id = String::from(path_id(path)?);
    let paging = Paging::<PlainText>::read(query, DEFAULT_PAGE, MAX_PAGE, |name, _| {
        Err(not_a_parameter(name))
    })?;
    let st = Arc::clone(&state);
    let found = web::block(move || {
        if st.store.impact_run(&id)?.is_none() {
            return Ok(None);
        }
        let page = st.store.impact_actions(
            &id,
            own.as_deref(),
            paging.cursor.as_ref().map(|c| c.as_str()),
            paging.limit,
        )?;
        let mut entries = Vec::with_capacity(page.rows.len());
        for action in &page.rows {
            let decision = st.store.decision(&action.decision_id)?;
            entries.push(action_json(action, decision.as_ref().map(|d| &d.body)));
        }
        Ok::<_, crate::store::StoreError>(Some((entries, page.next)))
    })
    .await??;
    match found {
        Some((entries, next)) => {
            Ok(HttpResponse::Ok().json(json!({ "licenses": entries, "next": next })))
        }
        None => Err(ApiError::NotFound),
    }
}

/// The most changes one preview takes.
const MAX_CHANGES: usize = 100;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    changes: Vec<ChangeBody>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    op: Op,
    path: String,
    #[serde(default)]
    body: Option<Value>,
}

#[derive(serde::Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Op {
    Put,
    Delete,
}

/// An admin-API change (its method, path and body) as a catalogue change;
/// what is wrong with it, by field, otherwise.
fn change_of(i: usize, change: ChangeBody) -> Result<CatalogChange, FieldError> {
    let at =
        |field: &str, message: String| FieldError::new(format!("changes[{i}].{field}"), message);
    let segments: Vec<&str> = change.path.split('/').collect();
    let (kind, id) = match segments.as_slice() {
        ["", "v1", "resellers", id] => ("reseller", id.to_string()),
        ["", "v1", "organizations", id] => ("organization", id.to_string()),
        ["", "v1", "products", id] => ("product", id.to_string()),
        ["", "v1", "designations", id] => ("designation", id.to_string()),
        ["", "v1", "organizations", source, "relationships", target] => {
            ("relationship", format!("{source}/{target}"))
        }
        _ => return Err(at(
            "path",
            "must be a catalogue entry's admin path: /v1/resellers/{id}, /v1/organizations/{id}, \
                 /v1/organizations/{id}/relationships/{target}, /v1/products/{sku} or \
                 /v1/designations/{id}"
                .into(),
        )),
    };
    match (change.op, change.body) {
        (Op::Delete, None) if kind == "relationship" => {
            let (source, target) = id.split_once('/').unwrap_or_default();
            match (OrgId::parse(source), OrgId::parse(target)) {
                (Ok(s), Ok(t)) => Ok(CatalogChange::DeleteRelationship(s, t)),
                (Err(m), _) | (_, Err(m)) => Err(at("path", m)),
            }
        }
        (Op::Delete, None) => Err(at("op", "only a relationship can be deleted".into())),
        (Op::Delete, Some(_)) => Err(at("body", "a delete takes no body".into())),
        (Op::Put, None) => Err(at(
            "body",
            "a put needs the entry's body, as its admin route takes it".into(),
        )),
        (Op::Put, Some(body)) => {
            CatalogChange::put(kind, &id, body).map_err(|m| match m.strip_prefix("spec: ") {
                Some(m) => at("body", m.to_string()),
                None => at("path", m),
            })
        }
    }
}

/// `POST /v1/impact-previews` (compliance, admin): what the changes would
/// do to the licences issued, applying nothing.
pub async fn preview(
    state: State,
    principal: Principal,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance, Role::Admin])?;
    let changes = preview_changes(&body.read().await?)?;
    let preview = state
        .gate
        .preview_impact(principal.actor(), changes)
        .await?;
    Ok(HttpResponse::Ok().json(preview_json(&preview)))
}

/// A preview's body (`{"changes": [...]}`) as catalogue changes, or what is
/// wrong with it, by field (`changes[i].path`, ...).
pub fn preview_changes(body: &Body) -> Result<Vec<CatalogChange>, ApiError> {
    let body: PreviewBody = body.json()?;
    if body.changes.is_empty() || body.changes.len() > MAX_CHANGES {
        return Err(ApiError::field(
            "changes",
            format!("must hold 1 to {MAX_CHANGES} changes"),
        ));
    }
    let mut changes = Vec::with_capacity(body.changes.len());
    let mut errors = Vec::new();
    for (i, change) in body.changes.into_iter().enumerate() {
        match change_of(i, change) {
            Ok(change) => changes.push(change),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// A preview as `POST /v1/impact-previews` answers it: the report of a run,
/// with the licences it would act on.
pub fn preview_json(preview: &crate::gate::impact::Preview) -> Value {
    let licenses: Vec<Value> = preview
        .licenses
        .iter()
        .map(|(action, decision)| action_json(action, Some(&json!(decision))))
        .collect();
    json!({
        "trigger": {"kind": "preview", "policy_version": preview.policy_version.to_string()},
        "at": preview.at,
        "status": "complete",
        "licenses_checked": preview.licenses_checked,
        "counts": preview.counts,
        "completed_at": preview.at,
        "licenses": licenses,
    })
}
