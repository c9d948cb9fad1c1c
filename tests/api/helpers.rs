//! Test harness: each test gets its own server on a free port and its own
//! fresh database (a SQLite file, or a PostgreSQL database created from
//! `TEST_DATABASE_URL` and dropped afterwards), and mints real tokens with a
//! key pair of its own.

use std::path::PathBuf;

use awc::http::StatusCode;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use gatekeeper::auth::{mint, DevKeys, MintClaims, Role};
use gatekeeper::config::{Config, DatabaseUrl};
use gatekeeper::startup::Application;
use serde_json::Value;

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "gatekeeper-test";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of one test, removed when the test ends.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

/// Whether PostgreSQL tests run: `TEST_DATABASE_URL` is set. CI always
/// sets it, so there a missing URL fails the test instead of skipping it.
pub fn postgres_expected() -> bool {
    if std::env::var_os("TEST_DATABASE_URL").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this on PostgreSQL"
        );
        return false;
    }
    true
}

/// A fresh PostgreSQL database for a PostgreSQL-only test, or `None` (the
/// test returns) when [`postgres_expected`] says so.
pub fn postgres_db() -> Option<(TestDb, DatabaseUrl)> {
    if !postgres_expected() {
        return None;
    }
    TestDb::create(Backend::Postgres)
}

impl TestDb {
    /// A fresh database, or `None` for PostgreSQL when `TEST_DATABASE_URL`
    /// is not set.
    pub fn create(backend: Backend) -> Option<(TestDb, DatabaseUrl)> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = DatabaseUrl::Sqlite(dir.path().join("gatekeeper.db"));
                Some((TestDb::Sqlite(dir), url))
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL").ok()?;
                let name = format!("gk_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = diesel::PgConnection::establish(&admin_url)
                    .expect("TEST_DATABASE_URL must reach PostgreSQL");
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create the test database");
                let (base, query) = match admin_url.split_once('?') {
                    Some((base, query)) => (base, format!("?{query}")),
                    None => (admin_url.as_str(), String::new()),
                };
                let prefix = &base[..base.rfind('/').expect("a database URL has a path")];
                let url = format!("{prefix}/{name}{query}");
                Some((
                    TestDb::Postgres {
                        admin_url,
                        name,
                        url: url.clone(),
                    },
                    DatabaseUrl::Postgres(url),
                ))
            }
        }
    }

    /// The database's URL, as `GATEKEEPER_DATABASE_URL` takes it.
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => {
                format!("sqlite://{}", dir.path().join("gatekeeper.db").display())
            }
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    /// Runs raw SQL on the test database, behind the service's back.
    pub fn execute(&self, sql: &str) -> Result<(), diesel::result::Error> {
        match self {
            TestDb::Sqlite(dir) => {
                let path = dir.path().join("gatekeeper.db");
                let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy())
                    .expect("open the SQLite file");
                // The service writes too (its impact runner ticks): wait
                // for its lock rather than fail on it.
                conn.batch_execute("PRAGMA busy_timeout = 10000")?;
                conn.batch_execute(sql)
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = diesel::PgConnection::establish(url).expect("connect");
                conn.batch_execute(sql)
            }
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

impl TestDb {
    /// The rows a query run behind the service's back returns.
    pub fn load<T>(&self, sql: &str) -> Vec<T>
    where
        for<'a> diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'a, diesel::SqliteConnection, T>
            + diesel::query_dsl::LoadQuery<'a, diesel::PgConnection, T>,
    {
        use diesel::RunQueryDsl;
        let query = diesel::sql_query(sql);
        match self {
            TestDb::Sqlite(dir) => {
                let path = dir.path().join("gatekeeper.db");
                let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy())
                    .expect("open the SQLite file");
                query.load(&mut conn).expect(sql)
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = diesel::PgConnection::establish(url).expect("connect");
                query.load(&mut conn).expect(sql)
            }
        }
    }

    /// The number a query behind the service's back counts
    /// (`SELECT count(*) AS n ...`).
    pub fn count(&self, sql: &str) -> i64 {
        self.load::<Count>(sql).first().map_or(0, |c| c.n)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            if let Ok(mut admin) = diesel::PgConnection::establish(admin_url) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub config: Config,
    pub client: awc::Client,
    pub db: TestDb,
    pub backend: Backend,
    keys_dir: tempfile::TempDir,
}

/// A response: status, headers and the body parsed as JSON (or `Null`).
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: awc::http::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Reads a whole response.
    pub async fn read<S>(mut resp: awc::ClientResponse<S>) -> Reply
    where
        S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
    {
        let bytes = resp.body().limit(64 * 1024 * 1024).await.expect("a body");
        Reply {
            status: resp.status(),
            content_type: resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            headers: resp.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).to_string(),
        }
    }

    /// A response header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }

    /// Asserts a problem+json error with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert!(self.body["type"].is_string());
    }

    /// The fields named by a 422.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Starts a server on `backend`, or `None` when that backend is not
