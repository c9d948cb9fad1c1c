//! The catalogue API: the shipped designation, PUT/GET, and validation.

use serde_json::{json, Value};

use crate::both;
use crate::helpers::TestApp;

fn contract_designation() -> Value {
    json!({
      "title": "Kaspersky Lab, Inc. ICTS Final Determination",
      "authority": "US Department of Commerce, BIS",
      "citation": "89 FR 52434",
      "organizations": ["kaspersky-lab-inc", "ao-kaspersky-lab", "ooo-kaspersky-group", "kaspersky-labs-limited"],
      "covers_affiliates": true,
      "jurisdiction": "US",
      "excluded_categories": ["threat_intelligence", "security_training", "consulting"],
      "rules": [
        {"id": "new-agreements", "transactions": ["issue"],
         "effective_from": "2024-07-20T00:00:00", "time_zone": "America/New_York", "ends_service": false},
        {"id": "full-cutoff", "transactions": ["issue", "renew"],
         "effective_from": "2024-09-29T00:00:00", "time_zone": "America/New_York", "ends_service": true}
      ]
    })
}

both!(a_fresh_database_holds_the_shipped_designation);
async fn a_fresh_database_holds_the_shipped_designation(app: TestApp) {
    let token = app.admin();
    let d = app
        .get("/v1/designations/us-icts-kaspersky-2024", &token)
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    let mut expected = contract_designation();
    expected["id"] = json!("us-icts-kaspersky-2024");
    assert_eq!(d.body, expected);
    for (id, country) in [
        ("kaspersky-lab-inc", "US"),
        ("ao-kaspersky-lab", "RU"),
        ("ooo-kaspersky-group", "RU"),
        ("kaspersky-labs-limited", "GB"),
    ] {
        let org = app.get(&format!("/v1/organizations/{id}"), &token).await;
        assert_eq!(org.status, 200, "{id}: {}", org.text);
        assert_eq!(org.body["country"], country);
    }
    let list = app.get("/v1/designations", &app.compliance()).await;
    assert_eq!(list.body["designations"].as_array().unwrap().len(), 1);
}

