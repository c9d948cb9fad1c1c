//! The audit trail: every decision and catalogue change is one event in a
//! gapless hash chain that the database refuses to edit.

use gatekeeper::audit;
use serde_json::json;

use crate::both;
use crate::helpers::{Backend, TestApp, AUDIENCE, ISSUER};

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
    assert_eq!(header.len(), 25);
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

/// A what-if preflight (`as_of`) and a plain one, both allowed, as
/// `(what_if, plain)` decisions.
async fn a_what_if_and_a_plain_allow(app: &TestApp) -> (serde_json::Value, serde_json::Value) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let ask = |as_of: Option<&str>| {
        let mut body = json!({"transaction": "issue", "product": "ACME-FW-K",
                              "customer": {"id": "c-1", "name": "Jane Roe", "country": "DE", "us_person": false}});
        if let Some(t) = as_of {
            body["as_of"] = json!(t);
        }
        body
    };
    let what_if = app
        .preflight("alpha", ask(Some("2024-07-01T00:00:00Z")))
        .await;
    assert_eq!(what_if.status, 200, "{}", what_if.text);
    let plain = app.preflight("alpha", ask(None)).await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    let (what_if, plain) = (
        what_if.body["decision"].clone(),
        plain.body["decision"].clone(),
    );
    assert_eq!(what_if["outcome"], "allow", "{what_if}");
    assert_eq!(plain["outcome"], "allow", "{plain}");
    (what_if, plain)
}

/// The decision ids in a listing's page, its NDJSON export and its CSV
/// export with `query`, which must agree.
async fn decision_ids(app: &TestApp, query: &str) -> Vec<String> {
    let page = app
        .get(&format!("/v1/audit{query}"), &app.compliance())
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let ids = |events: Vec<serde_json::Value>| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e["decision"]["id"].as_str().map(String::from))
            .collect()
    };
    let listed = ids(page.body["events"].as_array().cloned().unwrap());
    let (_, ndjson) = export(app, query, "application/x-ndjson").await;
    let exported = ids(ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect());
    assert_eq!(listed, exported, "the NDJSON export of {query}");
    let (_, csv) = export(app, query, "text/csv").await;
    let mut rows = csv_rows(&csv);
    let header = rows.remove(0);
    let col = header.iter().position(|h| h == "decision_id").unwrap();
    let in_csv: Vec<String> = rows
        .into_iter()
        .map(|r| r[col].clone())
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(listed, in_csv, "the CSV export of {query}");
    listed
}

