//! Licences through the gate: outcomes, renewals, idempotency, atomicity,
//! and the signed licence token.

use serde_json::{json, Value};

use crate::both;
use crate::helpers::{jwt_claims, Backend, Reply, TestApp};

pub(crate) async fn issue(app: &TestApp, reseller: &str, key: Option<&str>, body: &Value) -> Reply {
    post(app, "/v1/licenses", reseller, key, body).await
}

async fn post(app: &TestApp, path: &str, reseller: &str, key: Option<&str>, body: &Value) -> Reply {
    post_at(app, &app.address, path, reseller, key, body).await
}

/// POSTs as `reseller` to the server at `base` (the app or one of its replicas).
pub(crate) async fn post_at(
    app: &TestApp,
    base: &str,
    path: &str,
    reseller: &str,
    key: Option<&str>,
    body: &Value,
) -> Reply {
    let mut req = app
        .client
        .post(format!("{base}{path}"))
        .insert_header((
            "authorization",
            format!("Bearer {}", app.reseller(reseller)),
        ))
        .insert_header(("content-type", "application/json"));
    if let Some(key) = key {
        req = req.insert_header(("idempotency-key", key));
    }
    Reply::read(
        req.send_body(body.to_string())
            .await
            .expect("the server answers"),
    )
    .await
}

fn order(
    product: &str,
    country: &str,
    us_person: Option<bool>,
    seats: i64,
    term_days: i64,
) -> Value {
    let mut customer = json!({"id": "cust-7", "name": "Jane Roe", "country": country});
    if let Some(p) = us_person {
        customer["us_person"] = json!(p);
    }
    json!({"product": product, "customer": customer, "seats": seats, "term_days": term_days})
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn replayed(r: &Reply) -> bool {
    r.headers
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        == Some("true")
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

async fn licence_count(app: &TestApp) -> usize {
    app.get("/v1/licenses?limit=1000", &app.compliance())
        .await
        .body["licenses"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

both!(each_outcome_through_the_licence_api);
async fn each_outcome_through_the_licence_api(app: TestApp) {
    setup(&app).await;
    let allowed = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-VPN", "US", None, 25, 365),
    )
    .await;
    assert_eq!(allowed.status, 201, "{}", allowed.text);
    let l = &allowed.body["license"];
    assert_eq!(allowed.body["decision"]["outcome"], "allow");
    assert_eq!(l["product"], "ACME-VPN");
    assert_eq!(l["reseller"], "alpha");
    assert_eq!(l["seats"], 25);
    assert_eq!(l["status"], "active");
    assert_eq!(l["customer"]["id"], "cust-7");
    assert_eq!(l["decision_id"], allowed.body["decision"]["id"]);
    let starts = at(l["starts_at"].as_str().unwrap());
    let expires = at(l["expires_at"].as_str().unwrap());
    assert_eq!(expires - starts, chrono::Duration::days(365));
    assert!(
        (chrono::Utc::now() - starts).num_seconds().abs() < 60,
        "decided on the server clock"
    );
    assert!(l["token"].as_str().unwrap().split('.').count() == 3);

    let denied = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-FW-K", "US", None, 5, 365),
    )
    .await;
    denied.assert_problem(403, "prohibited_transaction");
    assert_eq!(denied.body["decision"]["outcome"], "deny");
    assert_eq!(
        denied.body["decision"]["reasons"][0]["path"][1]["id"],
        "KAV-ENGINE"
    );

    let review = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-FW-K", "BR", None, 5, 365),
    )
    .await;
    assert_eq!(review.status, 202, "{}", review.text);
    assert_eq!(review.body["decision"]["outcome"], "review");
    assert_eq!(review.body.get("license"), None);
    assert_eq!(
        licence_count(&app).await,
        1,
        "only the allowed request wrote a licence"
    );

    // Every one of them is an audited decision.issue.
    let events = app.all_events().await;
    let issued: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "decision.issue")
        .collect();
    assert_eq!(issued.len(), 3);
    assert_eq!(issued[0]["subject"]["license"]["id"], l["id"]);

    // Reading: the tenant and compliance see it; another tenant does not.
    let path = format!("/v1/licenses/{}", l["id"].as_str().unwrap());
    let read = app.get(&path, &app.reseller("alpha")).await;
    assert_eq!(read.body, *l);
    assert_eq!(app.get(&path, &app.compliance()).await.status, 200);
    app.get(&path, &app.reseller("beta"))
        .await
        .assert_problem(404, "not_found");
    app.get(&path, &app.admin())
        .await
        .assert_problem(403, "forbidden");
    let beta_list = app.get("/v1/licenses", &app.reseller("beta")).await;
    assert_eq!(beta_list.body, json!({"licenses": [], "next": null}));

    // Bad requests change nothing.
    issue(&app, "alpha", None, &order("ACME-VPN", "US", None, 1, 30))
        .await
        .assert_problem(400, "idempotency_key_required");
    let bad = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-VPN", "US", None, 0, 0),
    )
    .await;
    bad.assert_problem(422, "validation_failed");
    assert_eq!(bad.fields(), vec!["seats", "term_days"]);
    let mut extra = order("ACME-VPN", "US", None, 1, 30);
    extra["expires_at"] = json!("2099-01-01T00:00:00Z");
    issue(&app, "alpha", Some(&key()), &extra)
        .await
        .assert_problem(422, "validation_failed");
    issue(
        &app,
        "alpha",
        Some(&key()),
        &order("NOPE", "US", None, 1, 30),
    )
    .await
    .assert_problem(422, "validation_failed");
    assert_eq!(app.all_events().await.len(), events.len());
}

