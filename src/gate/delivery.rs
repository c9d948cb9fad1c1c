//! The webhook delivery worker: sends each endpoint the events it is to
//! receive, one at a time in `seq` order, as Standard Webhooks.
//!
//! It runs on a thread of its own with its own tokio runtime (the store's
//! calls on that runtime's blocking pool), looking for endpoints with events
//! waiting every `GATEKEEPER_WEBHOOK_INTERVAL` and at once when a ledger
//! write of this process commits ([`Gate::delivery_wake`]). Up to
//! [`PARALLEL`] endpoints are served at once, each by a task of its own that
//! holds the endpoint's lease (so replicas share endpoints, one delivery to an
//! endpoint at a time) and delivers event after event until none is waiting,
//! an attempt fails or it has sent [`PER_LEASE`] (its turn: the least
//! recently tried endpoints are served first); a task that panics takes only
//! its endpoint down, until its lease lapses.
//!
//! Each attempt: the body `{"type", "timestamp", "data"}` serialised once and
//! signed with the endpoint's secret as read when the lease is renewed
//! before it (and its previous one during a
//! rotation's overlap); headers `webhook-id` (the event's id),
//! `webhook-timestamp` (the attempt's instant), `webhook-signature`;
//! connecting at most 5 s, the whole attempt at most
//! `GATEKEEPER_WEBHOOK_TIMEOUT`; redirects not followed; no proxy; and the
//! address checked: unless `GATEKEEPER_WEBHOOK_ALLOW_PRIVATE=1`, a URL whose
//! host is a non-public address, or a name that resolves to one now (it may
//! have resolved elsewhere when the endpoint was created), is refused.
//!
//! What an answer does: a 2xx settles the event `delivered` and moves the
//! endpoint's cursor; a `410` disables the endpoint (a `webhook.disable`
//! audit event); anything else is retried after an exponential back-off with
//! jitter (from `GATEKEEPER_WEBHOOK_RETRY_BASE_MS`, doubling, at most an
//! hour) or after the `Retry-After` it asked for (at most a day), if later;
//! an event still not delivered `GATEKEEPER_WEBHOOK_MAX_AGE` after its
//! creation is settled `abandoned`, and the endpoint goes on with the next.
//!
//! The worker also purges, hourly, the events older than
//! `GATEKEEPER_EVENT_RETENTION_DAYS`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde_json::json;
use tokio::task::JoinSet;

use super::{blocking, Gate};
use crate::config::Config;
use crate::store::deliveries::{Endpoint, Failure, Fence, Next, Settled, Settlement};
use crate::store::events::EventRow;
use crate::store::{format_instant, parse_instant, StoreError};
use crate::webhook::{address, secret, url};

/// Endpoints delivered to at once, by one process.
pub const PARALLEL: usize = 16;
/// Events an endpoint is sent under one lease before it gives its turn up.
const PER_LEASE: usize = 100;
/// The longest back-off between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The longest wait a `Retry-After` is honoured for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);
/// Connecting (DNS, TCP and TLS) takes at most this of an attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A lease covers one attempt and the writes around it, with this to spare.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// The least time between two looks for endpoints due: a burst of commits
/// wakes the worker once, not once each.
const MIN_TICK: Duration = Duration::from_millis(10);
/// How often old events are purged, and how many per statement.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
const PURGE_CHUNK: i64 = 1000;
/// The reason a disabled endpoint gives.
const GONE_REASON: &str = "the endpoint answered 410 Gone";

/// What the delivery is configured with (`GATEKEEPER_WEBHOOK_*`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub allow_private: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub max_age: Duration,
    pub retention_days: i64,
}

impl Settings {
    /// The configured settings; `None` when delivery is off
    /// (`GATEKEEPER_WEBHOOK_INTERVAL=0`).
    pub fn of(config: &Config) -> Option<Settings> {
        config.webhook_interval.map(|interval| Settings {
            allow_private: config.webhook_allow_private,
            interval,
            timeout: config.webhook_timeout,
            retry_base: config.webhook_retry_base,
            max_age: config.webhook_max_age,
            retention_days: config.event_retention_days,
        })
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.timeout + LEASE_MARGIN)
            .unwrap_or_else(|_| chrono::Duration::minutes(5))
    }
}

