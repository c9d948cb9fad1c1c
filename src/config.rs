//! Typed configuration, read from the environment once at start-up and then
//! passed down explicitly (no global), so tests build their own. An edge
//! module: it imports nothing from the rest of the crate.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context};

/// Which database a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: the embedded default.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, passed to libpq as it is.
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!("GATEKEEPER_DATABASE_URL: sqlite:// needs a file path, e.g. sqlite://gatekeeper.db");
            }
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_string()))
        } else {
            bail!("GATEKEEPER_DATABASE_URL must start with sqlite:// or postgres:// (got a URL with another scheme)")
        }
    }

    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let userinfo = &url[scheme + 3..at];
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
                }
                _ => url.clone(),
            },
        }
    }
}

/// A rate limit, enforced by `api::limits`: `rate` a second on average,
/// `burst` at once (a tenant's requests, or an address's failed
/// authentications).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

/// Everything the service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub listen: String,
    /// PEM public key that verifies callers' tokens. With neither it, nor
    /// `jwt_jwks_url`, nor `oidc_issuer`, the service is in development mode.
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS URL the callers' keys are fetched from (`GATEKEEPER_JWT_JWKS_URL`,
    /// with `GATEKEEPER_JWT_ISSUER`).
    pub jwt_jwks_url: Option<String>,
    /// An OpenID issuer (`GATEKEEPER_OIDC_ISSUER`): the keys come from its
    /// discovery document's `jwks_uri`, and `jwt_issuer` is this.
    pub oidc_issuer: Option<String>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// JSON pointers to the role and the reseller id in a token's claims
    /// (`GATEKEEPER_JWT_ROLE_CLAIM`, `GATEKEEPER_JWT_TENANT_CLAIM`).
    pub jwt_role_claim: String,
    pub jwt_tenant_claim: String,
    /// How often the identity provider's keys are fetched in the background
    /// (`GATEKEEPER_JWKS_REFRESH`), the least time between two fetches asked
    /// for by unknown `kid`s (`GATEKEEPER_JWKS_MIN_INTERVAL`), and how long
    /// after the last successful fetch its keys still serve
    /// (`GATEKEEPER_JWKS_MAX_STALE`; then every token is refused).
    pub jwks_refresh: std::time::Duration,
    pub jwks_min_interval: std::time::Duration,
    pub jwks_max_stale: std::time::Duration,
    /// The console's OpenID client (`GATEKEEPER_CONSOLE_CLIENT_ID`, a public
    /// client using the authorization code with PKCE at `oidc_issuer`):
    /// with it, `/console/` signs people in through the provider. Needs
    /// `oidc_issuer`.
    pub console_client_id: Option<String>,
    /// Where development keys live (and, by default, nothing else).
    pub data_dir: PathBuf,
    /// Connections in the database pool.
    pub db_pool_size: u32,
    /// PKCS#8 PEM Ed25519 private key that signs licences; `None` is
    /// development mode (a key generated in `data_dir`).
    pub license_key_file: Option<PathBuf>,
    /// A JWKS file of retired licence keys (Ed25519 public keys) that the
    /// service still publishes at `GET /v1/keys` and trusts for its
    /// checkpoints, beside the current key: the only keys it publishes or
    /// trusts besides that one. Checked at start-up.
    pub license_retired_keys_file: Option<PathBuf>,
    /// Most writes committed in one transaction by the ledger writer
    /// (1 turns group commit off).
    pub ledger_batch: usize,
    /// How often the signer replica signs a checkpoint over the audit
    /// chain's head; `None` signs only on demand and at shutdown.
    pub checkpoint_interval: Option<std::time::Duration>,
    /// `json` for one JSON object per log line; anything else is the human
    /// format.
    pub log_format: String,
    /// How long a graceful shutdown (SIGTERM, SIGINT) lets in-flight
    /// requests finish.
    pub shutdown_grace: std::time::Duration,
    /// Serve `/metrics` on this address too (e.g. a port only Prometheus
    /// reaches); it stays on the main address as well.
    pub metrics_listen: Option<String>,
    /// The service's address as products reach it (`GATEKEEPER_PUBLIC_URL`,
    /// default `http://` and the listen address): licence tokens point at
    /// their status lists under it.
    pub public_url: String,
    /// How often impact runs are looked for and advanced, rule instants
    /// swept and overdue impact reviews suspended (`GATEKEEPER_IMPACT_INTERVAL`,
    /// seconds; `0` off, for tests that drive it).
    pub impact_interval: Option<std::time::Duration>,
    /// Licences an impact run re-decides in one ledger write
    /// (`GATEKEEPER_IMPACT_CHUNK`, 1 to 10000): smaller chunks hold the
    /// ledger for less time between other writes.
    pub impact_chunk: i64,
    /// Requests a second each tenant may make (`GATEKEEPER_RATE_LIMIT`,
    /// `0` off) and the burst it may spend at once (`GATEKEEPER_RATE_BURST`).
    pub rate_limit: Option<Limit>,
    /// How long a client may take to send a request's head, and then its
    /// body, before it is answered `408` and the connection closed: slow
    /// clients cannot hold workers. Also bounds each wait on the database.
    pub request_timeout: std::time::Duration,
    /// Failed authentications an address may make (`GATEKEEPER_AUTH_FAILURE_LIMIT`
    /// a second, `0` off; `GATEKEEPER_AUTH_FAILURE_BURST` at once). Past it,
    /// the address's requests are refused (`429`) before their token is
    /// verified.
    pub auth_failure_limit: Option<Limit>,
    /// Client connections held open at once, over all workers
    /// (`GATEKEEPER_MAX_CONNECTIONS`); `None` derives it from the process's
    /// open-file limit, leaving room for the database's files and sockets.
    pub max_connections: Option<usize>,
    /// `/v1` requests handled at once (`GATEKEEPER_MAX_IN_FLIGHT`); past it a
    /// request is answered `503 overloaded` at once.
    pub max_in_flight: usize,
    /// How often the gauges read from the database (review queue, checkpoint
    /// age, licences without their audit event) are refreshed
    /// (`GATEKEEPER_METRICS_REFRESH`); a scrape only renders them.
    pub metrics_refresh: std::time::Duration,
    /// Webhook endpoints may be `http` URLs or reach private, loopback and
    /// link-local addresses (`GATEKEEPER_WEBHOOK_ALLOW_PRIVATE=1`: for
    /// development and tests only; otherwise only `https` to public addresses).
    pub webhook_allow_private: bool,
    /// How often endpoints with events waiting are looked for
    /// (`GATEKEEPER_WEBHOOK_INTERVAL`, seconds; `0` turns delivery off). A
    /// commit in this process wakes the worker at once.
    pub webhook_interval: Option<std::time::Duration>,
    /// The time one delivery attempt may take in all
    /// (`GATEKEEPER_WEBHOOK_TIMEOUT`, seconds; connecting takes at most 5 s of it).
    pub webhook_timeout: std::time::Duration,
    /// The first retry's delay, doubled at each further attempt, with jitter
    /// (`GATEKEEPER_WEBHOOK_RETRY_BASE_MS`).
    pub webhook_retry_base: std::time::Duration,
    /// How long after its creation an event is still tried
    /// (`GATEKEEPER_WEBHOOK_MAX_AGE`, seconds; default three days); past it the
    /// event is abandoned for that endpoint and the next one is sent.
    pub webhook_max_age: std::time::Duration,
    /// Days events are kept for `GET /v1/events` before they are purged
    /// (`GATEKEEPER_EVENT_RETENTION_DAYS`, at least 30).
    pub event_retention_days: i64,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://gatekeeper.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ISSUER: &str = "gatekeeper-dev";
