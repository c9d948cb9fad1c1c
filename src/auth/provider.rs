//! An identity provider's signing keys, fetched and kept fresh: from the
//! `jwks_uri` of its OpenID discovery document (`GATEKEEPER_OIDC_ISSUER`),
//! or from a JWKS URL (`GATEKEEPER_JWT_JWKS_URL`).
//!
//! One thread of its own (with a small runtime) does every fetch, so there
//! is never more than one under way:
//! - in the background every `GATEKEEPER_JWKS_REFRESH` seconds, and sooner
//!   after a failure (1 s, doubling up to `GATEKEEPER_JWKS_MIN_INTERVAL`);
//! - when a token names a `kid` the set does not hold ([`Provider::refresh_for_unknown_kid`]):
//!   at most one such refresh asked for every `GATEKEEPER_JWKS_MIN_INTERVAL`
//!   seconds. Requests arriving before it starts join it, and every request
//!   waits (at most [`WAIT_FOR_FETCH`]) only for a fetch that started after it
//!   came: fetches are numbered as they start, under the same lock as the
//!   requests' bookkeeping, so none is woken by an older fetch that could not
//!   know its key. A flood of made-up `kid`s costs the provider one fetch a
//!   minute.
//!
//! Failure modes:
//! - a fetch that fails (provider unreachable, an error status, a redirect,
//!   a body over [`MAX_BODY`], not a JWKS, no usable key, a discovery
//!   document naming another issuer) keeps the last good set; the failure is
//!   logged and counted (`gatekeeper_jwks_refreshes_total{result="error"}`);
//! - past `GATEKEEPER_JWKS_MAX_STALE` seconds after the last successful
//!   fetch (or before the first one), [`Provider::current`] refuses: every
//!   token is refused (`401`) and `/readyz` is `503`, until a fetch succeeds.
//!   A token is never accepted on a key that could not be checked;
//! - a set without a key that was in the last one stops verifying it at
//!   once: the verified-token cache is keyed by the set's fingerprint.
//!
//! The thread ends when the last handle to the provider is dropped.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::keys::KeySet;

/// Where the keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An OpenID issuer: its discovery document names the `jwks_uri`.
    Discovery { issuer: String },
    /// A JWKS URL, used as it is.
    Jwks { url: String },
}

/// How the keys are kept fresh.
#[derive(Clone, Debug)]
pub struct Settings {
    pub source: Source,
    pub refresh: Duration,
    pub min_interval: Duration,
    pub max_stale: Duration,
}

/// Each HTTP request (discovery, then the key set) takes at most this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest discovery document or key set read (Entra ID's set is about
/// 10 KiB).
pub const MAX_BODY: usize = 512 * 1024;
/// How long a request with an unknown `kid` waits for the fetch it asked
/// for: discovery and the key set, each at most [`FETCH_TIMEOUT`].
pub const WAIT_FOR_FETCH: Duration = Duration::from_secs(11);

/// The key set last fetched, and when.
struct Fetched {
    keys: Arc<KeySet>,
    at: Instant,
}

/// Where a person signs in (the console's authorization-code flow), as the
/// discovery document last fetched names it; each URL checked as the key
/// set's is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
}

/// The fetches, numbered as they start, and the refreshes asked for by
/// tokens with an unknown `kid`: one lock, so that a request sees at once
/// whether a fetch is asked for, under way, or done.
#[derive(Default)]
struct Fetches {
    /// Fetches started (the number of the latest).
    started: u64,
    /// The number of the latest fetch completed, either way.
    finished: u64,
    /// A refresh was asked for and has not started: fetch `started + 1`
    /// serves it.
    pending: bool,
    /// When the last refresh for an unknown `kid` was asked for.
    last_demand: Option<Instant>,
}

