//! Building and running the service: configuration in, a bound server out.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{Server, Service, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage, HttpServer};
use anyhow::Context;
use futures_util::future::Either;
use futures_util::FutureExt;

use crate::api::limits::{self, InFlight, RateLimiter};
use crate::api::{self, AppState};
use crate::auth::provider::{self, Provider};
use crate::auth::{Authenticator, ClaimMap, DevKeys};
use crate::config::Config;
use crate::gate::checkpoints::Checkpointer;
use crate::gate::delivery::{self, Delivery};
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::signing::LicenseSigner;
use crate::store::ledger::Ledger;
use crate::store::stats::StatsRefresher;
use crate::store::Store;
use crate::telemetry::{self, RequestId, Spans};

/// The verifier of callers' tokens: the configured public key, an identity
/// provider's keys (fetched and refreshed on a thread of their own, each
/// fetch counted in `metrics`), or in development mode the development key
/// pair (created on first use).
pub fn authenticator(config: &Config, metrics: &Metrics) -> anyhow::Result<Authenticator> {
    let claims = ClaimMap::new(&config.jwt_role_claim, &config.jwt_tenant_claim)?;
    let source = match (&config.oidc_issuer, &config.jwt_jwks_url) {
        (Some(issuer), _) => Some(provider::Source::Discovery {
            issuer: issuer.clone(),
        }),
        (None, Some(url)) => Some(provider::Source::Jwks { url: url.clone() }),
        (None, None) => None,
    };
    if let Some(source) = source {
        let settings = provider::Settings {
            source,
            refresh: config.jwks_refresh,
            min_interval: config.jwks_min_interval,
            max_stale: config.jwks_max_stale,
        };
        let metrics = metrics.clone();
        let provider = Provider::start(
            settings,
            Box::new(move |result, keys| metrics.jwks_refresh(result, keys)),
        )
        .context("GATEKEEPER_OIDC_ISSUER or GATEKEEPER_JWT_JWKS_URL")?;
        // Discovery and the key set each take at most 5 s.
        provider.wait_for_first_fetch(std::time::Duration::from_secs(11));
        return Ok(Authenticator::from_provider(
            provider,
            &config.jwt_issuer,
            &config.jwt_audience,
        )
        .with_claims(claims));
    }
    let pem = match &config.jwt_public_key_file {
        Some(path) => std::fs::read(path).with_context(|| {
            format!("reading GATEKEEPER_JWT_PUBLIC_KEY_FILE {}", path.display())
        })?,
        None => {
            let keys = DevKeys::in_dir(&config.data_dir);
            keys.ensure()?;
            tracing::warn!(
                key = %keys.public_pem_path.display(),
                "DEVELOPMENT MODE: no GATEKEEPER_JWT_PUBLIC_KEY_FILE, GATEKEEPER_JWT_JWKS_URL or \
                 GATEKEEPER_OIDC_ISSUER is set, so tokens are verified with a development key \
                 that `gatekeeper token` signs with. Never run production like this."
            );
            keys.public_pem()?
        }
    };
    Ok(
        Authenticator::from_public_pem(&pem, &config.jwt_issuer, &config.jwt_audience)?
            .with_claims(claims),
    )
}

/// The licence-signing key: the configured one, or in development mode a
/// key pair created in the data folder.
pub fn license_signer(config: &Config) -> anyhow::Result<LicenseSigner> {
    let pem = match (&config.license_key_file, config.development()) {
        (Some(path), _) => std::fs::read(path)
            .with_context(|| format!("reading GATEKEEPER_LICENSE_KEY_FILE {}", path.display()))?,
        (None, true) => {
            let keys = DevKeys::license_in_dir(&config.data_dir);
            keys.ensure()?;
            keys.private_pem()?
        }
        (None, false) => anyhow::bail!(
            "GATEKEEPER_LICENSE_KEY_FILE must name the licence-signing key (PKCS#8 PEM Ed25519) \
             when callers' keys are configured (GATEKEEPER_JWT_PUBLIC_KEY_FILE, \
             GATEKEEPER_JWT_JWKS_URL or GATEKEEPER_OIDC_ISSUER); only development mode \
             generates one"
        ),
    };
    Ok(LicenseSigner::from_pkcs8_pem(&pem)?.with_public_url(&config.public_url))
}

