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
/// catalogue is loaded.
pub async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    let st = Arc::clone(&state);
    let ready = web::block(move || {
        st.gate.store().ping()?;
        st.gate.store().migrations_applied()
    })
    .await?;
    match ready {
        Ok(true) => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "catalog_version": state.gate.catalog().version().to_string(),
        }))),
        Ok(false) => Err(ApiError::Unavailable("migrations are pending".into())),
        Err(e) => Err(e.into()),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: State) -> Result<HttpResponse, ApiError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
