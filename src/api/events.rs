//! `GET /v1/events?after=&limit=&type=`: the events a reseller should hear
//! of, oldest first (a reseller its own, compliance every tenant's and
//! `impact.completed`), for a consumer catching up without webhooks or
//! after its endpoint was down. `next` is the cursor to pass as `after`:
//! after the page's last event, and on an empty page the `after` asked
//! for, so a consumer that has read everything polls again from `next`.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::paging::{not_a_parameter, Seq};
use super::{scope, ApiError, Paging, Params, State};
use crate::audit::outbox::EVENT_TYPES;
use crate::auth::{Principal, Role};
use crate::store::events::{EventFilter, EventRow};

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// An event as the listing shows it (the webhook body carries its `type`,
/// `created_at` as `timestamp`, and `data`).
pub fn event_json(event: &EventRow) -> Value {
    json!({
        "id": event.id,
        "type": event.event_type,
        "created_at": event.created_at,
        "reseller": event.reseller,
        "data": event.data,
    })
}

/// `GET /v1/events` (reseller and integrator: their own; compliance: all).
pub async fn list(
    state: State,
    principal: Principal,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Reseller, Role::Integrator, Role::Compliance])?;
    let mut types = None;
    let paging = Paging::<Seq>::read(query, DEFAULT_PAGE, MAX_PAGE, |name, value| match name {
        "type" if EVENT_TYPES.contains(&value.as_str()) => {
            types = Some(vec![value]);
            Ok(())
        }
        "type" => Err(ApiError::field(
            "type",
            format!("must be one of {}", EVENT_TYPES.join(", ")),
        )),
        _ => Err(not_a_parameter(name)),
    })?;
    let reseller = scope(&state, &principal).await?.map(|t| t.to_string());
    let after = paging.cursor.map(|Seq(n)| n);
    let filter = EventFilter {
        after: after.unwrap_or(0),
        reseller,
        types,
    };
    let st = Arc::clone(&state);
    let page = web::block(move || st.store.events(&filter, paging.limit)).await??;
    let events: Vec<Value> = page.rows.iter().map(event_json).collect();
    // A feed's cursor: after the page's last event whenever it has one (full
    // or not), so a consumer at the end polls again from where it stopped;
    // on an empty page, where it was asked from (`null` from the start).
    let next = page
        .rows
        .last()
        .map(|e| e.seq)
        .or(page.next.as_deref().and_then(|n| n.parse().ok()))
        .or(after)
        .map(|n| n.to_string());
    Ok(HttpResponse::Ok().json(json!({ "events": events, "next": next })))
}
