//! Attacks on what lies beside the chain, by someone with database access:
//! the columns listings and exports filter by, and the state the service
//! acts on (catalogue, licences, decisions, reviews). Each edit is caught by
//! the API's and the CLI's verification, naming the row; a catalogue the
//! chain does not vouch for is not served.

use serde_json::{json, Value};

use crate::attacks::{bypassing_triggers, cli_verify, database_verdict};
use crate::both;
use crate::helpers::TestApp;
use crate::licenses::{issue, post_at};

/// What the API's and the CLI's verifications say, which must agree:
/// `(reason, row, first_invalid_seq)`.
pub(crate) async fn caught(app: &TestApp) -> (Value, Value, Value) {
    let db = database_verdict(app).await;
    let (cli, ok) = cli_verify(app, &[]);
    let seen = |r: &Value| {
        (
            r["reason"].clone(),
            r["row"].clone(),
            r["first_invalid_seq"].clone(),
        )
    };
    assert_eq!(seen(&db), seen(&cli), "API {db} against CLI {cli}");
    assert_eq!(ok, db["ok"] == true);
    seen(&db)
}

/// The event at `seq`, as exported.
async fn event(app: &TestApp, seq: i64) -> Value {
    app.all_events()
        .await
        .into_iter()
        .find(|e| e["seq"] == seq)
        .expect("the event")
}

/// A refusal's `seq` and decision id, after the usual set-up.
async fn refusal(app: &TestApp) -> (i64, String) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                      "customer": {"id": "c", "name": "n", "country": "US"}});
    let denied = app.preflight("alpha", body).await;
    assert_eq!(
        denied.body["decision"]["outcome"], "deny",
        "{}",
        denied.text
    );
    let decision = &denied.body["decision"];
    (
        decision["audit_seq"].as_i64().unwrap(),
        decision["id"].as_str().unwrap().to_string(),
    )
}

/// The audit listing or export filtered to refusals, as compliance.
async fn refusals(app: &TestApp, accept: &str) -> String {
    crate::audit::export(app, "?outcome=deny", accept).await.1
}

both!(an_edited_index_column_is_caught_though_it_hides_the_event);
async fn an_edited_index_column_is_caught_though_it_hides_the_event(app: TestApp) {
    let (seq, decision) = refusal(&app).await;
    let original = event(&app, seq).await;
    assert!(refusals(&app, "text/csv").await.contains(&decision));
    assert_eq!(caught(&app).await.0, Value::Null, "clean to start with");

    // The refusal, turned into an allow beside its event: it drops out of
    // the filtered listing and the CSV export, while the chain still links.
    bypassing_triggers(
        &app,
        &format!("UPDATE audit_events SET outcome = 'allow' WHERE seq = {seq}"),
    );
    assert!(!refusals(&app, "application/json").await.contains(&decision));
    assert!(!refusals(&app, "text/csv").await.contains(&decision));
    assert_eq!(
        caught(&app).await,
        (
            json!("index_mismatch"),
            json!(format!("audit_events/{seq}/outcome")),
            json!(seq)
        )
    );
    app.db
        .execute(&format!(
            "UPDATE audit_events SET outcome = 'deny' WHERE seq = {seq}"
        ))
        .unwrap();
    assert_eq!(caught(&app).await.0, Value::Null, "restored");

    // The refusal, marked a what-if beside its event: outcome filters leave
    // it out just the same.
    let what_if = |value: &str| {
        app.db
            .execute(&format!(
                "UPDATE audit_events SET what_if = {value} WHERE seq = {seq}"
            ))
            .unwrap()
    };
    what_if("TRUE");
    assert!(!refusals(&app, "application/json").await.contains(&decision));
    assert!(!refusals(&app, "text/csv").await.contains(&decision));
    assert_eq!(
        caught(&app).await,
        (
            json!("index_mismatch"),
            json!(format!("audit_events/{seq}/what_if")),
            json!(seq)
        )
    );
    what_if("FALSE");
    assert_eq!(caught(&app).await.0, Value::Null, "restored");
    assert!(refusals(&app, "text/csv").await.contains(&decision));

    // Every other column a listing reads.
    for (column, forged) in [
        ("action", "'decision.issue'"),
        ("reseller", "'beta'"),
        ("at", "'2020-01-01T00:00:00.000000Z'"),
        ("id", "'01900000-0000-7000-8000-000000000000'"),
        ("prev_hash", "'0000'"),
    ] {
        // The tenant is the decision's (`subject.reseller.id`).
        let was = match column {
            "reseller" => "'alpha'".to_string(),
            _ => format!("'{}'", original[column].as_str().unwrap()),
        };
        let set = |value: &str| {
            app.db
                .execute(&format!(
                    "UPDATE audit_events SET {column} = {value} WHERE seq = {seq}"
                ))
                .unwrap()
        };
        set(forged);
        assert_eq!(
            caught(&app).await,
            (
                json!("index_mismatch"),
                json!(format!("audit_events/{seq}/{column}")),
                json!(seq)
            ),
            "{column}"
        );
        set(&was);
    }
    // A reseller set on a catalogue event (which concerns no tenant) would
    // slip it into that tenant's listing.
    app.db
        .execute("UPDATE audit_events SET reseller = 'alpha' WHERE seq = 1")
        .unwrap();
    assert_eq!(
        caught(&app).await,
        (
            json!("index_mismatch"),
            json!("audit_events/1/reseller"),
            json!(1)
        )
    );
    app.db
        .execute("UPDATE audit_events SET reseller = NULL WHERE seq = 1")
        .unwrap();
    assert_eq!(caught(&app).await.0, Value::Null);
}

