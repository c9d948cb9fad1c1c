//! A licence's standing through the API: revoking it (its reseller, or
//! compliance; final), suspending and reinstating it (compliance;
//! reinstating goes through the gate like a renewal), who may do which, the
//! audit events each change writes, and the status claim of its token.

use serde_json::{json, Value};

use crate::attacks::database_verdict;
use crate::both;
use crate::helpers::{Reply, TestApp};
use crate::licenses::{issue, post_at};

/// Two resellers, Acme's firewall (it embeds Kaspersky's engine, so it is
/// covered) and Acme's VPN (Acme is not Kaspersky: not covered, yet).
/// A designation that bans renewals of Acme's products to U.S. persons
/// (in effect already, not ending service); waits for its impact run.
async fn ban_renewals_of_acme(app: &TestApp) {
    app.admin_put(
        "/v1/designations/test-no-renewals",
        json!({
            "title": "No renewals", "authority": "Test", "citation": "T 2",
            "organizations": ["acme"], "covers_affiliates": false, "jurisdiction": "US",
            "rules": [{"id": "no-renewals", "transactions": ["renew"],
                       "effective_from": "2020-01-01T00:00:00", "time_zone": "UTC"}],
        }),
    )
    .await;
    let runs = crate::impact::runs(app).await.len();
    crate::impact::settled(app, runs).await;
}

async fn setup(app: &TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "FR", false).await;
    app.add_oem_firewall().await;
    app.admin_put(
        "/v1/products/ACME-VPN",
        json!({"name": "Acme VPN", "vendor": "acme", "category": "vpn"}),
    )
    .await;
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A licence `reseller` issues: `product` for a customer in `country`.
async fn licence(app: &TestApp, reseller: &str, product: &str, country: &str) -> Value {
    let customer = json!({"id": format!("cust-{country}"), "name": "Jane Roe",
                          "country": country, "us_person": country == "US"});
    licence_for(app, reseller, product, customer).await
}

async fn licence_for(app: &TestApp, reseller: &str, product: &str, customer: Value) -> Value {
    let body = json!({"product": product, "seats": 5, "term_days": 365, "customer": customer});
    let issued = issue(app, reseller, Some(&key()), &body).await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    issued.body["license"].clone()
}

fn id(license: &Value) -> String {
    license["id"].as_str().unwrap().to_string()
}

async fn revoke(app: &TestApp, id: &str, token: &str, reason: &str) -> Reply {
    app.post(
        &format!("/v1/licenses/{id}/revocation"),
        token,
        json!({ "reason": reason }),
    )
    .await
}

async fn suspend(app: &TestApp, id: &str, token: &str, reason: &str) -> Reply {
    app.post(
        &format!("/v1/licenses/{id}/suspension"),
        token,
        json!({ "reason": reason }),
    )
    .await
}

async fn reinstate(app: &TestApp, id: &str, token: &str) -> Reply {
    app.send(
        "DELETE",
        &format!("/v1/licenses/{id}/suspension"),
        Some(token),
        None,
    )
    .await
}

/// Renews `id` as `reseller` (with a fresh idempotency key).
async fn renew(app: &TestApp, id: &str, reseller: &str) -> Reply {
    post_at(
        app,
        &app.address,
        &format!("/v1/licenses/{id}/renewals"),
        reseller,
        Some(&key()),
        &json!({"term_days": 30}),
    )
    .await
}