pub const DEFAULT_AUDIENCE: &str = "gatekeeper";
pub const DEFAULT_DATA_DIR: &str = ".gatekeeper";

impl Config {
    /// Reads the `GATEKEEPER_*` variables; unset ones take their defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let vars = Vars(lookup);
        let seconds = |n: u64| std::time::Duration::from_secs(n);
        let identity = Identity::read(&vars)?;
        // The fields in the order they have always been read: a start-up
        // with several bad variables reports the same one first.
        Ok(Config {
            database_url: DatabaseUrl::parse(
                &vars.text("GATEKEEPER_DATABASE_URL", DEFAULT_DATABASE_URL),
            )?,
            listen: vars.text("GATEKEEPER_LISTEN", DEFAULT_LISTEN),
            jwt_public_key_file: vars.path("GATEKEEPER_JWT_PUBLIC_KEY_FILE"),
            jwt_jwks_url: identity.jwks_url,
            oidc_issuer: identity.oidc_issuer,
            jwt_issuer: identity.issuer,
            jwt_audience: vars.text("GATEKEEPER_JWT_AUDIENCE", DEFAULT_AUDIENCE),
            jwt_role_claim: vars.text("GATEKEEPER_JWT_ROLE_CLAIM", "/role"),
            jwt_tenant_claim: vars.text("GATEKEEPER_JWT_TENANT_CLAIM", "/reseller"),
            jwks_refresh: identity.refresh,
            jwks_min_interval: identity.min_interval,
            jwks_max_stale: identity.max_stale,
            console_client_id: identity.console_client_id,
            data_dir: PathBuf::from(vars.text("GATEKEEPER_DATA_DIR", DEFAULT_DATA_DIR)),
            db_pool_size: vars.whole("GATEKEEPER_DB_POOL_SIZE", "8", 1..=256, "")? as u32,
            license_key_file: vars.path("GATEKEEPER_LICENSE_KEY_FILE"),
            license_retired_keys_file: vars.path("GATEKEEPER_LICENSE_RETIRED_KEYS_FILE"),
            ledger_batch: vars.whole("GATEKEEPER_LEDGER_BATCH", "256", 1..=4096, "")? as usize,
            checkpoint_interval: Some(vars.parsed(
                "GATEKEEPER_CHECKPOINT_INTERVAL",
                "60",
                |n: &u64| *n <= 86_400,
                "be a whole number of seconds from 0 (off) to 86400",
            )?)
            .filter(|n| *n > 0)
            .map(seconds),
            log_format: vars.text("GATEKEEPER_LOG_FORMAT", "text"),
            shutdown_grace: seconds(vars.whole(
                "GATEKEEPER_SHUTDOWN_GRACE",
                "30",
                1..=3600,
                " of seconds",
            )?),
            metrics_listen: vars.get("GATEKEEPER_METRICS_LISTEN"),
            public_url: vars.get("GATEKEEPER_PUBLIC_URL").unwrap_or_else(|| {
                format!("http://{}", vars.text("GATEKEEPER_LISTEN", DEFAULT_LISTEN))
            }),
            impact_interval: Some(seconds(vars.whole(
                "GATEKEEPER_IMPACT_INTERVAL",
                "5",
                0..=3600,
                " of seconds",
            )?))
            .filter(|d| !d.is_zero()),
            impact_chunk: vars.whole("GATEKEEPER_IMPACT_CHUNK", "200", 1..=10_000, "")? as i64,
            rate_limit: vars.limit(("GATEKEEPER_RATE_LIMIT", "1000"), "GATEKEEPER_RATE_BURST")?,
            auth_failure_limit: vars.limit(
                ("GATEKEEPER_AUTH_FAILURE_LIMIT", "10"),
                "GATEKEEPER_AUTH_FAILURE_BURST",
            )?,
            max_connections: vars
                .whole_if_set("GATEKEEPER_MAX_CONNECTIONS", 1..=1_000_000, "")?
                .map(|n| n as usize),
            max_in_flight: vars.whole("GATEKEEPER_MAX_IN_FLIGHT", "1024", 1..=1_000_000, "")?
                as usize,
            metrics_refresh: seconds(vars.whole(
                "GATEKEEPER_METRICS_REFRESH",
                "10",
                1..=3600,
                " of seconds",
            )?),
            request_timeout: seconds(vars.whole(
                "GATEKEEPER_REQUEST_TIMEOUT",
                "5",
                1..=300,
                " of seconds",
            )?),
            webhook_allow_private: vars.whole(
                "GATEKEEPER_WEBHOOK_ALLOW_PRIVATE",
                "0",
                0..=1,
                " (1 allows private addresses and http)",
            )? == 1,
            webhook_interval: Some(seconds(vars.whole(
                "GATEKEEPER_WEBHOOK_INTERVAL",
                "1",
                0..=3600,
                " of seconds",
            )?))
            .filter(|d| !d.is_zero()),
            webhook_timeout: seconds(vars.whole(
                "GATEKEEPER_WEBHOOK_TIMEOUT",
                "15",
                1..=60,
                " of seconds",
            )?),
            webhook_retry_base: std::time::Duration::from_millis(vars.whole(
                "GATEKEEPER_WEBHOOK_RETRY_BASE_MS",
                "5000",
                1..=3_600_000,
                " of milliseconds",
            )?),
            webhook_max_age: seconds(vars.whole(
                "GATEKEEPER_WEBHOOK_MAX_AGE",
                "259200",
                // Under the least retention (30 days): an event is given up
                // before it can be purged.
                1..=2_505_600,
                " of seconds",
            )?),
            event_retention_days: vars.whole(
                "GATEKEEPER_EVENT_RETENTION_DAYS",
                "30",
                30..=3650,
                " of days",
            )? as i64,
        })
    }
}

