//! Impact runs through HTTP: a catalogue change, or a rule instant as it
//! passes, re-screens exactly the licences it reaches, acts on each once,
//! and reports it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both;
use crate::helpers::{jwt_claims, Reply, TestApp};
use crate::licenses::issue;

/// A licence issued to `customer` for `product`, as reseller `alpha`.
pub(crate) async fn licensed(app: &TestApp, product: &str, customer: Value) -> Value {
    let body = json!({"product": product, "customer": customer, "seats": 5, "term_days": 365});
    let key = uuid::Uuid::new_v4().to_string();
    let reply = issue(app, "alpha", Some(&key), &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["license"].clone()
}

/// The runs so far, oldest first.
pub(crate) async fn runs(app: &TestApp) -> Vec<Value> {
    let reply = app
        .get("/v1/impact-runs?limit=1000", &app.compliance())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["runs"].as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) until `count` runs exist and every one is complete; the
/// runs.
pub(crate) async fn settled(app: &TestApp, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = runs(app).await;
        if runs.len() >= count && runs.iter().all(|r| r["status"] == "complete") {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not complete: {runs:#?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The licences run `id` acted on, as `token` reads them (every page).
pub(crate) async fn acted(app: &TestApp, id: &str, token: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = app
            .get(
                &format!("/v1/impact-runs/{id}/licenses?limit=2&cursor={cursor}"),
                token,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        all.extend(
            reply.body["licenses"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        match reply.body["next"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return all,
        }
    }
}

/// A licence's entry in its status list, as published now.
async fn status_bits(app: &TestApp, licence: &Value) -> u8 {
    let reference = jwt_claims(licence["token"].as_str().unwrap())["status"]["status_list"].clone();
    let uri = reference["uri"].as_str().unwrap();
    let path = uri.strip_prefix("http://gatekeeper.test").unwrap();
    let list = app.send("GET", path, None, None).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let lst = jwt_claims(&list.text)["status_list"]["lst"].clone();
    let list = gatekeeper::status_list::StatusList::decode(2, lst.as_str().unwrap()).unwrap();
    list.get(reference["idx"].as_u64().unwrap() as usize)
}

async fn license(app: &TestApp, id: &str) -> Value {
    let reply = app
        .get(&format!("/v1/licenses/{id}"), &app.compliance())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn us() -> Value {
    json!({"id": "c-us", "name": "Initech", "country": "US"})
}
fn german() -> Value {
    json!({"id": "c-de", "name": "Muster AG", "country": "DE", "us_person": false})
}
fn unknown() -> Value {
    json!({"id": "c-br", "name": "Empresa", "country": "BR"})
}

/// A vendor outside every designation, with an antivirus product; and
/// another vendor's firewall.
pub(crate) async fn vendors(app: &TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "DE", false).await;
    app.admin_put(
        "/v1/organizations/secure-cy",
        json!({"name": "Secure Cyprus Ltd", "country": "CY"}),
    )
    .await;
    app.admin_put(
        "/v1/products/SCY-AV",
        json!({"name": "SecureCY AV", "vendor": "secure-cy", "category": "antivirus"}),
    )
    .await;
    app.admin_put(
        "/v1/organizations/other",
        json!({"name": "Other Networks", "country": "DE"}),
    )
    .await;
    app.admin_put(
        "/v1/products/OTHER-FW",
        json!({"name": "Other Firewall", "vendor": "other", "category": "firewall"}),
    )
    .await;
}

async fn make_subsidiary(app: &TestApp) -> Reply {
    app.admin_put(
        "/v1/organizations/secure-cy/relationships/ao-kaspersky-lab",
        json!({"kind": "subsidiary_of"}),
    )
    .await
}

both!(a_new_subsidiary_reaches_exactly_its_licences_once);
async fn a_new_subsidiary_reaches_exactly_its_licences_once(app: TestApp) {
    vendors(&app).await;
    let ended = licensed(&app, "SCY-AV", us()).await;
    let kept = licensed(&app, "SCY-AV", german()).await;
    let reviewed = licensed(&app, "SCY-AV", unknown()).await;
    let outside = licensed(&app, "OTHER-FW", us()).await;
    assert!(runs(&app).await.is_empty(), "setting up reaches no licence");

    // The vendor turns out to be Kaspersky's subsidiary.
    make_subsidiary(&app).await;
    let all = settled(&app, 1).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let run = &all[0];
    assert_eq!(run["trigger"]["kind"], "catalog_change");
    assert_eq!(run["licenses_checked"], 3, "{run}");
    assert_eq!(
        run["counts"],
        json!({"ended": 1, "capped": 0, "renewal_blocked": 0, "review": 1})
    );
    let id = run["id"].as_str().unwrap();
    let entries = acted(&app, id, &app.compliance()).await;
    let by_licence = |l: &Value| entries.iter().find(|e| e["license_id"] == l["id"]).cloned();
    let end = by_licence(&ended).expect("the U.S. customer's licence is acted on");
    assert_eq!(end["action"], "ended");
    assert_eq!(end["decision"]["outcome"], "deny");
    let path = &end["decision"]["reasons"][0]["path"];
    assert!(
        path.to_string().contains("secure-cy") && path.to_string().contains("ao-kaspersky-lab"),
        "the path runs through the new subsidiary: {path}"
    );
    assert_eq!(by_licence(&reviewed).unwrap()["action"], "review");
    assert!(by_licence(&kept).is_none() && by_licence(&outside).is_none());
    assert_eq!(entries.len(), 2);

    // The licences as they stand now.
    let now_ended = license(&app, ended["id"].as_str().unwrap()).await;
    assert_eq!(now_ended["status"], "ended");
    assert_eq!(
        now_ended["ended_by"]["designation"],
        "us-icts-kaspersky-2024"
    );
    assert_eq!(now_ended["ended_by"]["rule"], "full-cutoff");
    assert_eq!(
        license(&app, kept["id"].as_str().unwrap()).await["status"],
        "active"
    );
    assert_eq!(
        license(&app, outside["id"].as_str().unwrap()).await["status"],
        "active"
    );

    // The review is queued as an impact review, and (due now) suspends the
    // licence once its due time passes unresolved.
    let queue = app.get("/v1/reviews", &app.compliance()).await;
    let item = queue.body["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "impact")
        .cloned()
        .expect("an impact review");
    assert!(item["due"].is_string(), "{item}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while license(&app, reviewed["id"].as_str().unwrap()).await["status"] != "suspended" {
        assert!(
            Instant::now() < deadline,
            "the overdue review did not suspend"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status_bits(&app, &reviewed).await,
        2,
        "suspended in its list"
    );

    // The same content again reaches nothing and opens no run (a run is
    // opened in the change's own transaction, or not at all).
    make_subsidiary(&app).await;
    assert_eq!(runs(&app).await.len(), 1);

    // A tenant reads only its own licences' entries and counts.
    let theirs = app.reseller("beta");
    assert!(acted(&app, id, &theirs).await.is_empty());
    let seen = app.get(&format!("/v1/impact-runs/{id}"), &theirs).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert_eq!(
        seen.body["counts"],
        json!({"ended": 0, "capped": 0, "renewal_blocked": 0, "review": 0})
    );
    assert_eq!(
        seen.body["licenses_checked"],
        Value::Null,
        "every tenant's count"
    );
    assert_eq!(acted(&app, id, &app.reseller("alpha")).await.len(), 2);
    app.get("/v1/impact-runs", &theirs)
        .await
        .assert_problem(403, "forbidden");

    // Every action is an audit event citing the run, and the chain (with
    // every licence's standing) verifies.
    let events = app.all_events().await;
    let actions: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"].as_str().unwrap_or("").starts_with("impact."))
        .collect();
    assert!(actions
        .iter()
        .any(|e| e["action"] == "impact.ended" && e["subject"]["impact_run"] == id));
    let verify = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verify.body["ok"], true, "{}", verify.text);

    // The impact tables are vouched for: an edit of a run's counts, or of
    // what a run did to a licence, is named.
    let caught = |row: String| {
        let app = &app;
        async move {
            let verify = app.get("/v1/audit/verify", &app.compliance()).await;
            assert_eq!(verify.body["ok"], false, "{}", verify.text);
            assert_eq!(verify.body["reason"], "state_mismatch");
            assert_eq!(verify.body["row"], json!(row));
        }
    };
    app.db
        .execute(&format!(
            "UPDATE impact_runs SET ended = 0 WHERE id = '{id}'"
        ))
        .unwrap();
    caught(format!("impact_runs/{id}")).await;
    app.db
        .execute(&format!(
            "UPDATE impact_runs SET ended = 1 WHERE id = '{id}'"
        ))
        .unwrap();
    let lic = ended["id"].as_str().unwrap();
    app.db
        .execute(&format!(
            "UPDATE impact_actions SET action = 'renewal_blocked' WHERE license_id = '{lic}'"
        ))
        .unwrap();
    caught(format!("impact_actions/{id}/{lic}")).await;
    app.db
        .execute(&format!(
            "DELETE FROM impact_actions WHERE license_id = '{lic}'"
        ))
        .unwrap();
    caught(format!("impact_actions/{id}/{lic}")).await;
}

both!(a_service_end_a_moment_ahead_caps_now_and_ends_at_the_instant);
async fn a_service_end_a_moment_ahead_caps_now_and_ends_at_the_instant(app: TestApp) {
    vendors(&app).await;
    let lic = licensed(&app, "SCY-AV", us()).await;
    let token_before = lic["token"].clone();
    // A ban on the vendor whose full cut-off is three seconds ahead.
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(3);
    let local = cutoff.format("%Y-%m-%dT%H:%M:%S").to_string();
    app.admin_put(
        "/v1/designations/test-ban",
        json!({
            "title": "Test ban", "authority": "Test", "citation": "T 1",
            "organizations": ["secure-cy"], "covers_affiliates": false, "jurisdiction": "US",
            "rules": [{"id": "cutoff", "transactions": ["issue", "renew"],
                       "effective_from": local, "time_zone": "UTC", "ends_service": true}],
        }),
    )
    .await;
    let first = settled(&app, 1).await;
    assert_eq!(
        first[0]["counts"],
        json!({"ended": 0, "capped": 1, "renewal_blocked": 0, "review": 0})
    );
    let capped = license(&app, lic["id"].as_str().unwrap()).await;
    assert_eq!(capped["status"], "active");
    assert_ne!(
        capped["token"], token_before,
        "a capped licence has a new token"
    );
    let expires = chrono::DateTime::parse_from_rfc3339(capped["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(expires, cutoff.timestamp(), "{capped}");
    let entry = &acted(&app, first[0]["id"].as_str().unwrap(), &app.compliance()).await[0];
    assert_eq!(entry["action"], "capped");
    assert!(entry["not_after"].is_string());

    // At the instant, the rule's own run ends it.
    let both_runs = settled(&app, 2).await;
    let rule_run = &both_runs[1];
    assert_eq!(rule_run["trigger"]["kind"], "rule_effective", "{rule_run}");
    assert_eq!(rule_run["trigger"]["designation"], "test-ban");
    assert_eq!(rule_run["trigger"]["rule"], "cutoff");
    assert_eq!(rule_run["counts"]["ended"], 1, "{rule_run}");
    let ended = license(&app, lic["id"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["ended_by"]["rule"], "cutoff");
    assert_eq!(
        jwt_claims(ended["token"].as_str().unwrap())["exp"],
        cutoff.timestamp(),
        "its token runs to the cut-off"
    );
    assert_eq!(status_bits(&app, &ended).await, 1);
    let verify = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verify.body["ok"], true, "{}", verify.text);
}

both!(the_report_routes_refuse_what_they_should);
async fn the_report_routes_refuse_what_they_should(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let missing = "0190aaaa-0000-7000-8000-000000000000";
    app.get(&format!("/v1/impact-runs/{missing}"), &app.compliance())
        .await
        .assert_problem(404, "not_found");
    app.get(
        &format!("/v1/impact-runs/{missing}/licenses"),
        &app.reseller("alpha"),
    )
    .await
    .assert_problem(404, "not_found");
    app.get("/v1/impact-runs?limit=0", &app.compliance())
        .await
        .assert_problem(422, "validation_failed");
    app.get("/v1/impact-runs?colour=red", &app.admin())
        .await
        .assert_problem(422, "validation_failed");
    let listed = app.get("/v1/impact-runs", &app.admin()).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body, json!({"runs": [], "next": null}));
}

/// What a report says of each licence: its id, action and new expiry.
fn summary(entries: &[Value]) -> Vec<(Value, Value, Value)> {
    let mut out: Vec<(Value, Value, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["license_id"].clone(),
                e["action"].clone(),
                e.get("not_after").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    out.sort_by_key(|t| t.0.to_string());
    out
}

both!(a_preview_is_the_run_it_foretells_and_records_only_itself);
async fn a_preview_is_the_run_it_foretells_and_records_only_itself(app: TestApp) {
    vendors(&app).await;
    for customer in [us(), german(), unknown()] {
        licensed(&app, "SCY-AV", customer).await;
    }
    licensed(&app, "OTHER-FW", us()).await;
    let change = json!({"op": "put",
        "path": "/v1/organizations/secure-cy/relationships/ao-kaspersky-lab",
        "body": {"kind": "subsidiary_of"}});

    // Bad previews are refused, naming the change, and record nothing.
    let before = app.all_events().await.len();
    let bad = app
        .post(
            "/v1/impact-previews",
            &app.compliance(),
            json!({"changes": [{"op": "put", "path": "/v1/widgets/x", "body": {}}]}),
        )
        .await;
    bad.assert_problem(422, "validation_failed");
    assert_eq!(bad.fields(), vec!["changes[0].path"]);
    let bad = app
        .post(
            "/v1/impact-previews",
            &app.admin(),
            json!({"changes": [{"op": "put",
                "path": "/v1/organizations/secure-cy/relationships/ao-kaspersky-lab"}]}),
        )
        .await;
    assert_eq!(bad.fields(), vec!["changes[0].body"]);
    app.post(
        "/v1/impact-previews",
        &app.reseller("alpha"),
        json!({"changes": [change.clone()]}),
    )
    .await
    .assert_problem(403, "forbidden");
    assert_eq!(app.all_events().await.len(), before);

    let preview = app
        .post(
            "/v1/impact-previews",
            &app.compliance(),
            json!({"changes": [change]}),
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.text);
    let events = app.all_events().await;
    assert_eq!(events.len(), before + 1, "one event, of the preview");
    assert_eq!(events[before]["action"], "impact.preview");
    assert!(runs(&app).await.is_empty(), "a preview opens no run");
    let licences = app.get("/v1/licenses", &app.compliance()).await;
    assert!(licences.body["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["status"] == "active"));

    // The real change does what the preview said.
    make_subsidiary(&app).await;
    let run = settled(&app, 1).await[0].clone();
    assert_eq!(preview.body["counts"], run["counts"]);
    assert_eq!(preview.body["licenses_checked"], run["licenses_checked"]);
    let entries = acted(&app, run["id"].as_str().unwrap(), &app.compliance()).await;
    let foretold = preview.body["licenses"].as_array().unwrap();
    assert_eq!(summary(foretold), summary(&entries));
    assert_eq!(entries.len(), 2);
}

both!(an_impact_review_approved_on_facts_reinstates_and_rejected_ends);
async fn an_impact_review_approved_on_facts_reinstates_and_rejected_ends(app: TestApp) {
    vendors(&app).await;
    let customer = |id: &str| json!({"id": id, "name": "Empresa", "country": "BR"});
    let approved = licensed(&app, "SCY-AV", customer("c-br1")).await;
    let rejected = licensed(&app, "SCY-AV", customer("c-br2")).await;
    make_subsidiary(&app).await;
    assert_eq!(settled(&app, 1).await[0]["counts"]["review"], 2);
    // Both are due now: the sweep suspends them.
    let deadline = Instant::now() + Duration::from_secs(20);
    for l in [&approved, &rejected] {
        while license(&app, l["id"].as_str().unwrap()).await["status"] != "suspended" {
            assert!(
                Instant::now() < deadline,
                "the overdue review did not suspend"
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let review_of = |l: &Value| l["id"].clone();
    let queue = app.get("/v1/reviews", &app.compliance()).await;
    let find = |licence: &Value| -> String {
        queue.body["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "impact" && r["request"]["license_id"] == review_of(licence))
            .and_then(|r| r["decision"]["id"].as_str())
            .expect("its impact review")
            .to_string()
    };
    let (first, second) = (find(&approved), find(&rejected));

    // Attested facts about another customer are refused; nothing changes.
    let other = app
        .post(
            &format!("/v1/reviews/{first}"),
            &app.compliance(),
            json!({"resolution": "approve", "note": "x",
                   "customer": {"id": "c-other", "name": "E", "country": "BR", "us_person": false}}),
        )
        .await;
    other.assert_problem(422, "validation_failed");
    assert_eq!(other.fields(), vec!["customer.id"]);

    // Approved on attested facts (not a U.S. person): back in force.
    let ok = app
        .post(
            &format!("/v1/reviews/{first}"),
            &app.compliance(),
            json!({"resolution": "approve", "note": "attested: not a U.S. person",
                   "customer": {"id": "c-br1", "name": "Empresa", "country": "BR", "us_person": false}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let now = license(&app, approved["id"].as_str().unwrap()).await;
    assert_eq!(now["status"], "active", "{now}");
    assert_eq!(now["customer"]["us_person"], false);
    assert!(now.get("impact_review").is_none(), "{now}");

    // Rejected: ended, by the rule reviewed.
    let no = app
        .post(
            &format!("/v1/reviews/{second}"),
            &app.compliance(),
            json!({"resolution": "reject", "note": "cannot confirm"}),
        )
        .await;
    assert_eq!(no.status, 200, "{}", no.text);
    let now = license(&app, rejected["id"].as_str().unwrap()).await;
    assert_eq!(now["status"], "ended", "{now}");
    assert_eq!(now["ended_by"]["rule"], "full-cutoff");
    let verify = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verify.body["ok"], true, "{}", verify.text);
}

both!(a_catalogue_import_opens_its_run_too);
async fn a_catalogue_import_opens_its_run_too(app: TestApp) {
    vendors(&app).await;
    let lic = licensed(&app, "SCY-AV", us()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entries.ndjson");
    let entry = json!({"kind": "relationship", "id": "secure-cy/ao-kaspersky-lab",
                       "spec": {"kind": "subsidiary_of"}});
    std::fs::write(&file, entry.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["catalog", "import", file.to_str().unwrap(), "--sub", "ops"])
        .env("GATEKEEPER_DATABASE_URL", app.db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The serving replica's runner carries it out.
    let run = settled(&app, 1).await[0].clone();
    assert_eq!(run["trigger"]["kind"], "catalog_change");
    assert_eq!(run["counts"]["ended"], 1, "{run}");
    assert_eq!(
        license(&app, lic["id"].as_str().unwrap()).await["status"],
        "ended"
    );
}
