//! The licences' status lists (`GET /v1/status-lists/{k}`): fetched as a
//! product would, from the `status` claim of its licence token, verified
//! against `GET /v1/keys`, and read with the draft's bit layout.

use gatekeeper::status_list::{StatusList, LIST_SIZE};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{Reply, TestApp};
use crate::licenses::issue;

/// The base URL the test app's status-list URIs start with.
const PUBLIC_URL: &str = "http://gatekeeper.test";

async fn setup(app: &TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "FR", false).await;
    app.admin_put(
        "/v1/organizations/acme",
        json!({"name": "Acme Networks", "country": "DE"}),
    )
    .await;
    app.admin_put(
        "/v1/products/ACME-VPN",
        json!({"name": "Acme VPN", "vendor": "acme", "category": "vpn"}),
    )
    .await;
}

/// A licence of ACME-VPN for a German customer (allowed), as `reseller`.
async fn licence(app: &TestApp, reseller: &str, customer: &str) -> Value {
    let body = json!({"product": "ACME-VPN", "seats": 3, "term_days": 30,
                      "customer": {"id": customer, "name": "Beispiel GmbH", "country": "DE",
                                   "us_person": false}});
    let key = uuid::Uuid::new_v4().to_string();
    let r = issue(app, reseller, Some(&key), &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["license"].clone()
}

/// A token's claims, verified with the published key its header names.
fn verified(app_keys: &Value, token: &str, validation: &mut jsonwebtoken::Validation) -> Value {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(app_keys.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = set
        .find(header.kid.as_deref().expect("a kid"))
        .expect("the token's kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    jsonwebtoken::decode::<Value>(token, &key, validation)
        .unwrap()
        .claims
}

fn licence_validation() -> jsonwebtoken::Validation {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_issuer(&["license-gatekeeper"]);
    v.set_audience(&["ACME-VPN"]);
    v
}

/// Where a licence's status is published: (the list's URI, its index).
fn status_ref(keys: &Value, licence: &Value) -> (String, usize) {
    let claims = verified(
        keys,
        licence["token"].as_str().unwrap(),
        &mut licence_validation(),
    );
    let reference = &claims["status"]["status_list"];
    let uri = reference["uri"].as_str().expect("a status list uri");
    let idx = reference["idx"].as_u64().expect("an index");
    (uri.to_string(), usize::try_from(idx).unwrap())
}

/// Fetches the list at `uri` with no token, checks it as a product would
/// (the signature with the published key, `typ`, `sub`, the times) and
/// returns it decoded.
async fn fetch(app: &TestApp, keys: &Value, uri: &str) -> StatusList {
    let path = uri
        .strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("{uri} is under the public URL"));
    let r = app.send("GET", path, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.content_type, "application/statuslist+jwt");
    assert_eq!(r.header("cache-control").as_deref(), Some("max-age=300"));
    let jwt = r.text.as_str();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("statuslist+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_required_spec_claims(&["sub", "iat", "exp"]);
    validation.sub = Some(uri.to_string());
    let claims = verified(keys, jwt, &mut validation);
    assert_eq!(
        claims["sub"], uri,
        "the list names itself as its licences do"
    );
    let iat = claims["iat"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now - 60..=now + 1).contains(&iat), "iat {iat}, now {now}");
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 24 * 60 * 60);
    assert_eq!(claims["ttl"], 300);
    assert_eq!(claims["status_list"]["bits"], 2);
    let list = StatusList::decode(2, claims["status_list"]["lst"].as_str().unwrap()).unwrap();
    assert_eq!(
        list.len(),
        LIST_SIZE as usize,
        "a list holds LIST_SIZE entries"
    );
    list
}

/// The entries of `refs` in `list`.
fn entries(list: &StatusList, refs: &[(String, usize)]) -> Vec<u8> {
    refs.iter().map(|(_, idx)| list.get(*idx)).collect()
}

both!(a_licence_status_list_follows_revocation_suspension_and_reinstatement);
async fn a_licence_status_list_follows_revocation_suspension_and_reinstatement(app: TestApp) {
    setup(&app).await;
    // Before any licence, no list exists.
    app.send("GET", "/v1/status-lists/0", None, None)
        .await
        .assert_problem(404, "not_found");

    let keys = app.send("GET", "/v1/keys", None, None).await.body;
    let mut licences = Vec::new();
    for (reseller, customer) in [
        ("alpha", "cust-1"),
        ("alpha", "cust-2"),
        ("beta", "cust-3"),
        ("alpha", "cust-4"),
    ] {
        licences.push(licence(&app, reseller, customer).await);
    }
    let refs: Vec<(String, usize)> = licences.iter().map(|l| status_ref(&keys, l)).collect();
    let uri = format!("{PUBLIC_URL}/v1/status-lists/0");
    assert!(
        refs.iter().all(|(u, _)| *u == uri),
        "the first licences are in list 0: {refs:?}"
    );
    let mut idxs: Vec<usize> = refs.iter().map(|(_, i)| *i).collect();
    idxs.sort_unstable();
    idxs.dedup();
    assert_eq!(idxs.len(), licences.len(), "one entry a licence: {refs:?}");

    assert_eq!(
        entries(&fetch(&app, &keys, &uri).await, &refs),
        [0, 0, 0, 0]
    );

    // Revoked by its reseller: invalid (1).
    let id = |i: usize| licences[i]["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            &format!("/v1/licenses/{}/revocation", id(0)),
            &app.reseller("alpha"),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        entries(&fetch(&app, &keys, &uri).await, &refs),
        [1, 0, 0, 0]
    );

    // Suspended by compliance: suspended (2).
    let r = app
        .post(
            &format!("/v1/licenses/{}/suspension", id(2)),
            &app.compliance(),
            json!({"reason": "checking the customer"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        entries(&fetch(&app, &keys, &uri).await, &refs),
        [1, 0, 2, 0]
    );

    // Reinstated (the gate still allows it): valid again.
    let r = app
        .send(
            "DELETE",
            &format!("/v1/licenses/{}/suspension", id(2)),
            Some(&app.compliance()),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["license"]["status"], "active", "{}", r.text);
    let list = fetch(&app, &keys, &uri).await;
    assert_eq!(entries(&list, &refs), [1, 0, 0, 0]);
    let set = (0..list.len()).filter(|&i| list.get(i) != 0).count();
    assert_eq!(set, 1, "only the revoked licence's entry is set");

    // A token makes no difference, and is not needed.
    let with_token = app
        .send(
            "GET",
            "/v1/status-lists/0",
            Some(&app.reseller("beta")),
            None,
        )
        .await;
    assert_eq!(with_token.status, 200, "{}", with_token.text);

    // No later list exists; nor does a list named otherwise than a licence names it.
    for path in [
        "/v1/status-lists/1",
        "/v1/status-lists/-1",
        "/v1/status-lists/00",
        "/v1/status-lists/+0",
        "/v1/status-lists/0.0",
        "/v1/status-lists/x",
        "/v1/status-lists/99999999999999999999",
    ] {
        app.send("GET", path, None, None)
            .await
            .assert_problem(404, "not_found");
    }
    let r = app.send("POST", "/v1/status-lists/0", None, None).await;
    r.assert_problem(405, "method_not_allowed");
}

/// The status-list entry of the licence `id`, set behind the service's back
/// (no test can issue 65,536 licences to reach list 1 honestly).
fn move_entry(app: &TestApp, id: &str, idx: i64, status: &str) {
    app.db
        .execute(&format!(
            "UPDATE licenses SET status_idx = {idx}, status = '{status}' WHERE id = '{id}'"
        ))
        .unwrap();
}

both!(each_list_holds_its_own_range_of_indices);
async fn each_list_holds_its_own_range_of_indices(app: TestApp) {
    setup(&app).await;
    let keys = app.send("GET", "/v1/keys", None, None).await.body;
    let mut ids = Vec::new();
    for customer in ["cust-1", "cust-2", "cust-3", "cust-4"] {
        ids.push(
            licence(&app, "alpha", customer).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // The last index of list 0, the first and a middle one of list 1.
    move_entry(&app, &ids[0], LIST_SIZE - 1, "revoked");
    move_entry(&app, &ids[1], LIST_SIZE, "suspended");
    move_entry(&app, &ids[2], LIST_SIZE + 7, "ended");
    let list = |k: i64| format!("{PUBLIC_URL}/v1/status-lists/{k}");
    let size = LIST_SIZE as usize;

    let zero = fetch(&app, &keys, &list(0)).await;
    assert_eq!(zero.get(size - 1), 1);
    let set: Vec<usize> = (0..size).filter(|&i| zero.get(i) != 0).collect();
    assert_eq!(set, [size - 1], "list 0 holds only its own entries");

    let one = fetch(&app, &keys, &list(1)).await;
    assert_eq!((one.get(0), one.get(7)), (2, 1));
    let set: Vec<usize> = (0..size).filter(|&i| one.get(i) != 0).collect();
    assert_eq!(set, [0, 7], "list 1 holds only its own entries");

    let r: Reply = app.send("GET", "/v1/status-lists/2", None, None).await;
    r.assert_problem(404, "not_found");
}