/// The outcome of one fetch, as the metrics count it.
pub type Observer = Box<dyn Fn(&'static str, usize) + Send + Sync>;

pub struct Provider {
    settings: Settings,
    started: Instant,
    fetched: RwLock<Option<Fetched>>,
    /// From the last discovery document that named both (an issuer source
    /// only).
    endpoints: RwLock<Option<Endpoints>>,
    fetches: Mutex<Fetches>,
    wake: Arc<tokio::sync::Notify>,
    /// The number of the latest fetch completed: requests waiting for a
    /// refresh watch it.
    done: tokio::sync::watch::Sender<u64>,
    /// Signalled with `done`, for the start-up's wait (no runtime there).
    first: std::sync::Condvar,
    observer: Observer,
    /// Dropped with the provider: the thread stops.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("source", &self.settings.source)
            .finish_non_exhaustive()
    }
}

/// Why the keys cannot be used now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl Provider {
    /// Checks the URLs and starts the thread, which fetches at once.
    /// `observer` hears each fetch's result (`ok` or `error`) and the number
    /// of usable keys then held.
    pub fn start(settings: Settings, observer: Observer) -> anyhow::Result<Arc<Provider>> {
        let first = match &settings.source {
            Source::Discovery { issuer } => issuer,
            Source::Jwks { url } => url,
        };
        check_url(first)?;
        let client = client()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(2)
            .thread_name("jwks-blocking")
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let provider = Arc::new(Provider {
            settings,
            started: Instant::now(),
            fetched: RwLock::new(None),
            endpoints: RwLock::new(None),
            fetches: Mutex::new(Fetches::default()),
            wake: Arc::default(),
            done: tokio::sync::watch::channel(0).0,
            first: std::sync::Condvar::new(),
            observer,
            _stop: stop,
        });
        let weak = Arc::downgrade(&provider);
        let wake = Arc::clone(&provider.wake);
        std::thread::Builder::new()
            .name("jwks-refresh".into())
            .spawn(move || {
                runtime.block_on(run(weak, wake, client, stopped));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(provider)
    }

    /// Waits (at most `limit`) for the first fetch to complete, either way:
    /// a service that starts serving at once would refuse its first callers
    /// for want of keys.
    pub fn wait_for_first_fetch(&self, limit: Duration) {
        if let Ok(fetches) = self.fetches.lock() {
            let _ = self
                .first
                .wait_timeout_while(fetches, limit, |f| f.finished == 0);
        }
    }

    /// The key set to verify with, unless it is missing or stale.
    pub fn current(&self) -> Result<Arc<KeySet>, Unavailable> {
        let fetched = self
            .fetched
            .read()
            .map_err(|_| Unavailable("the identity provider's key set is unreadable".into()))?;
        match &*fetched {
            None => Err(Unavailable(
                "the identity provider's keys have not been fetched yet".into(),
            )),
            Some(f) if f.at.elapsed() > self.settings.max_stale => Err(Unavailable(format!(
                "the identity provider's keys could not be refreshed for {} s \
                 (GATEKEEPER_JWKS_MAX_STALE is {} s)",
                f.at.elapsed().as_secs(),
                self.settings.max_stale.as_secs()
            ))),
            Some(f) => Ok(Arc::clone(&f.keys)),
        }
    }

    /// The sign-in endpoints of an issuer's discovery document, once one
    /// named both.
    pub fn endpoints(&self) -> Option<Endpoints> {
        self.endpoints.read().ok().and_then(|e| e.clone())
    }

    /// Seconds since the last successful fetch (since start-up before the
    /// first).
    pub fn age(&self) -> Duration {
        match self.fetched.read().ok().as_deref() {
            Some(Some(f)) => f.at.elapsed(),
            _ => self.started.elapsed(),
        }
    }

    /// Asks for a refresh because a token named a `kid` the set does not
    /// hold, and waits (at most [`WAIT_FOR_FETCH`]) for a fetch that started
    /// after the token arrived:
    /// - a refresh already asked for and not started: the request joins it;
    /// - otherwise, if the last one was asked for at least
    ///   `GATEKEEPER_JWKS_MIN_INTERVAL` ago, it asks for one (a fetch under way
    ///   may have started before the provider published the key);
    /// - otherwise it waits only for a fetch already under way, if any.
    ///
    /// The caller then looks the key up again, whichever way this went.
    pub async fn refresh_for_unknown_kid(&self) {
        let target = {
            let Ok(mut fetches) = self.fetches.lock() else {
                return;
            };
            let now = Instant::now();
            let may_ask = fetches
                .last_demand
                .is_none_or(|last| now.duration_since(last) >= self.settings.min_interval);
            if fetches.pending {
                fetches.started + 1
            } else if may_ask {
                fetches.last_demand = Some(now);
                fetches.pending = true;
                self.wake.notify_one();
                fetches.started + 1
            } else if fetches.started > fetches.finished {
                fetches.started
            } else {
                return;
            }
        };
        let mut done = self.done.subscribe();
        let _ = tokio::time::timeout(WAIT_FOR_FETCH, done.wait_for(|n| *n >= target)).await;
    }

    /// Numbers the fetch about to run (it serves any refresh asked for).
    fn start_fetch(&self) -> u64 {
        match self.fetches.lock() {
            Ok(mut fetches) => {
                fetches.pending = false;
                fetches.started += 1;
                fetches.started
            }
            Err(_) => 0,
        }
    }

    /// Whether a refresh asked for is waiting to start.
    fn pending(&self) -> bool {
        self.fetches.lock().map(|f| f.pending).unwrap_or(false)
    }

    /// One fetch: the set is installed if it loads; either way the outcome
    /// is observed and waiters are woken. Returns whether it succeeded.
    async fn refresh(&self, client: &reqwest::Client) -> bool {
        let number = self.start_fetch();
        let outcome = fetch(client, &self.settings.source).await;
        let ok = match outcome {
            Ok(((keys, skipped), endpoints)) => {
                if let (Some(e), Ok(mut held)) = (endpoints, self.endpoints.write()) {
                    *held = Some(e);
                }
                for line in &skipped {
                    tracing::debug!(key = %line, "identity provider key skipped");
                }
                let count = keys.len();
                let changed = match self.fetched.write() {
                    Ok(mut fetched) => {
                        let changed = fetched
                            .as_ref()
                            .is_none_or(|f| f.keys.fingerprint() != keys.fingerprint());
                        *fetched = Some(Fetched {
                            keys: Arc::new(keys),
                            at: Instant::now(),
                        });
                        changed
                    }
                    Err(_) => false,
                };
                if changed {
                    tracing::info!(
                        keys = count,
                        skipped = skipped.len(),
                        "identity provider keys loaded"
                    );
                }
                (self.observer)("ok", count);
                true
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    age_seconds = self.age().as_secs(),
                    max_stale_seconds = self.settings.max_stale.as_secs(),
                    "fetching the identity provider's keys failed; the last good set serves \
                     until GATEKEEPER_JWKS_MAX_STALE, then every token is refused"
                );
                let count = self
                    .fetched
                    .read()
                    .ok()
                    .and_then(|f| f.as_ref().map(|f| f.keys.len()))
                    .unwrap_or(0);
                (self.observer)("error", count);
                false
            }
        };
        if let Ok(mut fetches) = self.fetches.lock() {
            fetches.finished = number;
            self.done.send_replace(number);
        }
        self.first.notify_all();
        ok
    }
}