/// A licence, a refusal and a review waiting, beside the shipped catalogue.
struct World {
    license: Value,
    refused: String,
    in_review: String,
}

async fn world(app: &TestApp) -> World {
    let (_, refused) = refusal(app).await;
    let body = json!({"product": "ACME-FW-K", "seats": 25, "term_days": 365,
                      "customer": {"id": "de-1", "name": "Beispiel GmbH", "country": "DE", "us_person": false}});
    let issued = issue(app, "alpha", Some("k-1"), &body).await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let body = json!({"product": "ACME-FW-K", "seats": 40, "term_days": 200,
                      "customer": {"id": "br-1", "name": "Exemplo Ltda", "country": "BR"}});
    let waiting = issue(app, "alpha", Some("k-2"), &body).await;
    assert_eq!(waiting.status, 202, "{}", waiting.text);
    World {
        license: issued.body["license"].clone(),
        refused,
        in_review: waiting.body["decision"]["id"].as_str().unwrap().to_string(),
    }
}

both!(edited_state_is_caught_and_named);
async fn edited_state_is_caught_and_named(app: TestApp) {
    let w = world(&app).await;
    assert_eq!(caught(&app).await.0, Value::Null, "clean to start with");
    let license = w.license["id"].as_str().unwrap();
    let token = w.license["token"].as_str().unwrap();
    let (refused, in_review) = (&w.refused, &w.in_review);
    let cases: Vec<(String, String, String)> = vec![
        (
            format!("UPDATE licenses SET seats = 1000000 WHERE id = '{license}'"),
            format!("UPDATE licenses SET seats = 25 WHERE id = '{license}'"),
            format!("licenses/{license}"),
        ),
        (
            format!("UPDATE licenses SET customer = replace(customer, '\"DE\"', '\"US\"') WHERE id = '{license}'"),
            format!("UPDATE licenses SET customer = replace(customer, '\"US\"', '\"DE\"') WHERE id = '{license}'"),
            format!("licenses/{license}"),
        ),
        (
            format!("UPDATE licenses SET token = 'forged' WHERE id = '{license}'"),
            format!("UPDATE licenses SET token = '{token}' WHERE id = '{license}'"),
            format!("licenses/{license}"),
        ),
        (
            format!("UPDATE decisions SET outcome = 'allow' WHERE id = '{refused}'"),
            format!("UPDATE decisions SET outcome = 'deny' WHERE id = '{refused}'"),
            format!("decisions/{refused}"),
        ),
        (
            // The decision is read from the event its row points at.
            format!("UPDATE decisions SET audit_seq = audit_seq - 1 WHERE id = '{refused}'"),
            format!("UPDATE decisions SET audit_seq = audit_seq + 1 WHERE id = '{refused}'"),
            format!("decisions/{refused}"),
        ),
        (
            format!("UPDATE decisions SET review_status = 'approved' WHERE id = '{in_review}'"),
            format!("UPDATE decisions SET review_status = 'open' WHERE id = '{in_review}'"),
            format!("decisions/{in_review}"),
        ),
        (
            // What an approval would issue.
            format!("UPDATE decisions SET request = replace(request, '\"seats\":40', '\"seats\":1000000') WHERE id = '{in_review}'"),
            format!("UPDATE decisions SET request = replace(request, '\"seats\":1000000', '\"seats\":40') WHERE id = '{in_review}'"),
            format!("decisions/{in_review}"),
        ),
        (
            // The engine laundered into a carve-out.
            "UPDATE products SET spec = replace(spec, '\"antivirus\"', '\"threat_intelligence\"') WHERE sku = 'KAV-ENGINE'".into(),
            "UPDATE products SET spec = replace(spec, '\"threat_intelligence\"', '\"antivirus\"') WHERE sku = 'KAV-ENGINE'".into(),
            "products/KAV-ENGINE".into(),
        ),
        (
            "INSERT INTO relationships (source, target, kind, updated_at) \
             VALUES ('acme', 'ao-kaspersky-lab', 'minority_owned_by', '2026-01-01T00:00:00.000000Z')".into(),
            "DELETE FROM relationships WHERE source = 'acme'".into(),
            "relationships/acme/ao-kaspersky-lab".into(),
        ),
        (
            "UPDATE resellers SET spec = replace(spec, '\"us_person\":false', '\"us_person\":true') WHERE id = 'alpha'".into(),
            "UPDATE resellers SET spec = replace(spec, '\"us_person\":true', '\"us_person\":false') WHERE id = 'alpha'".into(),
            "resellers/alpha".into(),
        ),
        (
            "UPDATE ledger_head SET catalog_version = catalog_version + 1".into(),
            "UPDATE ledger_head SET catalog_version = catalog_version - 1".into(),
            "ledger_head/catalog_version".into(),
        ),
    ];
    for (edit, revert, row) in &cases {
        app.db.execute(edit).unwrap();
        let (reason, named, _) = caught(&app).await;
        assert_eq!(
            (reason, named),
            (json!("state_mismatch"), json!(row)),
            "{edit}"
        );
        app.db.execute(revert).unwrap();
        assert_eq!(caught(&app).await.0, Value::Null, "restored: {revert}");
    }
    // A licence deleted: named, with the event that issued it.
    let issued_at = app
        .all_events()
        .await
        .into_iter()
        .find(|e| e["subject"]["license"]["id"] == license && e["outcome"] == "allow")
        .unwrap()["seq"]
        .clone();
    app.db
        .execute(&format!("DELETE FROM licenses WHERE id = '{license}'"))
        .unwrap();
    assert_eq!(
        caught(&app).await,
        (
            json!("state_mismatch"),
            json!(format!("licenses/{license}")),
            issued_at
        )
    );
}