/// A worker ready to start: its HTTP client and runtime are built (so a
/// misconfiguration fails the start-up, not the first delivery).
pub struct Delivery {
    settings: Arc<Settings>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// The running worker. Dropping it stops it (deliveries under way are cut
/// off; their endpoints' leases lapse and another worker takes them over)
/// and waits for its thread.
pub struct Worker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Delivery {
    pub fn prepare(settings: Settings) -> anyhow::Result<Delivery> {
        let client = client(&settings)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // The store's calls (and name lookups) run here: a few at a
            // time, so deliveries never take the pool from requests.
            .max_blocking_threads(4)
            .thread_name("webhook-blocking")
            .build()?;
        Ok(Delivery {
            settings: Arc::new(settings),
            client,
            runtime,
        })
    }

    /// Starts the worker on a thread of its own, delivering for `gate`.
    pub fn start<G>(self, gate: G) -> std::io::Result<Worker>
    where
        G: Deref<Target = Gate> + Send + Sync + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let Delivery {
            settings,
            client,
            runtime,
        } = self;
        let thread = std::thread::Builder::new()
            .name("webhook-delivery".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = run(Arc::new(gate), client, settings) => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(Worker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The HTTP client of every delivery: rustls, no redirects, no proxy, the
/// time-outs, and the resolver that refuses non-public addresses.
fn client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a crypto provider of its own: rustls's ring
    // provider is the process's. Installing fails only when one is installed
    // already, which then serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT.min(settings.timeout))
        .timeout(settings.timeout)
        .user_agent(concat!("license-gatekeeper/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(PublicOnly {
            allow_private: settings.allow_private,
        })
        .build()?)
}

/// Why an address was refused (found again in the client's errors).
#[derive(Debug, thiserror::Error)]
#[error("{REFUSED}")]
struct Refused;

const REFUSED: &str = "the host resolves to an address that is not allowed";

/// Resolves names as the system does, refusing a name any of whose
/// addresses is not public, unless private addresses are allowed.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && found.iter().any(|a| !address::is_public(a.ip())) {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What an attempt came to, as the metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Result_ {
    Delivered,
    Failed,
    Gone,
    Timeout,
    Unreachable,
    Refused,
}

impl Result_ {
    fn as_str(self) -> &'static str {
        match self {
            Result_::Delivered => "delivered",
            Result_::Failed => "failed",
            Result_::Gone => "gone",
            Result_::Timeout => "timeout",
            Result_::Unreachable => "unreachable",
            Result_::Refused => "refused",
        }
    }
}

/// One attempt's outcome.
#[derive(Debug)]
struct Attempt {
    result: Result_,
    status: Option<u16>,
    /// How long the endpoint asked to be left alone (`Retry-After`).
    retry_after: Option<Duration>,
    /// What went wrong, in a few words (no URL, secret or body).
    error: String,
}

impl Attempt {
    fn without_answer(result: Result_, error: impl Into<String>) -> Attempt {
        Attempt {
            result,
            status: None,
            retry_after: None,
            error: error.into(),
        }
    }
}

