//! Webhook endpoints through the API: creation (the secret shown once),
//! listing, reading, deletion and rotation; who may do what; the limit per
//! owner; the audit trail (which keeps secrets by their SHA-256 only) and
//! verification of the table against it; and, in production mode, only
//! `https` URLs to public addresses.

use chrono::{DateTime, Duration, Utc};
use gatekeeper::auth::Role;
use gatekeeper::webhook::secret::sha256_hex;
use serde_json::{json, Value};

use crate::attacks::database_verdict;
use crate::both;
use crate::helpers::{start, Reply, TestApp};
use crate::tampering::caught;

const ENDPOINTS: &str = "/v1/webhook-endpoints";

/// A URL for endpoints in tests (private addresses are allowed there).
const HOOK: &str = "http://127.0.0.1:9/hook";

fn endpoint(id: &str) -> String {
    format!("{ENDPOINTS}/{id}")
}

/// Creates an endpoint as `token`, asserting it is created.
async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.post(ENDPOINTS, token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

/// The ids of a listing.
fn ids(r: &Reply) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["webhook_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// The audit events about endpoint `id`, in order.
async fn events_of(app: &TestApp, id: &str) -> Vec<Value> {
    app.all_events()
        .await
        .into_iter()
        .filter(|e| e["subject"]["kind"] == "webhook_endpoint" && e["subject"]["id"] == id)
        .collect()
}

both!(endpoints_are_created_read_listed_and_deleted);
async fn endpoints_are_created_read_listed_and_deleted(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let alpha = app.reseller("alpha");
    let before = Utc::now();
    let r = app
        .post(
            ENDPOINTS,
            &alpha,
            json!({"url": HOOK, "event_types": ["license.issued", "license.revoked"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.body.clone();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(endpoint(&id)));
    assert_eq!(created["url"], HOOK);
    assert_eq!(
        created["event_types"],
        json!(["license.issued", "license.revoked"])
    );
    assert_eq!(created["status"], "enabled");
    let at: DateTime<Utc> = created["created_at"].as_str().unwrap().parse().unwrap();
    assert!(at >= before - Duration::seconds(1) && at <= Utc::now());
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );

    // Shown once: never in a read or a listing.
    let got = app.get(&endpoint(&id), &alpha).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let mut without = created.clone();
    without.as_object_mut().unwrap().remove("secret");
    assert_eq!(got.body, without);
    assert!(!got.text.contains(&secret));
    let listed = app.get(ENDPOINTS, &alpha).await;
    assert_eq!(ids(&listed), vec![id.clone()]);
    assert_eq!(listed.body["webhook_endpoints"][0], without);
    assert_eq!(listed.body["next"], Value::Null);
    assert!(!listed.text.contains(&secret));

    // Every type when none are named; the URL as parsed.
    let every = create(&app, &alpha, json!({"url": "http://0x7f.1:9/all"})).await;
    assert_eq!(every["event_types"], Value::Null);
    assert_eq!(every["url"], "http://127.0.0.1:9/all");
    let null = create(&app, &alpha, json!({"url": HOOK, "event_types": null})).await;
    assert_eq!(null["event_types"], Value::Null);

    // The tenant's integrator manages the same endpoints.
    let integrator = app.token(Role::Integrator, Some("alpha"));
    let mut all = ids(&app.get(ENDPOINTS, &integrator).await);
    all.sort();
    let mut want = vec![
        id.clone(),
        every["id"].as_str().unwrap().into(),
        null["id"].as_str().unwrap().into(),
    ];
    want.sort();
    assert_eq!(all, want);
    // Paged by id.
    let first = app.get(&format!("{ENDPOINTS}?limit=2"), &alpha).await;
    assert_eq!(ids(&first), want[..2].to_vec());
    let next = first.body["next"].as_str().unwrap();
    let rest = app
        .get(&format!("{ENDPOINTS}?limit=2&cursor={next}"), &alpha)
        .await;
    assert_eq!(ids(&rest), want[2..].to_vec());
    app.get(&format!("{ENDPOINTS}?type=x"), &alpha)
        .await
        .assert_problem(422, "validation_failed");

    // Deleted: gone, and a second deletion finds nothing.
    let d = app
        .send("DELETE", &endpoint(&id), Some(&integrator), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert!(d.text.is_empty());
    app.get(&endpoint(&id), &alpha)
        .await
        .assert_problem(404, "not_found");
    app.send("DELETE", &endpoint(&id), Some(&alpha), None)
        .await
        .assert_problem(404, "not_found");
    assert!(!ids(&app.get(ENDPOINTS, &alpha).await).contains(&id));
    assert_eq!(database_verdict(&app).await["ok"], true);
}

both!(a_rotation_makes_a_new_secret_and_keeps_the_old_one_a_day);
async fn a_rotation_makes_a_new_secret_and_keeps_the_old_one_a_day(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let alpha = app.reseller("alpha");
    let created = create(&app, &alpha, json!({"url": HOOK})).await;
    let id = created["id"].as_str().unwrap();
    let old = created["secret"].as_str().unwrap().to_string();

    let rotation = format!("{}/rotation", endpoint(id));
    let r = app.send("POST", &rotation, Some(&alpha), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.body["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, old);
    let expires: DateTime<Utc> = r.body["previous_secret_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let day = Utc::now() + Duration::hours(24);
    assert!(
        (expires - day).num_seconds().abs() < 60,
        "{expires} is not a day from now"
    );
    assert_eq!(r.body["id"], created["id"]);
    assert_eq!(r.body["url"], HOOK);
    assert_eq!(r.body["status"], "enabled");

    // Neither secret is shown again.
    let got = app.get(&endpoint(id), &alpha).await;
    assert_eq!(got.status, 200);
    assert!(got.body.get("secret").is_none(), "{}", got.text);
    assert!(!got.text.contains(&new) && !got.text.contains(&old));

    // The audit event records both by their SHA-256.
    let events = events_of(&app, id).await;
    let rotated = events.last().unwrap();
    assert_eq!(rotated["action"], "webhook.rotate");
    assert_eq!(rotated["subject"]["secret_sha256"], sha256_hex(&new));
    assert_eq!(
        rotated["subject"]["previous_secret_sha256"],
        sha256_hex(&old)
    );
    let until: DateTime<Utc> = rotated["subject"]["previous_until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(until, expires);

    // An empty object is no body; anything in it is refused, changing nothing.
    let again = app.post(&rotation, &alpha, json!({})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_ne!(again.body["secret"], json!(new));
    let refused = app
        .post(&rotation, &alpha, json!({"secret": "whsec_x"}))
        .await;
    refused.assert_problem(422, "validation_failed");
    assert_eq!(refused.fields(), ["secret"]);
    assert_eq!(events_of(&app, id).await.len(), 3);
    assert_eq!(database_verdict(&app).await["ok"], true);
}

both!(bodies_and_event_types_are_validated);
async fn bodies_and_event_types_are_validated(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let alpha = app.reseller("alpha");
    let events_before = app.all_events().await.len();
    for (body, field) in [
        (json!({"url": HOOK, "event_types": []}), "event_types"),
        (
            json!({"url": HOOK, "event_types": ["license.exploded"]}),
            "event_types[0]",
        ),
        (
            json!({"url": HOOK, "event_types": ["license.issued", "license.issued"]}),
            "event_types[1]",
        ),
        (
            json!({"url": HOOK, "event_types": ["impact.completed"]}),
            "event_types[0]",
        ),
        (
            json!({"url": HOOK, "event_types": "license.issued"}),
            "event_types",
        ),
        (json!({"url": HOOK, "event_types": [1]}), "event_types[0]"),
        (json!({"event_types": ["license.issued"]}), "url"),
        (json!({"url": 7}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "ftp://127.0.0.1/"}), "url"),
        (json!({"url": "http://user:pw@127.0.0.1/"}), "url"),
        (json!({"url": "http://127.0.0.1/#x"}), "url"),
        (
            json!({"url": format!("http://127.0.0.1/{}", "a".repeat(2048))}),
            "url",
        ),
        (json!({"url": HOOK, "secret": "whsec_mine"}), "secret"),
    ] {
        let r = app.post(ENDPOINTS, &alpha, body.clone()).await;
        r.assert_problem(422, "validation_failed");
        assert_eq!(r.fields(), [field], "{body}: {}", r.text);
    }
    // Both fields wrong: both named.
    let r = app
        .post(
            ENDPOINTS,
            &alpha,
            json!({"url": "https://", "event_types": ["x", "license.issued"]}),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    assert_eq!(r.fields(), ["url", "event_types[0]"]);
    // Not JSON: 400.
    app.send("POST", ENDPOINTS, Some(&alpha), Some(b"{".to_vec()))
        .await
        .assert_problem(400, "malformed_json");
    // Nothing was created or recorded.
    assert!(ids(&app.get(ENDPOINTS, &alpha).await).is_empty());
    assert_eq!(app.all_events().await.len(), events_before);

    // Compliance may ask for impact.completed, with any other type.
    let compliance = app.compliance();
    let c = create(
        &app,
        &compliance,
        json!({"url": HOOK, "event_types": ["impact.completed", "license.revoked"]}),
    )
    .await;
    assert_eq!(
        c["event_types"],
        json!(["impact.completed", "license.revoked"])
    );
}

both!(every_route_answers_each_role_as_the_contract_says);
async fn every_route_answers_each_role_as_the_contract_says(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let admin = app.admin();
    let ghost = app.reseller("ghost");
    let owners = [
        ("reseller", app.reseller("alpha")),
        ("integrator", app.token(Role::Integrator, Some("alpha"))),
        ("compliance", app.compliance()),
    ];
    for (role, token) in &owners {
        let created = app.post(ENDPOINTS, token, json!({"url": HOOK})).await;
        assert_eq!(created.status, 201, "{role}: {}", created.text);
        let id = created.body["id"].as_str().unwrap().to_string();
        let one = endpoint(&id);
        let rotation = format!("{one}/rotation");
        assert!(
            ids(&app.get(ENDPOINTS, token).await).contains(&id),
            "{role}"
        );
        assert_eq!(app.get(&one, token).await.status, 200, "{role}");
        let r = app.send("POST", &rotation, Some(token), None).await;
        assert_eq!(r.status, 200, "{role}: {}", r.text);

        // Every route, without a token, as an admin, as an unregistered tenant.
        let routes: [(&str, &str, Option<Vec<u8>>); 5] = [
            (
                "POST",
                ENDPOINTS,
                Some(json!({"url": HOOK}).to_string().into()),
            ),
            ("GET", ENDPOINTS, None),
            ("GET", &one, None),
            ("POST", &rotation, None),
            ("DELETE", &one, None),
        ];
        for (method, path, body) in &routes {
            app.send(method, path, None, body.clone())
                .await
                .assert_problem(401, "unauthorized");
            app.send(method, path, Some(&admin), body.clone())
                .await
                .assert_problem(403, "forbidden");
            app.send(method, path, Some(&ghost), body.clone())
                .await
                .assert_problem(403, "unknown_reseller");
        }
        // Other methods: 405 with Allow.
        let r = app.send("PUT", &one, Some(token), None).await;
        r.assert_problem(405, "method_not_allowed");
        assert_eq!(r.header("allow").as_deref(), Some("GET, DELETE"));
        app.send("GET", &rotation, Some(token), None)
            .await
            .assert_problem(405, "method_not_allowed");

        let d = app.send("DELETE", &one, Some(token), None).await;
        assert_eq!(d.status, 204, "{role}: {}", d.text);
        // The refused requests changed nothing: only this owner's own.
        assert!(ids(&app.get(ENDPOINTS, token).await).is_empty(), "{role}");
    }
    let changes: Vec<String> = app
        .all_events()
        .await
        .into_iter()
        .filter_map(|e| {
            let action = e["action"].as_str()?;
            action.starts_with("webhook.").then(|| action.to_string())
        })
        .collect();
    assert_eq!(
        changes,
        ["webhook.create", "webhook.rotate", "webhook.delete"].repeat(3)
    );
}

both!(another_owners_endpoints_are_not_found);
async fn another_owners_endpoints_are_not_found(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "DE", false).await;
    let (alpha, beta, compliance) = (
        app.reseller("alpha"),
        app.reseller("beta"),
        app.compliance(),
    );
    let own = create(&app, &alpha, json!({"url": HOOK})).await;
    let theirs = create(&app, &compliance, json!({"url": HOOK})).await;
    let events_before = app.all_events().await.len();
    for (token, other) in [
        (&beta, &own),
        (&compliance, &own),
        (&alpha, &theirs),
        (&beta, &theirs),
    ] {
        let id = other["id"].as_str().unwrap();
        app.get(&endpoint(id), token)
            .await
            .assert_problem(404, "not_found");
        app.send("DELETE", &endpoint(id), Some(token), None)
            .await
            .assert_problem(404, "not_found");
        app.send(
            "POST",
            &format!("{}/rotation", endpoint(id)),
            Some(token),
            None,
        )
        .await
        .assert_problem(404, "not_found");
        assert!(!ids(&app.get(ENDPOINTS, token).await).contains(&id.to_string()));
    }
    assert!(ids(&app.get(ENDPOINTS, &beta).await).is_empty());
    // Unchanged: still there, never rotated.
    assert_eq!(app.all_events().await.len(), events_before);
    for (token, mine) in [(&alpha, &own), (&compliance, &theirs)] {
        let got = app
            .get(&endpoint(mine["id"].as_str().unwrap()), token)
            .await;
        assert_eq!(got.status, 200, "{}", got.text);
    }
    // An id that names nothing (or cannot) is 404 too.
    app.get(&endpoint("no-such-endpoint"), &alpha)
        .await
        .assert_problem(404, "not_found");
    app.get(&endpoint("%00"), &alpha)
        .await
        .assert_problem(404, "not_found");
}

both!(an_owner_has_at_most_twenty_endpoints);
async fn an_owner_has_at_most_twenty_endpoints(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "DE", false).await;
    let alpha = app.reseller("alpha");
    let mut made = Vec::new();
    for _ in 0..20 {
        made.push(create(&app, &alpha, json!({"url": HOOK})).await);
    }
    let events_before = app.all_events().await.len();
    let r = app.post(ENDPOINTS, &alpha, json!({"url": HOOK})).await;
    r.assert_problem(409, "webhook_endpoint_limit");
    assert!(
        r.body["detail"].as_str().unwrap().contains("20"),
        "{}",
        r.text
    );
    assert_eq!(app.all_events().await.len(), events_before);
    assert_eq!(ids(&app.get(ENDPOINTS, &alpha).await).len(), 20);
    // Another tenant's, and compliance's, are counted apart.
    create(&app, &app.reseller("beta"), json!({"url": HOOK})).await;
    create(&app, &app.compliance(), json!({"url": HOOK})).await;
    // Deleting one makes room for one.
    let id = made[7]["id"].as_str().unwrap();
    let d = app.send("DELETE", &endpoint(id), Some(&alpha), None).await;
    assert_eq!(d.status, 204);
    create(&app, &alpha, json!({"url": HOOK})).await;
    app.post(ENDPOINTS, &alpha, json!({"url": HOOK}))
        .await
        .assert_problem(409, "webhook_endpoint_limit");
}

both!(endpoint_changes_are_audited_without_their_secrets);
async fn endpoint_changes_are_audited_without_their_secrets(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let alpha = app.reseller("alpha");
    let types = json!(["license.issued", "review.opened"]);
    let created = create(&app, &alpha, json!({"url": HOOK, "event_types": types})).await;
    let id = created["id"].as_str().unwrap();
    let first = created["secret"].as_str().unwrap().to_string();
    let rotation = format!("{}/rotation", endpoint(id));
    let rotated = app.send("POST", &rotation, Some(&alpha), None).await;
    let second = rotated.body["secret"].as_str().unwrap().to_string();
    let compliance = create(&app, &app.compliance(), json!({"url": HOOK})).await;
    let d = app.send("DELETE", &endpoint(id), Some(&alpha), None).await;
    assert_eq!(d.status, 204);

    let events = events_of(&app, id).await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["webhook.create", "webhook.rotate", "webhook.delete"]
    );
    let made = &events[0];
    assert_eq!(
        made["subject"],
        json!({"kind": "webhook_endpoint", "id": id, "reseller": "alpha", "url": HOOK,
               "event_types": types, "secret_sha256": sha256_hex(&first),
               "created_at": made["subject"]["created_at"]})
    );
    let at: DateTime<Utc> = made["subject"]["created_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let shown: DateTime<Utc> = created["created_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(at, shown);
    assert_eq!(made["at"], made["subject"]["created_at"]);
    assert_eq!(made["actor"]["role"], "reseller");
    assert_eq!(made["actor"]["reseller"], "alpha");
    assert_eq!(
        events[2]["subject"],
        json!({"kind": "webhook_endpoint", "id": id, "reseller": "alpha"})
    );
    // Compliance's endpoint concerns no tenant.
    let theirs = events_of(&app, compliance["id"].as_str().unwrap()).await;
    assert_eq!(theirs[0]["subject"]["reseller"], Value::Null);
    assert_eq!(theirs[0]["actor"]["role"], "compliance");

    // Filed under the tenant; no secret anywhere in the trail or its export.
    let token = app.compliance();
    let filed = app
        .get("/v1/audit?reseller=alpha&action=webhook.*", &token)
        .await;
    assert_eq!(filed.status, 200, "{}", filed.text);
    assert_eq!(filed.body["events"].as_array().unwrap().len(), 3);
    let trail = app.get("/v1/audit?limit=1000", &token).await;
    let secrets = [first, second, compliance["secret"].as_str().unwrap().into()];
    for secret in &secrets {
        assert!(!trail.text.contains(secret.as_str()));
        let key = secret.trim_start_matches("whsec_");
        assert!(!trail.text.contains(key));
    }
    let dir = tempfile::tempdir().unwrap();
    let export = std::fs::read_to_string(crate::attacks::export(&app, dir.path()).await).unwrap();
    assert!(export.contains("webhook.rotate"));
    for secret in &secrets {
        assert!(!export.contains(secret.as_str()));
    }
    assert_eq!(database_verdict(&app).await["ok"], true);
}

const CLEAN: (Value, Value, Value) = (Value::Null, Value::Null, Value::Null);

both!(verification_names_an_endpoint_that_is_not_what_the_chain_says);
async fn verification_names_an_endpoint_that_is_not_what_the_chain_says(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let alpha = app.reseller("alpha");
    let created = create(
        &app,
        &alpha,
        json!({"url": HOOK, "event_types": ["license.issued"]}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let first = created["secret"].as_str().unwrap().to_string();
    let r = app
        .send(
            "POST",
            &format!("{}/rotation", endpoint(&id)),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let secret = r.body["secret"].as_str().unwrap().to_string();
    let vouched = events_of(&app, &id).await.last().unwrap()["seq"].clone();
    assert_eq!(caught(&app).await, CLEAN);

    let row = json!(format!("webhook_endpoints/{id}"));
    let named = (json!("state_mismatch"), row.clone(), vouched.clone());
    let at = format!("WHERE id = '{id}'");
    for (edit, revert) in [
        (
            format!("UPDATE webhook_endpoints SET url = 'https://attacker.example/' {at}"),
            format!("UPDATE webhook_endpoints SET url = '{HOOK}' {at}"),
        ),
        (
            format!("UPDATE webhook_endpoints SET secret = 'whsec_known' {at}"),
            format!("UPDATE webhook_endpoints SET secret = '{secret}' {at}"),
        ),
        (
            format!("UPDATE webhook_endpoints SET previous_secret = 'whsec_known' {at}"),
            format!("UPDATE webhook_endpoints SET previous_secret = '{first}' {at}"),
        ),
        (
            format!(
                "UPDATE webhook_endpoints SET previous_until = '9999-01-01T00:00:00.000000Z' {at}"
            ),
            format!(
                "UPDATE webhook_endpoints SET previous_until = '{}' {at}",
                events_of(&app, &id).await.last().unwrap()["subject"]["previous_until"]
                    .as_str()
                    .unwrap()
            ),
        ),
        (
            format!("UPDATE webhook_endpoints SET event_types = NULL {at}"),
            format!("UPDATE webhook_endpoints SET event_types = '[\"license.issued\"]' {at}"),
        ),
        (
            format!("UPDATE webhook_endpoints SET reseller = 'beta' {at}"),
            format!("UPDATE webhook_endpoints SET reseller = 'alpha' {at}"),
        ),
        (
            format!(
                "UPDATE webhook_endpoints SET disabled_at = '2026-01-01T00:00:00.000000Z', \
                 disabled_reason = 'forged' {at}"
            ),
            format!("UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL {at}"),
        ),
    ] {
        app.db.execute(&edit).unwrap();
        assert_eq!(caught(&app).await, named, "{edit}");
        app.db.execute(&revert).unwrap();
        assert_eq!(caught(&app).await, CLEAN, "restored: {revert}");
    }
    // The delivery's bookkeeping is not vouched for.
    app.db
        .execute(&format!(
            "UPDATE webhook_endpoints SET cursor = cursor + 5, attempts = 3 {at}"
        ))
        .unwrap();
    assert_eq!(caught(&app).await, CLEAN);

    // A row inserted by hand: no event vouches for it.
    app.db
        .execute(
            "INSERT INTO webhook_endpoints (id, reseller, url, secret, created_at, cursor, attempts) \
             VALUES ('forged', 'alpha', 'https://attacker.example/', 'whsec_known', \
             '2026-01-01T00:00:00.000000Z', 0, 0)"
        )
        .unwrap();
    assert_eq!(
        caught(&app).await,
        (
            json!("state_mismatch"),
            json!("webhook_endpoints/forged"),
            Value::Null
        )
    );
    app.db
        .execute("DELETE FROM webhook_endpoints WHERE id = 'forged'")
        .unwrap();
    assert_eq!(caught(&app).await, CLEAN);

    // An endpoint deleted by hand, or brought back after its deletion.
    let saved = format!(
        "INSERT INTO webhook_endpoints (id, reseller, url, event_types, secret, previous_secret, \
         previous_until, created_at, cursor, attempts) SELECT id, reseller, url, event_types, secret, \
         previous_secret, previous_until, created_at, cursor, attempts FROM webhook_endpoints {at}"
    );
    app.db
        .execute("CREATE TABLE saved_endpoint AS SELECT * FROM webhook_endpoints")
        .unwrap();
    app.db
        .execute(&format!("DELETE FROM webhook_endpoints {at}"))
        .unwrap();
    assert_eq!(caught(&app).await, named);
    app.db
        .execute(&saved.replace("FROM webhook_endpoints", "FROM saved_endpoint"))
        .unwrap();
    assert_eq!(caught(&app).await, CLEAN);
    let d = app.send("DELETE", &endpoint(&id), Some(&alpha), None).await;
    assert_eq!(d.status, 204);
    let deleted = events_of(&app, &id).await.last().unwrap()["seq"].clone();
    assert_eq!(caught(&app).await, CLEAN);
    app.db
        .execute(&saved.replace("FROM webhook_endpoints", "FROM saved_endpoint"))
        .unwrap();
    assert_eq!(caught(&app).await, (json!("state_mismatch"), row, deleted));
}

both!(in_production_only_https_urls_to_public_addresses_are_taken);
async fn in_production_only_https_urls_to_public_addresses_are_taken(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let mut config = app.config.clone();
    config.webhook_allow_private = false;
    let production = app.via(&start(&config));
    let alpha = app.reseller("alpha");
    let events_before = app.all_events().await.len();
    for url in [
        "http://127.0.0.1/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "http://[::1]/",
        "https://169.254.169.254/",
        // A name that resolves to a loopback address.
        "https://localhost/",
        // 127.0.0.1, as a browser reads it.
        "https://0x7f.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://10.0.0.1/",
        "http://example.com/",
        "http://93.184.216.34/",
    ] {
        for token in [&alpha, &app.compliance()] {
            let r = production
                .send("POST", ENDPOINTS, token, Some(json!({"url": url})))
                .await;
            r.assert_problem(422, "validation_failed");
            assert_eq!(r.fields(), ["url"], "{url}: {}", r.text);
        }
    }
    assert!(ids(&app.get(ENDPOINTS, &alpha).await).is_empty());
    assert!(ids(&app.get(ENDPOINTS, &app.compliance()).await).is_empty());
    assert_eq!(app.all_events().await.len(), events_before);
    // The messages say why.
    let r = production
        .send(
            "POST",
            ENDPOINTS,
            &alpha,
            Some(json!({"url": "https://0x7f.1/"})),
        )
        .await;
    let message = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("127.0.0.1") && message.contains("not public"),
        "{message}"
    );
    let r = production
        .send(
            "POST",
            ENDPOINTS,
            &alpha,
            Some(json!({"url": "http://example.com/"})),
        )
        .await;
    assert!(r.text.contains("https"), "{}", r.text);

    // An https URL to a public address is taken (no resolution needed).
    let r = production
        .send(
            "POST",
            ENDPOINTS,
            &alpha,
            Some(json!({"url": "https://93.184.216.34/hooks"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["url"], "https://93.184.216.34/hooks");
}