both!(licences_are_listed_a_page_at_a_time);
async fn licences_are_listed_a_page_at_a_time(app: TestApp) {
    setup(&app).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = issue(
            &app,
            "alpha",
            Some(&key()),
            &order("ACME-VPN", "DE", Some(false), i + 1, 30),
        )
        .await;
        ids.push(r.body["license"]["id"].as_str().unwrap().to_string());
    }
    issue(
        &app,
        "beta",
        Some(&key()),
        &order("ACME-VPN", "DE", Some(false), 1, 30),
    )
    .await;
    let token = app.reseller("alpha");
    let first = app.get("/v1/licenses?limit=2", &token).await;
    let page: Vec<&str> = first.body["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        page,
        ids[..2].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let next = first.body["next"].as_str().unwrap();
    let second = app
        .get(&format!("/v1/licenses?limit=2&cursor={next}"), &token)
        .await;
    assert_eq!(second.body["licenses"][0]["id"], ids[2].as_str());
    let rest = app
        .get(&format!("/v1/licenses?limit=10&cursor={}", ids[3]), &token)
        .await;
    assert_eq!(rest.body["licenses"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["next"], json!(null));
    assert_eq!(
        licence_count(&app).await,
        6,
        "compliance sees every tenant's"
    );
    app.get("/v1/licenses?limit=0", &token)
        .await
        .assert_problem(422, "validation_failed");
    app.get("/v1/licenses?colour=red", &token)
        .await
        .assert_problem(422, "validation_failed");
}

both!(renewals_extend_from_the_later_of_now_and_expiry_and_are_rescreened);
async fn renewals_extend_from_the_later_of_now_and_expiry_and_are_rescreened(app: TestApp) {
    setup(&app).await;
    let first = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-FW-K", "DE", Some(false), 10, 100),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let id = first.body["license"]["id"].as_str().unwrap().to_string();
    let expiry = at(first.body["license"]["expires_at"].as_str().unwrap());
    let renewals = format!("/v1/licenses/{id}/renewals");

    let renewed = post(
        &app,
        &renewals,
        "alpha",
        Some(&key()),
        &json!({"term_days": 30}),
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let l = &renewed.body["license"];
    assert_eq!(renewed.body["decision"]["transaction"], "renew");
    assert_eq!(
        at(l["expires_at"].as_str().unwrap()),
        expiry + chrono::Duration::days(30)
    );
    assert_eq!(l["starts_at"], first.body["license"]["starts_at"]);
    assert_eq!(l["seats"], 10);
    assert_eq!(l["id"], id.as_str());
    assert_ne!(
        l["token"], first.body["license"]["token"],
        "the token is re-signed with the new expiry"
    );

    // The customer moved to the U.S.: the renewal is refused and nothing changes.
    let moved =
        json!({"term_days": 30, "customer": {"id": "cust-7", "name": "Jane Roe", "country": "US"}});
    let refused = post(&app, &renewals, "alpha", Some(&key()), &moved).await;
    refused.assert_problem(403, "prohibited_transaction");
    assert_eq!(refused.body["decision"]["transaction"], "renew");
    assert_eq!(
        refused.body["decision"]["reasons"][0]["rule"],
        "full-cutoff"
    );
    let now = app
        .get(&format!("/v1/licenses/{id}"), &app.reseller("alpha"))
        .await;
    assert_eq!(
        now.body, *l,
        "a refused renewal leaves the licence as it was"
    );

    // Another tenant cannot renew it, nor learn that it exists.
    let other = post(
        &app,
        &renewals,
        "beta",
        Some(&key()),
        &json!({"term_days": 30}),
    )
    .await;
    other.assert_problem(404, "not_found");
    let missing = post(
        &app,
        "/v1/licenses/nope/renewals",
        "beta",
        Some(&key()),
        &json!({"term_days": 30}),
    )
    .await;
    assert_eq!(other.text, missing.text);
}

both!(a_later_service_end_caps_the_term);
async fn a_later_service_end_caps_the_term(app: TestApp) {
    add_shady(&app).await;
    app.admin_put(
        "/v1/designations/future-ban",
        json!({"title": "Future ban", "authority": "BIS", "citation": "99 FR 1", "organizations": ["shady"],
               "covers_affiliates": true, "jurisdiction": "US",
               "rules": [{"id": "cutoff", "transactions": ["issue", "renew"], "ends_service": true,
                          "effective_from": "2031-01-01T00:00:00", "time_zone": "America/New_York"}]}),
    )
    .await;
    let r = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("SHADY-AV", "US", None, 1, 3650),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["decision"]["constraints"]["not_after"],
        "2031-01-01T05:00:00Z"
    );
    assert_eq!(r.body["license"]["expires_at"], "2031-01-01T05:00:00Z");
    // A German customer without a U.S. nexus gets the whole term.
    let r = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("SHADY-AV", "DE", Some(false), 1, 3650),
    )
    .await;
    assert_ne!(r.body["license"]["expires_at"], "2031-01-01T05:00:00Z");
    assert_eq!(r.body["decision"]["constraints"]["not_after"], json!(null));
}

both!(a_record_that_kept_the_whole_response_replays_it);
/// Idempotency records written before outcomes were typed kept the whole
/// response (for a refusal, the problem with its decision); they replay
/// byte for byte, as records written now do.
async fn a_record_that_kept_the_whole_response_replays_it(app: TestApp) {
    setup(&app).await;
    for (body, status) in [
        (order("ACME-VPN", "DE", Some(false), 3, 30), 201),
        (order("ACME-FW-K", "US", None, 1, 30), 403),
    ] {
        let k = key();
        let first = issue(&app, "alpha", Some(&k), &body).await;
        assert_eq!(first.status, status, "{}", first.text);
        let kept = first.text.replace('\'', "''");
        app.db
            .execute(&format!(
                "UPDATE idempotency_keys SET body = '{kept}', audit_seq = NULL WHERE idem_key = '{k}'"
            ))
            .unwrap();
        let again = issue(&app, "alpha", Some(&k), &body).await;
        assert!(replayed(&again));
        assert_eq!((again.status, again.text), (first.status, first.text));
    }
}

both!(the_same_key_replays_the_first_response);
async fn the_same_key_replays_the_first_response(app: TestApp) {
    setup(&app).await;
    let k = key();
    let body = order("ACME-VPN", "DE", Some(false), 3, 30);
    let first = issue(&app, "alpha", Some(&k), &body).await;
    assert_eq!(first.status, 201);
    assert!(!replayed(&first));
    let events = app.all_events().await.len();

    // The same body, even written differently, is the same request.
    let again = issue(
        &app,
        "alpha",
        Some(&k),
        &serde_json::from_str(&body.to_string()).unwrap(),
    )
    .await;
    assert_eq!(again.status, 201);
    assert!(replayed(&again));
    assert_eq!(again.text, first.text, "the identical body");
    assert_eq!(licence_count(&app).await, 1);
    assert_eq!(
        app.all_events().await.len(),
        events,
        "a replay changes nothing"
    );

    let other = issue(
        &app,
        "alpha",
        Some(&k),
        &order("ACME-VPN", "DE", Some(false), 4, 30),
    )
    .await;
    other.assert_problem(422, "idempotency_key_reused");
    // Renewal with a key used for an issue is another request too.
    let id = first.body["license"]["id"].as_str().unwrap();
    let renew = post(
        &app,
        &format!("/v1/licenses/{id}/renewals"),
        "alpha",
        Some(&k),
        &json!({"term_days": 1}),
    )
    .await;
    renew.assert_problem(422, "idempotency_key_reused");

    // Keys are per tenant: beta's use of the same key is its own request.
    let beta = issue(&app, "beta", Some(&k), &body).await;
    assert_eq!(beta.status, 201);
    assert!(!replayed(&beta));
    assert_ne!(beta.body["license"]["id"], first.body["license"]["id"]);

    // A refusal is stored like a success.
    let k2 = key();
    let refusal = issue(
        &app,
        "alpha",
        Some(&k2),
        &order("ACME-FW-K", "US", None, 1, 30),
    )
    .await;
    refusal.assert_problem(403, "prohibited_transaction");
    let events = app.all_events().await.len();
    let again = issue(
        &app,
        "alpha",
        Some(&k2),
        &order("ACME-FW-K", "US", None, 1, 30),
    )
    .await;
    assert_eq!(
        (again.status, again.text.clone()),
        (refusal.status, refusal.text.clone())
    );
    assert!(replayed(&again));
    assert_eq!(again.content_type, "application/problem+json");
    assert_eq!(app.all_events().await.len(), events);

    // Renewals replay too, and are not applied twice.
    let k3 = key();
    let path = format!("/v1/licenses/{id}/renewals");
    let r1 = post(&app, &path, "alpha", Some(&k3), &json!({"term_days": 10})).await;
    let r2 = post(&app, &path, "alpha", Some(&k3), &json!({"term_days": 10})).await;
    assert_eq!(r1.status, 200);
    assert_eq!(r2.text, r1.text);
    let now = app
        .get(&format!("/v1/licenses/{id}"), &app.reseller("alpha"))
        .await;
    assert_eq!(now.body["expires_at"], r1.body["license"]["expires_at"]);
}