/// The thread's loop: a fetch at once, then on the timer or on demand,
/// until the provider is dropped (it is held only during a fetch).
async fn run(
    provider: Weak<Provider>,
    wake: Arc<tokio::sync::Notify>,
    client: reqwest::Client,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut next = tokio::time::Instant::now();
    let mut backoff = Duration::from_secs(1);
    loop {
        let woken = tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep_until(next) => false,
            () = wake.notified() => true,
        };
        let Some(p) = provider.upgrade() else { return };
        if woken && !p.pending() {
            // A wake-up for a demand a fetch already served.
            continue;
        }
        if p.refresh(&client).await {
            backoff = Duration::from_secs(1);
            next = tokio::time::Instant::now() + p.settings.refresh;
        } else {
            next = tokio::time::Instant::now() + backoff.min(p.settings.refresh);
            backoff = (backoff * 2).min(p.settings.min_interval.max(Duration::from_secs(1)));
        }
    }
}

/// The HTTP client of every fetch: rustls, no redirects (a provider's
/// documents are at the addresses it names), the environment's proxy
/// settings honoured (the operator names the provider), bounded in time.
pub fn client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a crypto provider of its own: rustls's ring
    // provider is the process's (see `gate::delivery`).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .user_agent(concat!("license-gatekeeper/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// POSTs `form` to `url` (a provider's endpoint) with `client` (one of
