//! A `gatekeeper serve` child process, driven as an operator and a client
//! would drive it, and a load of licence requests whose every answer is kept.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Backend, TestDb};

/// A `gatekeeper serve` child process in development mode in `dir`.
pub struct Served {
    pub child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    /// The `GATEKEEPER_DATA_DIR` it was given (replicas share one), where
    /// its development keys are.
    data_dir: Option<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn serve(database_url: &str, env: &[(&str, &str)]) -> Served {
    serve_with_open_files(database_url, env, None).await
}

/// [`serve`], with the process's open-file limit (soft and hard) set to
/// `open_files` when given (`ulimit -n`).
pub async fn serve_with_open_files(
    database_url: &str,
    env: &[(&str, &str)],
    open_files: Option<u32>,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let binary = env!("CARGO_BIN_EXE_gatekeeper");
    let mut command = match open_files {
        None => Command::new(binary),
        Some(n) => {
            let mut shell = Command::new("sh");
            shell
                .arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(binary);
            shell
        }
    };
    let child = command
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("GATEKEEPER_JWT_PUBLIC_KEY_FILE")
        .env("GATEKEEPER_DATABASE_URL", database_url)
        .env("GATEKEEPER_LISTEN", &base)
        .env("GATEKEEPER_CHECKPOINT_INTERVAL", "0")
        .env("GATEKEEPER_RATE_LIMIT", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let served = Served {
        child: Some(child),
        base: format!("http://{base}"),
        dir,
        data_dir: env
            .iter()
            .find(|(k, _)| *k == "GATEKEEPER_DATA_DIR")
            .map(|(_, v)| v.to_string()),
    };
    let client = awc::Client::default();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{}/readyz", served.base)).send().await {
            if r.status() == 200 {
                return served;
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the server did not become ready: {}",
        std::fs::read_to_string(served.dir.path().join("serve.log")).unwrap()
    );
}

impl Served {
    /// Its data folder: where its development keys are.
    pub fn data_dir(&self) -> std::path::PathBuf {
        match &self.data_dir {
            Some(dir) => dir.into(),
            None => self.dir.path().join(".gatekeeper"),
        }
    }

    /// The licence keys its configuration names (as `audit verify` on its
    /// database reads them): what it publishes and trusts.
    pub fn license_keys(&self) -> Vec<Value> {
        let data_dir = self.data_dir().to_string_lossy().to_string();
        let config = gatekeeper::config::Config::from_lookup(|name| {
            (name == "GATEKEEPER_DATA_DIR").then(|| data_dir.clone())
        })
        .unwrap();
        let keys = gatekeeper::startup::configured_keys(&config).unwrap();
        assert_eq!(keys.len(), 1, "its development licence key");
        keys
    }

    /// A token minted, as an operator would, from the server's development
    /// keys.
    pub fn token(&self, args: &[&str]) -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
        command
            .arg("token")
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("GATEKEEPER_JWT_PUBLIC_KEY_FILE");
        if let Some(data_dir) = &self.data_dir {
            command.env("GATEKEEPER_DATA_DIR", data_dir);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Issues one VPN licence to a German customer, with a key of its own.
    pub async fn issue_one(&self, reseller: &str) -> Answer {
        let key = uuid::Uuid::new_v4().simple().to_string();
        let body = json!({"product": "ACME-VPN", "seats": 1, "term_days": 30,
                          "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}});
        let (status, body, headers) = self
            .call(
                "POST",
                "/v1/licenses",
                reseller,
                Some(body),
                &[("idempotency-key", key.as_str())],
            )
            .await;
        (
            status,
            body["license"]["id"].as_str().map(String::from),
            headers.get("retry-after").is_some(),
        )
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, awc::http::header::HeaderMap) {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let mut req = client
            .request(
                awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .insert_header(("authorization", format!("Bearer {token}")));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let reply = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        match reply {
            Ok(mut resp) => {
                let bytes = resp.body().await.unwrap_or_default();
                (
                    resp.status().as_u16(),
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    resp.headers().clone(),
                )
            }
            Err(_) => (0, Value::Null, awc::http::header::HeaderMap::new()),
        }
    }

    /// Registers reseller `alpha` and the OEM firewall product.
    pub async fn setup(&self) -> (String, String) {
        let admin = self.token(&["--role", "admin"]);
        for (path, body) in [
            (
                "/v1/resellers/alpha",
                json!({"name": "Alpha", "country": "DE", "us_person": false}),
            ),
            ("/v1/organizations/acme", json!({"name": "Acme"})),
            (
                "/v1/products/KAV-ENGINE",
                json!({"name": "KAV", "vendor": "ao-kaspersky-lab", "category": "antivirus"}),
            ),
            (
                "/v1/products/ACME-FW-K",
                json!({"name": "FW", "vendor": "acme", "category": "firewall", "components": ["KAV-ENGINE"]}),
            ),
            (
                "/v1/products/ACME-VPN",
                json!({"name": "VPN", "vendor": "acme", "category": "vpn"}),
            ),
        ] {
            let (status, body, _) = self.call("PUT", path, &admin, Some(body), &[]).await;
            assert_eq!(status, 201, "{path}: {body}");
        }
        (
            admin,
            self.token(&["--role", "reseller", "--reseller", "alpha"]),
        )
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        let bytes = awc::Client::default()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .body()
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap()
    }

    /// SIGTERM; waits for the exit and returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        wait_exit(&mut child)
    }

    /// `kill -9`, and waits for it to be gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        let killed = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        child.wait().unwrap();
    }
}

/// Waits up to 30 s for `child` to exit; its exit status.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within the grace period");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One answer a load client kept: the status, the licence id of a 201,
/// and whether a 503 said when to retry.
pub type Answer = (u16, Option<String>, bool);

/// `clients` clients each issuing up to `each` licences with keys of their
/// own; with `stop_at_failure`, a client stops at its first answer that is
/// not a 201 (the server went away). Returns every answer.
pub async fn issue_load(
    served: &Served,
    reseller: &str,
    clients: usize,
    each: usize,
    stop_at_failure: bool,
) -> Vec<Answer> {
    let runs = (0..clients).map(|_| async move {
        let mut log = Vec::new();
        for _ in 0..each {
            let answer = served.issue_one(reseller).await;
            let status = answer.0;
            log.push(answer);
            if stop_at_failure && status != 201 {
                break;
            }
        }
        log
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every acknowledged licence is in the database at `url` with the
/// decision that allowed it; returns the store for further checks.
pub fn assert_durable(url: &str, acknowledged: &[String]) -> gatekeeper::store::Store {
    let store =
        gatekeeper::store::Store::connect(&gatekeeper::config::DatabaseUrl::parse(url).unwrap(), 2)
            .unwrap();
    for id in acknowledged {
        let licence = store
            .license(id)
            .unwrap()
            .unwrap_or_else(|| panic!("licence {id} acknowledged but missing"));
        let decision = store
            .decision(&licence.decision_id)
            .unwrap()
            .unwrap_or_else(|| panic!("licence {id} without its decision"));
        assert_eq!(decision.body["outcome"], "allow");
    }
    store
}

/// The licence ids of the 201s of a load.
pub fn acknowledged(log: &[Answer]) -> Vec<String> {
    log.iter()
        .filter(|(status, _, _)| *status == 201)
        .filter_map(|(_, id, _)| id.clone())
        .collect()
}

/// A `gatekeeper serve` on a fresh database: PostgreSQL when
/// `TEST_DATABASE_URL` is set, else SQLite.
pub fn fresh_database() -> (TestDb, String) {
    let backend = if std::env::var_os("TEST_DATABASE_URL").is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let (db, _) = TestDb::create(backend).unwrap();
    let url = db.url();
    (db, url)
}