#[derive(diesel::QueryableByName)]
struct Kept {
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    audit_seq: Option<i64>,
}

/// What the idempotency record of `key` keeps, read behind the service.
fn kept(app: &TestApp, key: &str) -> Kept {
    let mut rows: Vec<Kept> = app.db.load(&format!(
        "SELECT body, audit_seq FROM idempotency_keys WHERE idem_key = '{key}'"
    ));
    assert_eq!(rows.len(), 1, "one record of {key}");
    rows.remove(0)
}

both!(a_record_refers_to_its_event_and_replays_after_the_licence_changed);
/// An idempotency record keeps the seq of the audit event that carries the
/// outcome and, for a licence, its token (the event keeps only its digest),
/// not the response: a retry after the licence was renewed still gets the
/// first response byte for byte, and a record pointed at another tenant's
/// event is refused rather than replayed.
async fn a_record_refers_to_its_event_and_replays_after_the_licence_changed(app: TestApp) {
    setup(&app).await;
    let k = key();
    let body = order("ACME-VPN", "DE", Some(false), 3, 30);
    let first = issue(&app, "alpha", Some(&k), &body).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let record = kept(&app, &k);
    assert_eq!(
        record.body,
        first.body["license"]["token"].as_str().unwrap()
    );
    assert_eq!(
        record.audit_seq,
        first.body["decision"]["audit_seq"].as_i64()
    );

    // The licence changes twice (renewals with keys of their own).
    let id = first.body["license"]["id"].as_str().unwrap();
    let path = format!("/v1/licenses/{id}/renewals");
    let k_renew = key();
    let renewed = post(
        &app,
        &path,
        "alpha",
        Some(&k_renew),
        &json!({"term_days": 10}),
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let later = post(&app, &path, "alpha", Some(&key()), &json!({"term_days": 5})).await;
    assert_eq!(later.status, 200, "{}", later.text);
    assert_ne!(
        later.body["license"]["token"],
        first.body["license"]["token"]
    );
    assert_ne!(
        later.body["license"]["expires_at"],
        renewed.body["license"]["expires_at"]
    );

    // Each retry is answered as it first was.
    let again = issue(&app, "alpha", Some(&k), &body).await;
    assert!(replayed(&again));
    assert_eq!((again.status, &again.text), (first.status, &first.text));
    let again = post(
        &app,
        &path,
        "alpha",
        Some(&k_renew),
        &json!({"term_days": 10}),
    )
    .await;
    assert!(replayed(&again));
    assert_eq!((again.status, &again.text), (renewed.status, &renewed.text));

    // A refusal keeps its event alone.
    let k_refused = key();
    let refused_order = order("ACME-FW-K", "US", None, 1, 30);
    let refused = issue(&app, "alpha", Some(&k_refused), &refused_order).await;
    refused.assert_problem(403, "prohibited_transaction");
    let record = kept(&app, &k_refused);
    assert_eq!(record.body, "");
    assert_eq!(
        record.audit_seq,
        refused.body["decision"]["audit_seq"].as_i64()
    );
    let again = issue(&app, "alpha", Some(&k_refused), &refused_order).await;
    assert!(replayed(&again));
    assert_eq!((again.status, &again.text), (refused.status, &refused.text));

    // Pointed at beta's issuance, alpha's record is not beta's answer.
    let theirs = issue(&app, "beta", Some(&key()), &body).await;
    assert_eq!(theirs.status, 201, "{}", theirs.text);
    let seq = theirs.body["decision"]["audit_seq"].as_i64().unwrap();
    app.db
        .execute(&format!(
            "UPDATE idempotency_keys SET audit_seq = {seq} WHERE idem_key = '{k}'"
        ))
        .unwrap();
    let forged = issue(&app, "alpha", Some(&k), &body).await;
    assert_eq!(forged.status, 500, "{}", forged.text);
    assert!(!forged
        .text
        .contains(theirs.body["license"]["id"].as_str().unwrap()));
}

both!(fifty_concurrent_requests_with_one_key_make_one_licence);
async fn fifty_concurrent_requests_with_one_key_make_one_licence(app: TestApp) {
    setup(&app).await;
    let k = key();
    let body = order("ACME-VPN", "DE", Some(false), 7, 30);
    let replies =
        futures_util::future::join_all((0..50).map(|_| issue(&app, "alpha", Some(&k), &body)))
            .await;
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    let in_flight = replies.iter().filter(|r| r.status == 409).count();
    assert_eq!(
        created.len() + in_flight,
        50,
        "only 201 or 409: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        created.iter().filter(|r| !replayed(r)).count(),
        1,
        "exactly one first response"
    );
    assert!(
        created.iter().all(|r| r.text == created[0].text),
        "every replay is the first response"
    );
    for r in replies.iter().filter(|r| r.status == 409) {
        r.assert_problem(409, "idempotency_key_in_flight");
    }
    assert_eq!(licence_count(&app).await, 1);
    let issues = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["action"] == "decision.issue")
        .count();
    assert_eq!(issues, 1, "one decision, one audit event");
}