both!(put_creates_then_replaces_and_get_reads_back);
async fn put_creates_then_replaces_and_get_reads_back(app: TestApp) {
    let token = app.admin();
    let body = json!({"name": "Acme", "country": "DE", "us_person": false});
    let first = app.put("/v1/resellers/acme", &token, body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = app
        .put(
            "/v1/resellers/acme",
            &token,
            json!({"name": "Acme AG", "country": "CH", "us_person": false}),
        )
        .await;
    assert_eq!(again.status, 200);
    let read = app.get("/v1/resellers/acme", &token).await;
    assert_eq!(
        read.body,
        json!({"id": "acme", "name": "Acme AG", "country": "CH", "us_person": false})
    );

    app.admin_put(
        "/v1/organizations/acme-corp",
        json!({"name": "Acme Corp", "aliases": ["ACME"]}),
    )
    .await;
    let rel = app
        .put(
            "/v1/organizations/acme-corp/relationships/ao-kaspersky-lab",
            &token,
            json!({"kind": "minority_owned_by"}),
        )
        .await;
    assert_eq!(rel.status, 201, "{}", rel.text);
    let rel = app
        .put(
            "/v1/organizations/acme-corp/relationships/ao-kaspersky-lab",
            &token,
            json!({"kind": "subsidiary_of"}),
        )
        .await;
    assert_eq!(rel.status, 200);
    let read = app
        .get(
            "/v1/organizations/acme-corp/relationships/ao-kaspersky-lab",
            &token,
        )
        .await;
    assert_eq!(read.body["kind"], "subsidiary_of");
    let del = app
        .send(
            "DELETE",
            "/v1/organizations/acme-corp/relationships/ao-kaspersky-lab",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(del.status, 204);
    let gone = app
        .send(
            "DELETE",
            "/v1/organizations/acme-corp/relationships/ao-kaspersky-lab",
            Some(&token),
            None,
        )
        .await;
    gone.assert_problem(404, "not_found");
    app.get("/v1/products/NOPE", &token)
        .await
        .assert_problem(404, "not_found");
}

both!(only_admins_write_and_resellers_do_not_read_the_catalogue);
async fn only_admins_write_and_resellers_do_not_read_the_catalogue(app: TestApp) {
    app.register("acme", "DE", false).await;
    let body = json!({"name": "X", "country": "DE"});
    app.put("/v1/organizations/x", &app.compliance(), body.clone())
        .await
        .assert_problem(403, "forbidden");
    app.put("/v1/organizations/x", &app.reseller("acme"), body)
        .await
        .assert_problem(403, "forbidden");
    app.get("/v1/organizations", &app.reseller("acme"))
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        app.get("/v1/organizations", &app.compliance()).await.status,
        200
    );
}

/// PUTs `body` at `path` and asserts a 422 naming exactly `fields`, and that
/// nothing changed (no audit event was appended).
async fn rejected(app: &TestApp, path: &str, body: Value, fields: &[&str]) {
    let before = app.all_events().await.len();
    let reply = app.put(path, &app.admin(), body).await;
    reply.assert_problem(422, "validation_failed");
    let mut got = reply.fields();
    got.sort();
    let mut want: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{path}: {}", reply.text);
    assert_eq!(
        app.all_events().await.len(),
        before,
        "a rejected change must change nothing"
    );
}

both!(invalid_catalogue_changes_are_422_naming_the_field);
async fn invalid_catalogue_changes_are_422_naming_the_field(app: TestApp) {
    app.admin_put(
        "/v1/organizations/acme",
        json!({"name": "Acme", "country": "DE"}),
    )
    .await;
    let org = |country: &str| json!({"name": "X", "country": country});
    rejected(&app, "/v1/organizations/Bad_Id", org("DE"), &["id"]).await;
    rejected(&app, "/v1/organizations/x", org("us"), &["country"]).await;
    rejected(&app, "/v1/organizations/x", org("XX"), &["country"]).await;
    rejected(
        &app,
        "/v1/organizations/x",
        json!({"name": "X", "owner": "me"}),
        &["owner"],
    )
    .await;
    rejected(
        &app,
        "/v1/organizations/x",
        json!({"country": "DE"}),
        &["name"],
    )
    .await;
    rejected(
        &app,
        "/v1/organizations/x",
        json!({"name": "  "}),
        &["name"],
    )
    .await;
    rejected(
        &app,
        "/v1/resellers/r",
        json!({"name": "R", "country": "DE"}),
        &["us_person"],
    )
    .await;
    rejected(
        &app,
        "/v1/resellers/r",
        json!({"name": "R", "country": "DE", "us_person": false, "outcome": "allow"}),
        &["outcome"],
    )
    .await;

    let product = |vendor: &str, components: Value| json!({"name": "P", "vendor": vendor, "category": "firewall", "components": components});
    rejected(
        &app,
        "/v1/products/-P",
        product("acme", json!([])),
        &["sku"],
    )
    .await;
    rejected(
        &app,
        "/v1/products/P",
        product("nobody", json!([])),
        &["vendor"],
    )
    .await;
    rejected(
        &app,
        "/v1/products/P",
        product("acme", json!(["NOPE"])),
        &["components[0]"],
    )
    .await;
    rejected(
        &app,
        "/v1/products/P",
        json!({"name": "P", "vendor": "acme", "category": "Fire Wall"}),
        &["category"],
    )
    .await;
    rejected(
        &app,
        "/v1/products/P",
        json!({"name": "P", "vendor": "acme", "category": "firewall", "white_label_of": "NOPE"}),
        &["white_label_of"],
    )
    .await;
    // A cycle: A embeds B, then B is replaced to embed A.
    app.admin_put("/v1/products/B", product("acme", json!([])))
        .await;
    app.admin_put("/v1/products/A", product("acme", json!(["B"])))
        .await;
    rejected(
        &app,
        "/v1/products/B",
        product("acme", json!(["A"])),
        &["components"],
    )
    .await;
    rejected(
        &app,
        "/v1/products/A",
        product("acme", json!(["A"])),
        &["components[0]"],
    )
    .await;

    let designation = |rule: Value| {
        json!({"title": "T", "authority": "A", "citation": "C", "organizations": ["acme"],
               "covers_affiliates": false, "jurisdiction": "GB", "rules": [rule]})
    };
    let rule = |from: &str, tz: &str| json!({"id": "r", "transactions": ["issue"], "effective_from": from, "time_zone": tz});
    // 02:30 does not exist in New York on 9 March 2025; 01:30 happens twice on 2 November 2025.
    rejected(
        &app,
        "/v1/designations/d",
        designation(rule("2025-03-09T02:30:00", "America/New_York")),
        &["rules[0].effective_from"],
    )
    .await;
    rejected(
        &app,
        "/v1/designations/d",
        designation(rule("2025-11-02T01:30:00", "America/New_York")),
        &["rules[0].effective_from"],
    )
    .await;
    rejected(
        &app,
        "/v1/designations/d",
        designation(rule("2025-01-01T00:00:00", "Mars/Olympus")),
        &["rules[0].time_zone"],
    )
    .await;
    rejected(
        &app,
        "/v1/designations/d",
        designation(rule("2025-01-01T00:00:00Z", "UTC")),
        &["rules[0].effective_from"],
    )
    .await;
    let mut unknown_org = designation(rule("2025-01-01T00:00:00", "Europe/London"));
    unknown_org["organizations"] = json!(["acme", "nobody"]);
    rejected(
        &app,
        "/v1/designations/d",
        unknown_org,
        &["organizations[1]"],
    )
    .await;

    rejected(
        &app,
        "/v1/organizations/acme/relationships/nobody",
        json!({"kind": "subsidiary_of"}),
        &["target"],
    )
    .await;
    rejected(
        &app,
        "/v1/organizations/nobody/relationships/acme",
        json!({"kind": "subsidiary_of"}),
        &["id"],
    )
    .await;
    rejected(
        &app,
        "/v1/organizations/acme/relationships/acme-2",
        json!({"kind": "owns"}),
        &["kind"],
    )
    .await;
}

/// `gatekeeper catalog import FILE` on the app's database: its report, or
/// its error, and whether it exited 0.
fn import(app: &TestApp, lines: &[serde_json::Value]) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entries.ndjson");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["catalog", "import", file.to_str().unwrap(), "--sub", "ops"])
        .env("GATEKEEPER_DATABASE_URL", app.db.url())
        .output()
        .unwrap();
    let shown = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (shown, out.status.success())
}