/// available here (PostgreSQL without `TEST_DATABASE_URL`).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_configured(backend, |_| {}).await
}

/// [`spawn_app`], with `edit` applied to the configuration first (another
/// source of callers' keys, say).
pub async fn spawn_app_configured(
    backend: Backend,
    edit: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    let Some((db, database_url)) = TestDb::create(backend) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must cover PostgreSQL: set TEST_DATABASE_URL (.ci/run does)"
        );
        eprintln!(
            "TEST_DATABASE_URL is not set: the PostgreSQL variant has nothing to run against"
        );
        return None;
    };
    let keys_dir = tempfile::tempdir().expect("temp dir");
    let keys = DevKeys::in_dir(keys_dir.path());
    keys.ensure().expect("test keys");
    let license_keys = DevKeys::license_in_dir(keys_dir.path());
    license_keys.ensure().expect("licence keys");
    let mut config = Config {
        database_url,
        listen: "127.0.0.1:0".into(),
        jwt_public_key_file: Some(keys.public_pem_path.clone()),
        jwt_jwks_url: None,
        oidc_issuer: None,
        jwt_issuer: ISSUER.into(),
        jwt_audience: AUDIENCE.into(),
        jwt_role_claim: "/role".into(),
        jwt_tenant_claim: "/reseller".into(),
        jwks_refresh: std::time::Duration::from_secs(300),
        jwks_min_interval: std::time::Duration::from_secs(60),
        jwks_max_stale: std::time::Duration::from_secs(3600),
        console_client_id: None,
        data_dir: keys_dir.path().join("data"),
        db_pool_size: 4,
        license_key_file: Some(license_keys.private_pem_path.clone()),
        license_retired_keys_file: None,
        ledger_batch: 256,
        checkpoint_interval: None,
        log_format: "text".into(),
        shutdown_grace: std::time::Duration::from_secs(5),
        metrics_listen: None,
        public_url: "http://gatekeeper.test".into(),
        impact_interval: Some(std::time::Duration::from_secs(1)),
        impact_chunk: 200,
        rate_limit: None,
        request_timeout: std::time::Duration::from_secs(5),
        auth_failure_limit: None,
        max_connections: None,
        max_in_flight: 1024,
        metrics_refresh: std::time::Duration::from_secs(1),
        webhook_allow_private: true,
        webhook_interval: Some(std::time::Duration::from_secs(1)),
        webhook_timeout: std::time::Duration::from_secs(2),
        webhook_retry_base: std::time::Duration::from_millis(200),
        webhook_max_age: std::time::Duration::from_secs(259_200),
        event_retention_days: 30,
    };
    edit(&mut config);
    let address = start(&config);
    Some(TestApp {
        address,
        config,
        client: awc::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .finish(),
        db,
        backend,
        keys_dir,
    })
}

/// Builds and starts a server; returns its base address.
pub fn start(config: &Config) -> String {
    let app = Application::build(config).expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    address
}

impl TestApp {
    /// Another server (a replica) on the same database and keys; returns
    /// its base address.
    pub fn replica(&self) -> String {
        start(&self.config)
    }

