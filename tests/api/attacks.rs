//! Attacks on the audit trail by someone with database access, triggers
//! bypassed: each is caught, by the database verification and by the
//! offline verification of an export, which agree.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::both;
use crate::helpers::{Backend, TestApp};

/// Twelve events: the shipped catalogue, some set-up, and decisions.
async fn trail(app: &TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    for country in ["US", "DE", "FR"] {
        let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                          "customer": {"id": "c", "name": "n", "country": country, "us_person": false}});
        assert_eq!(app.preflight("alpha", body).await.status, 200);
    }
    assert_eq!(app.all_events().await.len(), 12);
}

/// Runs SQL with the append-only triggers out of the way.
pub(crate) fn bypassing_triggers(app: &TestApp, sql: &str) {
    let wrapped = match app.backend {
        Backend::Sqlite => format!(
            "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; \
             DROP TRIGGER audit_checkpoints_no_delete; {sql}"
        ),
        Backend::Postgres => format!(
            "ALTER TABLE audit_events DISABLE TRIGGER USER; \
             ALTER TABLE audit_checkpoints DISABLE TRIGGER USER; {sql}"
        ),
    };
    app.db.execute(&wrapped).unwrap();
}

/// What `GET /v1/audit/verify` says.
pub(crate) async fn database_verdict(app: &TestApp) -> Value {
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.status, 200, "{}", v.text);
    v.body
}

/// Exports the trail as NDJSON through the API into `dir`.
pub(crate) async fn export(app: &TestApp, dir: &Path) -> PathBuf {
    let mut resp = app
        .client
        .get(format!("{}/v1/audit", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.compliance())))
        .insert_header(("accept", "application/x-ndjson"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/x-ndjson"
    );
    let body = resp.body().limit(256 * 1024 * 1024).await.unwrap();
    let path = dir.join("audit.ndjson");
    std::fs::write(&path, &body).unwrap();
    path
}

/// Saves the published keys (`GET /v1/keys`) as an auditor would, apart
/// from the checkpoints.
async fn keep_keys(app: &TestApp, dir: &Path) -> PathBuf {
    let keys = app.send("GET", "/v1/keys", None, None).await;
    assert_eq!(keys.status, 200, "{}", keys.text);
    let path = dir.join("jwks.json");
    std::fs::write(&path, keys.text).unwrap();
    path
}

/// Saves the signed checkpoints (the listing, keys and all) as an auditor
/// would, outside the database.
async fn keep_checkpoints(app: &TestApp, dir: &Path) -> PathBuf {
    let signed = app
        .send(
            "POST",
            "/v1/audit/checkpoints",
            Some(&app.compliance()),
            None,
        )
        .await;
    assert_eq!(signed.status, 201, "{}", signed.text);
    let listing = app.get("/v1/audit/checkpoints", &app.compliance()).await;
    assert_eq!(listing.body["checkpoints"].as_array().unwrap().len(), 1);
    let path = dir.join("checkpoints.json");
    std::fs::write(&path, listing.text).unwrap();
    path
}

/// `gatekeeper audit verify ARGS`: its report, and whether it exited 0.
pub(crate) fn cli_verify(app: &TestApp, args: &[&str]) -> (Value, bool) {
    let (report, ok, _) = cli_verify_with_stderr(app, args);
    (report, ok)
}

/// `gatekeeper audit verify ARGS`: its report, whether it exited 0, and
/// what it wrote to standard error.
fn cli_verify_with_stderr(app: &TestApp, args: &[&str]) -> (Value, bool, String) {
    // The service's own configuration: its licence key file.
    let license_key = app.config.license_key_file.as_ref().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["audit", "verify"])
        .args(args)
        .env("GATEKEEPER_DATABASE_URL", app.db.url())
        .env("GATEKEEPER_LICENSE_KEY_FILE", license_key)
        .env("GATEKEEPER_DATA_DIR", &app.config.data_dir)
        .env_remove("GATEKEEPER_LICENSE_RETIRED_KEYS_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{stderr}"));
    assert_eq!(
        out.status.success(),
        report["ok"] == true,
        "exit status follows the verdict"
    );
    (report, out.status.success(), stderr)
}

