//! Events: every change a reseller should hear of is an event, written with
//! its audit event, paged by `GET /v1/events`.

use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use gatekeeper::audit::outbox::EVENT_TYPES;
use serde_json::{json, Value};

use crate::both;

use crate::helpers::TestApp;
use crate::impact::{licensed, settled, vendors};
use crate::licenses::{issue, post_at};

fn us() -> Value {
    json!({"id": "c-us", "name": "Initech", "country": "US"})
}
fn unknown() -> Value {
    json!({"id": "c-br", "name": "Empresa", "country": "BR"})
}

async fn license_status(app: &TestApp, id: &str) -> String {
    let reply = app
        .get(&format!("/v1/licenses/{id}"), &app.compliance())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Drives the service through every kind of event, as reseller `alpha`
/// (and `beta` for one licence, so two tenants have events).
pub(crate) async fn every_kind(app: &TestApp) {
    vendors(app).await;
    // license.issued, license.renewed
    let renewed = licensed(app, "SCY-AV", us()).await;
    let id = renewed["id"].as_str().unwrap();
    let reply = post_at(
        app,
        &app.address,
        &format!("/v1/licenses/{id}/renewals"),
        "alpha",
        Some("renew-1"),
        &json!({"term_days": 30}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // license.suspended, license.reinstated, license.revoked
    let other = licensed(app, "OTHER-FW", us()).await;
    let oid = other["id"].as_str().unwrap();
    let c = app.compliance();
    let r = app
        .post(
            &format!("/v1/licenses/{oid}/suspension"),
            &c,
            json!({"reason": "payment"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .send(
            "DELETE",
            &format!("/v1/licenses/{oid}/suspension"),
            Some(&c),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .post(
            &format!("/v1/licenses/{oid}/revocation"),
            &app.reseller("alpha"),
            json!({"reason": "customer left"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A licence under review at issue, approved with attested facts.
    app.add_oem_firewall().await;
    let key = uuid::Uuid::new_v4().to_string();
    let asked = json!({"product": "ACME-FW-K", "customer": unknown(), "seats": 1, "term_days": 30});
    let reply = issue(app, "alpha", Some(&key), &asked).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let decision = reply.body["decision"]["id"].as_str().unwrap().to_string();
    let attested = json!({"id": "c-br", "name": "Empresa", "country": "BR", "us_person": false});
    let r = app
        .post(
            &format!("/v1/reviews/{decision}"),
            &c,
            json!({"resolution": "approve", "note": "attested", "customer": attested}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Impact: a subsidiary ends one licence and sends another to review;
    // a ban without service end blocks a renewal; one a moment ahead caps.
    let ended = licensed(app, "SCY-AV", us()).await;
    let reviewed = licensed(app, "SCY-AV", unknown()).await;
    app.admin_put(
        "/v1/organizations/secure-cy/relationships/ao-kaspersky-lab",
        json!({"kind": "subsidiary_of"}),
    )
    .await;
    settled(app, 1).await;
    assert_eq!(
        license_status(app, ended["id"].as_str().unwrap()).await,
        "ended"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while license_status(app, reviewed["id"].as_str().unwrap()).await != "suspended" {
        assert!(
            Instant::now() < deadline,
            "the overdue review did not suspend"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    app.register("beta", "DE", false).await;
    let body = json!({"product": "OTHER-FW", "customer": us(), "seats": 2, "term_days": 90});
    let r = issue(app, "beta", Some("beta-1"), &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let blocked = licensed(app, "OTHER-FW", us()).await;
    let _ = blocked;
    app.admin_put(
        "/v1/designations/renewals-only",
        json!({
            "title": "Renewals ban", "authority": "Test", "citation": "T 2",
            "organizations": ["other"], "covers_affiliates": false, "jurisdiction": "US",
            "rules": [{"id": "no-renewals", "transactions": ["renew"],
                       "effective_from": "2024-01-01T00:00:00", "time_zone": "UTC"}],
        }),
    )
    .await;
    settled(app, 2).await;
    // A ban whose full cut-off is a few seconds ahead caps a licence now
    // (and ends it at the instant).
    app.admin_put(
        "/v1/organizations/later-co",
        json!({"name": "Later Co", "country": "DE"}),
    )
    .await;
    app.admin_put(
        "/v1/products/LATER-AV",
        json!({"name": "Later AV", "vendor": "later-co", "category": "antivirus"}),
    )
    .await;
    let capped = licensed(app, "LATER-AV", us()).await;
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(3);
    app.admin_put(
        "/v1/designations/later-ban",
        json!({
            "title": "Later ban", "authority": "Test", "citation": "T 3",
            "organizations": ["later-co"], "covers_affiliates": false, "jurisdiction": "US",
            "rules": [{"id": "cutoff", "transactions": ["issue", "renew"],
                       "effective_from": cutoff.format("%Y-%m-%dT%H:%M:%S").to_string(),
                       "time_zone": "UTC", "ends_service": true}],
        }),
    )
    .await;
    settled(app, 3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while license_status(app, capped["id"].as_str().unwrap()).await != "ended" {
        assert!(Instant::now() < deadline, "the capped licence did not end");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event `token` may read, every page (`limit` a page), with `query`.
pub(crate) async fn all_events(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let reply = app
            .get(&format!("/v1/events?limit=7{after}{query}"), token)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let page = reply.body["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
        after = format!("&after={}", reply.body["next"].as_str().unwrap());
    }
}

fn types(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

both!(every_change_a_reseller_should_hear_of_is_an_event);
async fn every_change_a_reseller_should_hear_of_is_an_event(app: TestApp) {
    every_kind(&app).await;
    let all = all_events(&app, &app.compliance(), "").await;
    let every: BTreeSet<String> = EVENT_TYPES.iter().map(|t| t.to_string()).collect();
    assert_eq!(types(&all), every, "{all:#?}");
    // Each event is what its audit event recorded, at its instant, and ids
    // are unique.
    let ids: BTreeSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len());
    let audit = app.all_events().await;
    for e in &all {
        let id = e["id"].as_str().unwrap();
        assert!(id.starts_with("evt_"), "{id}");
        let at = e["created_at"].as_str().unwrap();
        assert!(
            audit.iter().any(|a| a["at"] == at
                && id.starts_with(&format!(
                    "evt_{}",
                    a["id"].as_str().unwrap().replace('-', "")
                ))),
            "an audit event at {at} makes {id}"
        );
        if e["type"].as_str().unwrap().starts_with("license.") {
            let license = &e["data"]["license"];
            assert!(
                license["id"].is_string() && license["status"].is_string(),
                "{e}"
            );
            assert!(license.get("token").is_none(), "no token in an event: {e}");
        }
    }
    // In commit order: the order of the audit events that made them.
    let place = |e: &Value| {
        let id = e["id"].as_str().unwrap();
        audit
            .iter()
            .find(|a| {
                id.starts_with(&format!(
                    "evt_{}",
                    a["id"].as_str().unwrap().replace('-', "")
                ))
            })
            .map(|a| a["seq"].as_i64().unwrap())
            .unwrap()
    };
    let order: Vec<i64> = all.iter().map(place).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    // What happened to one licence, in order.
    let first = all
        .iter()
        .find(|e| e["type"] == "license.suspended")
        .unwrap();
    let lic = first["data"]["license"]["id"].clone();
    let story: Vec<&str> = all
        .iter()
        .filter(|e| e["data"]["license"]["id"] == lic)
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        story,
        vec![
            "license.issued",
            "license.suspended",
            "license.reinstated",
            "license.revoked"
        ]
    );
    let revoked = all.iter().find(|e| e["type"] == "license.revoked").unwrap();
    assert_eq!(revoked["data"]["license"]["status"], "revoked");
    assert_eq!(
        revoked["data"]["license"]["status_reason"]["reason"],
        "customer left"
    );
    let capped = all.iter().find(|e| e["type"] == "license.capped").unwrap();
    assert_eq!(capped["data"]["decision"]["outcome"], "allow");
    assert!(capped["data"]["impact_run"].is_string(), "{capped}");
    let opened = all
        .iter()
        .find(|e| e["type"] == "review.opened" && e["data"]["review"]["kind"] == "impact")
        .unwrap();
    assert!(opened["data"]["review"]["due"].is_string(), "{opened}");
    let completed = all
        .iter()
        .find(|e| e["type"] == "impact.completed")
        .unwrap();
    assert_eq!(completed["reseller"], Value::Null);
    assert!(
        completed["data"]["run"]["counts"].is_object(),
        "{completed}"
    );

    // A tenant reads its own events only, and no run's completion.
    let alpha = all_events(&app, &app.reseller("alpha"), "").await;
    let beta = all_events(&app, &app.reseller("beta"), "").await;
    assert!(alpha.iter().all(|e| e["reseller"] == "alpha"));
    assert!(beta.iter().all(|e| e["reseller"] == "beta"));
    assert_eq!(
        types(&beta),
        ["license.issued", "license.renewal_blocked"]
            .iter()
            .map(|t| t.to_string())
            .collect()
    );
    let untenanted = all.iter().filter(|e| e["reseller"].is_null()).count();
    assert_eq!(alpha.len() + beta.len() + untenanted, all.len());
    let integrator = app.token(gatekeeper::auth::Role::Integrator, Some("beta"));
    assert_eq!(all_events(&app, &integrator, "").await, beta);

    // `type` filters.
    let ended = all_events(&app, &app.compliance(), "&type=license.ended").await;
    assert!(!ended.is_empty() && ended.iter().all(|e| e["type"] == "license.ended"));
    assert_eq!(
        ended.len(),
        all.iter().filter(|e| e["type"] == "license.ended").count()
    );

    // The chain vouches for every event: an edit, a deletion or an event
    // slipped in is named.
    let verify = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verify.body["ok"], true, "{}", verify.text);
    let caught = |row: String| {
        let app = &app;
        async move {
            let verify = app.get("/v1/audit/verify", &app.compliance()).await;
            assert_eq!(verify.body["ok"], false, "{}", verify.text);
            assert_eq!(verify.body["reason"], "state_mismatch", "{}", verify.text);
            assert_eq!(verify.body["row"], json!(row), "{}", verify.text);
        }
    };
    let id = revoked["id"].as_str().unwrap();
    let stored: i64 = {
        let reply = app
            .get(
                "/v1/events?limit=1000&type=license.revoked",
                &app.compliance(),
            )
            .await;
        assert_eq!(reply.body["events"][0]["id"], id);
        // One event on a full page of one: `next` is its seq.
        let one = app
            .get("/v1/events?limit=1&type=license.revoked", &app.compliance())
            .await;
        one.body["next"].as_str().unwrap().parse().unwrap()
    };
    // The data is read from the audit event, so an edit of it is an edit
    // of the chain; of the row, the instant and the tenant are held to it.
    app.db
        .execute(&format!(
            "UPDATE events SET created_at = '2020-01-01T00:00:00.000000Z' WHERE seq = {stored}"
        ))
        .unwrap();
    caught(format!("events/{stored}")).await;
    app.db
        .execute(&format!(
            "UPDATE events SET created_at = '{}' WHERE seq = {stored}",
            revoked["created_at"].as_str().unwrap()
        ))
        .unwrap();
    let verify = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verify.body["ok"], true, "restored: {}", verify.text);
    app.db
        .execute(&format!(
            "UPDATE events SET reseller = 'beta' WHERE seq = {stored}"
        ))
        .unwrap();
    caught(format!("events/{stored}")).await;
    // Nor does the row read as the other tenant's event: it is not what its
    // audit event makes, so neither feed lists it.
    let beta = app.reseller("beta");
    let listed = all_events(&app, &beta, "").await;
    assert!(listed.iter().all(|e| e["id"] != id), "{listed:?}");
    let listed = all_events(&app, &app.reseller("alpha"), "").await;
    assert!(listed.iter().all(|e| e["id"] != id), "{listed:?}");
    app.db
        .execute(&format!("DELETE FROM events WHERE seq = {stored}"))
        .unwrap();
    caught(format!("events/{stored}")).await;
    app.db
        .execute(&format!(
            "INSERT INTO events (seq, id, event_type, reseller, created_at, audit_seq) \
             VALUES ({stored}, 'evt_forged', 'license.revoked', 'alpha', '{}', {})",
            revoked["created_at"].as_str().unwrap(),
            stored / 16
        ))
        .unwrap();
    caught(format!("events/{stored}")).await;
    app.db
        .execute(&format!(
            "INSERT INTO events (seq, id, event_type, reseller, created_at, audit_seq) \
             VALUES (999999999, 'evt_slipped', 'license.revoked', 'alpha', '{}', 62499999)",
            revoked["created_at"].as_str().unwrap(),
        ))
        .unwrap();
    // An event with no audit event has no data to read: no feed lists it.
    let listed = all_events(&app, &app.compliance(), "").await;
    assert!(
        listed.iter().all(|e| e["id"] != "evt_slipped"),
        "{listed:?}"
    );
    app.db
        .execute(&format!("DELETE FROM events WHERE seq = {stored}"))
        .unwrap();
    app.db
        .execute(&format!(
            "INSERT INTO events (seq, id, event_type, reseller, created_at, audit_seq) \
             VALUES ({stored}, '{id}', 'license.revoked', 'alpha', '{}', {})",
            revoked["created_at"].as_str().unwrap(),
            stored / 16
        ))
        .unwrap();
    caught("events/999999999".into()).await;
}

both!(events_are_read_by_their_tenant_and_filters_are_checked);
async fn events_are_read_by_their_tenant_and_filters_are_checked(app: TestApp) {
    vendors(&app).await;
    let body = json!({"product": "SCY-AV", "customer": us(), "seats": 1, "term_days": 30});
    assert_eq!(issue(&app, "alpha", Some("k-1"), &body).await.status, 201);
    // A retry with the same key changes nothing, so tells nothing new.
    assert_eq!(issue(&app, "alpha", Some("k-1"), &body).await.status, 201);
    // A denial changes nothing either (no licence, no event).
    app.add_oem_firewall().await;
    let denied = json!({"product": "ACME-FW-K", "customer": us(), "seats": 1, "term_days": 30});
    assert_eq!(issue(&app, "alpha", Some("k-2"), &denied).await.status, 403);
    let mine = all_events(&app, &app.reseller("alpha"), "").await;
    assert_eq!(types(&mine), ["license.issued".to_string()].into());
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert!(all_events(&app, &app.reseller("beta"), "").await.is_empty());

    for bad in [
        "type=license.exploded",
        "after=-1",
        "after=abc",
        "limit=0",
        "limit=1001",
        "colour=red",
    ] {
        let reply = app
            .get(&format!("/v1/events?{bad}"), &app.compliance())
            .await;
        reply.assert_problem(422, "validation_failed");
    }
    app.get("/v1/events", &app.admin())
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(app.send("GET", "/v1/events", None, None).await.status, 401);
    // A feed: `next` follows the last event even on a page that is not
    // full, so a consumer polls from it and reads only what is new.
    let first = app.get("/v1/events?limit=50", &app.reseller("alpha")).await;
    assert_eq!(first.body["events"].as_array().unwrap().len(), 1);
    let next = first.body["next"].as_str().unwrap().to_string();
    let empty = app
        .get(&format!("/v1/events?after={next}"), &app.reseller("alpha"))
        .await;
    assert_eq!(empty.body, json!({"events": [], "next": next}));
    assert_eq!(issue(&app, "alpha", Some("k-3"), &body).await.status, 201);
    let new = app
        .get(&format!("/v1/events?after={next}"), &app.reseller("alpha"))
        .await;
    let new_events = new.body["events"].as_array().unwrap();
    assert_eq!(new_events.len(), 1, "{}", new.text);
    assert_ne!(new_events[0]["id"], first.body["events"][0]["id"]);
    assert_ne!(new.body["next"].as_str().unwrap(), next);
    let none = app.get("/v1/events", &app.reseller("beta")).await;
    assert_eq!(none.body, json!({"events": [], "next": null}));
}

both!(events_read_their_data_from_their_audit_events_and_the_migration_keeps_them);
/// An event row keeps no data: the feed reads it from the audit event, as
/// `audit::outbox::derive` makes it. The migration that dropped the column
/// reverts on a database with no events, and refuses, changing nothing,
/// once there are some (the release before could not read them).
async fn events_read_their_data_from_their_audit_events_and_the_migration_keeps_them(app: TestApp) {
    let (down, up) = match app.backend {
        crate::helpers::Backend::Sqlite => (
            include_str!("../../migrations/sqlite/2026-12-07-000001_events_derived/down.sql"),
            include_str!("../../migrations/sqlite/2026-12-07-000001_events_derived/up.sql"),
        ),
        crate::helpers::Backend::Postgres => (
            include_str!("../../migrations/postgres/2026-12-07-000001_events_derived/down.sql"),
            include_str!("../../migrations/postgres/2026-12-07-000001_events_derived/up.sql"),
        ),
    };
    assert_eq!(app.db.count("SELECT count(*) AS n FROM events"), 0);
    app.db.execute(down).expect("reverts with no event stored");
    app.db.execute(up).expect("and runs again");

    vendors(&app).await;
    let body = json!({"product": "SCY-AV", "customer": us(), "seats": 1, "term_days": 30});
    let issued = issue(&app, "alpha", Some("k-1"), &body).await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let feed = all_events(&app, &app.reseller("alpha"), "").await;
    assert_eq!(feed.len(), 1, "{feed:#?}");
    let licence = &issued.body["license"];
    let data = &feed[0]["data"];
    assert_eq!(data["license"]["id"], licence["id"]);
    assert_eq!(data["license"]["expires_at"], licence["expires_at"]);
    assert_eq!(data["decision"], issued.body["decision"]);
    // What the feed shows is what derivation makes of the stored audit
    // event, and nothing else.
    let seq = feed[0]["id"].as_str().unwrap().to_string();
    let audit_seq = app.db.count(&format!(
        "SELECT audit_seq AS n FROM events WHERE id = '{seq}'"
    ));
    let exported = app
        .get(
            &format!("/v1/audit?after={}&limit=1", audit_seq - 1),
            &app.compliance(),
        )
        .await;
    assert_eq!(exported.status, 200, "{}", exported.text);
    let made = gatekeeper::audit::outbox::derive(&exported.body["events"][0], Some("alpha"));
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].data, *data);
    assert_eq!(made[0].id, seq);

    let refused = app
        .db
        .execute(down)
        .expect_err("refused with events stored");
    assert!(
        refused.to_string().contains("restore a backup"),
        "{refused}"
    );
    assert_eq!(all_events(&app, &app.reseller("alpha"), "").await, feed);
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}
