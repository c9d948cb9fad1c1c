//! The audit trail: every decision and catalogue change is one event in a
//! gapless hash chain that the database refuses to edit.

use gatekeeper::audit;
use serde_json::json;

use crate::both;
use crate::helpers::TestApp;

both!(every_decision_and_catalogue_change_is_a_chained_event);
async fn every_decision_and_catalogue_change_is_a_chained_event(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let ask = |country: &str| {
        json!({"transaction": "issue", "product": "ACME-FW-K",
               "customer": {"id": "c-9", "name": "Jane Roe", "country": country, "us_person": false}})
    };
    let deny = app.preflight("alpha", ask("US")).await;
    let allow = app.preflight("alpha", ask("DE")).await;

    let events = app.all_events().await;
    // The shipped catalogue (4 organisations, 1 designation), then ours.
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "catalog.organization.put",
            "catalog.organization.put",
            "catalog.organization.put",
            "catalog.organization.put",
            "catalog.designation.put",
            "catalog.reseller.put",
            "catalog.organization.put",
            "catalog.product.put",
            "catalog.product.put",
            "decision.preflight",
            "decision.preflight",
        ]
    );
    assert_eq!(
        events[0]["actor"],
        json!({"sub": "gatekeeper", "role": "system", "reseller": null})
    );
    assert_eq!(events[0]["prev_hash"], audit::GENESIS_HASH);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], json!(i as i64 + 1), "seq is gapless");
        assert_eq!(
            e["hash"].as_str().unwrap(),
            audit::event_hash(e),
            "hash covers every exported field"
        );
        if i > 0 {
            assert_eq!(e["prev_hash"], events[i - 1]["hash"]);
        }
    }
    let report = audit::verify(&events);
    assert!(report.ok && report.events_checked == events.len() as u64);

    let d = &events[9];
    assert_eq!(d["outcome"], "deny");
    assert_eq!(
        d["decision"], deny.body["decision"],
        "the event carries the decision as returned"
    );
    assert_eq!(
        d["actor"],
        json!({"sub": "test-reseller", "role": "reseller", "reseller": "alpha"})
    );
    assert_eq!(d["subject"]["customer"]["country"], "US");
    assert_eq!(d["subject"]["product"], "ACME-FW-K");
    assert_eq!(d["policy_version"], deny.body["decision"]["policy_version"]);
    assert_eq!(deny.body["decision"]["audit_seq"], d["seq"]);
    assert_eq!(events[10]["decision"], allow.body["decision"]);
    assert_eq!(events[7]["subject"]["spec"]["vendor"], "ao-kaspersky-lab");

    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body["ok"], true);
    assert_eq!(v.body["events_checked"], 11);
    assert_eq!(
        v.body["head"],
        json!({"seq": 11, "hash": events[10]["hash"]})
    );
    assert_eq!(v.body["first_invalid_seq"], json!(null));
}

both!(the_audit_listing_filters_and_pages);
async fn the_audit_listing_filters_and_pages(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "DE", false).await;
    app.add_oem_firewall().await;
    for (reseller, country) in [("alpha", "US"), ("alpha", "DE"), ("beta", "US")] {
        let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                          "customer": {"id": "c", "name": "n", "country": country, "us_person": false}});
        assert_eq!(app.preflight(reseller, body).await.status, 200);
    }
    let token = app.compliance();
    let page = |q: &str| {
        let app = &app;
        let token = token.clone();
        let q = q.to_string();
        async move { app.get(&format!("/v1/audit?{q}"), &token).await }
    };
    let denies = page("outcome=deny").await;
    assert_eq!(denies.body["events"].as_array().unwrap().len(), 2);
    let alpha = page("action=decision.preflight&reseller=alpha").await;
    assert_eq!(alpha.body["events"].as_array().unwrap().len(), 2);
    let catalog = page("action=catalog.*").await;
    assert_eq!(catalog.body["events"].as_array().unwrap().len(), 10);
    let future = page("from=2999-01-01T00:00:00Z").await;
    assert_eq!(future.body["events"], json!([]));
    let past = page("to=2000-01-01T00:00:00Z").await;
    assert_eq!(past.body["events"], json!([]));

    let first = page("limit=4").await;
    assert_eq!(first.body["events"].as_array().unwrap().len(), 4);
    let next = first.body["next"].as_str().unwrap().to_string();
    let second = page(&format!("limit=4&after={next}")).await;
    assert_eq!(second.body["events"][0]["seq"], 5);
    let rest = page("after=12&limit=4").await;
    assert_eq!(rest.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["next"], json!(null));

    page("limit=0")
        .await
        .assert_problem(422, "validation_failed");
    page("limit=1001")
        .await
        .assert_problem(422, "validation_failed");
    page("outcome=maybe")
        .await
        .assert_problem(422, "validation_failed");
    page("from=yesterday")
        .await
        .assert_problem(422, "validation_failed");
    page("colour=red")
        .await
        .assert_problem(422, "validation_failed");
    app.get("/v1/audit", &app.reseller("alpha"))
        .await
        .assert_problem(403, "forbidden");
    app.get("/v1/audit", &app.admin())
        .await
        .assert_problem(403, "forbidden");
    app.get("/v1/audit/verify", &app.admin())
        .await
        .assert_problem(403, "forbidden");
}