pub(crate) fn verdict(report: &Value) -> (Value, Value, Value) {
    (
        report["ok"].clone(),
        report["first_invalid_seq"].clone(),
        report["reason"].clone(),
    )
}

/// The database, the CLI on the database and the CLI on an export all
/// report the same fault at the same `seq`.
async fn all_report(app: &TestApp, seq: i64, reason: &str) {
    let expected = (json!(false), json!(seq), json!(reason));
    let db = database_verdict(app).await;
    assert_eq!(verdict(&db), expected, "database: {db}");
    let (cli, _) = cli_verify(app, &[]);
    assert_eq!(verdict(&cli), expected, "CLI on the database: {cli}");
    let dir = tempfile::tempdir().unwrap();
    let file = export(app, dir.path()).await;
    let (offline, _) = cli_verify(app, &["--file", file.to_str().unwrap()]);
    assert_eq!(verdict(&offline), expected, "CLI on the export: {offline}");
}

both!(a_clean_trail_verifies_the_same_everywhere);
async fn a_clean_trail_verifies_the_same_everywhere(app: TestApp) {
    trail(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = keep_checkpoints(&app, dir.path()).await;
    let db = database_verdict(&app).await;
    assert_eq!(db["ok"], true, "{db}");
    assert_eq!(db["events_checked"], 12);
    assert_eq!(db["checkpoints_checked"], 1);
    let file = export(&app, dir.path()).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 12);
    let keys = keep_keys(&app, dir.path()).await;
    let (offline, ok) = cli_verify(
        &app,
        &[
            "--file",
            file.to_str().unwrap(),
            "--checkpoints",
            checkpoints.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
        ],
    );
    assert!(ok, "{offline}");
    assert_eq!(
        offline["head"], db["head"],
        "the export and the database agree on the head"
    );
    assert_eq!(offline["checkpoints_checked"], 1);
}