impl Config {
    /// No key for callers' tokens is configured: the development key pair
    /// verifies them, and a licence key is generated if none is named.
    pub fn development(&self) -> bool {
        self.jwt_public_key_file.is_none()
            && self.jwt_jwks_url.is_none()
            && self.oidc_issuer.is_none()
    }
}

/// Where callers' keys come from, and the issuer their tokens must name.
struct Identity {
    jwks_url: Option<String>,
    oidc_issuer: Option<String>,
    issuer: String,
    refresh: std::time::Duration,
    min_interval: std::time::Duration,
    max_stale: std::time::Duration,
    console_client_id: Option<String>,
}

impl Identity {
    fn read<L: Fn(&str) -> Option<String>>(vars: &Vars<L>) -> anyhow::Result<Identity> {
        let jwks_url = vars.get("GATEKEEPER_JWT_JWKS_URL");
        let oidc_issuer = vars.get("GATEKEEPER_OIDC_ISSUER");
        let named_issuer = vars.get("GATEKEEPER_JWT_ISSUER");
        let sources = [
            vars.get("GATEKEEPER_JWT_PUBLIC_KEY_FILE").is_some(),
            jwks_url.is_some(),
            oidc_issuer.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            bail!(
                "set only one of GATEKEEPER_JWT_PUBLIC_KEY_FILE, GATEKEEPER_JWT_JWKS_URL and \
                 GATEKEEPER_OIDC_ISSUER: each names where callers' keys come from"
            );
        }
        let issuer = match (&oidc_issuer, &jwks_url, named_issuer) {
            (Some(oidc), _, Some(named)) if named != *oidc => bail!(
                "GATEKEEPER_JWT_ISSUER must be unset or equal GATEKEEPER_OIDC_ISSUER \
                 (tokens' iss must be the OpenID issuer)"
            ),
            (Some(oidc), _, _) => oidc.clone(),
            (None, Some(_), None) => bail!(
                "GATEKEEPER_JWT_JWKS_URL needs GATEKEEPER_JWT_ISSUER: the iss its tokens carry"
            ),
            (None, _, named) => named.unwrap_or_else(|| DEFAULT_ISSUER.to_string()),
        };
        let seconds = std::time::Duration::from_secs;
        let refresh =
            seconds(vars.whole("GATEKEEPER_JWKS_REFRESH", "300", 1..=86_400, " of seconds")?);
        let min_interval = seconds(vars.whole(
            "GATEKEEPER_JWKS_MIN_INTERVAL",
            "60",
            1..=86_400,
            " of seconds",
        )?);
        let max_stale = seconds(vars.whole(
            "GATEKEEPER_JWKS_MAX_STALE",
            "3600",
            1..=604_800,
            " of seconds",
        )?);
        if max_stale <= refresh {
            bail!(
                "GATEKEEPER_JWKS_MAX_STALE must be more than GATEKEEPER_JWKS_REFRESH: keys \
                 would go stale between two refreshes"
            );
        }
        let console_client_id = vars.get("GATEKEEPER_CONSOLE_CLIENT_ID");
        if console_client_id.is_some() && oidc_issuer.is_none() {
            bail!(
                "GATEKEEPER_CONSOLE_CLIENT_ID needs GATEKEEPER_OIDC_ISSUER: the console signs \
                 people in through that provider"
            );
        }
        Ok(Identity {
            console_client_id,
            jwks_url,
            oidc_issuer,
            issuer,
            refresh,
            min_interval,
            max_stale,
        })
    }
}