both!(a_what_if_decision_is_marked_and_left_out_of_outcome_filters);
async fn a_what_if_decision_is_marked_and_left_out_of_outcome_filters(app: TestApp) {
    let (what_if, plain) = a_what_if_and_a_plain_allow(&app).await;
    let (w, p) = (
        what_if["id"].as_str().unwrap().to_string(),
        plain["id"].as_str().unwrap().to_string(),
    );
    // Marked in the API; a decision at the server's instant is as before.
    assert_eq!(what_if["what_if"], true, "{what_if}");
    assert!(plain.get("what_if").is_none(), "{plain}");
    let read = app
        .get(&format!("/v1/decisions/{w}"), &app.reseller("alpha"))
        .await;
    assert_eq!(read.body["decision"]["what_if"], true, "{}", read.text);
    assert_eq!(read.body["decision"], what_if);
    let read = app
        .get(&format!("/v1/decisions/{p}"), &app.compliance())
        .await;
    assert_eq!(read.body["decision"], plain, "{}", read.text);
    // Marked in its audit event.
    let events = app.all_events().await;
    let event_of = |id: &str| {
        events
            .iter()
            .find(|e| e["decision"]["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(event_of(&w)["decision"]["what_if"], true);
    assert_eq!(event_of(&w)["subject"]["what_if"], true);
    assert!(event_of(&p)["decision"].get("what_if").is_none());
    // Marked in the CSV export: `true`, `false`, or empty for an event
    // that records no decision.
    let (_, csv) = export(&app, "", "text/csv").await;
    let mut rows = csv_rows(&csv);
    let header = rows.remove(0);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mark = |id: &str| {
        rows.iter()
            .find(|r| r[col("decision_id")] == id)
            .map(|r| r[col("what_if")].clone())
            .unwrap()
    };
    assert_eq!((mark(&w).as_str(), mark(&p).as_str()), ("true", "false"));
    assert!(rows
        .iter()
        .filter(|r| r[col("action")].starts_with("catalog."))
        .all(|r| r[col("what_if")].is_empty()));

    // Outcome filters count transactions: the what-if is left out unless
    // asked for, and `what_if=true` selects what-ifs only.
    assert_eq!(decision_ids(&app, "?outcome=allow").await, vec![p.clone()]);
    assert_eq!(
        decision_ids(&app, "?outcome=allow&what_if=false").await,
        vec![p.clone()]
    );
    assert_eq!(
        decision_ids(&app, "?outcome=allow&what_if=true").await,
        vec![w.clone()]
    );
    assert_eq!(decision_ids(&app, "?what_if=true").await, vec![w.clone()]);
    assert_eq!(
        decision_ids(&app, "?outcome=deny&what_if=true").await,
        Vec::<String>::new()
    );
    // Unfiltered, the trail is whole.
    assert_eq!(decision_ids(&app, "").await, vec![w.clone(), p.clone()]);
    assert_eq!(
        decision_ids(&app, "?action=decision.preflight").await,
        vec![w, p]
    );
    let bad = app.get("/v1/audit?what_if=yes", &app.compliance()).await;
    bad.assert_problem(422, "validation_failed");
    assert_eq!(bad.fields(), vec!["what_if"]);
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

both!(the_what_if_column_is_backfilled_from_the_stored_events);
async fn the_what_if_column_is_backfilled_from_the_stored_events(app: TestApp) {
    let (what_if, plain) = a_what_if_and_a_plain_allow(&app).await;
    // A database from before the column: its migration reverted, then run
    // again over the events already stored.
    let (down, up) = match app.backend {
        Backend::Sqlite => (
            include_str!("../../migrations/sqlite/2026-11-28-000001_audit_what_if/down.sql"),
            include_str!("../../migrations/sqlite/2026-11-28-000001_audit_what_if/up.sql"),
        ),
        Backend::Postgres => (
            include_str!("../../migrations/postgres/2026-11-28-000001_audit_what_if/down.sql"),
            include_str!("../../migrations/postgres/2026-11-28-000001_audit_what_if/up.sql"),
        ),
    };
    app.db.execute(down).unwrap();
    app.db.execute(up).unwrap();
    assert_eq!(
        decision_ids(&app, "?outcome=allow").await,
        vec![plain["id"].as_str().unwrap().to_string()]
    );
    assert_eq!(
        decision_ids(&app, "?what_if=true").await,
        vec![what_if["id"].as_str().unwrap().to_string()]
    );
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
    // And the events are append-only again.
    let refused = app
        .db
        .execute("UPDATE audit_events SET what_if = FALSE WHERE what_if");
    assert!(refused.is_err(), "the trigger is back");
}

both!(decisions_read_the_same_from_their_events_across_the_migration);
/// The migration that stores a decision only in its event: reverted (the
/// decisions get their bodies back from their events) and run again, every
/// decision reads as before and the chain still verifies.
async fn decisions_read_the_same_from_their_events_across_the_migration(app: TestApp) {
    let (what_if, plain) = a_what_if_and_a_plain_allow(&app).await;
    let read = |id: &serde_json::Value| {
        let path = format!("/v1/decisions/{}", id.as_str().unwrap());
        let app = &app;
        async move { app.get(&path, &app.compliance()).await }
    };
    let before = (read(&what_if["id"]).await, read(&plain["id"]).await);
    assert_eq!(before.0.status, 200, "{}", before.0.text);
    assert_eq!(before.1.body["decision"], plain);
    let (down, up) = match app.backend {
        Backend::Sqlite => (
            include_str!("../../migrations/sqlite/2026-12-05-000001_rows_once/down.sql"),
            include_str!("../../migrations/sqlite/2026-12-05-000001_rows_once/up.sql"),
        ),
        Backend::Postgres => (
            include_str!("../../migrations/postgres/2026-12-05-000001_rows_once/down.sql"),
            include_str!("../../migrations/postgres/2026-12-05-000001_rows_once/up.sql"),
        ),
    };
    app.db.execute(down).unwrap();
    // Reverted, each decision row holds its event's decision again.
    let count = |sql: &str| app.db.count(sql);
    assert_eq!(count("SELECT count(*) AS n FROM decisions"), 2);
    let plain_body = plain.to_string().replace('\'', "''");
    let found = count(&format!(
        "SELECT count(*) AS n FROM decisions WHERE body = '{plain_body}'"
    ));
    assert_eq!(
        found, 1,
        "the body is the event's decision, as the event has it"
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM decisions WHERE body = ''"),
        0
    );
    app.db.execute(up).unwrap();
    let after = (read(&what_if["id"]).await, read(&plain["id"]).await);
    assert_eq!((after.0.text, after.1.text), (before.0.text, before.1.text));
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

/// Whether a spreadsheet could run `cell`: it starts with a formula
/// character (or its full-width form), TAB, CR or LF, or with white space
/// before one.
fn runnable(cell: &str) -> bool {
    let triggers = ['=', '+', '-', '@', '＝', '＋', '－', '＠', '\t', '\r', '\n'];
    cell.starts_with(triggers) || cell.trim_start().starts_with(triggers)
}

both!(csv_cells_a_spreadsheet_could_run_are_neutralised);
async fn csv_cells_a_spreadsheet_could_run_are_neutralised(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    // Customer references and token subjects land in cells of their own.
    let ids = [" =1+1", "  @SUM(A1)", "＝1+1", "＠x", "－1+2", "+1+1"];
    let subs = ["\t=cmd", "\r@x", "\n=1", " -2+3"];
    let preflight = |id: &str, token: String| {
        let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                          "customer": {"id": id, "name": "n", "country": "DE"}});
        let app = &app;
        async move { app.post("/v1/decisions", &token, body).await }
    };
    for id in ids {
        let r = preflight(id, app.reseller("alpha")).await;
        assert_eq!(r.status, 200, "{id:?}: {}", r.text);
    }
    for sub in subs {
        let now = chrono::Utc::now().timestamp();
        let token = gatekeeper::auth::mint(
            &app.private_pem(),
            &gatekeeper::auth::MintClaims {
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
                sub: sub.into(),
                role: gatekeeper::auth::Role::Reseller,
                reseller: Some("alpha".into()),
                iat: now,
                exp: now + 600,
            },
        )
        .unwrap();
        let r = preflight("plain", token).await;
        assert_eq!(r.status, 200, "{sub:?}: {}", r.text);
    }
    let (_, csv) = export(&app, "?action=decision.preflight", "text/csv").await;
    let mut rows = csv_rows(&csv);
    let header = rows.remove(0);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let column = |name: &str| {
        rows.iter()
            .map(|r| r[col(name)].clone())
            .collect::<Vec<_>>()
    };
    let neutralised = |values: &[&str]| values.iter().map(|v| format!("'{v}")).collect::<Vec<_>>();
    assert_eq!(column("customer_id")[..ids.len()], neutralised(&ids)[..]);
    assert_eq!(column("actor_sub")[ids.len()..], neutralised(&subs)[..]);
    let runnable_cells: Vec<&String> = rows.iter().flatten().filter(|c| runnable(c)).collect();
    assert!(runnable_cells.is_empty(), "{runnable_cells:?}");
}
