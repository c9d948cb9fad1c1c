//! Events: every change a reseller should hear of is an event, written with
//! its audit event, paged by `GET /v1/events`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

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

#[actix_web::test]
async fn dump_every_kind() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    every_kind(&app).await;
    for e in app.all_events().await {
        println!("{}", serde_json::to_string(&e).unwrap());
    }
}