/// The variables, each read the one way: a blank value is unset, an unset
/// one takes its default, and a value that does not parse, or parses to
/// one out of bounds, is refused with `VAR must …`.
struct Vars<L>(L);

impl<L: Fn(&str) -> Option<String>> Vars<L> {
    /// `var`'s value; `None` when it is unset or blank.
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    /// `var`'s value, or `default`.
    fn text(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_string())
    }

    /// A file path, or `None` when `var` is unset.
    fn path(&self, var: &str) -> Option<PathBuf> {
        self.get(var).map(PathBuf::from)
    }

    /// `var`'s value (`default` when unset) as a `T` that `valid` accepts;
    /// otherwise the error `{var} must {must}`.
    fn parsed<T: FromStr>(
        &self,
        var: &str,
        default: &str,
        valid: impl Fn(&T) -> bool,
        must: &str,
    ) -> anyhow::Result<T> {
        checked(var, &self.text(var, default), valid, must)
    }

    /// A whole number from `var` (`default` when unset) within `range`;
    /// `unit` (e.g. " of seconds") completes the message.
    fn whole(
        &self,
        var: &str,
        default: &str,
        range: RangeInclusive<u64>,
        unit: &str,
    ) -> anyhow::Result<u64> {
        self.parsed(
            var,
            default,
            |n| range.contains(n),
            &whole_within(&range, unit),
        )
    }

    /// As [`Vars::whole`], with no default: `None` when `var` is unset.
    fn whole_if_set(
        &self,
        var: &str,
        range: RangeInclusive<u64>,
        unit: &str,
    ) -> anyhow::Result<Option<u64>> {
        self.get(var)
            .map(|v| checked(var, &v, |n| range.contains(n), &whole_within(&range, unit)))
            .transpose()
    }

    /// A limit from a rate variable (requests a second, `0` off; `default`
    /// when unset) and a burst variable (at least 1; twice the rate when unset).
    fn limit(
        &self,
        (rate_var, default): (&str, &str),
        burst_var: &str,
    ) -> anyhow::Result<Option<Limit>> {
        let rate = self.parsed(
            rate_var,
            default,
            |n: &f64| n.is_finite() && *n >= 0.0,
            "be a number of requests a second (0 turns it off)",
        )?;
        let burst = self.parsed(
            burst_var,
            &(rate * 2.0).max(1.0).to_string(),
            |n: &f64| n.is_finite() && *n >= 1.0,
            "be a number of requests, at least 1",
        )?;
        Ok((rate > 0.0).then_some(Limit { rate, burst }))
    }
}