/// Thirty licence requests at once, a fifth of them for 13 seats: their
/// bodies, keys and replies.
async fn thirty_at_once(app: &TestApp) -> (Vec<Value>, Vec<String>, Vec<Reply>) {
    let bodies: Vec<Value> = (0..30)
        .map(|i| order("ACME-VPN", "DE", Some(false), 10 + i % 5, 30))
        .collect();
    let keys: Vec<String> = (0..30).map(|_| key()).collect();
    let replies = futures_util::future::join_all(
        bodies
            .iter()
            .zip(&keys)
            .map(|(b, k)| issue(app, "alpha", Some(k), b)),
    )
    .await;
    (bodies, keys, replies)
}

/// Every licence has its decision.issue/renew event and every allowing
/// event has its licence; the chain verifies.
async fn assert_licences_and_events_agree(app: &TestApp) {
    let events = app.all_events().await;
    let licences = app
        .get("/v1/licenses?limit=1000", &app.compliance())
        .await
        .body["licenses"]
        .clone();
    let licences = licences.as_array().unwrap();
    let allowed_issues: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "decision.issue" && e["outcome"] == "allow")
        .collect();
    assert_eq!(
        allowed_issues.len(),
        licences.len(),
        "one allowing event per licence"
    );
    for l in licences {
        assert!(
            allowed_issues
                .iter()
                .any(|e| e["subject"]["license"]["id"] == l["id"]
                    && e["decision"]["id"] == l["decision_id"]),
            "licence {} has its audit event",
            l["id"]
        );
    }
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

both!(a_failing_write_fails_alone_and_leaves_nothing_half_written);
async fn a_failing_write_fails_alone_and_leaves_nothing_half_written(app: TestApp) {
    setup(&app).await;
    // Inserting a licence with 13 seats fails in the database.
    let sabotage = match app.backend {
        Backend::Sqlite => {
            "CREATE TRIGGER sabotage BEFORE INSERT ON licenses WHEN NEW.seats = 13 \
             BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.seats = 13 THEN RAISE EXCEPTION 'disk on fire'; END IF; RETURN NEW; END; $$; \
             CREATE TRIGGER sabotage BEFORE INSERT ON licenses FOR EACH ROW EXECUTE FUNCTION sabotage();"
        }
    };
    app.db.execute(sabotage).unwrap();
    let (bodies, keys, replies) = thirty_at_once(&app).await;
    for (reply, body) in replies.iter().zip(&bodies) {
        if body["seats"] == 13 {
            reply.assert_problem(503, "service_unavailable");
            assert!(!reply.text.contains("disk on fire"));
        } else {
            assert_eq!(
                reply.status, 201,
                "a batch-mate of a failing write still succeeds: {}",
                reply.text
            );
        }
    }
    assert_eq!(licence_count(&app).await, 24);
    assert_licences_and_events_agree(&app).await;

    // The failed requests were not remembered: retried once the fault is
    // gone, they succeed.
    let drop = match app.backend {
        Backend::Sqlite => "DROP TRIGGER sabotage",
        Backend::Postgres => "DROP TRIGGER sabotage ON licenses",
    };
    app.db.execute(drop).unwrap();
    let retry = issue(&app, "alpha", Some(&keys[3]), &bodies[3]).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert!(!replayed(&retry));
    assert_licences_and_events_agree(&app).await;
}

both!(a_failing_commit_fails_its_whole_batch_honestly);
async fn a_failing_commit_fails_its_whole_batch_honestly(app: TestApp) {
    if app.backend == Backend::Sqlite {
        // SQLite has no deferred triggers; the savepoint case above covers it.
        return;
    }
    setup(&app).await;
    // A check deferred to COMMIT: any batch holding a 13-seat licence fails whole.
    app.db
        .execute(
            "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.seats = 13 THEN RAISE EXCEPTION 'disk on fire'; END IF; RETURN NEW; END; $$; \
             CREATE CONSTRAINT TRIGGER sabotage AFTER INSERT ON licenses DEFERRABLE INITIALLY DEFERRED \
             FOR EACH ROW EXECUTE FUNCTION sabotage();",
        )
        .unwrap();
    let (bodies, _, replies) = thirty_at_once(&app).await;
    let ok = replies.iter().filter(|r| r.status == 201).count();
    let failed = replies.iter().filter(|r| r.status == 503).count();
    assert_eq!(ok + failed, 30);
    for (reply, body) in replies.iter().zip(&bodies) {
        if body["seats"] == 13 {
            assert_eq!(reply.status, 503, "a 13-seat licence never commits");
        }
    }
    for reply in replies.iter().filter(|r| r.status == 503) {
        reply.assert_problem(503, "service_unavailable");
    }
    assert_eq!(
        licence_count(&app).await,
        ok,
        "every 201 is durable, no 503 left anything"
    );
    assert_licences_and_events_agree(&app).await;
}

both!(the_licence_token_verifies_against_the_published_keys);
async fn the_licence_token_verifies_against_the_published_keys(app: TestApp) {
    setup(&app).await;
    let r = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-VPN", "DE", Some(false), 12, 90),
    )
    .await;
    let l = &r.body["license"];
    let token = l["token"].as_str().unwrap();
    let jwks = app.send("GET", "/v1/keys", None, None).await;
    assert_eq!(jwks.status, 200);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.body.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("the token's kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["license-gatekeeper"]);
    validation.set_audience(&["ACME-VPN"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], l["id"]);
    assert_eq!(claims["product"], "ACME-VPN");
    assert_eq!(claims["reseller"], "alpha");
    assert_eq!(claims["customer"], "cust-7");
    assert_eq!(claims["seats"], 12);
    assert_eq!(
        claims["exp"],
        at(l["expires_at"].as_str().unwrap()).timestamp()
    );
    assert_eq!(
        claims["nbf"],
        at(l["starts_at"].as_str().unwrap()).timestamp()
    );

    // The wrong audience, or an edited token, does not verify.
    let mut wrong = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    wrong.set_audience(&["ACME-FW-K"]);
    assert!(jsonwebtoken::decode::<Value>(token, &key, &wrong).is_err());
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["seats"] = json!(1000);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.to_string()),
        parts[2]
    );
    assert!(jsonwebtoken::decode::<Value>(&forged, &key, &validation).is_err());
}