both!(a_catalogue_the_chain_does_not_vouch_for_is_not_served);
async fn a_catalogue_the_chain_does_not_vouch_for_is_not_served(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let us_sale = json!({"product": "KAV-ENGINE", "seats": 5, "term_days": 30,
                         "customer": {"id": "us-1", "name": "Jane Roe", "country": "US"}});
    issue(&app, "alpha", Some("before"), &us_sale)
        .await
        .assert_problem(403, "prohibited_transaction");

    // The ban moved to the year 2999, behind the service's back.
    let edit = "UPDATE designations SET spec = replace(spec, '\"2024-', '\"2999-') \
                WHERE id = 'us-icts-kaspersky-2024'";
    app.db.execute(edit).unwrap();
    assert_eq!(
        caught(&app).await.1,
        json!("designations/us-icts-kaspersky-2024")
    );
    // A replica (or a restart) on this database will not serve it: not
    // ready, and every decision is 503, never a licence.
    let replica = app.replica();
    let view = app.via(&replica);
    let token = app.reseller("alpha");
    let ready = view.send("GET", "/readyz", &token, None).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    let sold = post_at(
        &app,
        &replica,
        "/v1/licenses",
        "alpha",
        Some("after"),
        &us_sale,
    )
    .await;
    assert_eq!(sold.status, 503, "{}", sold.text);
    let body = json!({"transaction": "issue", "product": "KAV-ENGINE",
                      "customer": {"id": "us-1", "name": "Jane Roe", "country": "US"}});
    let asked = view
        .send("POST", "/v1/decisions", &token, Some(body.clone()))
        .await;
    assert_eq!(asked.status, 503, "{}", asked.text);
    let listed = view
        .send("GET", "/v1/products/KAV-ENGINE", &app.admin(), None)
        .await;
    assert_eq!(listed.status, 503, "{}", listed.text);
    // Nor will the running service build a change on it (which would record
    // the edit as if it had been made through the API).
    let change = app
        .put(
            "/v1/organizations/other",
            &app.admin(),
            json!({"name": "Other", "country": "DE"}),
        )
        .await;
    assert_eq!(change.status, 503, "{}", change.text);
    // Having found the edit, it stops serving too: not ready, no licence.
    let ready = app.send("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    let sold = issue(&app, "alpha", Some("during"), &us_sale).await;
    assert_eq!(sold.status, 503, "{}", sold.text);

    // Restored, a new replica serves again.
    app.db
        .execute(
            "UPDATE designations SET spec = replace(spec, '\"2999-', '\"2024-') \
             WHERE id = 'us-icts-kaspersky-2024'",
        )
        .unwrap();
    assert_eq!(caught(&app).await.0, Value::Null);
    let replica = app.replica();
    let view = app.via(&replica);
    assert_eq!(view.send("GET", "/readyz", &token, None).await.status, 200);
    let asked = view.send("POST", "/v1/decisions", &token, Some(body)).await;
    assert_eq!(asked.body["decision"]["outcome"], "deny", "{}", asked.text);

    // A row that does not even parse: the service still starts, not ready.
    app.db
        .execute("UPDATE products SET spec = '{}' WHERE sku = 'KAV-ENGINE'")
        .unwrap();
    let replica = app.replica();
    let ready = app.via(&replica).send("GET", "/readyz", &token, None).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
}