both!(the_database_refuses_to_edit_or_delete_events);
async fn the_database_refuses_to_edit_or_delete_events(app: TestApp) {
    assert!(app
        .db
        .execute("UPDATE audit_events SET action = 'x' WHERE seq = 1")
        .is_err());
    assert!(app
        .db
        .execute("DELETE FROM audit_events WHERE seq = 5")
        .is_err());
    if app.backend == crate::helpers::Backend::Postgres {
        assert!(app.db.execute("TRUNCATE audit_events").is_err());
    }
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true);
    assert_eq!(v.body["events_checked"], 5);

    // With the triggers bypassed, an edit is caught by verification.
    let edit = match app.backend {
        crate::helpers::Backend::Sqlite => {
            "DROP TRIGGER audit_events_no_update; UPDATE audit_events SET event = replace(event, 'Kaspersky', 'Friendly') WHERE seq = 2;"
        }
        crate::helpers::Backend::Postgres => {
            "ALTER TABLE audit_events DISABLE TRIGGER USER; UPDATE audit_events SET event = replace(event, 'Kaspersky', 'Friendly') WHERE seq = 2;"
        }
    };
    app.db.execute(edit).unwrap();
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], false, "{}", v.text);
    assert_eq!(v.body["first_invalid_seq"], 2, "{}", v.text);
    assert_eq!(v.body["reason"], "hash_mismatch");
}

both!(concurrent_writers_keep_one_gapless_chain);
async fn concurrent_writers_keep_one_gapless_chain(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "DE", false).await;
    app.add_oem_firewall().await;
    let requests = (0..24).map(|i| {
        let app = &app;
        async move {
            if i % 6 == 0 {
                app.put(&format!("/v1/organizations/org-{i}"), &app.admin(), json!({"name": format!("Org {i}")}))
                    .await
            } else {
                let reseller = if i % 2 == 0 { "alpha" } else { "beta" };
                let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                                  "customer": {"id": format!("c-{i}"), "name": "n", "country": "US"}});
                app.preflight(reseller, body).await
            }
        }
    });
    let replies = futures_util::future::join_all(requests).await;
    assert!(
        replies.iter().all(|r| r.status.is_success()),
        "every write succeeds"
    );
    let mut seqs: Vec<i64> = replies
        .iter()
        .filter_map(|r| r.body["decision"]["audit_seq"].as_i64())
        .collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 20, "each decision has its own event");
    let events = app.all_events().await;
    assert_eq!(
        events.len(),
        10 + 24,
        "the set-up (5 shipped + 5 ours) and the 24 writes"
    );
    assert!(audit::verify(&events).ok);
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

/// GET /v1/audit with an `Accept` of an export format: the whole body.
pub(crate) async fn export(app: &TestApp, query: &str, accept: &str) -> (String, String) {
    let mut resp = app
        .client
        .get(format!("{}/v1/audit{query}", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.compliance())))
        .insert_header(("accept", accept))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.body().limit(64 * 1024 * 1024).await.unwrap();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

both!(exports_stream_ndjson_and_csv_with_the_same_filters);
async fn exports_stream_ndjson_and_csv_with_the_same_filters(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    for (name, country) in [
        // No line break: a control character in a name is refused (errors.rs).
        ("Smith, \"Jr\" & Co Ltd", "US"),
        ("=HYPERLINK(\"x\")", "US"),
        ("Plain", "DE"),
    ] {
        let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                          "customer": {"id": "c", "name": name, "country": country, "us_person": false}});
        assert_eq!(app.preflight("alpha", body).await.status, 200);
    }
    let (kind, ndjson) = export(&app, "", "application/x-ndjson").await;
    assert_eq!(kind, "application/x-ndjson");
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, app.all_events().await, "the export is the trail");
    assert!(audit::verify(&lines).ok);

    let (kind, csv) = export(&app, "", "text/csv").await;
    assert_eq!(kind, "text/csv; charset=utf-8");
    let mut reader = csv_rows(&csv);
    let header = reader.remove(0);
    assert_eq!(header[0], "seq");
    assert_eq!(header.len(), 24);
    assert_eq!(reader.len(), lines.len(), "one row per event");
    assert!(
        reader.iter().all(|r| r.len() == header.len()),
        "every row has every column"
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let denied: Vec<&Vec<String>> = reader
        .iter()
        .filter(|r| r[col("outcome")] == "deny")
        .collect();
    assert_eq!(denied.len(), 2);
    assert!(denied[0][col("reasons")]
        .starts_with("designated_lineage:us-icts-kaspersky-2024:full-cutoff"));
    let subject: serde_json::Value = serde_json::from_str(&denied[0][col("subject")]).unwrap();
    assert_eq!(
        subject["customer"]["name"], "Smith, \"Jr\" & Co Ltd",
        "quoted, commas and quotes survive"
    );
    assert_eq!(denied[1][col("customer_id")], "c");
    assert!(
        !csv.contains("\n=HYPERLINK") && !csv.contains(",=HYPERLINK"),
        "no cell starts a formula"
    );

    let (_, filtered) = export(&app, "?outcome=deny", "application/x-ndjson").await;
    assert_eq!(filtered.lines().count(), 2);
    let (_, filtered_csv) = export(&app, "?action=catalog.*", "text/csv").await;
    assert_eq!(csv_rows(&filtered_csv).len(), 1 + 9);
}

/// A small RFC 4180 reader for the test.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}