both!(a_rotated_licence_key_stays_published);
async fn a_rotated_licence_key_stays_published(app: TestApp) {
    setup(&app).await;
    let before = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-VPN", "DE", Some(false), 1, 30),
    )
    .await;
    let old_kid = jsonwebtoken::decode_header(before.body["license"]["token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    // Restart (here: a second server) with a new licence key, and the old
    // one's public key (as GET /v1/keys gave it) configured as retired.
    let dir = tempfile::tempdir().unwrap();
    let new_key = gatekeeper::auth::DevKeys::license_in_dir(dir.path());
    new_key.ensure().unwrap();
    let retired = dir.path().join("retired.jwks");
    std::fs::write(&retired, app.send("GET", "/v1/keys", None, None).await.text).unwrap();
    let mut config = app.config.clone();
    config.license_key_file = Some(new_key.private_pem_path.clone());
    config.license_retired_keys_file = Some(retired);
    let rotated = crate::helpers::start(&config);
    let after = post_at(
        &app,
        &rotated,
        "/v1/licenses",
        "alpha",
        Some(&key()),
        &order("ACME-VPN", "DE", Some(false), 2, 30),
    )
    .await;
    assert_eq!(after.status, 201, "{}", after.text);
    let new_kid = jsonwebtoken::decode_header(after.body["license"]["token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid, "licences are signed with the new key");
    let jwks = app.via(&rotated).send("GET", "/v1/keys", "", None).await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "the old and the new key: {kids:?}");
    assert_eq!(kids[0], old_kid, "oldest first");
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.body.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&old_kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["ACME-VPN"]);
    assert!(jsonwebtoken::decode::<Value>(
        before.body["license"]["token"].as_str().unwrap(),
        &key,
        &validation
    )
    .is_ok());
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&new_kid).unwrap()).unwrap();
    assert!(jsonwebtoken::decode::<Value>(
        after.body["license"]["token"].as_str().unwrap(),
        &key,
        &validation
    )
    .is_ok());
}

both!(concurrent_renewals_are_both_applied);
async fn concurrent_renewals_are_both_applied(app: TestApp) {
    setup(&app).await;
    let first = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-VPN", "DE", Some(false), 2, 10),
    )
    .await;
    let id = first.body["license"]["id"].as_str().unwrap().to_string();
    let expiry = at(first.body["license"]["expires_at"].as_str().unwrap());
    let path = format!("/v1/licenses/{id}/renewals");
    let keys: Vec<String> = (0..6).map(|_| key()).collect();
    let five = json!({"term_days": 5});
    let replies = futures_util::future::join_all(
        keys.iter()
            .map(|k| post(&app, &path, "alpha", Some(k), &five)),
    )
    .await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let now = app
        .get(&format!("/v1/licenses/{id}"), &app.reseller("alpha"))
        .await;
    assert_eq!(
        at(now.body["expires_at"].as_str().unwrap()),
        expiry + chrono::Duration::days(30),
        "six renewals of five days each, none lost"
    );
    // Each was signed for the term it got, though all read the licence
    // before any of them was written.
    for license in replies
        .iter()
        .map(|r| &r.body["license"])
        .chain([&now.body])
    {
        let claims = jwt_claims(license["token"].as_str().unwrap());
        let expires_at = at(license["expires_at"].as_str().unwrap());
        assert_eq!(claims["exp"], json!(expires_at.timestamp()), "{license}");
    }
}

