//! The error model: problem+json everywhere, 400 vs 422, 413, 404, 405.

use serde_json::json;

use crate::both;
use crate::helpers::TestApp;

both!(errors_are_problem_json_with_stable_codes);
async fn errors_are_problem_json_with_stable_codes(app: TestApp) {
    let admin = app.admin();
    let before = app.all_events().await.len();

    let r = app
        .send(
            "PUT",
            "/v1/organizations/x",
            Some(&admin),
            Some(b"{\"name\": ".to_vec()),
        )
        .await;
    r.assert_problem(400, "malformed_json");
    let r = app
        .send(
            "PUT",
            "/v1/organizations/x",
            Some(&admin),
            Some(b"{\"name\": \"X\"} trailing".to_vec()),
        )
        .await;
    r.assert_problem(400, "malformed_json");
    let r = app
        .send("PUT", "/v1/organizations/x", Some(&admin), Some(Vec::new()))
        .await;
    r.assert_problem(400, "malformed_json");

    let mut big = json!({"name": "X", "aliases": []});
    big["aliases"] = json!(vec!["a".repeat(250); 280]);
    let r = app.put("/v1/organizations/x", &admin, big).await;
    r.assert_problem(413, "payload_too_large");
    // Just under the limit is fine.
    let mut fits = json!({"name": "X", "aliases": []});
    fits["aliases"] = json!(vec!["a".repeat(250); 240]);
    assert_eq!(
        app.put("/v1/organizations/fits", &admin, fits).await.status,
        201
    );

    app.get("/v1/nowhere", &admin)
        .await
        .assert_problem(404, "not_found");
    app.send("GET", "/nowhere", None, None)
        .await
        .assert_problem(404, "not_found");
    let r = app
        .send("DELETE", "/v1/designations", Some(&admin), None)
        .await;
    r.assert_problem(405, "method_not_allowed");
    assert_eq!(
        r.headers.get("allow").unwrap(),
        "GET",
        "405 says what is allowed"
    );
    let r = app.send("PATCH", "/v1/licenses", Some(&admin), None).await;
    assert_eq!(r.headers.get("allow").unwrap(), "GET, POST");

    // Nothing but the one valid PUT was recorded.
    assert_eq!(app.all_events().await.len(), before + 1);
}

both!(a_database_fault_is_an_opaque_503_and_records_nothing);
async fn a_database_fault_is_an_opaque_503_and_records_nothing(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let before = app.all_events().await.len();
    // Make every insert into the audit trail fail, behind the service's back.
    let sabotage = match app.backend {
        crate::helpers::Backend::Sqlite => {
            "CREATE TRIGGER sabotage BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;"
        }
        crate::helpers::Backend::Postgres => {
            "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END; $$;
             CREATE TRIGGER sabotage BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION sabotage();"
        }
    };
    app.db.execute(sabotage).unwrap();
    let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                      "customer": {"id": "c", "name": "n", "country": "US"}});
    let r = app.preflight("alpha", body).await;
    r.assert_problem(503, "service_unavailable");
    assert!(r.headers.get("retry-after").is_some());
    assert!(
        !r.text.contains("disk on fire"),
        "a 5xx must not leak internals: {}",
        r.text
    );
    let r = app
        .put(
            "/v1/organizations/late",
            &app.admin(),
            json!({"name": "Late"}),
        )
        .await;
    r.assert_problem(503, "service_unavailable");
    app.db
        .execute("DROP TRIGGER sabotage ON audit_events")
        .or_else(|_| app.db.execute("DROP TRIGGER sabotage"))
        .unwrap();
    assert_eq!(app.all_events().await.len(), before);
    app.get("/v1/organizations/late", &app.admin())
        .await
        .assert_problem(404, "not_found");
    let decisions = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(decisions.body["ok"], true, "{}", decisions.text);
}