both!(a_malicious_export_is_refused_offline);
async fn a_malicious_export_is_refused_offline(app: TestApp) {
    trail(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let file = export(&app, dir.path()).await;
    let (report, ok) = cli_verify(&app, &["--file", file.to_str().unwrap()]);
    assert!(ok, "the export as streamed verifies: {report}");
    assert_eq!(report["events_checked"], 12);
    let clean = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = clean.lines().collect();
    let refusal = lines[9];
    assert!(refusal.contains(r#""outcome":"deny""#), "{refusal}");
    let offline = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        cli_verify_with_stderr(&app, &["--file", path.to_str().unwrap()])
    };
    let again = |line: &str| clean.replacen(refusal, line, 1);
    // The refusal at seq 10 read as an allow by a parser that keeps the
    // first of two keys; serde_json keeps the last, which the hash covers.
    let doubled = refusal.replacen('{', r#"{"outcome":"allow","#, 1);
    let reordered = {
        let (head, rest) = refusal.split_at(1);
        let seq = r#","seq":10"#;
        assert!(rest.contains(seq));
        format!(r#"{head}"seq":10,{}"#, rest.replacen(seq, "", 1))
    };
    for (what, text, seq) in [
        ("a repeated key", again(&doubled), 10),
        ("CRLF line ends", clean.replace('\n', "\r\n"), 1),
        (
            "a space after a colon",
            again(&refusal.replacen(':', ": ", 1)),
            10,
        ),
        ("reordered keys", again(&reordered), 10),
    ] {
        let event: Value = serde_json::from_str(text.lines().nth(seq - 1).unwrap()).unwrap();
        assert_eq!(
            event,
            serde_json::from_str::<Value>(lines[seq - 1]).unwrap(),
            "{what}: serde_json reads the same event"
        );
        let (report, ok, _) = offline("variant.ndjson", text.as_bytes());
        assert!(!ok, "{what}");
        assert_eq!(
            verdict(&report),
            (json!(false), json!(seq), json!("not_canonical")),
            "{what}: {report}"
        );
    }
    // A line twice the bound: refused as malformed where it stands.
    let mut long = clean.clone().into_bytes();
    long.resize(long.len() + 2 * gatekeeper::audit::MAX_LINE_BYTES, b'x');
    long.push(b'\n');
    let (report, ok, _) = offline("long.ndjson", &long);
    assert!(!ok);
    assert_eq!(
        verdict(&report),
        (json!(false), json!(13), json!("malformed")),
        "{report}"
    );
    assert_eq!(report["events_checked"], 12);
    // No events: not a verified chain.
    let (report, ok, stderr) = offline("empty.ndjson", b"");
    assert!(!ok);
    assert_eq!(verdict(&report), (json!(false), json!(1), json!("empty")));
    assert!(stderr.contains("holds no event"), "{stderr}");
}

/// An endless line (a pipe that never ends it) is refused at the bound:
/// the verifier never reads a line whole.
#[test]
fn an_endless_line_is_refused_without_reading_it_whole() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["audit", "verify", "--file", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0usize;
        // Stops when the verifier closes the pipe, or after 1 GiB.
        while written < 1 << 30 && stdin.write_all(&chunk).is_ok() {
            written += chunk.len();
        }
        written
    });
    let out = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verdict(&report),
        (json!(false), json!(1), json!("malformed")),
        "{report}"
    );
    assert!(
        written < 1 << 30,
        "the verifier stopped reading at the bound ({written} bytes written)"
    );
}

/// A key pair of someone else's: an intruder's, or a key retired long ago.
pub fn key_pair() -> gatekeeper::signing::LicenseSigner {
    let dir = tempfile::tempdir().unwrap();
    let pair = gatekeeper::auth::DevKeys::license_in_dir(dir.path());
    pair.ensure().unwrap();
    gatekeeper::signing::LicenseSigner::from_pkcs8_pem(&pair.private_pem().unwrap()).unwrap()
}

/// Inserts `checkpoint` into the database behind the service's back.
pub fn insert_checkpoint(app: &TestApp, checkpoint: &gatekeeper::audit::Checkpoint) {
    app.db
        .execute(&format!(
            "INSERT INTO audit_checkpoints (seq, hash, at, kid, signature) \
             VALUES ({}, '{}', '{}', '{}', '{}')",
            checkpoint.seq, checkpoint.hash, checkpoint.at, checkpoint.kid, checkpoint.signature
        ))
        .unwrap();
}

both!(a_key_added_to_the_database_is_neither_published_nor_trusted);
/// An intruder with write access to the database adds a key of its own to
/// `license_keys` and a checkpoint signed by it: the key is not published,
/// and its checkpoint fails verification everywhere but where the
/// auditor's own key set is the trust.
async fn a_key_added_to_the_database_is_neither_published_nor_trusted(app: TestApp) {
    trail(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let kept = keep_checkpoints(&app, dir.path()).await;
    let keys = keep_keys(&app, dir.path()).await;
    let published: Value = serde_json::from_slice(&std::fs::read(&keys).unwrap()).unwrap();
    assert_eq!(published["keys"].as_array().unwrap().len(), 1);
    // One more event: a head for the intruder to sign.
    let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                      "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}});
    assert_eq!(app.preflight("alpha", body).await.status, 200);
    let events = app.all_events().await;
    assert_eq!(events.len(), 13);
    let intruder = key_pair();
    let forged =
        intruder.sign_checkpoint(13, events[12]["hash"].as_str().unwrap(), chrono::Utc::now());
    app.db
        .execute(&format!(
            "INSERT INTO license_keys (kid, jwk, created_at) VALUES ('{}', '{}', '2026-01-01T00:00:00.000000Z')",
            intruder.kid(),
            intruder.jwk()
        ))
        .unwrap();
    insert_checkpoint(&app, &forged);

    // Not published: not at GET /v1/keys, nor beside the checkpoints.
    let now = app.send("GET", "/v1/keys", None, None).await;
    assert_eq!(now.body, published, "the configured key only");
    let listing = app.get("/v1/audit/checkpoints", &app.compliance()).await;
    assert_eq!(listing.body["keys"], published["keys"]);
    assert_eq!(listing.body["checkpoints"].as_array().unwrap().len(), 2);

    // Not trusted: the database, and the CLI on it with the service's
    // configuration or with the auditor's keys, refuse its checkpoint.
    let expected = (json!(false), json!(13), json!("checkpoint_signature"));
    let db = database_verdict(&app).await;
    assert_eq!(verdict(&db), expected, "database: {db}");
    let (cli, _) = cli_verify(&app, &[]);
    assert_eq!(
        verdict(&cli),
        expected,
        "CLI on the database, configured keys: {cli}"
    );
    let keys = keys.to_str().unwrap();
    let (cli, _) = cli_verify(&app, &["--keys", keys]);
    assert_eq!(
        verdict(&cli),
        expected,
        "CLI on the database, --keys: {cli}"
    );

    // Offline, the export verifies against the checkpoint kept elsewhere
    // and the real key set.
    let file = export(&app, dir.path()).await;
    let file = file.to_str().unwrap();
    let kept = kept.to_str().unwrap();
    let (offline, ok) = cli_verify(
        &app,
        &["--file", file, "--checkpoints", kept, "--keys", keys],
    );
    assert!(ok, "{offline}");
    assert_eq!(offline["events_checked"], 13);
    assert_eq!(offline["checkpoints_checked"], 1);
    // A checkpoints file that brings its own keys proves nothing: the
    // intruder's checkpoint beside the intruder's key is refused...
    let own = dir.path().join("intruder.json");
    std::fs::write(
        &own,
        json!({"checkpoints": [forged], "keys": [intruder.jwk()], "next": null}).to_string(),
    )
    .unwrap();
    let own = own.to_str().unwrap();
    let (offline, _) = cli_verify(
        &app,
        &["--file", file, "--checkpoints", own, "--keys", keys],
    );
    assert_eq!(verdict(&offline), expected, "CLI on the export: {offline}");
    // ...and the real checkpoints beside the intruder's key still verify
    // with the real keys: the keys beside them play no part.
    let mut swapped: Value = serde_json::from_slice(&std::fs::read(kept).unwrap()).unwrap();
    swapped["keys"] = json!([intruder.jwk()]);
    let swapped_path = dir.path().join("swapped.json");
    std::fs::write(&swapped_path, swapped.to_string()).unwrap();
    let swapped_path = swapped_path.to_str().unwrap();
    let (offline, ok) = cli_verify(
        &app,
        &[
            "--file",
            file,
            "--checkpoints",
            swapped_path,
            "--keys",
            keys,
        ],
    );
    assert!(ok, "{offline}");
    // Without --keys, the offline verifier does not guess.
    let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["audit", "verify", "--file", file, "--checkpoints", own])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs --keys"), "{stderr}");
}

both!(an_edited_event_is_caught);
async fn an_edited_event_is_caught(app: TestApp) {
    trail(&app).await;
    bypassing_triggers(
        &app,
        "UPDATE audit_events SET event = replace(event, '\"US\"', '\"CA\"') WHERE seq = 10",
    );
    all_report(&app, 10, "hash_mismatch").await;
}

both!(a_deleted_event_is_caught);
async fn a_deleted_event_is_caught(app: TestApp) {
    trail(&app).await;
    bypassing_triggers(&app, "DELETE FROM audit_events WHERE seq = 7");
    all_report(&app, 7, "gap").await;
}

both!(swapped_events_are_caught);
async fn swapped_events_are_caught(app: TestApp) {
    trail(&app).await;
    // Rows 10 and 11 exchange everything but their key.
    bypassing_triggers(
        &app,
        "UPDATE audit_events SET seq = -10 WHERE seq = 10; \
         UPDATE audit_events SET seq = 10 WHERE seq = 11; \
         UPDATE audit_events SET seq = 11 WHERE seq = -10;",
    );
    all_report(&app, 10, "reordered").await;
}

both!(a_cut_tail_with_a_rewound_head_is_caught_by_a_checkpoint_kept_elsewhere);
async fn a_cut_tail_with_a_rewound_head_is_caught_by_a_checkpoint_kept_elsewhere(app: TestApp) {
    trail(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let kept = keep_checkpoints(&app, dir.path()).await;
    // Cut the last three decisions, rewind the head to what is left, and
    // remove the checkpoint from the database too.
    let events = app.all_events().await;
    let new_head = &events[8];
    let cut = format!(
        "DELETE FROM audit_events WHERE seq > 9; DELETE FROM audit_checkpoints; \
         UPDATE ledger_head SET seq = 9, hash = '{}';",
        new_head["hash"].as_str().unwrap()
    );
    bypassing_triggers(&app, &cut);
    // The decisions the cut events recorded are still there: the state
    // gives the cut away.
    let db = database_verdict(&app).await;
    assert_eq!(
        (&db["ok"], &db["first_invalid_seq"], &db["reason"]),
        (&json!(false), &json!(10), &json!("state_mismatch")),
        "{db}"
    );
    let first_cut = events[9]["decision"]["id"].as_str().unwrap();
    assert_eq!(db["row"], format!("decisions/{first_cut}"), "{db}");
    // Cut those too, and on its own the database looks whole: that is the attack.
    app.db
        .execute("DELETE FROM decisions WHERE audit_seq > 9")
        .unwrap();
    let db = database_verdict(&app).await;
    assert_eq!(db["ok"], true, "{db}");
    assert_eq!(db["events_checked"], 9);
    // The checkpoint kept elsewhere catches it, on the database and on an export.
    let kept = kept.to_str().unwrap();
    let (cli, ok) = cli_verify(&app, &["--checkpoints", kept]);
    assert!(!ok);
    assert_eq!(
        verdict(&cli),
        (json!(false), json!(10), json!("checkpoint_beyond_chain")),
        "{cli}"
    );
    let file = export(&app, dir.path()).await;
    let keys = keep_keys(&app, dir.path()).await;
    let (offline, _) = cli_verify(
        &app,
        &[
            "--file",
            file.to_str().unwrap(),
            "--checkpoints",
            kept,
            "--keys",
            keys.to_str().unwrap(),
        ],
    );
    assert_eq!(
        verdict(&offline),
        (json!(false), json!(10), json!("checkpoint_beyond_chain")),
        "{offline}"
    );
}

both!(a_rewritten_chain_is_caught_by_a_checkpoint_kept_elsewhere);
async fn a_rewritten_chain_is_caught_by_a_checkpoint_kept_elsewhere(app: TestApp) {
    trail(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let kept = keep_checkpoints(&app, dir.path()).await;
    // Rewrite the US refusal (seq 10) into an allow, and re-hash the chain
    // from there on, so that it links again.
    let mut events = app.all_events().await;
    events[9]["outcome"] = json!("allow");
    events[9]["decision"]["outcome"] = json!("allow");
    let mut sql = String::from("DELETE FROM audit_checkpoints; ");
    let mut prev = events[8]["hash"].as_str().unwrap().to_string();
    for e in events.iter_mut().skip(9) {
        e["prev_hash"] = json!(prev);
        let Value::Object(mut map) = e.clone() else {
            unreachable!()
        };
        map.remove("hash");
        let (sealed, hash) = gatekeeper::audit::seal(map);
        let mut unsealed = sealed.clone();
        unsealed.remove("hash");
        let text = gatekeeper::audit::canonical_json(&Value::Object(unsealed)).replace('\'', "''");
        sql.push_str(&format!(
            "UPDATE audit_events SET event = '{text}', outcome = {}, prev_hash = '{prev}', hash = '{hash}' WHERE seq = {};",
            e["outcome"].as_str().map_or("NULL".into(), |o| format!("'{o}'")),
            e["seq"]
        ));
        prev = hash;
    }
    sql.push_str(&format!("UPDATE ledger_head SET hash = '{prev}';"));
    // And the decision row with it, or the state would give the edit away.
    sql.push_str(&format!(
        "UPDATE decisions SET outcome = 'allow' WHERE id = '{}';",
        events[9]["decision"]["id"].as_str().unwrap()
    ));
    bypassing_triggers(&app, &sql);
    let db = database_verdict(&app).await;
    assert_eq!(db["ok"], true, "the rewritten chain links on its own: {db}");
    let (cli, _) = cli_verify(&app, &["--checkpoints", kept.to_str().unwrap()]);
    assert_eq!(
        verdict(&cli),
        (json!(false), json!(12), json!("checkpoint_mismatch")),
        "the checkpoint at 12 no longer matches: {cli}"
    );
}

both!(checkpoints_are_append_only_and_signed_by_a_published_key);
async fn checkpoints_are_append_only_and_signed_by_a_published_key(app: TestApp) {
    trail(&app).await;
    let signed = app
        .send(
            "POST",
            "/v1/audit/checkpoints",
            Some(&app.compliance()),
            None,
        )
        .await;
    let checkpoint: gatekeeper::audit::Checkpoint =
        serde_json::from_value(signed.body["checkpoint"].clone()).unwrap();
    assert_eq!(checkpoint.seq, 12);
    let keys = app.send("GET", "/v1/keys", None, None).await.body["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert!(checkpoint.signature_verifies(&keys));
    // Signing again without new events returns the same checkpoint.
    let again = app
        .send(
            "POST",
            "/v1/audit/checkpoints",
            Some(&app.compliance()),
            None,
        )
        .await;
    assert_eq!(again.body["checkpoint"], signed.body["checkpoint"]);
    for sql in [
        "UPDATE audit_checkpoints SET hash = 'x'",
        "DELETE FROM audit_checkpoints",
    ] {
        let err = app.db.execute(sql).expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    app.send(
        "POST",
        "/v1/audit/checkpoints",
        Some(&app.reseller("alpha")),
        None,
    )
    .await
    .assert_problem(403, "forbidden");
}

/// One replica signs checkpoints at a time, and another takes over when it
/// goes (PostgreSQL: the signer's advisory lock).
#[actix_web::test]
async fn one_signer_at_a_time_and_another_takes_over() {
    use diesel::prelude::*;
    use gatekeeper::gate::checkpoints::Checkpointer;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let Some((db, url)) = crate::helpers::postgres_db() else {
        return;
    };
    let store = gatekeeper::store::Store::connect(&url, 4).unwrap();
    store.migrate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let pair = gatekeeper::auth::DevKeys::license_in_dir(keys.path());
    pair.ensure().unwrap();
    let signer = Arc::new(
        gatekeeper::signing::LicenseSigner::from_pkcs8_pem(&pair.private_pem().unwrap()).unwrap(),
    );

    let mut probe = diesel::PgConnection::establish(&db.url()).unwrap();
    let holders = |conn: &mut diesel::PgConnection| -> i64 {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7474002 AND granted \
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        ))
        .get_result(conn)
        .unwrap()
    };
    let until = |what: &str, mut ok: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let every = Duration::from_millis(100);
    let first = Checkpointer::start(store.clone(), Arc::clone(&signer), every).unwrap();
    until(
        "a checkpoint over the head",
        Box::new(|| store.checkpoints(Some(4), 1).unwrap().len() == 1),
    );
    let second = Checkpointer::start(store.clone(), Arc::clone(&signer), every).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(holders(&mut probe), 1, "one signer holds the lock");

    // The first goes; the second takes over and signs what comes next.
    drop(first);
    until(
        "the second to take the lock",
        Box::new(|| holders(&mut probe) == 1),
    );
    let ledger = gatekeeper::store::ledger::Ledger::start(
        store.clone(),
        16,
        |_| {},
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let change = gatekeeper::policy::CatalogChange::PutOrganization(
        gatekeeper::domain::OrgId::parse("late-org").unwrap(),
        serde_json::from_value(json!({"name": "Late"})).unwrap(),
    );
    let actor = gatekeeper::domain::Actor::system();
    let changes = [change];
    ledger
        .submit(move |conn, head| {
            gatekeeper::store::catalog::apply_catalog_changes(conn, head, &actor, &changes)
        })
        .await
        .unwrap();
    until(
        "a checkpoint by the second signer",
        Box::new(|| store.checkpoints(Some(5), 1).unwrap().len() == 1),
    );
    drop(second);
    until(
        "the lock to be released",
        Box::new(|| holders(&mut probe) == 0),
    );
}