/// The loop: looks for endpoints due, serves each in a task of its own
/// (at most [`PARALLEL`]), and purges old events hourly.
async fn run<G>(gate: Arc<G>, client: reqwest::Client, settings: Arc<Settings>)
where
    G: Deref<Target = Gate> + Send + Sync + 'static,
{
    // This worker's name in leases: new at each start, so a restarted
    // process waits for its predecessor's leases to lapse.
    let owner: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let mut serving: JoinSet<()> = JoinSet::new();
    let mut endpoints: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut purged: Option<Instant> = None;
    loop {
        let started = Instant::now();
        if purged.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
            purged = Some(started);
            tokio::spawn(purge(gate.store.clone(), settings.retention_days));
        }
        if serving.len() < PARALLEL {
            let store = gate.store.clone();
            let limit = (PARALLEL + endpoints.len()) as i64;
            match blocking(move || store.due_endpoints(Utc::now(), limit)).await {
                Ok(due) => {
                    for id in due {
                        if serving.len() >= PARALLEL {
                            break;
                        }
                        // A task of ours still on it (its lease lapsed
                        // during a long attempt): not a second one.
                        if endpoints.values().any(|busy| *busy == id) {
                            continue;
                        }
                        let task = serve(
                            Arc::clone(&gate),
                            client.clone(),
                            Arc::clone(&settings),
                            Arc::clone(&owner),
                            id.clone(),
                        );
                        let handle = serving.spawn(task);
                        endpoints.insert(handle.id(), id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "looking for webhook endpoints due"),
            }
        }
        tokio::time::sleep(MIN_TICK.saturating_sub(started.elapsed())).await;
        tokio::select! {
            () = gate.delivery_wake.notified() => {}
            () = tokio::time::sleep(settings.interval) => {}
            Some(done) = serving.join_next_with_id(), if !serving.is_empty() => {
                reap(&mut endpoints, done);
            }
        }
        // Every task that ended meanwhile, not one a turn.
        while let Some(done) = serving.try_join_next_with_id() {
            reap(&mut endpoints, done);
        }
    }
}

/// Forgets an ended task's endpoint (logging a panic).
fn reap(
    endpoints: &mut HashMap<tokio::task::Id, String>,
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    let id = match &done {
        Ok((id, ())) => *id,
        Err(e) => e.id(),
    };
    let endpoint = endpoints.remove(&id).unwrap_or_default();
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(%endpoint, "a webhook delivery panicked; the endpoint is tried again once its lease lapses");
        }
    }
}

/// Deletes the events older than the retention, a chunk per statement.
async fn purge(store: crate::store::Store, retention_days: i64) {
    let before = Utc::now() - chrono::Duration::days(retention_days);
    let mut purged = 0;
    loop {
        let chunk = store.clone();
        match blocking(move || chunk.purge_events(before, PURGE_CHUNK)).await {
            Ok(n) => {
                purged += n;
                if (n as i64) < PURGE_CHUNK {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging old events");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(purged, retention_days, "purged old events");
    }
}

/// Serves one endpoint: takes its lease, delivers until nothing is
/// waiting or an attempt fails, and gives the lease up.
async fn serve<G>(
    gate: Arc<G>,
    client: reqwest::Client,
    settings: Arc<Settings>,
    owner: Arc<str>,
    id: String,
) where
    G: Deref<Target = Gate> + Send + Sync + 'static,
{
    let store = gate.store.clone();
    let now = Utc::now();
    let until = now + settings.lease();
    let leased = {
        let (store, id, owner) = (store.clone(), id.clone(), Arc::clone(&owner));
        blocking(move || store.lease_endpoint(&id, &owner, now, until)).await
    };
    let mut endpoint = match leased {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(endpoint = %id, error = %e, "leasing a webhook endpoint");
            return;
        }
    };
    if let Err(e) = deliver_in_turn(&gate, &client, &settings, &owner, &mut endpoint).await {
        tracing::warn!(endpoint = %id, error = %e, "delivering webhooks");
    }
    let released = blocking(move || store.release_lease(&id, &owner)).await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "giving up a webhook endpoint's lease");
    }
}

