//! Health, readiness and metrics: no token needed.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{ApiError, State};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers and takes writes, migrations are
/// applied, the catalogue is loaded, the audit chain vouches for it, and
/// callers' tokens can be verified (the identity provider's keys are neither
/// missing nor stale).
/// The database's answer is reused for [`Readiness::FRESH`], so that probes
/// (which need no token) cost at most a couple of queries a second.
pub async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    let ready = match state.readiness.fresh() {
        Some(ready) => ready,
        None => {
            let st = Arc::clone(&state);
            let ready = web::block(move || st.store.ready(PROBE_TIMEOUT)).await?;
            state.readiness.record(ready);
            ready
        }
    };
    let unvouched = state.gate.unvouched();
    let no_keys = state.auth.unavailable();
    state
        .metrics
        .set_ready(ready && unvouched.is_none() && no_keys.is_none());
    if let Some(reason) = no_keys {
        // The provider's failures are logged by its refresher.
        return Err(ApiError::KeysUnavailable(reason));
    }
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
            "the database does not answer or does not take writes, or migrations are pending"
                .into(),
        ))
    }
}

/// How long a probe waits for the database.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The last readiness answer of the database, and when it was had.
#[derive(Default)]
pub struct Readiness(std::sync::Mutex<Option<(std::time::Instant, bool)>>);

impl Readiness {
    /// How long an answer is reused.
    pub const FRESH: std::time::Duration = std::time::Duration::from_millis(500);

    fn fresh(&self) -> Option<bool> {
        let last = *self.0.lock().ok()?;
        last.filter(|(at, _)| at.elapsed() < Self::FRESH)
            .map(|(_, ready)| ready)
    }

    fn record(&self, ready: bool) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some((std::time::Instant::now(), ready));
        }
    }
}

/// `GET /metrics`: Prometheus text format. Renders what is in memory: the
/// gauges that come from the database are read on a timer
/// (`store::stats::StatsRefresher`), never by a scrape.
pub async fn metrics(state: State) -> Result<HttpResponse, ApiError> {
    state.metrics.observe_pool(state.store.pool_state());
    state
        .metrics
        .observe_jwks_age(state.auth.provider().map(|p| p.age()));
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
