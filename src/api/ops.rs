//! Health, readiness and metrics: no token needed.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{ApiError, State};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers, migrations are applied and the
/// catalogue is loaded, and the audit chain vouches for it.
pub async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    let st = Arc::clone(&state);
    let ready = web::block(move || st.gate.store().ready(PROBE_TIMEOUT)).await?;
    let unvouched = state.gate.unvouched();
    state.metrics.set_ready(ready && unvouched.is_none());
    if let Some(reason) = unvouched {
        // Logged when found; the probe says only that it is not served.
        tracing::warn!(%reason, "not ready: the stored catalogue is not served");
        return Err(ApiError::Unavailable(
            "the audit chain does not vouch for the stored catalogue".into(),
        ));
    }
    if ready {
        Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "catalog_version": state.gate.catalog().version().to_string(),
        })))
    } else {
        Err(ApiError::Unavailable(
            "the database does not answer, or migrations are pending".into(),
        ))
    }
}

/// How long a probe or a scrape waits for the database.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: State) -> Result<HttpResponse, ApiError> {
    let st = Arc::clone(&state);
    let (stats, pool) = web::block(move || {
        let store = st.gate.store();
        (
            store.stats(PROBE_TIMEOUT).unwrap_or_default(),
            store.pool_state(),
        )
    })
    .await?;
    state.metrics.observe_database(&stats, pool);
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