/// The retired licence keys the operator configured
/// (`GATEKEEPER_LICENSE_RETIRED_KEYS_FILE`), checked; none when unset.
pub fn retired_license_keys(config: &Config) -> anyhow::Result<Vec<serde_json::Value>> {
    match &config.license_retired_keys_file {
        Some(path) => crate::signing::read_jwks_file(path).context(
            "GATEKEEPER_LICENSE_RETIRED_KEYS_FILE must name a JWKS of Ed25519 public keys",
        ),
        None => Ok(Vec::new()),
    }
}

/// The keys the service publishes at `GET /v1/keys` and trusts for signed
/// checkpoints: the retired ones configured, then `signer`'s. Only
/// configuration names them, never a row of the database.
pub fn published_keys(
    config: &Config,
    signer: &LicenseSigner,
) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(crate::signing::key_set(
        Some(signer.jwk()),
        retired_license_keys(config)?,
    ))
}

/// The same keys for a tool that reads the configuration of `serve` without
/// signing (`audit verify` on the database): the current licence key as
/// configured (read to derive its public key), or in development mode the
/// one in the data folder, if the service has made it (it is never made
/// here), and the retired ones.
pub fn configured_keys(config: &Config) -> anyhow::Result<Vec<serde_json::Value>> {
    let current = match (&config.license_key_file, config.development()) {
        (Some(_), _) => Some(license_signer(config)?),
        (None, true) => {
            let keys = DevKeys::license_in_dir(&config.data_dir);
            if keys.private_pem_path.exists() {
                Some(LicenseSigner::from_pkcs8_pem(&keys.private_pem()?)?)
            } else {
                None
            }
        }
        (None, false) => Some(license_signer(config)?),
    };
    Ok(crate::signing::key_set(
        current.as_ref().map(LicenseSigner::jwk),
        retired_license_keys(config)?,
    ))
}

/// A migrated, bound, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    metrics_server: Option<Server>,
    state: Arc<AppState>,
    checkpointer: Option<Checkpointer>,
    refresher: StatsRefresher,
    signer: Arc<LicenseSigner>,
    impact_interval: Option<std::time::Duration>,
    /// The webhook delivery worker, ready to start (`None`: delivery off).
    delivery: Option<Delivery>,
}

/// The serving state's gate, as the webhook delivery worker holds it (it
/// knows the gate, not the API's state).
struct ServedGate(Arc<AppState>);

impl std::ops::Deref for ServedGate {
    type Target = Gate;

    fn deref(&self) -> &Gate {
        &self.0.gate
    }
}

/// Connections the metrics listener holds at once.
const METRICS_CONNECTIONS: usize = 64;

/// Client connections the main listener holds at once, over all workers:
/// `GATEKEEPER_MAX_CONNECTIONS`, or what the open-file limit leaves once the
/// database's files and sockets, the metrics listener and the process's own
/// are counted. The soft limit is first raised to the hard one (as Go's
/// runtime does). Past the cap, new connections wait in the listen backlog
/// until one closes; the service never runs out of file descriptors, which
/// would also stop it opening database connections (and, on SQLite, its
/// files).
fn connection_cap(config: &Config, workers: usize) -> usize {
    let reserve = 64 + METRICS_CONNECTIONS + 4 * (config.db_pool_size as usize + 4);
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => usize::try_from(files).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    };
    let room = files.saturating_sub(reserve).max(workers);
    match config.max_connections {
        Some(wanted) if wanted <= room => wanted,
        Some(wanted) => {
            tracing::warn!(
                wanted,
                cap = room,
                open_files = files,
                "GATEKEEPER_MAX_CONNECTIONS is more than the open-file limit leaves room for; \
                 holding at most the cap"
            );
            room
        }
        None => room,
    }
}