/// `value` of `var` parsed as a `T` that `valid` accepts, or the error
/// `{var} must {must}`.
fn checked<T: FromStr>(
    var: &str,
    value: &str,
    valid: impl Fn(&T) -> bool,
    must: &str,
) -> anyhow::Result<T> {
    value
        .parse::<T>()
        .ok()
        .filter(|v| valid(v))
        .with_context(|| format!("{var} must {must}"))
}

/// What a whole-number variable must be.
fn whole_within(range: &RangeInclusive<u64>, unit: &str) -> String {
    format!(
        "be a whole number{unit} from {} to {}",
        range.start(),
        range.end()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url, DatabaseUrl::Sqlite("gatekeeper.db".into()));
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.jwt_public_key_file, None);
        assert_eq!(c.jwt_issuer, "gatekeeper-dev");
        assert_eq!(c.jwt_audience, "gatekeeper");
        assert_eq!(c.license_key_file, None);
        assert_eq!(c.license_retired_keys_file, None);
        assert_eq!(c.ledger_batch, 256);
        assert!(c.development());
        assert_eq!(
            (c.jwt_role_claim.as_str(), c.jwt_tenant_claim.as_str()),
            ("/role", "/reseller")
        );
        assert_eq!(c.jwks_refresh.as_secs(), 300);
        assert_eq!(c.jwks_min_interval.as_secs(), 60);
        assert_eq!(c.jwks_max_stale.as_secs(), 3600);
    }

    #[test]
    fn an_identity_provider_names_the_issuer_and_only_one_key_source_is_taken() {
        let oidc = "https://login.example.com/realms/acme";
        let c = config(&[("GATEKEEPER_OIDC_ISSUER", oidc)]).unwrap();
        assert_eq!(c.jwt_issuer, oidc);
        assert!(!c.development());
        let same = config(&[
            ("GATEKEEPER_OIDC_ISSUER", oidc),
            ("GATEKEEPER_JWT_ISSUER", oidc),
        ]);
        assert_eq!(same.unwrap().jwt_issuer, oidc);
        let fail = |vars: &[(&str, &str)], says: &str| {
            let e = config(vars).err().unwrap().to_string();
            assert!(e.contains(says), "{vars:?}: {e}");
        };
        fail(
            &[
                ("GATEKEEPER_OIDC_ISSUER", oidc),
                ("GATEKEEPER_JWT_ISSUER", "other"),
            ],
            "GATEKEEPER_JWT_ISSUER must be unset or equal",
        );
        fail(
            &[
                ("GATEKEEPER_OIDC_ISSUER", oidc),
                ("GATEKEEPER_JWT_JWKS_URL", "https://x/jwks"),
            ],
            "set only one of",
        );
        fail(
            &[
                ("GATEKEEPER_JWT_PUBLIC_KEY_FILE", "k.pem"),
                ("GATEKEEPER_OIDC_ISSUER", oidc),
            ],
            "set only one of",
        );
        fail(
            &[("GATEKEEPER_JWT_JWKS_URL", "https://x/jwks")],
            "needs GATEKEEPER_JWT_ISSUER",
        );
        fail(
            &[("GATEKEEPER_CONSOLE_CLIENT_ID", "console")],
            "GATEKEEPER_CONSOLE_CLIENT_ID needs GATEKEEPER_OIDC_ISSUER",
        );
        let console = config(&[
            ("GATEKEEPER_OIDC_ISSUER", oidc),
            ("GATEKEEPER_CONSOLE_CLIENT_ID", "console"),
        ]);
        assert_eq!(
            console.unwrap().console_client_id.as_deref(),
            Some("console")
        );
        fail(
            &[
                ("GATEKEEPER_JWKS_REFRESH", "600"),
                ("GATEKEEPER_JWKS_MAX_STALE", "600"),
            ],
            "GATEKEEPER_JWKS_MAX_STALE must be more than GATEKEEPER_JWKS_REFRESH",
        );
        fail(
            &[("GATEKEEPER_JWKS_MIN_INTERVAL", "0")],
            "GATEKEEPER_JWKS_MIN_INTERVAL must be",
        );
        let jwks = config(&[
            ("GATEKEEPER_JWT_JWKS_URL", "https://x/jwks"),
            ("GATEKEEPER_JWT_ISSUER", "https://x"),
        ])
        .unwrap();
        assert_eq!(jwks.jwt_jwks_url.as_deref(), Some("https://x/jwks"));
        assert!(!jwks.development());
    }

    #[test]
    fn the_edges_limits_have_defaults_and_can_be_turned_off() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.auth_failure_limit,
            Some(Limit {
                rate: 10.0,
                burst: 20.0
            })
        );
        assert_eq!(c.max_connections, None, "derived from the open-file limit");
        assert_eq!(c.max_in_flight, 1024);
        assert_eq!(c.metrics_refresh, std::time::Duration::from_secs(10));
        let c = config(&[
            ("GATEKEEPER_AUTH_FAILURE_LIMIT", "0"),
            ("GATEKEEPER_MAX_CONNECTIONS", "500"),
            ("GATEKEEPER_MAX_IN_FLIGHT", "64"),
            ("GATEKEEPER_METRICS_REFRESH", "30"),
        ])
        .unwrap();
        assert_eq!(c.auth_failure_limit, None);
        assert_eq!(c.max_connections, Some(500));
        assert_eq!(c.max_in_flight, 64);
        assert_eq!(c.metrics_refresh, std::time::Duration::from_secs(30));
        for (name, bad) in [
            ("GATEKEEPER_AUTH_FAILURE_BURST", "0.5"),
            ("GATEKEEPER_MAX_CONNECTIONS", "0"),
            ("GATEKEEPER_MAX_IN_FLIGHT", "many"),
            ("GATEKEEPER_METRICS_REFRESH", "0"),
        ] {
            let e = config(&[(name, bad)]).unwrap_err().to_string();
            assert!(e.contains(name), "{name}={bad}: {e}");
        }
    }

    #[test]
    fn a_refusal_names_the_variable_and_what_it_must_be() {
        for (name, bad, message) in [
            (
                "GATEKEEPER_DB_POOL_SIZE",
                "257",
                "GATEKEEPER_DB_POOL_SIZE must be a whole number from 1 to 256",
            ),
            (
                "GATEKEEPER_SHUTDOWN_GRACE",
                "0",
                "GATEKEEPER_SHUTDOWN_GRACE must be a whole number of seconds from 1 to 3600",
            ),
            (
                "GATEKEEPER_CHECKPOINT_INTERVAL",
                "-1",
                "GATEKEEPER_CHECKPOINT_INTERVAL must be a whole number of seconds from 0 (off) to 86400",
            ),
            (
                "GATEKEEPER_RATE_LIMIT",
                "NaN",
                "GATEKEEPER_RATE_LIMIT must be a number of requests a second (0 turns it off)",
            ),
            (
                "GATEKEEPER_RATE_BURST",
                "0.5",
                "GATEKEEPER_RATE_BURST must be a number of requests, at least 1",
            ),
            (
                "GATEKEEPER_MAX_CONNECTIONS",
                "0",
                "GATEKEEPER_MAX_CONNECTIONS must be a whole number from 1 to 1000000",
            ),
        ] {
            assert_eq!(config(&[(name, bad)]).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn licence_key_files_are_read() {
        let c = config(&[
            ("GATEKEEPER_LICENSE_KEY_FILE", "/etc/gatekeeper/license.pem"),
            (
                "GATEKEEPER_LICENSE_RETIRED_KEYS_FILE",
                "/etc/gatekeeper/retired.jwks",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.license_key_file,
            Some(PathBuf::from("/etc/gatekeeper/license.pem"))
        );
        assert_eq!(
            c.license_retired_keys_file,
            Some(PathBuf::from("/etc/gatekeeper/retired.jwks"))
        );
        let blank = config(&[("GATEKEEPER_LICENSE_RETIRED_KEYS_FILE", "  ")]).unwrap();
        assert_eq!(blank.license_retired_keys_file, None, "blank is unset");
    }

    #[test]
    fn database_urls_pick_the_backend() {
        let c = config(&[("GATEKEEPER_DATABASE_URL", "postgres://u:secret@db/gk")]).unwrap();
        assert_eq!(
            c.database_url,
            DatabaseUrl::Postgres("postgres://u:secret@db/gk".into())
        );
        assert_eq!(c.database_url.redacted(), "postgres://u:***@db/gk");
        assert!(config(&[("GATEKEEPER_DATABASE_URL", "mysql://x")]).is_err());
        assert!(config(&[("GATEKEEPER_DATABASE_URL", "sqlite://")]).is_err());
        assert!(config(&[("GATEKEEPER_DB_POOL_SIZE", "0")]).is_err());
        assert!(config(&[("GATEKEEPER_LEDGER_BATCH", "0")]).is_err());
        assert_eq!(
            config(&[("GATEKEEPER_LEDGER_BATCH", "1")])
                .unwrap()
                .ledger_batch,
            1
        );
    }
}