both!(a_bulk_import_is_one_audited_commit_the_service_then_serves);
async fn a_bulk_import_is_one_audited_commit_the_service_then_serves(app: TestApp) {
    let before = app.all_events().await.len();
    let entries = [
        json!({"kind": "organization", "id": "oem-gmbh", "spec": {"name": "OEM GmbH", "country": "DE"}}),
        json!({"kind": "relationship", "id": "oem-gmbh/ao-kaspersky-lab", "spec": {"kind": "subsidiary_of"}}),
        json!({"kind": "product", "id": "OEM-AV", "spec": {"name": "OEM AV", "vendor": "oem-gmbh", "category": "antivirus"}}),
    ];
    // A bad line, or a catalogue that would not validate, writes nothing.
    let mut bad = entries.to_vec();
    bad.push(json!({"kind": "product", "id": "X", "spec": {"name": "X"}}));
    let (said, ok) = import(&app, &bad);
    assert!(!ok && said.contains("line 4"), "{said}");
    let (said, ok) = import(&app, &entries[2..]);
    assert!(
        !ok && said.contains("unknown organization oem-gmbh"),
        "{said}"
    );
    assert_eq!(app.all_events().await.len(), before);

    let (said, ok) = import(&app, &entries);
    assert!(ok, "{said}");
    let report: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(report["imported"], 3);
    let events = app.all_events().await;
    let added = &events[before..];
    assert_eq!(added.len(), 3);
    assert!(added.iter().all(|e| e["actor"]["sub"] == "cli:ops"));
    assert!(added[2]["subject"]["catalog_digest"].is_string());
    // The running service picks it up, and the chain vouches for it.
    let product = app.get("/v1/products/OEM-AV", &app.admin()).await;
    assert_eq!(product.status, 200, "{}", product.text);
    let verified = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verified.body["ok"], true, "{}", verified.text);
    let body = json!({"transaction": "issue", "product": "OEM-AV",
                      "customer": {"id": "c", "name": "n", "country": "US"}});
    app.register("alpha", "DE", false).await;
    let decided = app.preflight("alpha", body).await;
    assert_eq!(
        decided.body["decision"]["outcome"], "deny",
        "{}",
        decided.text
    );
}