    /// The same app as seen through another address (a replica).
    pub fn via(&self, address: &str) -> TestAppView<'_> {
        TestAppView {
            app: self,
            address: address.to_string(),
        }
    }

    pub fn private_pem(&self) -> Vec<u8> {
        DevKeys::in_dir(self.keys_dir.path())
            .private_pem()
            .expect("private key")
    }

    pub fn public_pem_path(&self) -> PathBuf {
        DevKeys::in_dir(self.keys_dir.path()).public_pem_path
    }

    /// A valid token for `role` (and tenant `reseller`).
    pub fn token(&self, role: Role, reseller: Option<&str>) -> String {
        let now = chrono::Utc::now().timestamp();
        mint(
            &self.private_pem(),
            &MintClaims {
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
                sub: format!("test-{}", role.as_str()),
                role,
                reseller: reseller.map(String::from),
                iat: now,
                exp: now + 600,
            },
        )
        .expect("mint")
    }

    pub fn admin(&self) -> String {
        self.token(Role::Admin, None)
    }

    pub fn compliance(&self) -> String {
        self.token(Role::Compliance, None)
    }

    pub fn reseller(&self, id: &str) -> String {
        self.token(Role::Reseller, Some(id))
    }

    /// Sends a request with an optional token and an optional raw body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, path))
            .insert_header(("content-type", "application/json"));
        if let Some(token) = token {
            req = req.insert_header(("authorization", format!("Bearer {token}")));
        }
        let resp = match body {
            Some(bytes) => req.send_body(bytes).await,
            None => req.send().await,
        }
        .expect("the server answers");
        Reply::read(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send("GET", path, Some(token), None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(
            "PUT",
            path,
            Some(token),
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(
            "POST",
            path,
            Some(token),
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// PUTs as admin and asserts success.
    pub async fn admin_put(&self, path: &str, body: Value) -> Reply {
        let reply = self.put(path, &self.admin(), body).await;
        assert!(
            reply.status.is_success(),
            "PUT {path}: {} {}",
            reply.status,
            reply.text
        );
        reply
    }

    /// Registers a reseller.
    pub async fn register(&self, id: &str, country: &str, us_person: bool) {
        self.admin_put(
            &format!("/v1/resellers/{id}"),
            serde_json::json!({"name": format!("{id} GmbH"), "country": country, "us_person": us_person}),
        )
        .await;
    }

    /// The contract's OEM example: Acme's firewall embeds Kaspersky's engine.
    pub async fn add_oem_firewall(&self) {
        self.admin_put(
            "/v1/organizations/acme",
            serde_json::json!({"name": "Acme Networks", "country": "DE"}),
        )
        .await;
        self.admin_put(
            "/v1/products/KAV-ENGINE",
            serde_json::json!({"name": "Kaspersky Anti-Virus engine", "vendor": "ao-kaspersky-lab", "category": "antivirus"}),
        )
        .await;
        self.admin_put(
            "/v1/products/ACME-FW-K",
            serde_json::json!({"name": "Acme Firewall K", "vendor": "acme", "category": "firewall", "components": ["KAV-ENGINE"]}),
        )
        .await;
    }

    /// Preflights as `reseller`.
    pub async fn preflight(&self, reseller: &str, body: Value) -> Reply {
        self.post("/v1/decisions", &self.reseller(reseller), body)
            .await
    }

    /// Every audit event, in order.
    pub async fn all_events(&self) -> Vec<Value> {
        let token = self.compliance();
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(&format!("/v1/audit?limit=1000&after={after}"), &token)
                .await;
            assert_eq!(page.status, 200, "{}", page.text);
            let batch = page.body["events"].as_array().cloned().unwrap_or_default();
            events.extend(batch);
            match page.body["next"].as_str() {
                Some(next) => after = next.parse().expect("a numeric cursor"),
                None => return events,
            }
        }
    }
}

/// Runs a test body against SQLite and, when `TEST_DATABASE_URL` is set,
/// PostgreSQL: `both!(name)` makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                let app = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite)
                    .await
                    .expect("SQLite is always available");
                super::$name(app).await;
            }

            #[actix_web::test]
            async fn postgres() {
                if let Some(app) =
                    $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await
                {
                    super::$name(app).await;
                }
            }
        }
    };
}

/// A [`TestApp`] addressed through one of its replicas.
pub struct TestAppView<'a> {
    pub app: &'a TestApp,
    pub address: String,
}

impl TestAppView<'_> {
    pub async fn send(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self
            .app
            .client
            .request(method, format!("{}{}", self.address, path))
            .insert_header(("content-type", "application/json"))
            .insert_header(("authorization", format!("Bearer {token}")));
        let resp = match body {
            Some(b) => req.send_body(b.to_string()).await,
            None => req.send().await,
        }
        .expect("the replica answers");
        Reply::read(resp).await
    }
}

/// The value of one sample line of Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A JWT's claims (unverified: the tests that need it verify signatures).
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
