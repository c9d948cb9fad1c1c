//! The `gatekeeper` binary: token minting, migrate, and serve on its
//! embedded default as a newcomer runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use gatekeeper::auth::{Authenticator, DevKeys};

fn gatekeeper(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
    cmd.current_dir(dir)
        .env_remove("GATEKEEPER_JWT_PUBLIC_KEY_FILE")
        .env_remove("GATEKEEPER_DATABASE_URL")
        .env_remove("GATEKEEPER_DATA_DIR")
        .env_remove("GATEKEEPER_LISTEN")
        .env_remove("GATEKEEPER_JWT_ISSUER")
        .env_remove("GATEKEEPER_JWT_AUDIENCE");
    cmd
}

#[test]
fn token_mints_development_tokens_that_the_dev_key_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = gatekeeper(dir.path())
        .args(["token", "--role", "admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let keys = DevKeys::in_dir(&dir.path().join(".gatekeeper"));
    let auth =
        Authenticator::from_public_pem(&keys.public_pem().unwrap(), "gatekeeper-dev", "gatekeeper")
            .unwrap();
    let who = auth.verify(&token).unwrap();
    assert_eq!(who.role.as_str(), "admin");

    let out = gatekeeper(dir.path())
        .args(["token", "--role", "reseller", "--reseller", "acme"])
        .output()
        .unwrap();
    let who = auth
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap();
    assert_eq!(who.reseller.unwrap().as_str(), "acme");

    let out = gatekeeper(dir.path())
        .args(["token", "--role", "reseller"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reseller"));

    let out = gatekeeper(dir.path())
        .args(["token", "--role", "admin"])
        .env("GATEKEEPER_JWT_PUBLIC_KEY_FILE", keys.public_pem_path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "no development tokens when a real key is configured"
    );
}

#[test]
fn migrate_creates_the_shipped_catalogue_and_verify_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = gatekeeper(dir.path())
        .arg("migrate")
        .env("GATEKEEPER_DATABASE_URL", "sqlite://data/gk.db")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data/gk.db").exists());
    // Migrating again changes nothing.
    let again = gatekeeper(dir.path())
        .arg("migrate")
        .env("GATEKEEPER_DATABASE_URL", "sqlite://data/gk.db")
        .output()
        .unwrap();
    assert!(again.status.success());
    let out = gatekeeper(dir.path())
        .args(["audit", "verify"])
        .env("GATEKEEPER_DATABASE_URL", "sqlite://data/gk.db")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["events_checked"], 5,
        "four organisations and one designation, once"
    );

    let bad = gatekeeper(dir.path())
        .arg("migrate")
        .env("GATEKEEPER_DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// Kills the server when the test ends, whether it passed or not.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bare `gatekeeper` in an empty folder serves SQLite in development mode
/// and answers a preflight with a minted token.
#[actix_web::test]
async fn a_bare_gatekeeper_serves_its_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _server = Server(
        gatekeeper(dir.path())
            .env("GATEKEEPER_LISTEN", &listen)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = awc::Client::default();
    let base = format!("http://{listen}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the server did not become ready");
    assert!(dir.path().join("gatekeeper.db").exists());
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("DEVELOPMENT MODE"),
        "the dev-mode warning is loud: {log}"
    );

    let mint = |args: &[&str]| {
        let out = gatekeeper(dir.path())
            .arg("token")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let admin = mint(&["--role", "admin"]);
    let put = |path: &str, body: serde_json::Value| {
        client
            .put(format!("{base}{path}"))
            .insert_header(("authorization", format!("Bearer {admin}")))
            .send_json(&body)
    };
    let r = put(
        "/v1/resellers/acme",
        serde_json::json!({"name": "Acme", "country": "DE", "us_person": false}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    put(
        "/v1/organizations/acme-networks",
        serde_json::json!({"name": "Acme Networks"}),
    )
    .await
    .unwrap();
    put(
        "/v1/products/KAV-ENGINE",
        serde_json::json!({"name": "KAV", "vendor": "ao-kaspersky-lab", "category": "antivirus"}),
    )
    .await
    .unwrap();
    let r = put(
        "/v1/products/ACME-FW-K",
        serde_json::json!({"name": "FW", "vendor": "acme-networks", "category": "firewall", "components": ["KAV-ENGINE"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let reseller = mint(&["--role", "reseller", "--reseller", "acme"]);
    let mut r = client
        .post(format!("{base}/v1/decisions"))
        .insert_header(("authorization", format!("Bearer {reseller}")))
        .send_json(
            &serde_json::json!({"transaction": "issue", "product": "ACME-FW-K",
                                        "customer": {"id": "c", "name": "n", "country": "US"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["decision"]["outcome"], "deny");
    assert_eq!(body["decision"]["reasons"][0]["citation"], "89 FR 52434");
}