/// Delivers `endpoint`'s events in order while they succeed.
async fn deliver_in_turn(
    gate: &Gate,
    client: &reqwest::Client,
    settings: &Settings,
    owner: &Arc<str>,
    endpoint: &mut Endpoint,
) -> Result<(), StoreError> {
    let store = &gate.store;
    let mut sent = 0;
    loop {
        if endpoint.next_attempt_at.is_some_and(|at| at > Utc::now()) {
            return Ok(());
        }
        // Its turn is over: the lease goes back, and the endpoints that
        // waited longest are served first.
        if sent == PER_LEASE {
            return Ok(());
        }
        let next = {
            let (store, endpoint) = (store.clone(), endpoint.clone());
            blocking(move || store.next_event(&endpoint)).await?
        };
        let event = match next {
            Next::Idle => return Ok(()),
            Next::Skip(to) => {
                let (store, id, owner, from) = (
                    store.clone(),
                    endpoint.row.id.clone(),
                    Arc::clone(owner),
                    endpoint.cursor,
                );
                if !blocking(move || {
                    store.skip_events(
                        &Fence {
                            endpoint_id: &id,
                            owner: &owner,
                            cursor: from,
                        },
                        to,
                    )
                })
                .await?
                {
                    return Ok(());
                }
                endpoint.cursor = to;
                continue;
            }
            Next::Event(event) => event,
        };
        let created = parse_instant(&event.created_at)?;
        let deadline = created
            + chrono::Duration::from_std(settings.max_age)
                .unwrap_or_else(|_| chrono::Duration::days(3));
        if Utc::now() >= deadline {
            let attempts = endpoint.attempts;
            if !settle(
                gate,
                owner,
                endpoint,
                &event,
                Settled::Abandoned,
                attempts,
                None,
            )
            .await?
            {
                return Ok(());
            }
            gate.metrics.webhook_delivery("abandoned");
            tracing::warn!(
                endpoint = %endpoint.row.id,
                event = %event.id,
                attempts,
                "abandoned a webhook event past its maximum age"
            );
            continue;
        }
        let renewed = {
            let (store, id, owner) = (store.clone(), endpoint.row.id.clone(), Arc::clone(owner));
            let until = Utc::now() + settings.lease();
            blocking(move || store.renew_lease(&id, &owner, until)).await?
        };
        let Some(row) = renewed else {
            return Ok(());
        };
        endpoint.row = row;
        sent += 1;
        let attempt = attempt(client, settings, endpoint, &event).await;
        let at = Utc::now();
        let attempts = endpoint.attempts.saturating_add(1);
        gate.metrics.webhook_delivery(attempt.result.as_str());
        let status = attempt.status.map(i32::from);
        match attempt.result {
            Result_::Delivered => {
                if !settle(
                    gate,
                    owner,
                    endpoint,
                    &event,
                    Settled::Delivered,
                    attempts,
                    status,
                )
                .await?
                {
                    return Ok(());
                }
            }
            Result_::Gone => {
                disable(gate, owner, &endpoint.row.id, at).await?;
                return Ok(());
            }
            _ => {
                let wait = backoff(settings.retry_base, attempts, rand::thread_rng().gen())
                    .max(attempt.retry_after.unwrap_or_default());
                let next = (at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
                    .min(deadline)
                    .max(at);
                tracing::info!(
                    endpoint = %endpoint.row.id,
                    event = %event.id,
                    result = attempt.result.as_str(),
                    status = attempt.status,
                    error = %attempt.error,
                    attempts,
                    next_attempt_at = %format_instant(next),
                    "a webhook delivery failed; it will be retried"
                );
                let (store, id, owner, cursor) = (
                    store.clone(),
                    endpoint.row.id.clone(),
                    Arc::clone(owner),
                    endpoint.cursor,
                );
                let error = attempt.error;
                blocking(move || {
                    store.record_failure(&Failure {
                        fence: Fence {
                            endpoint_id: &id,
                            owner: &owner,
                            cursor,
                        },
                        attempts,
                        next_attempt_at: next,
                        status,
                        error: &error,
                        at,
                    })
                })
                .await?;
                return Ok(());
            }
        }
    }
}

/// Settles `event` for `endpoint` (moving its cursor on success); false
/// when the lease or the cursor changed meanwhile, or it was settled
/// already: the caller stops.
async fn settle(
    gate: &Gate,
    owner: &Arc<str>,
    endpoint: &mut Endpoint,
    event: &EventRow,
    outcome: Settled,
    attempts: i32,
    status: Option<i32>,
) -> Result<bool, StoreError> {
    let store = gate.store.clone();
    let (id, owner, cursor) = (endpoint.row.id.clone(), Arc::clone(owner), endpoint.cursor);
    let (seq, event_id) = (event.seq, event.id.clone());
    let settled = blocking(move || {
        store.settle(&Settlement {
            fence: Fence {
                endpoint_id: &id,
                owner: &owner,
                cursor,
            },
            event_seq: seq,
            event_id: &event_id,
            outcome,
            attempts,
            status,
            at: Utc::now(),
        })
    })
    .await?;
    if settled {
        endpoint.cursor = seq;
        endpoint.attempts = 0;
        endpoint.next_attempt_at = None;
    } else {
        tracing::warn!(
            endpoint = %endpoint.row.id,
            event = %event.id,
            "a webhook event was settled elsewhere (the lease lapsed); not counted twice"
        );
    }
    Ok(settled)
}

/// Disables an endpoint that answered `410`, with its audit event.
async fn disable(
    gate: &Gate,
    owner: &Arc<str>,
    id: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (id, owner) = (id.to_string(), owner.to_string());
    let logged = id.clone();
    let seq = gate
        .commit(move |conn, head| {
            crate::store::webhooks::disable(conn, head, &id, &owner, at, GONE_REASON, 410)
        })
        .await?;
    if let Some(seq) = seq {
        gate.metrics.audit_head_seq.set(seq);
        tracing::warn!(endpoint = %logged, "disabled a webhook endpoint: it answered 410 Gone");
    }
    Ok(())
}

/// The wait before attempt `attempts + 1`: `base` doubled at each attempt
/// after the first, at most [`MAX_BACKOFF`], and between half and all of
/// that by `jitter` (in `[0, 1)`), so that endpoints that failed together do
/// not come back together.
fn backoff(base: Duration, attempts: i32, jitter: f64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(31);
    let full = base
        .saturating_mul(1u32 << doublings.min(31))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A `Retry-After` value: seconds, or an HTTP date; at most a day.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds.min(MAX_RETRY_AFTER.as_secs())),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Sends `event` to `endpoint` once.
async fn attempt(
    client: &reqwest::Client,
    settings: &Settings,
    endpoint: &Endpoint,
    event: &EventRow,
) -> Attempt {
    // The creation's checks again, but for the names' addresses (which the
    // client's resolver checks as it connects).
    let url = match url::parse(&endpoint.row.url, settings.allow_private) {
        Ok(parsed) => parsed.url,
        Err(why) => return Attempt::without_answer(Result_::Refused, format!("the URL {why}")),
    };
    let body = json!({
        "type": event.event_type,
        "timestamp": event.created_at,
        "data": event.data,
    })
    .to_string()
    .into_bytes();
    let now = Utc::now();
    let mut secrets = vec![endpoint.row.secret.as_str()];
    if let (Some(previous), Some(until)) =
        (&endpoint.row.previous_secret, endpoint.row.previous_until)
    {
        if now < until {
            secrets.push(previous);
        }
    }
    let timestamp = now.timestamp();
    let Ok(signature) = secret::signature_header(&secrets, &event.id, timestamp, &body) else {
        return Attempt::without_answer(
            Result_::Failed,
            "the endpoint's secret is not a whsec_ key",
        );
    };
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let status = answer.status();
            let result = if status.is_success() {
                Result_::Delivered
            } else if status == reqwest::StatusCode::GONE {
                Result_::Gone
            } else {
                Result_::Failed
            };
            let retry_after = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now()));
            // The body is not read: nothing in it changes the outcome.
            drop(answer);
            Attempt {
                result,
                status: Some(status.as_u16()),
                retry_after,
                error: match result {
                    Result_::Delivered => String::new(),
                    _ => format!("answered {}", status.as_u16()),
                },
            }
        }
        Err(e) => {
            let (result, error) = classify(&e);
            Attempt::without_answer(result, error)
        }
    }
}

