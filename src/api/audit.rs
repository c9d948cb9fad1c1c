//! The audit trail, for compliance: pages of events and a verification.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{ApiError, FieldError, State};
use crate::auth::{Principal, Role};
use crate::store::AuditFilter;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

fn parse_filter(params: &HashMap<String, String>) -> Result<(AuditFilter, i64), ApiError> {
    let mut errors = Vec::new();
    let mut filter = AuditFilter::default();
    let mut limit = DEFAULT_LIMIT;
    let instant = |name: &str, v: &str, errors: &mut Vec<FieldError>| {
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| errors.push(FieldError::new(name, "must be an RFC 3339 instant")))
            .ok()
    };
    for (name, value) in params {
        match name.as_str() {
            "after" => match value.parse::<i64>() {
                Ok(n) if n >= 0 => filter.after = Some(n),
                _ => errors.push(FieldError::new(
                    "after",
                    "must be a cursor returned as `next`",
                )),
            },
            "limit" => match value.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("must be from 1 to {MAX_LIMIT}"),
                )),
            },
            "action" => filter.action = Some(value.clone()),
            "outcome" => match value.as_str() {
                "allow" | "deny" | "review" => filter.outcome = Some(value.clone()),
                _ => errors.push(FieldError::new("outcome", "must be allow, deny or review")),
            },
            "reseller" => filter.reseller = Some(value.clone()),
            "from" => filter.from = instant("from", value, &mut errors),
            "to" => filter.to = instant("to", value, &mut errors),
            other => errors.push(FieldError::new(other, "is not a filter of this listing")),
        }
    }
    if errors.is_empty() {
        Ok((filter, limit))
    } else {
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        Err(ApiError::Validation(errors))
    }
}

/// `GET /v1/audit`: events in `seq` order, a page at a time.
pub async fn list(
    state: State,
    principal: Principal,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let (filter, limit) = parse_filter(&query)?;
    let st = Arc::clone(&state);
    let events = web::block(move || st.gate.store().audit_events(&filter, limit)).await??;
    let next = if events.len() as i64 == limit {
        events
            .last()
            .and_then(|e| e.get("seq"))
            .map(|s| s.to_string())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(json!({ "events": events, "next": next })))
}

/// `GET /v1/audit/verify`: checks the whole chain against the recorded head.
pub async fn verify(state: State, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let st = Arc::clone(&state);
    let report = web::block(move || st.gate.store().verify_chain()).await??;
    Ok(HttpResponse::Ok().json(json!({
        "ok": report.ok,
        "events_checked": report.events_checked,
        "head": report.head.map(|(seq, hash)| json!({"seq": seq, "hash": hash})),
        "first_invalid_seq": report.first_invalid_seq,
        "reason": report.fault,
    })))
}