/// [`client`]'s, made on the runtime that calls) and reads the JSON answer,
/// bounded as every fetch is. An error status is an error carrying the
/// provider's `error` and `error_description`.
pub async fn post_form(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<serde_json::Value> {
    check_url(url)?;
    let response = client
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .with_context(|| format!("posting to {url}"))?;
    let status = response.status();
    let body = read_body(response, url).await?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let text = |k: &str| json.get(k).and_then(|v| v.as_str()).unwrap_or("");
        bail!(
            "{url} answered {status}: {} {}",
            text("error"),
            text("error_description")
        );
    }
    Ok(json)
}

/// `https`, or `http` to a loopback IP address (development and tests): a
/// key set fetched in the clear could be replaced on the way. A name such as
/// `localhost` is not taken for `http`: what it resolves to is not ours to
/// vouch for.
pub fn check_url(url: &str) -> anyhow::Result<url::Url> {
    let parsed = url::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(_)) | None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => bail!("`{url}` must be an https URL (http only to a loopback address)"),
    }
}

/// The key set (with the keys skipped), discovery first when the source is
/// an issuer; then also the sign-in endpoints, if the document names both.
async fn fetch(
    client: &reqwest::Client,
    source: &Source,
) -> anyhow::Result<((KeySet, Vec<String>), Option<Endpoints>)> {
    let mut endpoints = None;
    let jwks_uri = match source {
        Source::Jwks { url } => url.clone(),
        Source::Discovery { issuer } => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let body = get(client, &url).await?;
            let doc: serde_json::Value = serde_json::from_slice(&body)
                .with_context(|| format!("the discovery document at {url} is not JSON"))?;
            // OpenID Connect Discovery 1.0, section 4.3: the document's
            // issuer must be the one it was fetched for.
            if doc.get("issuer").and_then(|i| i.as_str()) != Some(issuer.as_str()) {
                bail!("the discovery document at {url} names another issuer than {issuer}");
            }
            let jwks_uri = doc
                .get("jwks_uri")
                .and_then(|u| u.as_str())
                .with_context(|| format!("the discovery document at {url} has no jwks_uri"))?;
            check_url(jwks_uri)?;
            let named = |k: &str| {
                doc.get(k)
                    .and_then(|u| u.as_str())
                    .filter(|u| check_url(u).is_ok())
                    .map(str::to_string)
            };
            if let (Some(authorization), Some(token)) =
                (named("authorization_endpoint"), named("token_endpoint"))
            {
                endpoints = Some(Endpoints {
                    authorization,
                    token,
                });
            }
            jwks_uri.to_string()
        }
    };
    let body = get(client, &jwks_uri).await?;
    let keys = KeySet::from_jwks(&body).with_context(|| format!("the key set at {jwks_uri}"))?;
    Ok((keys, endpoints))
}

/// A `200` body, read up to [`MAX_BODY`].
async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .with_context(|| format!("fetching {url}"))?;
    if response.status() != reqwest::StatusCode::OK {
        bail!("{url} answered {}", response.status());
    }
    read_body(response, url).await
}

/// A response's body, read up to [`MAX_BODY`].
async fn read_body(mut response: reqwest::Response, url: &str) -> anyhow::Result<Vec<u8>> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        bail!("{url} sent more than {MAX_BODY} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {url}"))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            bail!("{url} sent more than {MAX_BODY} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn key_set_urls_must_be_https_or_loopback() {
        assert!(check_url("https://login.example.com/realms/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://[::1]:8080/jwks").is_ok());
        assert!(
            check_url("http://localhost/jwks").is_err(),
            "names are not vouched for"
        );
        assert!(check_url("http://login.example.com/jwks").is_err());
        assert!(check_url("ftp://127.0.0.1/jwks").is_err());
        assert!(check_url("not a url").is_err());
    }
}