/// The licence as compliance reads it.
async fn read(app: &TestApp, id: &str) -> Value {
    let r = app
        .get(&format!("/v1/licenses/{id}"), &app.compliance())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// The decoded payload of a licence token (its signature is checked in
/// `licenses::the_licence_token_verifies_against_the_published_keys`).
fn claims(license: &Value) -> Value {
    use base64::Engine;
    let token = license["token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn at(s: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Asserts `status_reason` says `reason`, by the token's subject and role.
#[track_caller]
fn assert_reason(license: &Value, reason: &str, role: &str, reseller: Option<&str>) {
    let why = &license["status_reason"];
    assert_eq!(why["reason"], reason, "{license}");
    assert_eq!(
        why["by"],
        json!({"sub": format!("test-{role}"), "role": role, "reseller": reseller}),
        "{license}"
    );
    assert!(
        (chrono::Utc::now() - at(&why["at"])).num_seconds().abs() < 60,
        "{license}"
    );
}

both!(a_revoked_licence_stays_revoked);
async fn a_revoked_licence_stays_revoked(app: TestApp) {
    setup(&app).await;
    let l = licence(&app, "alpha", "ACME-VPN", "US").await;
    let id = id(&l);
    let alpha = app.reseller("alpha");

    let revoked = revoke(&app, &id, &alpha, "customer cancelled").await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let r = &revoked.body["license"];
    assert_eq!(r["status"], "revoked");
    assert_reason(r, "customer cancelled", "reseller", Some("alpha"));
    assert_eq!(
        revoked.body.get("decision"),
        None,
        "a revocation decides nothing"
    );
    for same in [
        "id",
        "seats",
        "starts_at",
        "expires_at",
        "decision_id",
        "token",
    ] {
        assert_eq!(r[same], l[same], "{same} is kept");
    }
    assert_eq!(read(&app, &id).await, *r, "stored as answered");

    // Final: nothing moves it again, and every refusal leaves it as it is.
    revoke(&app, &id, &alpha, "again")
        .await
        .assert_problem(409, "license_state_conflict");
    revoke(&app, &id, &app.compliance(), "again")
        .await
        .assert_problem(409, "license_state_conflict");
    renew(&app, &id, "alpha")
        .await
        .assert_problem(409, "license_state_conflict");
    suspend(&app, &id, &app.compliance(), "too late")
        .await
        .assert_problem(409, "license_state_conflict");
    let back = reinstate(&app, &id, &app.compliance()).await;
    back.assert_problem(409, "license_state_conflict");
    assert!(back.body["detail"].as_str().unwrap().contains("revoked"));
    assert_eq!(read(&app, &id).await, *r, "the refusals changed nothing");
    let listed = app.get("/v1/licenses", &alpha).await;
    assert_eq!(listed.body["licenses"][0]["status"], "revoked");
}

both!(compliance_suspends_and_reinstates_through_the_gate);
async fn compliance_suspends_and_reinstates_through_the_gate(app: TestApp) {
    setup(&app).await;
    let compliance = app.compliance();
    // The firewall to a German customer: the gate allows it, then and now.
    let fw = licence(&app, "alpha", "ACME-FW-K", "DE").await;
    let fw_id = id(&fw);

    let suspended = suspend(&app, &fw_id, &compliance, "under investigation").await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    let s = &suspended.body["license"];
    assert_eq!(s["status"], "suspended");
    assert_reason(s, "under investigation", "compliance", None);
    assert_eq!(s["token"], fw["token"]);
    assert_eq!(read(&app, &fw_id).await, *s);
    // Neither renewed nor suspended twice while it is suspended.
    renew(&app, &fw_id, "alpha")
        .await
        .assert_problem(409, "license_state_conflict");
    suspend(&app, &fw_id, &compliance, "twice")
        .await
        .assert_problem(409, "license_state_conflict");
    assert_eq!(read(&app, &fw_id).await, *s);

    let back = reinstate(&app, &fw_id, &compliance).await;
    assert_eq!(back.status, 200, "{}", back.text);
    let (b, decision) = (&back.body["license"], &back.body["decision"]);
    assert_eq!(b["status"], "active");
    assert_eq!(b.get("status_reason"), None, "the reason went with it");
    assert_eq!(decision["outcome"], "allow");
    assert_eq!(decision["transaction"], "renew");
    assert_eq!(b["decision_id"], decision["id"]);
    assert_ne!(b["decision_id"], fw["decision_id"], "decided again");
    // Signed again (`iat` is when), with the same term, in the same place
    // of the status list.
    let (mut now, mut then) = (claims(b), claims(&fw));
    assert!(now["iat"].as_i64() >= then["iat"].as_i64());
    now["iat"] = json!(null);
    then["iat"] = json!(null);
    assert_eq!(now, then);
    assert_eq!(b["expires_at"], fw["expires_at"]);
    assert_eq!(read(&app, &fw_id).await, *b);
    reinstate(&app, &fw_id, &compliance)
        .await
        .assert_problem(409, "license_state_conflict");
    // Active again: its reseller renews it.
    assert_eq!(renew(&app, &fw_id, "alpha").await.status, 200);

    // The VPN to a U.S. customer, and to a Brazilian one whose U.S. ties
    // nobody asked about: allowed while Acme is not Kaspersky's...
    let vpn = licence(&app, "alpha", "ACME-VPN", "US").await;
    let vpn_id = id(&vpn);
    let suspended = suspend(&app, &vpn_id, &compliance, "ownership unclear").await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    let unasked = json!({"id": "cust-br", "name": "Exemplo Ltda", "country": "BR"});
    let br_id = id(&licence_for(&app, "alpha", "ACME-VPN", unasked).await);
    let suspended = suspend(&app, &br_id, &compliance, "ownership unclear").await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    // ...until a ban on renewals names Acme (one that does not end service:
    // its impact run blocks their renewal and leaves them suspended).
    ban_renewals_of_acme(&app).await;
    let s = read(&app, &vpn_id).await;
    assert_eq!(s["status"], "suspended");
    assert_eq!(s["renewal_blocked"]["rule"], "no-renewals", "{s}");
    let br = read(&app, &br_id).await;
    assert!(br["impact_review"].is_object(), "{br}");
    let refused = reinstate(&app, &vpn_id, &compliance).await;
    refused.assert_problem(403, "prohibited_transaction");
    let decision = &refused.body["decision"];
    assert_eq!(decision["outcome"], "deny");
    assert_eq!(decision["transaction"], "renew");
    assert_eq!(decision["reasons"][0]["rule"], "no-renewals");
    assert_eq!(
        decision["reasons"][0]["path"],
        json!([{"kind": "product", "id": "ACME-VPN"},
               {"kind": "organization", "id": "acme", "via": "vendor"}]),
        "through the designated vendor"
    );
    assert_eq!(refused.body.get("license"), None);
    assert_eq!(read(&app, &vpn_id).await, s, "it stays suspended");
    // Whether the Brazilian customer is a U.S. person is not known: the
    // reinstatement waits (202), the licence stays suspended, and the
    // decision is not one a review approves (attested facts go to the
    // licence's impact review instead).
    let waiting = reinstate(&app, &br_id, &compliance).await;
    assert_eq!(waiting.status, 202, "{}", waiting.text);
    assert_eq!(waiting.body["decision"]["outcome"], "review");
    assert_eq!(waiting.body.get("license"), None);
    assert_eq!(read(&app, &br_id).await, br, "it stays suspended");
    // The only review is the one its impact run opened.
    let queue = app.get("/v1/reviews", &compliance).await;
    assert_eq!(queue.status, 200, "{}", queue.text);
    let reviews = queue.body["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "{}", queue.text);
    assert_eq!(reviews[0]["kind"], "impact");
    assert_eq!(reviews[0]["request"]["license_id"], json!(br_id));
    // Revoking a suspended licence is allowed, by its reseller too.
    let revoked = revoke(&app, &vpn_id, &app.reseller("alpha"), "dropped").await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.body["license"]["status"], "revoked");
    assert_reason(
        &revoked.body["license"],
        "dropped",
        "reseller",
        Some("alpha"),
    );
    // The trail vouches for all of it, the reinstatement that stayed a
    // review (and opened none) included.
    let verify = app.get("/v1/audit/verify", &compliance).await;
    assert_eq!(verify.body["ok"], true, "{}", verify.text);
}

both!(only_the_roles_named_change_a_standing);
async fn only_the_roles_named_change_a_standing(app: TestApp) {
    setup(&app).await;
    let l = licence(&app, "alpha", "ACME-VPN", "DE").await;
    let id = id(&l);
    let (admin, alpha) = (app.admin(), app.reseller("alpha"));
    let before = app.all_events().await.len();

    revoke(&app, &id, &admin, "no")
        .await
        .assert_problem(403, "forbidden");
    suspend(&app, &id, &admin, "no")
        .await
        .assert_problem(403, "forbidden");
    reinstate(&app, &id, &admin)
        .await
        .assert_problem(403, "forbidden");
    suspend(&app, &id, &alpha, "no")
        .await
        .assert_problem(403, "forbidden");
    reinstate(&app, &id, &alpha)
        .await
        .assert_problem(403, "forbidden");
    for (method, path) in [
        ("POST", format!("/v1/licenses/{id}/revocation")),
        ("POST", format!("/v1/licenses/{id}/suspension")),
        ("DELETE", format!("/v1/licenses/{id}/suspension")),
    ] {
        app.send(
            method,
            &path,
            None,
            Some(json!({"reason": "x"}).to_string().into_bytes()),
        )
        .await
        .assert_problem(401, "unauthorized");
    }
    // An unregistered tenant is refused before its body is read (a bad
    // body would otherwise be a 422).
    let r = app
        .post(
            &format!("/v1/licenses/{id}/revocation"),
            &app.reseller("gamma"),
            json!({}),
        )
        .await;
    r.assert_problem(403, "unknown_reseller");
    assert_eq!(read(&app, &id).await, l, "nothing changed");
    assert_eq!(app.all_events().await.len(), before, "nothing recorded");

    // Compliance revokes any reseller's licence.
    let revoked = revoke(&app, &id, &app.compliance(), "sanctions screening").await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.body["license"]["status"], "revoked");
    assert_reason(
        &revoked.body["license"],
        "sanctions screening",
        "compliance",
        None,
    );
}

both!(another_resellers_licence_is_not_found);
async fn another_resellers_licence_is_not_found(app: TestApp) {
    setup(&app).await;
    let l = licence(&app, "alpha", "ACME-VPN", "DE").await;
    let id = id(&l);
    let beta = app.reseller("beta");
    let before = app.all_events().await.len();

    let other = revoke(&app, &id, &beta, "not mine").await;
    other.assert_problem(404, "not_found");
    let missing = revoke(&app, &uuid::Uuid::new_v4().to_string(), &beta, "not mine").await;
    missing.assert_problem(404, "not_found");
    assert_eq!(other.text, missing.text, "nothing tells the two apart");
    // Compliance's requests for a licence that does not exist: 404 too.
    let nobody = uuid::Uuid::new_v4().to_string();
    suspend(&app, &nobody, &app.compliance(), "x")
        .await
        .assert_problem(404, "not_found");
    reinstate(&app, &nobody, &app.compliance())
        .await
        .assert_problem(404, "not_found");
    assert_eq!(read(&app, &id).await, l, "nothing changed");
    assert_eq!(app.all_events().await.len(), before, "nothing recorded");
}

both!(a_change_without_a_reason_is_refused);
async fn a_change_without_a_reason_is_refused(app: TestApp) {
    setup(&app).await;
    let l = licence(&app, "alpha", "ACME-VPN", "DE").await;
    let id = id(&l);
    let before = app.all_events().await.len();
    let too_long = "x".repeat(2001);
    let bodies = [
        (json!({"reason": ""}), "reason"),
        (json!({"reason": "  \n\t"}), "reason"),
        (json!({}), "reason"),
        (json!({"reason": null}), "reason"),
        (json!({"reason": 7}), "reason"),
        (json!({ "reason": too_long }), "reason"),
        (json!({"reason": "fine", "effective": "now"}), "effective"),
    ];
    for (path, token) in [
        (
            format!("/v1/licenses/{id}/revocation"),
            app.reseller("alpha"),
        ),
        (format!("/v1/licenses/{id}/suspension"), app.compliance()),
    ] {
        for (body, field) in &bodies {
            let r = app.post(&path, &token, body.clone()).await;
            r.assert_problem(422, "validation_failed");
            assert_eq!(r.fields(), vec![*field], "{path} {body}: {}", r.text);
        }
        app.send("POST", &path, Some(&token), Some(b"{".to_vec()))
            .await
            .assert_problem(400, "malformed_json");
    }
    // The longest reason kept is accepted.
    let longest = "x".repeat(2000);
    let suspended = suspend(&app, &id, &app.compliance(), &longest).await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    assert_eq!(
        suspended.body["license"]["status_reason"]["reason"],
        longest
    );
    let events = app.all_events().await;
    assert_eq!(
        events.len(),
        before + 1,
        "only the accepted suspension was recorded"
    );
}

/// The events after the first `from`, and the licence each names.
fn since(events: &[Value], from: usize) -> Vec<(String, String)> {
    events[from..]
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["subject"]["license"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

both!(each_change_is_one_audit_event_and_an_edit_is_caught);
async fn each_change_is_one_audit_event_and_an_edit_is_caught(app: TestApp) {
    setup(&app).await;
    let compliance = app.compliance();
    let a = id(&licence(&app, "alpha", "ACME-FW-K", "DE").await);
    let b = id(&licence(&app, "alpha", "ACME-VPN", "US").await);
    let start = app.all_events().await.len();

    let r = revoke(&app, &a, &app.reseller("alpha"), "cancelled").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let events = app.all_events().await;
    assert_eq!(
        since(&events, start),
        vec![("license.revoke".into(), a.clone())]
    );
    let e = events.last().unwrap();
    assert_eq!(
        e["actor"],
        json!({"sub": "test-reseller", "role": "reseller", "reseller": "alpha"})
    );
    let recorded = &e["subject"]["license"];
    assert_eq!(recorded["status"], "revoked");
    assert_eq!(
        recorded["status_reason"],
        r.body["license"]["status_reason"]
    );
    assert_eq!(recorded["expires_at"], r.body["license"]["expires_at"]);
    assert_eq!(recorded["reseller"], "alpha");

    let n = events.len();
    let s = suspend(&app, &b, &compliance, "checking ownership").await;
    assert_eq!(s.status, 200, "{}", s.text);
    let events = app.all_events().await;
    assert_eq!(
        since(&events, n),
        vec![("license.suspend".into(), b.clone())]
    );
    let e = events.last().unwrap();
    assert_eq!(
        e["actor"],
        json!({"sub": "test-compliance", "role": "compliance", "reseller": null})
    );
    assert_eq!(e["subject"]["license"]["status"], "suspended");

    let n = events.len();
    let back = reinstate(&app, &b, &compliance).await;
    assert_eq!(back.status, 200, "{}", back.text);
    let events = app.all_events().await;
    assert_eq!(
        since(&events, n),
        vec![("decision.reinstate".into(), b.clone())]
    );
    let e = events.last().unwrap();
    assert_eq!(e["outcome"], "allow");
    assert_eq!(e["decision"], back.body["decision"]);
    assert_eq!(e["actor"]["role"], "compliance");
    assert_eq!(e["subject"]["license"]["status"], "active");
    assert_eq!(
        back.body["decision"]["audit_seq"], e["seq"],
        "the decision names its event"
    );

    // A refused reinstatement is recorded as the decision it is, and the
    // licence stays as its suspension left it: Acme turns out to be
    // covered by a ban on renewals, and B's customer is in the U.S.
    ban_renewals_of_acme(&app).await;
    let n = app.all_events().await.len();
    let again = suspend(&app, &b, &compliance, "now covered").await;
    assert_eq!(again.status, 200, "{}", again.text);
    let refused = reinstate(&app, &b, &compliance).await;
    refused.assert_problem(403, "prohibited_transaction");
    let events = app.all_events().await;
    assert_eq!(
        since(&events, n),
        vec![
            ("license.suspend".into(), b.clone()),
            ("decision.reinstate".into(), b.clone()),
        ]
    );
    let e = events.last().unwrap();
    assert_eq!(e["outcome"], "deny");
    assert_eq!(e["decision"], refused.body["decision"]);
    assert_eq!(read(&app, &b).await, again.body["license"]);

    // The trail vouches for every licence as it stands...
    let verdict = database_verdict(&app).await;
    assert_eq!(verdict["ok"], true, "{verdict}");

    // ...so a revoked licence turned active again behind its back is caught.
    app.db
        .execute(&format!(
            "UPDATE licenses SET status = 'active' WHERE id = '{a}'"
        ))
        .unwrap();
    assert_eq!(
        read(&app, &a).await["status"],
        "active",
        "the edit is served"
    );
    let verdict = database_verdict(&app).await;
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["reason"], "state_mismatch", "{verdict}");
    assert_eq!(verdict["row"], format!("licenses/{a}"), "{verdict}");
    // So is its reason, edited.
    app.db
        .execute(&format!(
            "UPDATE licenses SET status = 'revoked', \
             status_reason = replace(status_reason, 'cancelled', 'fraud') WHERE id = '{a}'"
        ))
        .unwrap();
    let verdict = database_verdict(&app).await;
    assert_eq!(
        (&verdict["reason"], &verdict["row"]),
        (&json!("state_mismatch"), &json!(format!("licenses/{a}"))),
        "{verdict}"
    );
    app.db
        .execute(&format!(
            "UPDATE licenses SET status_reason = replace(status_reason, 'fraud', 'cancelled') \
             WHERE id = '{a}'"
        ))
        .unwrap();
    let verdict = database_verdict(&app).await;
    assert_eq!(verdict["ok"], true, "restored: {verdict}");
}

both!(every_licence_token_names_its_place_in_a_status_list);
async fn every_licence_token_names_its_place_in_a_status_list(app: TestApp) {
    setup(&app).await;
    let first = claims(&licence(&app, "alpha", "ACME-VPN", "DE").await);
    let second = claims(&licence(&app, "beta", "ACME-VPN", "DE").await);
    let mut places = Vec::new();
    for c in [&first, &second] {
        let list = &c["status"]["status_list"];
        assert!(list["idx"].is_u64(), "{c}");
        assert!(list["idx"].as_u64().unwrap() < 65536, "{c}");
        assert_eq!(
            list["uri"], "http://gatekeeper.test/v1/status-lists/0",
            "{c}"
        );
        places.push(list["idx"].as_u64().unwrap());
    }
    assert_ne!(places[0], places[1], "each licence has its own place");
}

both!(concurrent_revocations_revoke_once);
async fn concurrent_revocations_revoke_once(app: TestApp) {
    setup(&app).await;
    let id = id(&licence(&app, "alpha", "ACME-VPN", "DE").await);
    let (alpha, compliance) = (app.reseller("alpha"), app.compliance());
    let before = app.all_events().await.len();
    let replies = futures_util::future::join_all((0..8).map(|n| {
        let token = if n % 2 == 0 { &alpha } else { &compliance };
        revoke(&app, &id, token, "at once")
    }))
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_problem(409, "license_state_conflict");
    }
    let events = app.all_events().await;
    assert_eq!(since(&events, before), vec![("license.revoke".into(), id)]);
    assert_eq!(database_verdict(&app).await["ok"], true);
}