/// What a failed request was, and its causes in a few words (the client's
/// own message, which names the URL, left out).
fn classify(e: &reqwest::Error) -> (Result_, String) {
    let mut causes = Vec::new();
    let mut refused = false;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        refused |= cause.is::<Refused>() || text == REFUSED;
        if causes.last() != Some(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    let mut said = causes.join(": ");
    if said.len() > 300 {
        let mut end = 300;
        while !said.is_char_boundary(end) {
            end -= 1;
        }
        said.truncate(end);
    }
    let result = if refused {
        Result_::Refused
    } else if e.is_connect() {
        Result_::Unreachable
    } else if e.is_timeout() {
        Result_::Timeout
    } else {
        Result_::Unreachable
    };
    if said.is_empty() {
        said = result.as_str().to_string();
    }
    (result, said)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_with_jitter_and_stops_at_an_hour() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1, 0.999_999).as_secs(), 4);
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(2500));
        assert_eq!(backoff(base, 2, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(base, 3, 0.0), Duration::from_secs(10));
        for attempts in [11, 12, 40, i32::MAX] {
            let wait = backoff(base, attempts, 0.999);
            assert!(wait <= MAX_BACKOFF && wait >= MAX_BACKOFF / 2, "{wait:?}");
        }
        assert_eq!(backoff(base, 0, 0.0), Duration::from_millis(2500));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date_and_at_most_a_day() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        // 1994-11-06T08:49:37Z is 784111777.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Fri, 06 Nov 1998 08:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }

    #[test]
    fn only_https_to_public_address_literals_unless_private_is_allowed() {
        let allowed = |u: &str, allow_private| url::parse(u, allow_private).map(|_| ());
        for refused in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://169.254.169.254/latest",
            "https://0x7f.1/",
            "https://10.0.0.1:8443/",
            "https://[::ffff:127.0.0.1]/",
            "http://example.com/",
            "ftp://example.com/",
        ] {
            assert!(allowed(refused, false).is_err(), "{refused}");
        }
        for fine in ["https://example.com/hook", "https://93.184.216.34/"] {
            assert!(allowed(fine, false).is_ok(), "{fine}");
        }
        for fine in ["http://127.0.0.1:9/", "https://[::1]/", "http://localhost/"] {
            assert!(allowed(fine, true).is_ok(), "{fine}");
        }
    }

    /// A name that resolves to a loopback address, and an address literal,
    /// are refused at delivery in production mode, before any connection.
    #[test]
    fn the_resolver_refuses_names_of_private_addresses() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Something listens there, so only the refusal can fail it.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let settings = Settings {
                allow_private: false,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                retry_base: Duration::from_millis(100),
                max_age: Duration::from_secs(60),
                retention_days: 30,
            };
            let client = client(&settings).unwrap();
            // Through the resolver (`localhost` is a name), as https would
            // go; plain http to reach the check without a certificate.
            let sent = client
                .get(format!("http://localhost:{port}/"))
                .send()
                .await
                .unwrap_err();
            assert_eq!(classify(&sent).0, Result_::Refused, "{sent:?}");
            let allowed_client = client_allowing_private();
            let sent = allowed_client
                .get(format!("http://localhost:{port}/"))
                .send()
                .await;
            // Allowed: it connects (the listener accepts, never answers,
            // and the attempt times out), so the refusal was the resolver's.
            let err = sent.unwrap_err();
            assert_ne!(classify(&err).0, Result_::Refused, "{err:?}");
            drop(listener);
        });
    }

    fn client_allowing_private() -> reqwest::Client {
        client(&Settings {
            allow_private: true,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retry_base: Duration::from_millis(100),
            max_age: Duration::from_secs(60),
            retention_days: 30,
        })
        .unwrap()
    }
}
