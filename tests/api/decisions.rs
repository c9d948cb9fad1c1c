//! Preflight decisions through the HTTP API.

use serde_json::{json, Value};

use crate::both;
use crate::helpers::TestApp;

fn ask(
    transaction: &str,
    product: &str,
    country: &str,
    us_person: Option<bool>,
    as_of: Option<&str>,
) -> Value {
    let mut customer = json!({"id": "cust-1", "name": "Jane Roe", "country": country});
    if let Some(p) = us_person {
        customer["us_person"] = json!(p);
    }
    let mut body = json!({"transaction": transaction, "product": product, "customer": customer});
    if let Some(t) = as_of {
        body["as_of"] = json!(t);
    }
    body
}

both!(an_oem_engine_is_refused_for_a_us_customer_with_its_path_and_citation);
async fn an_oem_engine_is_refused_for_a_us_customer_with_its_path_and_citation(app: TestApp) {
    app.register("acme-resale", "DE", false).await;
    app.add_oem_firewall().await;

    let us = app
        .preflight("acme-resale", ask("issue", "ACME-FW-K", "US", None, None))
        .await;
    assert_eq!(us.status, 200, "{}", us.text);
    let d = &us.body["decision"];
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["transaction"], "issue");
    assert_eq!(d["constraints"], json!({"not_after": null}));
    assert!(d["audit_seq"].as_i64().unwrap() > 0);
    assert!(d["policy_version"].is_string());
    let reason = &d["reasons"][0];
    assert_eq!(d["reasons"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(reason["code"], "designated_lineage");
    assert_eq!(reason["designation"], "us-icts-kaspersky-2024");
    assert_eq!(reason["rule"], "full-cutoff");
    assert_eq!(reason["citation"], "89 FR 52434");
    assert_eq!(reason["effective_from"], "2024-09-29T04:00:00Z");
    assert_eq!(reason["party"], "customer");
    assert_eq!(
        reason["path"],
        json!([{"kind": "product", "id": "ACME-FW-K"},
               {"kind": "product", "id": "KAV-ENGINE", "via": "component"},
               {"kind": "organization", "id": "ao-kaspersky-lab", "via": "vendor"}])
    );

    let de = app
        .preflight(
            "acme-resale",
            ask("issue", "ACME-FW-K", "DE", Some(false), None),
        )
        .await;
    assert_eq!(de.body["decision"]["outcome"], "allow", "{}", de.text);
    assert_eq!(de.body["decision"]["reasons"], json!([]));

    // The decision can be read back by its tenant.
    let id = d["id"].as_str().unwrap();
    let read = app
        .get(&format!("/v1/decisions/{id}"), &app.reseller("acme-resale"))
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(&read.body["decision"], d);
}

both!(the_ban_dates_hold_to_the_second_over_http);
async fn the_ban_dates_hold_to_the_second_over_http(app: TestApp) {
    app.register("eu-resale", "DE", false).await;
    app.add_oem_firewall().await;
    let outcome = |r: &crate::helpers::Reply| {
        r.body["decision"]["outcome"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };

    let before = app
        .preflight(
            "eu-resale",
            ask(
                "issue",
                "ACME-FW-K",
                "US",
                None,
                Some("2024-07-19T23:59:59-04:00"),
            ),
        )
        .await;
    assert_eq!(outcome(&before), "allow", "{}", before.text);
    assert_eq!(
        before.body["decision"]["constraints"]["not_after"],
        "2024-09-29T04:00:00Z"
    );
    assert_eq!(
        before.body["decision"]["reasons"][0]["code"],
        "service_ends"
    );
    assert_eq!(before.body["decision"]["as_of"], "2024-07-20T03:59:59Z");

    let at = app
        .preflight(
            "eu-resale",
            ask(
                "issue",
                "ACME-FW-K",
                "US",
                None,
                Some("2024-07-20T00:00:00-04:00"),
            ),
        )
        .await;
    assert_eq!(outcome(&at), "deny");
    assert_eq!(at.body["decision"]["reasons"][0]["rule"], "new-agreements");

    // A renewal between the dates is a continuation, cut at the full cut-off.
    let renew = app
        .preflight(
            "eu-resale",
            ask(
                "renew",
                "ACME-FW-K",
                "PR",
                None,
                Some("2024-09-29T03:59:59Z"),
            ),
        )
        .await;
    assert_eq!(outcome(&renew), "allow");
    assert_eq!(
        renew.body["decision"]["constraints"]["not_after"],
        "2024-09-29T04:00:00Z"
    );
    let renew = app
        .preflight(
            "eu-resale",
            ask(
                "renew",
                "ACME-FW-K",
                "PR",
                None,
                Some("2024-09-29T04:00:00Z"),
            ),
        )
        .await;
    assert_eq!(outcome(&renew), "deny");
    assert_eq!(renew.body["decision"]["reasons"][0]["rule"], "full-cutoff");
}

both!(both_parties_count_and_unknown_nexus_goes_to_review);
async fn both_parties_count_and_unknown_nexus_goes_to_review(app: TestApp) {
    app.register("us-integrator", "US", true).await;
    app.register("br-resale", "BR", false).await;
    app.add_oem_firewall().await;

    let r = app
        .preflight(
            "us-integrator",
            ask("issue", "ACME-FW-K", "DE", Some(false), None),
        )
        .await;
    assert_eq!(r.body["decision"]["outcome"], "deny");
    assert_eq!(r.body["decision"]["reasons"][0]["party"], "reseller");

    let r = app
        .preflight("br-resale", ask("issue", "ACME-FW-K", "BR", None, None))
        .await;
    assert_eq!(r.body["decision"]["outcome"], "review", "{}", r.text);
    assert_eq!(r.body["decision"]["reasons"][0]["code"], "nexus_unknown");
    assert_eq!(r.body["decision"]["reasons"][0]["party"], "customer");

    // A U.S. citizen abroad.
    let r = app
        .preflight(
            "br-resale",
            ask("issue", "ACME-FW-K", "BR", Some(true), None),
        )
        .await;
    assert_eq!(r.body["decision"]["outcome"], "deny");
}

both!(a_designation_added_at_run_time_in_another_time_zone_applies_at_once);
async fn a_designation_added_at_run_time_in_another_time_zone_applies_at_once(app: TestApp) {
    app.register("jp-resale", "JP", false).await;
    app.admin_put(
        "/v1/organizations/shady-soft",
        json!({"name": "Shady Soft", "country": "KP"}),
    )
    .await;
    app.admin_put(
        "/v1/organizations/shady-japan",
        json!({"name": "Shady Japan KK", "country": "JP"}),
    )
    .await;
    app.admin_put(
        "/v1/organizations/shady-japan/relationships/shady-soft",
        json!({"kind": "subsidiary_of"}),
    )
    .await;
    app.admin_put(
        "/v1/products/SHADY-AV",
        json!({"name": "Shady AV", "vendor": "shady-japan", "category": "antivirus"}),
    )
    .await;
    let customer_jp = |as_of: &str| ask("issue", "SHADY-AV", "JP", None, Some(as_of));

    let r = app
        .preflight("jp-resale", customer_jp("2025-04-01T00:00:00Z"))
        .await;
    assert_eq!(r.body["decision"]["outcome"], "allow", "{}", r.text);
    let version_before = r.body["decision"]["policy_version"].clone();

    let created = app
        .put(
            "/v1/designations/jp-shady-2025",
            &app.admin(),
            json!({"title": "Shady Soft designation", "authority": "METI", "citation": "METI 2025-1",
                   "organizations": ["shady-soft"], "covers_affiliates": true, "jurisdiction": "JP",
                   "rules": [{"id": "all", "transactions": ["issue", "renew"],
                              "effective_from": "2025-04-01T09:00:00", "time_zone": "Asia/Tokyo"}]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);

    // 09:00 in Tokyo is 00:00 UTC: one second before is allowed, the instant is not.
    let r = app
        .preflight("jp-resale", customer_jp("2025-03-31T23:59:59Z"))
        .await;
    assert_eq!(r.body["decision"]["outcome"], "allow");
    let r = app
        .preflight("jp-resale", customer_jp("2025-04-01T00:00:00Z"))
        .await;
    assert_eq!(r.body["decision"]["outcome"], "deny", "{}", r.text);
    assert_ne!(r.body["decision"]["policy_version"], version_before);
    let reason = &r.body["decision"]["reasons"][0];
    assert_eq!(reason["effective_from"], "2025-04-01T00:00:00Z");
    assert_eq!(
        reason["path"],
        json!([{"kind": "product", "id": "SHADY-AV"},
               {"kind": "organization", "id": "shady-japan", "via": "vendor"},
               {"kind": "organization", "id": "shady-soft", "via": "subsidiary_of"}])
    );
}

both!(decisions_are_tenant_scoped);
async fn decisions_are_tenant_scoped(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.register("beta", "FR", false).await;
    app.add_oem_firewall().await;
    let r = app
        .preflight("alpha", ask("issue", "ACME-FW-K", "US", None, None))
        .await;
    let id = r.body["decision"]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/decisions/{id}");

    assert_eq!(app.get(&path, &app.reseller("alpha")).await.status, 200);
    let other = app.get(&path, &app.reseller("beta")).await;
    other.assert_problem(404, "not_found");
    let missing = app
        .get(
            "/v1/decisions/00000000-0000-0000-0000-000000000000",
            &app.reseller("beta"),
        )
        .await;
    assert_eq!(
        other.text, missing.text,
        "a 404 must not reveal that the decision exists"
    );
    assert_eq!(app.get(&path, &app.compliance()).await.status, 200);
    app.get(&path, &app.admin())
        .await
        .assert_problem(403, "forbidden");

    // Roles and tenants.
    app.post(
        "/v1/decisions",
        &app.admin(),
        ask("issue", "ACME-FW-K", "US", None, None),
    )
    .await
    .assert_problem(403, "forbidden");
    app.preflight("ghost", ask("issue", "ACME-FW-K", "US", None, None))
        .await
        .assert_problem(403, "unknown_reseller");
    let integrator = app.token(gatekeeper::auth::Role::Integrator, Some("beta"));
    let r = app
        .post(
            "/v1/decisions",
            &integrator,
            ask("issue", "ACME-FW-K", "DE", Some(false), None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

both!(bad_preflights_are_422_and_record_nothing);
async fn bad_preflights_are_422_and_record_nothing(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let before = app.all_events().await.len();
    let cases: Vec<(Value, &str)> = vec![
        (ask("issue", "NOPE", "US", None, None), "product"),
        (ask("lease", "ACME-FW-K", "US", None, None), "transaction"),
        (
            ask("issue", "ACME-FW-K", "USA", None, None),
            "customer.country",
        ),
        (
            ask("issue", "ACME-FW-K", "US", None, Some("yesterday")),
            "as_of",
        ),
        (
            json!({"transaction": "issue", "product": "ACME-FW-K", "customer": {"id": "c", "name": "n"}}),
            "customer.country",
        ),
        (
            json!({"transaction": "issue", "product": "ACME-FW-K",
                "customer": {"id": "c", "name": "", "country": "US"}}),
            "customer.name",
        ),
        (
            json!({"transaction": "issue", "product": "ACME-FW-K", "outcome": "allow",
                "customer": {"id": "c", "name": "n", "country": "US"}}),
            "outcome",
        ),
    ];
    for (body, field) in cases {
        let r = app.preflight("alpha", body.clone()).await;
        r.assert_problem(422, "validation_failed");
        assert!(
            r.fields().iter().any(|f| f == field),
            "{body}: expected field {field}, got {}",
            r.text
        );
    }
    assert_eq!(app.all_events().await.len(), before);
}

both!(replicas_on_one_database_honour_each_others_changes_at_once);
async fn replicas_on_one_database_honour_each_others_changes_at_once(app: TestApp) {
    let b = app.replica();
    let b = app.via(&b);
    app.add_oem_firewall().await;
    // Warm B's snapshot, then change the catalogue through A only.
    let admin = app.admin();
    assert_eq!(
        b.send("GET", "/v1/products/ACME-FW-K", &admin, None)
            .await
            .status,
        200
    );
    app.register("late-reseller", "DE", false).await;
    app.admin_put(
        "/v1/products/ACME-AV2",
        json!({"name": "AV 2", "vendor": "ao-kaspersky-lab", "category": "antivirus"}),
    )
    .await;

    // B knows the new reseller and product on the very next request.
    assert_eq!(
        b.send("GET", "/v1/products/ACME-AV2", &admin, None)
            .await
            .status,
        200
    );
    let body = ask("issue", "ACME-AV2", "US", None, None);
    let r = b
        .send(
            "POST",
            "/v1/decisions",
            &app.reseller("late-reseller"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["decision"]["outcome"], "deny");

    // A designation lifted through A (its rule moved far ahead) applies on B at once.
    let mut d = app
        .get("/v1/designations/us-icts-kaspersky-2024", &admin)
        .await
        .body;
    d.as_object_mut().unwrap().remove("id");
    d["rules"][0]["effective_from"] = json!("2099-07-20T00:00:00");
    d["rules"][1]["effective_from"] = json!("2099-09-29T00:00:00");
    app.admin_put("/v1/designations/us-icts-kaspersky-2024", d)
        .await;
    let body = ask("issue", "ACME-AV2", "US", None, None);
    let r = b
        .send(
            "POST",
            "/v1/decisions",
            &app.reseller("late-reseller"),
            Some(body),
        )
        .await;
    assert_eq!(r.body["decision"]["outcome"], "allow", "{}", r.text);
    let version = app.get("/v1/designations", &admin).await.body["catalog_version"].clone();
    assert_eq!(
        r.body["decision"]["policy_version"], version,
        "decided on the newest catalogue"
    );
    let v = app.get("/v1/audit/verify", &app.compliance()).await;
    assert_eq!(v.body["ok"], true);
}

/// PUTs a product as admin.
async fn put_product(
    app: &TestApp,
    sku: &str,
    vendor: &str,
    category: &str,
    components: &[&str],
    white_label_of: Option<&str>,
) {
    let mut body = json!({"name": format!("{sku} product"), "vendor": vendor, "category": category,
                          "components": components});
    if let Some(w) = white_label_of {
        body["white_label_of"] = json!(w);
    }
    app.admin_put(&format!("/v1/products/{sku}"), body).await;
}

/// A path as the API writes it, from `"A > component:B > vendor:org"`.
fn path_json(s: &str) -> Value {
    let mut steps = s.split(" > ");
    let mut out = vec![json!({"kind": "product", "id": steps.next().unwrap()})];
    for step in steps {
        let (via, id) = step.split_once(':').unwrap();
        let kind = match via {
            "component" | "white_label_of" => "product",
            _ => "organization",
        };
        out.push(json!({"kind": kind, "id": id, "via": via}));
    }
    Value::Array(out)
}

both!(a_carve_out_shelters_the_supplied_product_not_the_label);
async fn a_carve_out_shelters_the_supplied_product_not_the_label(app: TestApp) {
    app.register("eu-resale", "DE", false).await;
    app.add_oem_firewall().await;
    put_product(&app, "KAV", "kaspersky-lab-inc", "antivirus", &[], None).await;
    put_product(
        &app,
        "KTI",
        "ao-kaspersky-lab",
        "threat_intelligence",
        &[],
        None,
    )
    .await;
    put_product(
        &app,
        "KTI-PLUS",
        "ao-kaspersky-lab",
        "threat_intelligence",
        &["KAV-ENGINE"],
        None,
    )
    .await;
    for category in ["threat_intelligence", "security_training", "consulting"] {
        put_product(
            &app,
            &format!("ACME-{category}"),
            "acme",
            category,
            &["KAV-ENGINE"],
            None,
        )
        .await;
    }
    put_product(
        &app,
        "ACME-WL-TI",
        "acme",
        "threat_intelligence",
        &[],
        Some("KAV"),
    )
    .await;
    put_product(&app, "ACME-SUITE", "acme", "suite", &["KTI-PLUS"], None).await;
    put_product(&app, "ACME-SIEM", "acme", "siem", &["KTI"], None).await;

    let denied = [
        (
            "ACME-threat_intelligence",
            "ACME-threat_intelligence > component:KAV-ENGINE > vendor:ao-kaspersky-lab",
        ),
        (
            "ACME-security_training",
            "ACME-security_training > component:KAV-ENGINE > vendor:ao-kaspersky-lab",
        ),
        (
            "ACME-consulting",
            "ACME-consulting > component:KAV-ENGINE > vendor:ao-kaspersky-lab",
        ),
        (
            "ACME-WL-TI",
            "ACME-WL-TI > white_label_of:KAV > vendor:kaspersky-lab-inc",
        ),
        (
            "KTI-PLUS",
            "KTI-PLUS > component:KAV-ENGINE > vendor:ao-kaspersky-lab",
        ),
        (
            "ACME-SUITE",
            "ACME-SUITE > component:KTI-PLUS > component:KAV-ENGINE > vendor:ao-kaspersky-lab",
        ),
    ];
    for (product, path) in denied {
        denied_for_a_us_customer(&app, product, path).await;
    }
    // Built only on the carved-out feed: allowed, and the designation does not apply at all.
    for product in ["ACME-SIEM", "KTI"] {
        not_reached(&app, product).await;
    }
}

/// A U.S. customer's issue of `product` through `eu-resale`: denied by one
/// `designated_lineage` reason with `path`.
async fn denied_for_a_us_customer(app: &TestApp, product: &str, path: &str) {
    let r = app
        .preflight("eu-resale", ask("issue", product, "US", None, None))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.body["decision"];
    assert_eq!(d["outcome"], "deny", "{product}: {d}");
    assert_eq!(d["reasons"].as_array().unwrap().len(), 1, "{product}: {d}");
    assert_eq!(d["reasons"][0]["code"], "designated_lineage", "{product}");
    assert_eq!(d["reasons"][0]["path"], path_json(path), "{product}");
}

/// The same for a product no designation reaches: allowed, no reason, no cap.
async fn not_reached(app: &TestApp, product: &str) {
    let r = app
        .preflight("eu-resale", ask("issue", product, "US", None, None))
        .await;
    let d = &r.body["decision"];
    assert_eq!(d["outcome"], "allow", "{product}: {}", r.text);
    assert_eq!(d["reasons"], json!([]), "{product}");
    assert_eq!(d["constraints"]["not_after"], Value::Null, "{product}");
}

both!(succession_carries_to_the_successor_and_its_group_never_back);
async fn succession_carries_to_the_successor_and_its_group_never_back(app: TestApp) {
    app.register("eu-resale", "DE", false).await;
    for (id, country) in [
        ("kl-successor", "RU"),
        ("succ-parent", "AE"),
        ("kl-assignee", "GB"),
        ("old-kaspersky", "RU"),
        ("kl-assignor", "RU"),
    ] {
        app.admin_put(
            &format!("/v1/organizations/{id}"),
            json!({"name": format!("{id} name"), "country": country}),
        )
        .await;
    }
    for (source, kind, target) in [
        ("kl-successor", "successor_of", "ao-kaspersky-lab"),
        ("kl-successor", "subsidiary_of", "succ-parent"),
        ("kl-assignee", "assignee_of", "kaspersky-labs-limited"),
        // Kaspersky companies that succeeded or took an assignment from others.
        ("ooo-kaspersky-group", "successor_of", "old-kaspersky"),
        ("ao-kaspersky-lab", "assignee_of", "kl-assignor"),
    ] {
        app.admin_put(
            &format!("/v1/organizations/{source}/relationships/{target}"),
            json!({"kind": kind}),
        )
        .await;
    }
    for (sku, vendor) in [
        ("SUCC-AV", "kl-successor"),
        ("SUCC-PARENT-AV", "succ-parent"),
        ("ASSIGN-AV", "kl-assignee"),
        ("PRED-AV", "old-kaspersky"),
        ("ASSIGNOR-AV", "kl-assignor"),
    ] {
        put_product(&app, sku, vendor, "antivirus", &[], None).await;
    }

    for (product, path) in [
        (
            "SUCC-AV",
            "SUCC-AV > vendor:kl-successor > successor_of:ao-kaspersky-lab",
        ),
        (
            "SUCC-PARENT-AV",
            "SUCC-PARENT-AV > vendor:succ-parent > parent_of:kl-successor > successor_of:ao-kaspersky-lab",
        ),
        (
            "ASSIGN-AV",
            "ASSIGN-AV > vendor:kl-assignee > assignee_of:kaspersky-labs-limited",
        ),
    ] {
        denied_for_a_us_customer(&app, product, path).await;
    }
    for product in ["PRED-AV", "ASSIGNOR-AV"] {
        not_reached(&app, product).await;
    }
}

both!(an_unknown_nexus_is_capped_at_the_service_end_like_a_known_one);
async fn an_unknown_nexus_is_capped_at_the_service_end_like_a_known_one(app: TestApp) {
    app.register("eu-resale", "DE", false).await;
    app.add_oem_firewall().await;
    // Before the first ban date, a Brazilian customer whose U.S. status is unknown.
    let as_of = Some("2024-07-01T00:00:00Z");
    let r = app
        .preflight("eu-resale", ask("issue", "ACME-FW-K", "BR", None, as_of))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.body["decision"];
    assert_eq!(d["outcome"], "allow", "{d}");
    assert_eq!(d["as_of"], "2024-07-01T00:00:00Z", "{d}");
    assert_eq!(d["constraints"]["not_after"], "2024-09-29T04:00:00Z", "{d}");
    let reasons = d["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{d}");
    assert_eq!(reasons[0]["code"], "service_ends");
    assert_eq!(reasons[0]["party"], "customer");
    assert_eq!(reasons[0]["rule"], "full-cutoff");
    assert_eq!(reasons[0]["effective_from"], "2024-09-29T04:00:00Z");
    assert_eq!(
        reasons[0]["path"],
        path_json("ACME-FW-K > component:KAV-ENGINE > vendor:ao-kaspersky-lab")
    );

    // The same customer attesting it is not a U.S. person: no nexus, no cap.
    let r = app
        .preflight(
            "eu-resale",
            ask("issue", "ACME-FW-K", "BR", Some(false), as_of),
        )
        .await;
    let d = &r.body["decision"];
    assert_eq!(d["outcome"], "allow", "{}", r.text);
    assert_eq!(d["constraints"]["not_after"], Value::Null, "{d}");
    assert_eq!(d["reasons"], json!([]), "{d}");
}
