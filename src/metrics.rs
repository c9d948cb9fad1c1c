//! Prometheus metrics in a registry of the service's own (never the global
//! one), so that tests and several servers in one process do not collide.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Buckets from 100 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub decisions_total: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub audit_append_seconds: Histogram,
    pub audit_head_seq: IntGauge,
    pub ledger_batch_size: Histogram,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let decisions_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_decisions_total",
                "Decisions taken, by transaction and outcome.",
            ),
            &["transaction", "outcome"],
        )?;
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatekeeper_http_request_duration_seconds",
                "HTTP request latency, by matched route pattern, method and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )?;
        let audit_append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gatekeeper_audit_append_seconds",
                "Time to commit a write with its audit events.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let audit_head_seq = IntGauge::new(
            "gatekeeper_audit_head_seq",
            "Sequence number of the newest audit event this process wrote.",
        )?;
        let ledger_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "gatekeeper_ledger_batch_size",
                "Writes committed together in one ledger transaction.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("gatekeeper_build_info", "Build information; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(decisions_total.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        registry.register(Box::new(audit_append_seconds.clone()))?;
        registry.register(Box::new(audit_head_seq.clone()))?;
        registry.register(Box::new(ledger_batch_size.clone()))?;
        registry.register(Box::new(build_info))?;
        Ok(Metrics {
            registry,
            decisions_total,
            http_request_duration,
            audit_append_seconds,
            audit_head_seq,
            ledger_batch_size,
        })
    }

    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
