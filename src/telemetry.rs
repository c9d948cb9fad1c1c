//! Logs and request spans: one span per request carrying its method, route
//! pattern, request id, status, latency, tenant and decision id, so every
//! log line of a request can be found by its `X-Request-Id`. Tokens and
//! customer facts are never put in a span or a log line.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::HttpMessage;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::EnvFilter;

/// The header that carries a request's id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of the request being served (in the request's extensions).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// When the request started (in the request's extensions).
#[derive(Clone, Copy, Debug)]
struct Started(Instant);

/// A caller's id is kept if it is short and plain; otherwise one is made.
pub fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Builds the root span of every request.
pub struct Spans;

impl RootSpanBuilder for Spans {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        request.extensions_mut().insert(Started(Instant::now()));
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            request_id = %id,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            tenant = tracing::field::Empty,
            decision_id = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let Ok(response) = outcome else {
            span.in_scope(|| tracing::warn!("request failed before a response"));
            return;
        };
        let status = response.status().as_u16();
        let latency_ms = response
            .request()
            .extensions()
            .get::<Started>()
            .map(|s| s.0.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or_default();
        span.record("status", status);
        span.record("latency_ms", latency_ms);
        span.in_scope(|| {
            if status >= 500 {
                tracing::warn!(status, latency_ms, "request served");
            } else {
                tracing::info!(status, latency_ms, "request served");
            }
        });
    }
}

/// Records the tenant on the current request's span.
pub fn record_tenant(tenant: &str) {
    Span::current().record("tenant", tenant);
}

/// Records a decision id on the current request's span.
pub fn record_decision(id: &str) {
    Span::current().record("decision_id", id);
}

/// Sets up logging: `RUST_LOG` filters (default `info`); `json` writes one
/// JSON object a line with the request's span fields, anything else the
/// human format.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format.eq_ignore_ascii_case("json") {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

/// A log line that is written at most once every [`Sampled::EVERY`], for
/// events that an attacker can make happen thousands of times a second
/// (failed authentications): the line says how many went unlogged.
#[derive(Default)]
pub struct Sampled {
    last: std::sync::Mutex<Option<Instant>>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Sampled {
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// `Some(events not logged since the last line)` when a line is due;
    /// otherwise counts this event as not logged.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let mut last = self.last.lock().ok()?;
        match *last {
            Some(at) if now.saturating_duration_since(at) < Self::EVERY => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sampled_line_is_due_once_per_interval_and_counts_the_rest() {
        let sampled = Sampled::default();
        let t0 = Instant::now();
        assert_eq!(sampled.due_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(sampled.due_at(t0 + Sampled::EVERY / 2), None);
        }
        assert_eq!(sampled.due_at(t0 + Sampled::EVERY), Some(5));
        assert_eq!(sampled.due_at(t0 + Sampled::EVERY), None);
    }
}
