//! The licence keys the service publishes and trusts come from its
//! configuration: the current key and the retired keys the operator names
//! in `GATEKEEPER_LICENSE_RETIRED_KEYS_FILE`.

use std::process::Command;

use gatekeeper::startup::Application;
use serde_json::{json, Value};

use crate::attacks::{insert_checkpoint, key_pair};
use crate::both;
use crate::helpers::{start, TestApp};

fn verdict(report: &Value) -> (Value, Value, Value) {
    (
        report["ok"].clone(),
        report["first_invalid_seq"].clone(),
        report["reason"].clone(),
    )
}

both!(a_configured_retired_key_is_published_and_trusted);
/// A key retired by a rotation keeps verifying what it signed, once the
/// operator configures it; before that it is trusted nowhere.
async fn a_configured_retired_key_is_published_and_trusted(app: TestApp) {
    let events = app.all_events().await;
    let head = events.last().unwrap();
    let seq = head["seq"].as_i64().unwrap();
    let retired = key_pair();
    insert_checkpoint(
        &app,
        &retired.sign_checkpoint(seq, head["hash"].as_str().unwrap(), chrono::Utc::now()),
    );
    let current = app.send("GET", "/v1/keys", None, None).await.body["keys"][0].clone();

    // Not configured: neither published nor trusted.
    let keys = app.send("GET", "/v1/keys", None, None).await;
    assert_eq!(keys.body, json!({ "keys": [current] }));
    let report = app.get("/v1/audit/verify", &app.compliance()).await.body;
    assert_eq!(
        verdict(&report),
        (json!(false), json!(seq), json!("checkpoint_signature")),
        "{report}"
    );

    // Configured as retired: published, oldest first, and trusted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retired.jwks");
    std::fs::write(&file, json!({ "keys": [retired.jwk()] }).to_string()).unwrap();
    let mut config = app.config.clone();
    config.license_retired_keys_file = Some(file.clone());
    let replica = app.via(&start(&config));
    let keys = replica.send("GET", "/v1/keys", "", None).await;
    assert_eq!(keys.body, json!({ "keys": [retired.jwk(), current] }));
    let listing = replica
        .send("GET", "/v1/audit/checkpoints", &app.compliance(), None)
        .await;
    assert_eq!(listing.body["keys"], keys.body["keys"]);
    let report = replica
        .send("GET", "/v1/audit/verify", &app.compliance(), None)
        .await
        .body;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checkpoints_checked"], 1);

    // The CLI on the database reads the same configuration as `serve`.
    let cli = |retired: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
        command
            .args(["audit", "verify"])
            .env("GATEKEEPER_DATABASE_URL", app.db.url())
            .env(
                "GATEKEEPER_LICENSE_KEY_FILE",
                app.config.license_key_file.as_ref().unwrap(),
            )
            .env_remove("GATEKEEPER_LICENSE_RETIRED_KEYS_FILE");
        if let Some(path) = retired {
            command.env("GATEKEEPER_LICENSE_RETIRED_KEYS_FILE", path);
        }
        let out = command.output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (report, out.status.success())
    };
    let (report, ok) = cli(Some(&file));
    assert!(ok, "{report}");
    let (report, ok) = cli(None);
    assert!(!ok);
    assert_eq!(report["reason"], "checkpoint_signature");
}

both!(a_bad_retired_keys_file_stops_the_start);
/// A retired keys file that is not a key set of public Ed25519 keys stops
/// the start with an error naming the variable and the fault.
async fn a_bad_retired_keys_file_stops_the_start(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let key = key_pair();
    let mut private = key.jwk().clone();
    private["d"] = json!("bm90LWEtcmVhbC1rZXk");
    let mut renamed = key.jwk().clone();
    renamed["kid"] = json!("current");
    for (name, text, expected) in [
        ("not-json", "keys".to_string(), "not a JSON Web Key Set"),
        (
            "private",
            json!({ "keys": [private] }).to_string(),
            "private key",
        ),
        (
            "renamed",
            json!({ "keys": [renamed] }).to_string(),
            "not the key's RFC 7638 thumbprint",
        ),
        ("missing", String::new(), "opening"),
    ] {
        let file = dir.path().join(name);
        if name != "missing" {
            std::fs::write(&file, text).unwrap();
        }
        let mut config = app.config.clone();
        config.license_retired_keys_file = Some(file);
        let error = match Application::build(&config) {
            Ok(_) => panic!("{name}: the service started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            error.contains("GATEKEEPER_LICENSE_RETIRED_KEYS_FILE") && error.contains(expected),
            "{name}: {error}"
        );
    }
}
