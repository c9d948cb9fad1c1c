//! Prometheus metrics in a registry of the service's own (never the global
//! one), so that tests and several servers in one process do not collide.
//! Route labels are matched patterns; no label carries a customer, a token
//! or any other caller-supplied value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets from 100 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What the database says, read on a timer (never by a scrape: see
/// `startup`'s refresher), so that a scrape costs no query.
#[derive(Debug, Clone, Default)]
pub struct DatabaseStats {
    pub ready: bool,
    pub review_queue_depth: i64,
    /// Unix milliseconds of the newest signed checkpoint, if there is one.
    pub checkpoint_at_ms: Option<i64>,
    /// Licences whose decision (and so its audit event) is missing.
    pub license_audit_mismatch: i64,
    pub impact: ImpactRunStats,
    pub webhooks: WebhookStats,
}

/// Webhook deliveries as the database holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Unix milliseconds of the `created_at` of the oldest event an enabled
    /// endpoint still waits for, if one does.
    pub oldest_undelivered_at_ms: Option<i64>,
    /// Endpoints disabled (they answered `410`).
    pub endpoints_disabled: i64,
}

/// The results a delivery attempt is counted under, always exported (0 when
/// none happened).
pub const WEBHOOK_RESULTS: [&str; 7] = [
    "delivered",
    "failed",
    "gone",
    "timeout",
    "unreachable",
    "refused",
    "abandoned",
];

/// Impact runs as the database holds them.
#[derive(Debug, Clone, Default)]
pub struct ImpactRunStats {
    /// Runs by `(trigger kind, status)`; a pair with no run may be absent.
    pub runs: BTreeMap<(String, String), i64>,
    /// Unix milliseconds of the `at` (the trigger's instant) of the oldest
    /// run still running, if one is.
    pub oldest_running_at_ms: Option<i64>,
}