both!(a_suspension_landing_among_renewals_is_never_undone);
/// Renewals read their licence before their batch is written; a suspension
/// that lands in between changes the licence but not its decision, so a
/// renewal written from what it read would set the licence active again.
/// In one process the writer reads the licence again when it last left it
/// at another version than the one read (on SQLite it reads it under the
/// lock): an acknowledged suspension is never undone, and each renewal is
/// applied before it (200) or refused after it (409). Across replicas it is
/// the batch's statement that finds the change
/// (`replicas::a_suspension_through_one_replica_is_never_undone_by_renewals_through_another`).
async fn a_suspension_landing_among_renewals_is_never_undone(app: TestApp) {
    setup(&app).await;
    let first = issue(
        &app,
        "alpha",
        Some(&key()),
        &order("ACME-VPN", "DE", Some(false), 2, 10),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let id = first.body["license"]["id"].as_str().unwrap().to_string();
    let renewals = format!("/v1/licenses/{id}/renewals");
    let suspension = format!("/v1/licenses/{id}/suspension");
    let compliance = app.compliance();
    let one = json!({"term_days": 1});
    let mut refused = 0;
    for round in 0..12 {
        let keys: Vec<String> = (0..4).map(|_| key()).collect();
        let renew = futures_util::future::join_all(
            keys.iter()
                .map(|k| post(&app, &renewals, "alpha", Some(k), &one)),
        );
        let suspend = app.post(
            &suspension,
            &compliance,
            json!({"reason": format!("round {round}")}),
        );
        let (renewed, suspended) = futures_util::future::join(renew, suspend).await;
        assert_eq!(suspended.status, 200, "{}", suspended.text);
        let statuses: Vec<u16> = renewed.iter().map(|r| r.status.as_u16()).collect();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "round {round}: {:?}",
            renewed.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        refused += statuses.iter().filter(|s| **s == 409).count();
        let now = app.get(&format!("/v1/licenses/{id}"), &compliance).await;
        assert_eq!(
            now.body["status"], "suspended",
            "round {round}: renewals {statuses:?} left {}",
            now.text
        );
        let back = app
            .send("DELETE", &suspension, Some(&compliance), None)
            .await;
        assert_eq!(back.status, 200, "{}", back.text);
    }
    // Some renewals came after a suspension (or the race was never run).
    assert!(refused > 0, "no renewal was refused in 12 rounds");
    let v = app.get("/v1/audit/verify", &compliance).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

both!(one_key_on_two_replicas_makes_one_licence);
async fn one_key_on_two_replicas_makes_one_licence(app: TestApp) {
    setup(&app).await;
    let other = app.replica();
    let k = key();
    let body = order("ACME-VPN", "DE", Some(false), 9, 30);
    let replies = futures_util::future::join_all((0..40).map(|i| {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            other.clone()
        };
        let (k, body) = (k.clone(), body.clone());
        let app = &app;
        async move { post_at(app, &base, "/v1/licenses", "alpha", Some(&k), &body).await }
    }))
    .await;
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(
        replies.iter().all(|r| r.status == 201 || r.status == 409),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        created.iter().filter(|r| !replayed(r)).count(),
        1,
        "one first response across replicas"
    );
    assert!(created.iter().all(|r| r.text == created[0].text));
    assert_eq!(licence_count(&app).await, 1);
}

/// Reseller A against every route that names B's objects: nothing of B's is
/// read or written, and the answers are those for objects that do not exist.
#[actix_web::test]
async fn tenants_never_see_or_touch_each_other() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    app.register("alpha", "DE", false).await;
    app.register("beta", "DE", false).await;
    app.add_oem_firewall().await;
    app.admin_put(
        "/v1/products/ACME-VPN",
        json!({"name": "VPN", "vendor": "acme", "category": "vpn"}),
    )
    .await;
    let k = key();
    let b_licence = issue(
        &app,
        "beta",
        Some(&k),
        &order("ACME-VPN", "DE", Some(false), 3, 30),
    )
    .await;
    let b_id = b_licence.body["license"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_decision = b_licence.body["decision"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_pre = app
        .preflight(
            "beta",
            json!({"transaction": "issue", "product": "ACME-FW-K",
                                   "customer": {"id": "c", "name": "n", "country": "US"}}),
        )
        .await;
    let b_pre_id = b_pre.body["decision"]["id"].as_str().unwrap().to_string();
    let events = app.all_events().await.len();
    let a = app.reseller("alpha");
    let missing = "01a21f00-0000-7000-8000-000000000000";

    // Reads of B's objects look exactly like reads of nothing.
    for (theirs, nothing) in [
        (
            format!("/v1/licenses/{b_id}"),
            format!("/v1/licenses/{missing}"),
        ),
        (
            format!("/v1/decisions/{b_decision}"),
            format!("/v1/decisions/{missing}"),
        ),
        (
            format!("/v1/decisions/{b_pre_id}"),
            format!("/v1/decisions/{missing}"),
        ),
    ] {
        let r = app.get(&theirs, &a).await;
        r.assert_problem(404, "not_found");
        assert_eq!(r.text, app.get(&nothing, &a).await.text, "{theirs}");
    }
    // Listings hold only A's own, whatever the filters say.
    let mine = app.get("/v1/licenses?limit=1000", &a).await;
    assert_eq!(mine.body["licenses"], json!([]));
    let mine = app.get(&format!("/v1/licenses?cursor={}", ""), &a).await;
    assert_eq!(mine.body["licenses"], json!([]));
    app.get("/v1/licenses?reseller=beta", &a)
        .await
        .assert_problem(422, "validation_failed");
    // A cannot renew B's licence, and learns nothing from trying.
    let r = post(
        &app,
        &format!("/v1/licenses/{b_id}/renewals"),
        "alpha",
        Some(&key()),
        &json!({"term_days": 1}),
    )
    .await;
    r.assert_problem(404, "not_found");
    let r2 = post(
        &app,
        &format!("/v1/licenses/{missing}/renewals"),
        "alpha",
        Some(&key()),
        &json!({"term_days": 1}),
    )
    .await;
    assert_eq!(r.text, r2.text);
    // B's idempotency key is B's: A using it gets A's own fresh licence.
    let r = issue(
        &app,
        "alpha",
        Some(&k),
        &order("ACME-VPN", "DE", Some(false), 3, 30),
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(!replayed(&r));
    assert_ne!(r.body["license"]["id"], b_licence.body["license"]["id"]);
    // Compliance-only and admin-only routes refuse A.
    for path in [
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/audit/checkpoints",
        "/v1/reviews",
        "/v1/resellers",
        "/v1/products",
    ] {
        app.get(path, &a).await.assert_problem(403, "forbidden");
    }
    // Nothing of B's changed: B's licence is as it was, and only A's issue was recorded.
    let b_now = app
        .get(&format!("/v1/licenses/{b_id}"), &app.reseller("beta"))
        .await;
    assert_eq!(b_now.body, b_licence.body["license"]);
    assert_eq!(app.all_events().await.len(), events + 1);
}

both!(an_integer_field_takes_a_number_without_a_fractional_part);
async fn an_integer_field_takes_a_number_without_a_fractional_part(app: TestApp) {
    setup(&app).await;
    let mut body = order("ACME-VPN", "DE", Some(false), 0, 0);
    body["seats"] = json!(3.0);
    body["term_days"] = json!(30.0);
    assert!(body.to_string().contains("\"seats\":3.0"), "{body}");
    let k = key();
    let r = issue(&app, "alpha", Some(&k), &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["license"]["seats"], json!(3));
    assert!(r.body["license"]["seats"].is_i64(), "{}", r.text);
    let id = r.body["license"]["id"].as_str().unwrap().to_string();
    // `3` is the same body as `3.0`: the same key replays the first response.
    let again = issue(
        &app,
        "alpha",
        Some(&k),
        &order("ACME-VPN", "DE", Some(false), 3, 30),
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert!(replayed(&again));
    assert_eq!(again.body["license"]["id"], id.as_str());

    let renewed = post(
        &app,
        &format!("/v1/licenses/{id}/renewals"),
        "alpha",
        Some(&key()),
        &json!({"term_days": 7.0}),
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);

    let before = app.all_events().await.len();
    let mut cases = Vec::new();
    let mut fraction = order("ACME-VPN", "DE", Some(false), 3, 30);
    fraction["seats"] = json!(2.5);
    cases.push(("/v1/licenses".to_string(), fraction, "seats"));
    let mut term = order("ACME-VPN", "DE", Some(false), 3, 30);
    term["term_days"] = json!(30.5);
    cases.push(("/v1/licenses".to_string(), term, "term_days"));
    let mut huge = order("ACME-VPN", "DE", Some(false), 3, 30);
    huge["seats"] = json!(1e19);
    cases.push(("/v1/licenses".to_string(), huge, "seats"));
    cases.push((
        format!("/v1/licenses/{id}/renewals"),
        json!({"term_days": 0.5}),
        "term_days",
    ));
    for (path, body, field) in cases {
        let r = post(&app, &path, "alpha", Some(&key()), &body).await;
        r.assert_problem(422, "validation_failed");
        assert_eq!(r.fields(), vec![field], "{body}: {}", r.text);
    }
    // A number beyond a double's range is valid JSON too: 422 on the field, not 400.
    let raw = br#"{"product": "ACME-VPN", "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}, "seats": 1e400, "term_days": 30}"#;
    let r = app
        .client
        .post(format!("{}/v1/licenses", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.reseller("alpha"))))
        .insert_header(("content-type", "application/json"))
        .insert_header(("idempotency-key", key()))
        .send_body(&raw[..])
        .await
        .expect("the server answers");
    let r = Reply::read(r).await;
    r.assert_problem(422, "validation_failed");
    assert_eq!(r.fields(), vec!["seats"], "{}", r.text);
    assert_eq!(app.all_events().await.len(), before, "nothing recorded");
}

/// Reseller `alpha` (DE), and Shady Soft (KP) with its antivirus `SHADY-AV`.
async fn add_shady(app: &TestApp) {
    app.register("alpha", "DE", false).await;
    app.admin_put(
        "/v1/organizations/shady",
        json!({"name": "Shady Soft", "country": "KP"}),
    )
    .await;
    app.admin_put(
        "/v1/products/SHADY-AV",
        json!({"name": "Shady AV", "vendor": "shady", "category": "antivirus"}),
    )
    .await;
}

/// A staged designation of `shady` (KP): new agreements banned since 2024,
/// the full cut-off (renewals too, ending service) only in 2029.
async fn staged_ban(app: &TestApp) {
    add_shady(app).await;
    app.admin_put(
        "/v1/designations/staged-ban",
        json!({"title": "Staged ban", "authority": "BIS", "citation": "99 FR 2", "organizations": ["shady"],
               "covers_affiliates": true, "jurisdiction": "US",
               "rules": [{"id": "new-agreements", "transactions": ["issue"],
                          "effective_from": "2024-01-01T00:00:00", "time_zone": "America/New_York"},
                         {"id": "full-cutoff", "transactions": ["issue", "renew"], "ends_service": true,
                          "effective_from": "2029-01-01T00:00:00", "time_zone": "America/New_York"}]}),
    )
    .await;
}

both!(a_renewal_keeps_its_customer);
async fn a_renewal_keeps_its_customer(app: TestApp) {
    staged_ban(&app).await;
    let german =
        json!({"id": "de-kunde-1", "name": "Kunde GmbH", "country": "DE", "us_person": false});
    let newco = json!({"id": "us-newco", "name": "NewCo Inc", "country": "US", "us_person": true});
    let issued = issue(
        &app,
        "alpha",
        Some(&key()),
        &json!({"product": "SHADY-AV", "customer": german, "seats": 5, "term_days": 30}),
    )
    .await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let licence = issued.body["license"].clone();
    let id = licence["id"].as_str().unwrap();
    let renewals = format!("/v1/licenses/{id}/renewals");

    // The same sale to the new U.S. company, as an issue: refused.
    issue(
        &app,
        "alpha",
        Some(&key()),
        &json!({"product": "SHADY-AV", "customer": newco, "seats": 500, "term_days": 1200}),
    )
    .await
    .assert_problem(403, "prohibited_transaction");

    // As a "renewal" of the German customer's licence: 422, nothing changed.
    let events = app.all_events().await.len();
    let swapped = post(
        &app,
        &renewals,
        "alpha",
        Some(&key()),
        &json!({"term_days": 1200, "customer": newco}),
    )
    .await;
    swapped.assert_problem(422, "validation_failed");
    assert_eq!(swapped.fields(), vec!["customer.id"], "{}", swapped.text);
    let message = swapped.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("never its id"), "{message}");
    assert!(
        !swapped.text.contains("us-newco"),
        "no customer value echoed"
    );
    assert_eq!(app.all_events().await.len(), events, "nothing recorded");
    let now = app
        .get(&format!("/v1/licenses/{id}"), &app.reseller("alpha"))
        .await;
    assert_eq!(now.body, licence, "the licence still names its customer");
    assert_eq!(now.body["customer"]["id"], "de-kunde-1");

    // Updated facts about the same customer are a renewal.
    let mut moved = german.clone();
    moved["name"] = json!("Kunde AG");
    let renewed = post(
        &app,
        &renewals,
        "alpha",
        Some(&key()),
        &json!({"term_days": 30, "customer": moved}),
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(renewed.body["license"]["customer"], moved);
}

/// Renews `id` for `term_days` as alpha.
async fn renew(app: &TestApp, id: &str, term_days: i64) -> Reply {
    post(
        app,
        &format!("/v1/licenses/{id}/renewals"),
        "alpha",
        Some(&key()),
        &json!({ "term_days": term_days }),
    )
    .await
}

/// Every page of a listing, `limit` at a time: the ids, each page `200`.
async fn every_page(app: &TestApp, token: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let page = app
            .get(
                &format!("/v1/licenses?limit={limit}&cursor={cursor}"),
                token,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        for l in page.body["licenses"].as_array().unwrap() {
            ids.push(l["id"].as_str().unwrap().to_string());
        }
        match page.body["next"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return ids,
        }
    }
    panic!("the listing does not end");
}

/// The audit trail reads back: paged, and exported as NDJSON and CSV.
async fn the_trail_reads_back(app: &TestApp) {
    let events = app.all_events().await;
    let (_, ndjson) = crate::audit::export(app, "", "application/x-ndjson").await;
    assert_eq!(ndjson.lines().count(), events.len());
    let (_, csv) = crate::audit::export(app, "", "text/csv").await;
    assert!(csv.lines().count() > events.len());
}

both!(a_renewal_storm_ends_in_422_and_every_listing_stays_readable);
async fn a_renewal_storm_ends_in_422_and_every_listing_stays_readable(app: TestApp) {
    setup(&app).await;
    let mut ids = Vec::new();
    for term in [1, 30] {
        let r = issue(
            &app,
            "alpha",
            Some(&key()),
            &order("ACME-VPN", "DE", Some(false), 3, term),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["license"]["id"].as_str().unwrap().to_string());
    }
    let id = ids[0].clone();
    let started = chrono::Utc::now();
    // Renewals of ten years each, from the later expiry: the cap comes at
    // once (a bounded loop: on `main` it ran ~800 times to the year 10001).
    let mut last = None;
    let mut refused = None;
    for n in 1..=4 {
        let r = renew(&app, &id, 3650).await;
        if r.status == 422 {
            refused = Some((n, r));
            break;
        }
        assert_eq!(r.status, 200, "renewal {n}: {}", r.text);
        last = Some(r.body["license"].clone());
    }
    let (n, refused) = refused.expect("a renewal past ten years is refused within 4 renewals");
    assert!(
        n <= 2,
        "the first renewal past the cap is refused, not renewal {n}"
    );
    refused.assert_problem(422, "validation_failed");
    assert_eq!(refused.fields(), vec!["term_days"], "{}", refused.text);
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("10 years"), "{message}");
    let licence = app
        .get(&format!("/v1/licenses/{id}"), &app.reseller("alpha"))
        .await;
    assert_eq!(licence.status, 200, "{}", licence.text);
    let expires = at(licence.body["expires_at"].as_str().unwrap());
    assert!(expires <= chrono::Utc::now() + chrono::Duration::days(3653));
    assert!(expires > started + chrono::Duration::days(3000));
    if let Some(last) = last {
        assert_eq!(licence.body, last, "the refused renewal changed nothing");
    }
    // The longest term the message offers is accepted; ten years more
    // still are not.
    let offered: i64 = message
        .split("at most ")
        .nth(1)
        .and_then(|m| m.split(' ').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    if offered > 0 {
        let r = renew(&app, &id, offered).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    renew(&app, &id, 3650)
        .await
        .assert_problem(422, "validation_failed");

    // Every listing still reads: the tenant's pages, compliance's, the
    // licence, the audit trail and its exports.
    assert_eq!(every_page(&app, &app.reseller("alpha"), 1).await, ids);
    assert_eq!(every_page(&app, &app.compliance(), 1).await.len(), 2);
    for token in [app.reseller("alpha"), app.compliance()] {
        let r = app.get(&format!("/v1/licenses/{id}"), &token).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    the_trail_reads_back(&app).await;
    let verdict = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verdict.body["ok"], true, "{}", verdict.text);
}

both!(an_unreadable_licence_row_does_not_take_the_listings_down);
async fn an_unreadable_licence_row_does_not_take_the_listings_down(app: TestApp) {
    setup(&app).await;
    let mut ids = Vec::new();
    for seats in 1..=3 {
        let r = issue(
            &app,
            "alpha",
            Some(&key()),
            &order("ACME-VPN", "DE", Some(false), seats, 30),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["license"]["id"].as_str().unwrap().to_string());
    }
    // What a term run past the year 9999 was stored as: it does not parse.
    let bad = ids[1].clone();
    app.db
        .execute(&format!(
            "UPDATE licenses SET expires_at = '+10001-01-01T00:00:00Z' WHERE id = '{bad}'"
        ))
        .unwrap();
    let readable = vec![ids[0].clone(), ids[2].clone()];
    // Left out of every page, whose cursor still moves past it: whatever
    // the page size, every other licence is listed.
    for limit in [1, 2, 100] {
        assert_eq!(
            every_page(&app, &app.reseller("alpha"), limit).await,
            readable,
            "tenant, pages of {limit}"
        );
        assert_eq!(
            every_page(&app, &app.compliance(), limit).await,
            readable,
            "compliance, pages of {limit}"
        );
    }
    // The other licences and the trail read as before.
    let other = app
        .get(&format!("/v1/licenses/{}", ids[2]), &app.reseller("alpha"))
        .await;
    assert_eq!(other.status, 200, "{}", other.text);
    the_trail_reads_back(&app).await;
    // The bad one itself is an opaque 500, and the operator is told: a
    // metric, and verification names the row.
    app.get(&format!("/v1/licenses/{bad}"), &app.compliance())
        .await
        .assert_problem(500, "internal_error");
    let metrics = app.send("GET", "/metrics", None, None).await;
    assert!(
        metrics.text.lines().any(|l| l
            .starts_with("gatekeeper_unreadable_rows_total{table=\"licenses\"}")
            && !l.ends_with(" 0")),
        "{}",
        metrics.text
    );
    let verdict = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(verdict.body["reason"], "state_mismatch", "{}", verdict.text);
    assert_eq!(verdict.body["row"], format!("licenses/{bad}"));
}

both!(requests_read_together_are_each_answered_for_their_own_tenant);
/// The reads before a licence write are batched across requests
/// (`store::lookups`). Sent at once: a retry, another tenant's first use
/// of the same key, fresh issues, a renewal, a renewal of a licence that
/// does not exist and one of another tenant's licence. Each is answered as
/// if it had been alone; then one batch of those reads, made directly,
/// finds exactly each request's own record and licence.
async fn requests_read_together_are_each_answered_for_their_own_tenant(app: TestApp) {
    use futures_util::future::join_all;
    use gatekeeper::store::licenses::Ask;
    use gatekeeper::store::Store;
    setup(&app).await;
    let body = order("ACME-VPN", "DE", Some(false), 3, 30);
    let k = key();
    let first = issue(&app, "alpha", Some(&k), &body).await;
    assert_eq!(first.status, 201);
    let id = first.body["license"]["id"].as_str().unwrap().to_string();
    let renewals = format!("/v1/licenses/{id}/renewals");
    let term = json!({"term_days": 1});

    let fresh: Vec<String> = (0..10).map(|_| key()).collect();
    let (renew_key, missing_key, foreign_key) = (key(), key(), key());
    let retry = issue(&app, "alpha", Some(&k), &body);
    let beta = issue(&app, "beta", Some(&k), &body);
    let issues = join_all(fresh.iter().map(|f| issue(&app, "alpha", Some(f), &body)));
    let renewal = post(&app, &renewals, "alpha", Some(&renew_key), &term);
    let missing = post(
        &app,
        "/v1/licenses/no-such-licence/renewals",
        "alpha",
        Some(&missing_key),
        &term,
    );
    let foreign = post(&app, &renewals, "beta", Some(&foreign_key), &term);
    let (retry, beta, issues, renewal, missing, foreign) =
        tokio::join!(retry, beta, issues, renewal, missing, foreign);

    assert_eq!(retry.status, 201);
    assert!(replayed(&retry));
    assert_eq!(retry.text, first.text);
    assert_eq!(beta.status, 201);
    assert!(!replayed(&beta), "beta's key is its own");
    assert_ne!(beta.body["license"]["id"], first.body["license"]["id"]);
    for issued in &issues {
        assert_eq!(issued.status, 201);
        assert!(!replayed(issued));
    }
    assert_eq!(renewal.status, 200);
    assert_eq!(renewal.body["license"]["id"].as_str(), Some(id.as_str()));
    missing.assert_problem(404, "not_found");
    foreign.assert_problem(404, "not_found");

    // The same reads as one batch, straight from the store.
    let store = Store::connect(&app.config.database_url, 1).unwrap();
    let mut conn = store.dedicated_connection().unwrap();
    let ask = |reseller: &str, key: &str, renews: Option<&str>| Ask {
        reseller: reseller.into(),
        key: Some(key.into()),
        renews: renews.map(String::from),
    };
    let beta_key = k.clone();
    let asks = [
        ask("alpha", &k, None),
        ask("beta", &beta_key, None),
        ask("alpha", &fresh[3], None),
        ask("gamma", &k, None),
        ask("alpha", "never-used", Some(&id)),
        ask("alpha", "never-used-either", Some("no-such-licence")),
        Ask {
            reseller: "beta".into(),
            key: None,
            renews: None,
        },
    ];
    let asks: Vec<&Ask> = asks.iter().collect();
    let found = Store::before_license_writes(&mut conn, &asks).unwrap();
    assert_eq!(found.len(), asks.len());
    let body_of = |n: usize| found[n].0.as_ref().map(|r| r.body.clone());
    let own = |reseller: &str, key: &str| store.idempotency(reseller, key).unwrap().map(|r| r.body);
    assert_eq!(body_of(0), own("alpha", &k));
    assert_eq!(body_of(1), own("beta", &k));
    assert_ne!(body_of(0), body_of(1), "each tenant's own record");
    assert_eq!(body_of(2), own("alpha", &fresh[3]));
    assert!(body_of(2).is_some());
    assert_eq!(
        found[3],
        (None, None),
        "gamma has no record under alpha's key"
    );
    assert!(found[4].0.is_none());
    let read = found[4].1.clone().flatten().expect("the licence to renew");
    assert_eq!(read.id, id);
    assert_eq!(found[5], (None, Some(None)));
    assert_eq!(found[6], (None, None));
}