impl Application {
    /// Connects, migrates, loads the catalogue and binds `config.listen`
    /// (port 0 picks a free port: see [`Application::port`]).
    pub fn build(config: &Config) -> anyhow::Result<Application> {
        let metrics = Metrics::new()?;
        let auth = authenticator(config, &metrics)?;
        let signer = Arc::new(license_signer(config)?);
        let keys = published_keys(config, &signer)?;
        // A request waits on the database at most its timeout: a lock wait
        // gives up at half of it, and the wait for the ledger at all of it.
        let store = Store::connect_bounded(
            &config.database_url,
            config.db_pool_size,
            config.request_timeout / 2,
        )
        .with_context(|| format!("connecting to {}", config.database_url.redacted()))?;
        store.migrate().context("migrating the database")?;
        let pool_wait = metrics.db_pool_wait_seconds.clone();
        let store = store.with_pool_wait(move |waited| pool_wait.observe(waited.as_secs_f64()));
        let batch_sizes = metrics.ledger_batch_size.clone();
        let ledger = Ledger::start(
            store.clone(),
            config.ledger_batch,
            move |writes| batch_sizes.observe(writes as f64),
            config.request_timeout,
        )?;
        let checkpointer = config
            .checkpoint_interval
            .map(|every| Checkpointer::start(store.clone(), Arc::clone(&signer), every))
            .transpose()?;
        let gate = Gate::open(
            store.clone(),
            ledger,
            Arc::clone(&signer),
            keys,
            metrics.clone(),
        )
        .context("loading the catalogue")?
        .with_impact_chunk(config.impact_chunk)
        .with_webhook_allow_private(config.webhook_allow_private);
        let delivery = delivery::Settings::of(config)
            .map(Delivery::prepare)
            .transpose()
            .context("preparing the webhook delivery")?;
        // The console: development mode's local sign-in, or the provider's
        // (`GATEKEEPER_CONSOLE_CLIENT_ID`), or not served.
        let console_client = match &config.console_client_id {
            Some(id) => crate::console::oidc::ConsoleClient::new(id, &auth)
                .context("preparing the console's sign-in")?,
            None => None,
        };
        let console = crate::console::Console::new(
            signer.derived_secret("gatekeeper console sessions v1"),
            config.development(),
            console_client,
        );
        let state = Arc::new(AppState {
            gate,
            store,
            auth,
            metrics,
            limiter: config
                .rate_limit
                .map(|l| RateLimiter::new(limits::TENANT, l)),
            auth_failures: config
                .auth_failure_limit
                .map(|l| RateLimiter::new(limits::ADDRESS_FAILURES, l)),
            in_flight: InFlight::new(config.max_in_flight),
            request_timeout: config.request_timeout,
            auth_failure_log: Default::default(),
            readiness: Default::default(),
            console,
        });
        let serving = Arc::clone(&state);
        let metrics = state.metrics.clone();
        let refresher = StatsRefresher::start(
            state.store.clone(),
            config.metrics_refresh,
            config.request_timeout,
            move || serving.gate.unvouched().is_none() && serving.auth.unavailable().is_none(),
            move |stats, took| {
                metrics.db_stats_refresh_seconds.observe(took.as_secs_f64());
                metrics.observe_database(stats);
            },
        )?;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_connections = connection_cap(config, workers);
        let listener = TcpListener::bind(&config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let data = web::Data::new(Arc::clone(&state));
        let server = HttpServer::new(move || {
            let metrics = data.metrics.clone();
            let in_flight = data.in_flight.clone();
            App::new()
                .app_data(data.clone())
                .wrap(actix_web::middleware::from_fn(api::encoded_bodies))
                .wrap_fn(move |req, srv| {
                    // At most `GATEKEEPER_MAX_IN_FLIGHT` API requests at once;
                    // probes and metrics are never turned away.
                    let api = req.path().split('/').nth(1) == Some("v1");
                    let permit = match api {
                        true => match in_flight.enter() {
                            Some(permit) => Some(permit),
                            None => {
                                let refused = req.error_response(api::ApiError::Overloaded);
                                return Either::Left(std::future::ready(Ok(refused)));
                            }
                        },
                        false => None,
                    };
                    Either::Right(srv.call(req).map(move |res| {
                        drop(permit);
                        res.map(ServiceResponse::map_into_boxed_body)
                    }))
                })
                .wrap_fn(move |req, srv| {
                    let started = Instant::now();
                    let method = req.method().to_string();
                    let metrics = metrics.clone();
                    srv.call(req).map(move |res| {
                        if let Ok(res) = &res {
                            let route = res
                                .request()
                                .match_pattern()
                                .unwrap_or_else(|| "unmatched".into());
                            metrics
                                .http_request_duration
                                .with_label_values(&[&route, &method, res.status().as_str()])
                                .observe(started.elapsed().as_secs_f64());
                        }
                        res
                    })
                })
                .wrap(tracing_actix_web::TracingLogger::<Spans>::new())
                .wrap_fn(|req, srv| {
                    // The request's id: the caller's, or a new one; in every
                    // log line of the request (its span) and in the answer.
                    let id = telemetry::request_id(&req);
                    req.extensions_mut().insert(RequestId(id.clone()));
                    srv.call(req).map(move |res| {
                        res.map(|mut res| {
                            if let Ok(value) = HeaderValue::from_str(&id) {
                                res.headers_mut()
                                    .insert(HeaderName::from_static(telemetry::REQUEST_ID), value);
                            }
                            res
                        })
                    })
                })
                .configure(api::routes)
                .configure(crate::console::routes)
                .default_service(web::to(api::not_found))
        })
        .workers(workers)
        .max_connections(max_connections.div_ceil(workers))
        .shutdown_timeout(config.shutdown_grace.as_secs())
        .client_request_timeout(config.request_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .listen(listener)?
        .run();
        let metrics_server = match &config.metrics_listen {
            Some(address) => {
                let data = web::Data::new(Arc::clone(&state));
                let listener = TcpListener::bind(address)
                    .with_context(|| format!("binding GATEKEEPER_METRICS_LISTEN {address}"))?;
                Some(
                    HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .configure(api::metrics_only)
                    })
                    .workers(1)
                    .max_connections(METRICS_CONNECTIONS)
                    .shutdown_timeout(config.shutdown_grace.as_secs())
                    .listen(listener)?
                    .run(),
                )
            }
            None => None,
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            state,
            checkpointer,
            refresher,
            signer,
            impact_interval: config.impact_interval,
            delivery,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM stop it
    /// gracefully), then signs a last checkpoint over the chain's head.
    /// Impact runs advance and webhooks are delivered meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let runner = self
            .impact_interval
            .map(|every| actix_web::rt::spawn(run_impact(Arc::clone(&self.state), every)));
        // On a thread of its own: its HTTP calls and store calls stay off
        // the server's workers.
        let deliverer = self.delivery.and_then(|delivery| {
            delivery
                .start(ServedGate(Arc::clone(&self.state)))
                .inspect_err(
                    |e| tracing::error!(error = %e, "could not start the webhook delivery"),
                )
                .ok()
        });
        let served = match self.metrics_server {
            Some(metrics) => {
                let (served, _) = futures_util::future::join(self.server, metrics).await;
                served
            }
            None => self.server.await,
        };
        if let Some(runner) = runner {
            runner.abort();
        }
        drop(deliverer);
        drop(self.checkpointer);
        drop(self.refresher);
        let store = self.state.store.clone();
        match crate::gate::checkpoints::sign_now(&store, &self.signer) {
            Ok(Some(c)) => tracing::info!(seq = c.seq, "signed the last checkpoint"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not sign the last checkpoint"),
        }
        served
    }
}

/// Advances impact runs: at start (the instants that passed while no
/// replica ran), every `every`, and whenever a catalogue change opens a run.
/// An error is logged and tried again at the next tick; a run interrupted
/// here (or by a crash) resumes where its last chunk left it.
async fn run_impact(state: Arc<AppState>, every: std::time::Duration) {
    loop {
        if let Err(e) = state.gate.impact_tick().await {
            tracing::warn!(error = %e, "advancing impact runs");
        }
        let woken = state.gate.impact_wake.notified();
        let _ = tokio::time::timeout(every, woken).await;
    }
}