/// The trigger kinds and states of impact runs, always exported (0 when
/// there is none) so that a query or an alert never meets an absent series.
const IMPACT_TRIGGERS: &[&str] = &["catalog_change", "rule_effective"];
const IMPACT_STATES: &[&str] = &["running", "complete"];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub decisions_total: IntCounterVec,
    pub refusals_total: IntCounterVec,
    pub idempotent_replays_total: IntCounter,
    /// Stored rows a listing left out because they do not read back.
    pub unreadable_rows_total: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub audit_append_seconds: Histogram,
    pub audit_append_failures_total: IntCounter,
    pub audit_head_seq: IntGauge,
    pub ledger_batch_size: Histogram,
    pub review_queue_depth: IntGauge,
    pub catalog_version: IntGauge,
    catalog_age_seconds: Gauge,
    /// Unix seconds at which this process installed the current catalogue.
    catalog_since: Arc<AtomicI64>,
    pub db_pool_connections: IntGaugeVec,
    pub db_pool_wait_seconds: Histogram,
    checkpoint_age_seconds: Gauge,
    /// Unix milliseconds of the newest checkpoint (-1: none), from the last
    /// refresh; its age is computed at each scrape.
    checkpoint_at_ms: Arc<AtomicI64>,
    license_audit_mismatch: IntGauge,
    ready: IntGauge,
    pub auth_failures_total: IntCounterVec,
    pub db_stats_refresh_seconds: Histogram,
    /// Licences impact runs acted on, by action.
    pub impact_actions_total: IntCounterVec,
    /// Impact runs this process completed, by trigger kind.
    pub impact_runs_completed_total: IntCounterVec,
    /// From a run's trigger (the change, or the rule's instant) to its end.
    pub impact_run_lag_seconds: HistogramVec,
    /// Impact runs in the database, by trigger kind and status.
    impact_runs: IntGaugeVec,
    /// Every `(trigger, status)` pair `impact_runs` has exported, so that a
    /// pair whose runs are gone reads 0 rather than its last count.
    impact_runs_seen: Arc<Mutex<Vec<(String, String)>>>,
    impact_oldest_running_seconds: Gauge,
    /// Unix milliseconds of the oldest running run's `at` (-1: none), from
    /// the last refresh; its age is computed at each scrape.
    impact_oldest_running_at_ms: Arc<AtomicI64>,
    /// Webhook delivery attempts (and abandonments), by result.
    pub webhook_deliveries_total: IntCounterVec,
    webhook_oldest_undelivered_seconds: Gauge,
    /// Unix milliseconds of the oldest undelivered event (-1: none), from
    /// the last refresh; its age is computed at each scrape.
    webhook_oldest_undelivered_at_ms: Arc<AtomicI64>,
    webhook_endpoints_disabled: IntGauge,
    /// Fetches of the identity provider's key set, by result.
    pub jwks_refreshes_total: IntCounterVec,
    jwks_age_seconds: Gauge,
    jwks_keys: IntGauge,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
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
        let refusals_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_refusals_total",
                "Refusals (deny), by the designation and rule they cite.",
            ),
            &["designation", "rule"],
        )?;
        let idempotent_replays_total = IntCounter::new(
            "gatekeeper_idempotent_replays_total",
            "Licence requests answered with the stored first response to their idempotency key.",
        )?;
        let unreadable_rows_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_unreadable_rows_total",
                "Stored rows left out of a listing because they do not read back (edited or corrupt; must stay 0), by table.",
            ),
            &["table"],
        )?;
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatekeeper_http_request_duration_seconds",
                "HTTP request latency, by matched route pattern, method and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )?;
        let audit_append_seconds = histogram(
            "gatekeeper_audit_append_seconds",
            "Time from handing a write to the ledger to its commit (with its audit events).",
            LATENCY_BUCKETS.to_vec(),
        )?;
        let audit_append_failures_total = IntCounter::new(
            "gatekeeper_audit_append_failures_total",
            "Writes whose audit events could not be committed (the database failed; nothing was written).",
        )?;
        let audit_head_seq = IntGauge::new(
            "gatekeeper_audit_head_seq",
            "Sequence number of the newest audit event this process wrote.",
        )?;
        let ledger_batch_size = histogram(
            "gatekeeper_ledger_batch_size",
            "Writes committed together in one ledger transaction.",
            vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        )?;
        let review_queue_depth = IntGauge::new(
            "gatekeeper_review_queue_depth",
            "Decisions waiting for a compliance review.",
        )?;
        let catalog_version = IntGauge::new(
            "gatekeeper_catalog_version",
            "Version of the catalogue snapshot this process decides on.",
        )?;
        let catalog_age_seconds = Gauge::new(
            "gatekeeper_catalog_age_seconds",
            "Seconds since this process installed its current catalogue version.",
        )?;
        let db_pool_connections = IntGaugeVec::new(
            Opts::new(
                "gatekeeper_db_pool_connections",
                "Database pool connections, by state (in_use, idle).",
            ),
            &["state"],
        )?;
        let db_pool_wait_seconds = histogram(
            "gatekeeper_db_pool_wait_seconds",
            "Time spent waiting for a pooled database connection.",
            LATENCY_BUCKETS.to_vec(),
        )?;
        let checkpoint_age_seconds = Gauge::new(
            "gatekeeper_checkpoint_age_seconds",
            "Seconds since the newest signed audit checkpoint (-1 while there is none).",
        )?;
        let license_audit_mismatch = IntGauge::new(
            "gatekeeper_license_audit_mismatch",
            "Licences without the decision and audit event that allowed them (must be 0).",
        )?;
        let ready = IntGauge::new(
            "gatekeeper_ready",
            "1 when the database answers and migrations are applied, else 0.",
        )?;
        let auth_failures_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_auth_failures_total",
                "Requests refused before any work for want of a valid token, by reason (missing_token, malformed_header, invalid_token, keys_unavailable: the identity provider's keys are missing or stale, address_limited).",
            ),
            &["reason"],
        )?;
        let db_stats_refresh_seconds = histogram(
            "gatekeeper_db_stats_refresh_seconds",
            "Time to read the gauges that come from the database (on a timer, GATEKEEPER_METRICS_REFRESH; never per scrape).",
            LATENCY_BUCKETS.to_vec(),
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("gatekeeper_build_info", "Build information; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(decisions_total.clone()))?;
        registry.register(Box::new(refusals_total.clone()))?;
        registry.register(Box::new(idempotent_replays_total.clone()))?;
        registry.register(Box::new(unreadable_rows_total.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        registry.register(Box::new(audit_append_seconds.clone()))?;
        registry.register(Box::new(audit_append_failures_total.clone()))?;
        registry.register(Box::new(audit_head_seq.clone()))?;
        registry.register(Box::new(ledger_batch_size.clone()))?;
        registry.register(Box::new(review_queue_depth.clone()))?;
        registry.register(Box::new(catalog_version.clone()))?;
        registry.register(Box::new(catalog_age_seconds.clone()))?;
        registry.register(Box::new(db_pool_connections.clone()))?;
        registry.register(Box::new(db_pool_wait_seconds.clone()))?;
        registry.register(Box::new(checkpoint_age_seconds.clone()))?;
        registry.register(Box::new(license_audit_mismatch.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(auth_failures_total.clone()))?;
        registry.register(Box::new(db_stats_refresh_seconds.clone()))?;
        let impact_actions_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_impact_actions_total",
                "Licences impact runs acted on, by action (ended, capped, renewal_blocked, review).",
            ),
            &["action"],
        )?;
        let impact_runs_completed_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_impact_runs_completed_total",
                "Impact runs this process completed, by trigger (catalog_change, rule_effective).",
            ),
            &["trigger"],
        )?;
        let impact_run_lag_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gatekeeper_impact_run_lag_seconds",
                "Time from an impact run's trigger (the catalogue change, or the rule's instant) to the end of its run, by trigger.",
            )
            // 600 s is the bound GatekeeperImpactRunLagging alerts on.
            .buckets(vec![
                0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 600.0, 900.0, 3600.0, 21600.0, 86400.0,
            ]),
            &["trigger"],
        )?;
        registry.register(Box::new(impact_actions_total.clone()))?;
        registry.register(Box::new(impact_runs_completed_total.clone()))?;
        registry.register(Box::new(impact_run_lag_seconds.clone()))?;
        let impact_runs = IntGaugeVec::new(
            Opts::new(
                "gatekeeper_impact_runs",
                "Impact runs in the database, by trigger (catalog_change, rule_effective) and status (running, complete).",
            ),
            &["trigger", "status"],
        )?;
        let mut impact_runs_seen = Vec::new();
        for trigger in IMPACT_TRIGGERS {
            for status in IMPACT_STATES {
                impact_runs.with_label_values(&[trigger, status]).set(0);
                impact_runs_seen.push((trigger.to_string(), status.to_string()));
            }
        }
        let impact_oldest_running_seconds = Gauge::new(
            "gatekeeper_impact_oldest_running_seconds",
            "Seconds since the trigger instant of the oldest impact run still running (0 while none is).",
        )?;
        registry.register(Box::new(impact_runs.clone()))?;
        registry.register(Box::new(impact_oldest_running_seconds.clone()))?;
        let webhook_deliveries_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_webhook_deliveries_total",
                "Webhook delivery attempts, by result: delivered (2xx), failed (another status, redirects included), gone (410: the endpoint is disabled), timeout, unreachable (connect, DNS or TLS), refused (the address is not allowed); abandoned counts events given up past GATEKEEPER_WEBHOOK_MAX_AGE.",
            ),
            &["result"],
        )?;
        for result in WEBHOOK_RESULTS {
            webhook_deliveries_total.with_label_values(&[result]);
        }
        let webhook_oldest_undelivered_seconds = Gauge::new(
            "gatekeeper_webhook_oldest_undelivered_seconds",
            "Seconds since the creation of the oldest event an enabled webhook endpoint still waits for (0 while none waits).",
        )?;
        let webhook_endpoints_disabled = IntGauge::new(
            "gatekeeper_webhook_endpoints_disabled",
            "Webhook endpoints disabled because they answered 410.",
        )?;
        registry.register(Box::new(webhook_deliveries_total.clone()))?;
        registry.register(Box::new(webhook_oldest_undelivered_seconds.clone()))?;
        registry.register(Box::new(webhook_endpoints_disabled.clone()))?;
        let jwks_refreshes_total = IntCounterVec::new(
            Opts::new(
                "gatekeeper_jwks_refreshes_total",
                "Fetches of the identity provider's key set (GATEKEEPER_OIDC_ISSUER or GATEKEEPER_JWT_JWKS_URL), by result: ok, error (the last good set keeps serving until GATEKEEPER_JWKS_MAX_STALE).",
            ),
            &["result"],
        )?;
        for result in ["ok", "error"] {
            jwks_refreshes_total.with_label_values(&[result]);
        }
        let jwks_age_seconds = Gauge::new(
            "gatekeeper_jwks_age_seconds",
            "Seconds since the identity provider's key set was last fetched successfully (since start-up before the first; 0 with a static key). Past GATEKEEPER_JWKS_MAX_STALE every token is refused.",
        )?;
        let jwks_keys = IntGauge::new(
            "gatekeeper_jwks_keys",
            "Keys of the identity provider's set that verify tokens (keys skipped as unusable not counted).",
        )?;
        registry.register(Box::new(jwks_refreshes_total.clone()))?;
        registry.register(Box::new(jwks_age_seconds.clone()))?;
        registry.register(Box::new(jwks_keys.clone()))?;
        registry.register(Box::new(build_info))?;
        Ok(Metrics {
            registry,
            decisions_total,
            refusals_total,
            idempotent_replays_total,
            unreadable_rows_total,
            http_request_duration,
            audit_append_seconds,
            audit_append_failures_total,
            audit_head_seq,
            ledger_batch_size,
            review_queue_depth,
            catalog_version,
            catalog_age_seconds,
            catalog_since: Arc::new(AtomicI64::new(chrono::Utc::now().timestamp())),
            db_pool_connections,
            db_pool_wait_seconds,
            checkpoint_age_seconds,
            checkpoint_at_ms: Arc::new(AtomicI64::new(-1)),
            license_audit_mismatch,
            ready,
            auth_failures_total,
            db_stats_refresh_seconds,
            impact_actions_total,
            impact_runs_completed_total,
            impact_run_lag_seconds,
            impact_runs,
            impact_runs_seen: Arc::new(Mutex::new(impact_runs_seen)),
            impact_oldest_running_seconds,
            impact_oldest_running_at_ms: Arc::new(AtomicI64::new(-1)),
            webhook_deliveries_total,
            webhook_oldest_undelivered_seconds,
            webhook_oldest_undelivered_at_ms: Arc::new(AtomicI64::new(-1)),
            webhook_endpoints_disabled,
            jwks_refreshes_total,
            jwks_age_seconds,
            jwks_keys,
        })
    }

    /// Counts a fetch of the identity provider's key set (`ok` or `error`)
    /// and the usable keys held after it.
    pub fn jwks_refresh(&self, result: &str, keys: usize) {
        self.jwks_refreshes_total.with_label_values(&[result]).inc();
        self.jwks_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// Sets the key set's age (at each scrape): `None` with a static key.
    pub fn observe_jwks_age(&self, age: Option<std::time::Duration>) {
        self.jwks_age_seconds
            .set(age.map_or(0.0, |a| a.as_secs_f64()));
    }

    /// Records that this process now decides on catalogue `version`.
    pub fn catalog_installed(&self, version: i64) {
        if self.catalog_version.get() != version {
            self.catalog_version.set(version);
            self.catalog_since
                .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
        }
    }

    /// Records whether the service is ready (also set at every scrape).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Counts a request refused for want of a valid token.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures_total.with_label_values(&[reason]).inc();
    }

    /// Fills the gauges that come from the database (by the refresher).
    pub fn observe_database(&self, stats: &DatabaseStats) {
        self.set_ready(stats.ready);
        self.review_queue_depth.set(stats.review_queue_depth);
        self.checkpoint_at_ms
            .store(stats.checkpoint_at_ms.unwrap_or(-1), Ordering::Relaxed);
        self.license_audit_mismatch
            .set(stats.license_audit_mismatch);
        self.observe_impact(&stats.impact);
        self.webhook_oldest_undelivered_at_ms.store(
            stats.webhooks.oldest_undelivered_at_ms.unwrap_or(-1),
            Ordering::Relaxed,
        );
        self.webhook_endpoints_disabled
            .set(stats.webhooks.endpoints_disabled);
    }

    /// Counts a webhook delivery attempt (or an abandonment) by `result`,
    /// one of [`WEBHOOK_RESULTS`].
    pub fn webhook_delivery(&self, result: &str) {
        self.webhook_deliveries_total
            .with_label_values(&[result])
            .inc();
    }

    fn observe_impact(&self, impact: &ImpactRunStats) {
        let mut seen = self
            .impact_runs_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for pair in impact.runs.keys() {
            if !seen.contains(pair) {
                seen.push(pair.clone());
            }
        }
        for pair in seen.iter() {
            let (trigger, status) = (pair.0.as_str(), pair.1.as_str());
            self.impact_runs
                .with_label_values(&[trigger, status])
                .set(impact.runs.get(pair).copied().unwrap_or(0));
        }
        self.impact_oldest_running_at_ms
            .store(impact.oldest_running_at_ms.unwrap_or(-1), Ordering::Relaxed);
    }

    /// Fills the pool gauges (in memory; at each scrape).
    pub fn observe_pool(&self, pool: (u32, u32)) {
        let (connections, idle) = pool;
        self.db_pool_connections
            .with_label_values(&["in_use"])
            .set(i64::from(connections.saturating_sub(idle)));
        self.db_pool_connections
            .with_label_values(&["idle"])
            .set(i64::from(idle));
    }

    pub fn render(&self) -> Result<String, prometheus::Error> {
        let since = self.catalog_since.load(Ordering::Relaxed);
        self.catalog_age_seconds
            .set((chrono::Utc::now().timestamp() - since).max(0) as f64);
        let checkpoint_at = self.checkpoint_at_ms.load(Ordering::Relaxed);
        self.checkpoint_age_seconds.set(if checkpoint_at < 0 {
            -1.0
        } else {
            (chrono::Utc::now().timestamp_millis() - checkpoint_at).max(0) as f64 / 1000.0
        });
        let oldest = self.impact_oldest_running_at_ms.load(Ordering::Relaxed);
        self.impact_oldest_running_seconds.set(if oldest < 0 {
            0.0
        } else {
            (chrono::Utc::now().timestamp_millis() - oldest).max(0) as f64 / 1000.0
        });
        let undelivered = self
            .webhook_oldest_undelivered_at_ms
            .load(Ordering::Relaxed);
        self.webhook_oldest_undelivered_seconds
            .set(if undelivered < 0 {
                0.0
            } else {
                (chrono::Utc::now().timestamp_millis() - undelivered).max(0) as f64 / 1000.0
            });
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
