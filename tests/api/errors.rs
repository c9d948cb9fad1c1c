//! The error model: problem+json everywhere, 400 vs 422, 413, 404, 405.

use serde_json::{json, Value};

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

/// Percent-encoded text no identifier holds: NUL alone and inside an id,
/// another C0 control, a C1 control, the right-to-left override, the
/// zero-width space, the byte order mark.
const UNPRINTABLE: &[&str] = &[
    "%00",
    "lic%00x",
    "%07",
    "a%C2%85",
    "%E2%80%AEcod.exe",
    "a%E2%80%8Bb",
    "%EF%BB%BFa",
];

/// A reply that must be `status` (`404` or `422`), and never a 5xx.
#[track_caller]
fn refused(r: &crate::helpers::Reply, status: u16, code: &str, what: &str) {
    assert!(
        r.status.as_u16() < 500,
        "{what} is a {}: {}",
        r.status,
        r.text
    );
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
    r.assert_problem(status, code);
}

both!(control_and_format_characters_in_ids_and_cursors_are_404_or_422_never_5xx);
async fn control_and_format_characters_in_ids_and_cursors_are_404_or_422_never_5xx(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let (admin, compliance, reseller) = (app.admin(), app.compliance(), app.reseller("alpha"));
    let before = app.all_events().await.len();
    let renewal = json!({"term_days": 30});
    let approval = json!({"resolution": "reject", "note": "no"});
    for bad in UNPRINTABLE {
        // A path id names nothing: 404, for every reader and every route
        // that looks one up.
        for (token, who) in [(&compliance, "compliance"), (&reseller, "reseller")] {
            for path in [
                format!("/v1/decisions/{bad}"),
                format!("/v1/licenses/{bad}"),
            ] {
                let r = app.get(&path, token).await;
                refused(&r, 404, "not_found", &format!("GET {path} as {who}"));
            }
        }
        let path = format!("/v1/licenses/{bad}/renewals");
        let r = app
            .client
            .post(format!("{}{path}", app.address))
            .insert_header(("authorization", format!("Bearer {reseller}")))
            .insert_header(("idempotency-key", uuid::Uuid::new_v4().to_string()))
            .send_json(&renewal)
            .await
            .unwrap();
        let r = crate::helpers::Reply::read(r).await;
        refused(&r, 404, "not_found", &format!("POST {path}"));
        let path = format!("/v1/reviews/{bad}");
        let r = app.post(&path, &compliance, approval.clone()).await;
        refused(&r, 404, "not_found", &format!("POST {path}"));
        for kind in ["resellers", "organizations", "products", "designations"] {
            let path = format!("/v1/{kind}/{bad}");
            refused(&app.get(&path, &admin).await, 404, "not_found", &path);
            let r = app.put(&path, &admin, json!({"name": "X"})).await;
            refused(&r, 422, "validation_failed", &format!("PUT {path}"));
        }
        for path in [
            format!("/v1/organizations/{bad}/relationships/acme"),
            format!("/v1/organizations/acme/relationships/{bad}"),
        ] {
            refused(&app.get(&path, &admin).await, 404, "not_found", &path);
            let r = app.send("DELETE", &path, Some(&admin), None).await;
            refused(&r, 404, "not_found", &format!("DELETE {path}"));
            let r = app
                .put(&path, &admin, json!({"kind": "affiliate_of"}))
                .await;
            refused(&r, 422, "validation_failed", &format!("PUT {path}"));
        }
        // A cursor or a filter value is 422 naming its parameter.
        for (path, token, field) in [
            (format!("/v1/licenses?cursor={bad}"), &reseller, "cursor"),
            (format!("/v1/licenses?cursor={bad}"), &compliance, "cursor"),
            (format!("/v1/reviews?cursor={bad}"), &compliance, "cursor"),
            (format!("/v1/reviews?status={bad}"), &compliance, "status"),
            (format!("/v1/audit?after={bad}"), &compliance, "after"),
            (format!("/v1/audit?action={bad}"), &compliance, "action"),
            (format!("/v1/audit?reseller={bad}"), &compliance, "reseller"),
            (format!("/v1/audit?outcome={bad}"), &compliance, "outcome"),
            (format!("/v1/audit?from={bad}"), &compliance, "from"),
            (
                format!("/v1/audit/checkpoints?after={bad}"),
                &compliance,
                "after",
            ),
        ] {
            let r = app.get(&path, token).await;
            refused(&r, 422, "validation_failed", &format!("GET {path}"));
            assert_eq!(r.fields(), vec![field], "GET {path}: {}", r.text);
        }
    }
    assert_eq!(app.all_events().await.len(), before, "nothing was recorded");
}

both!(a_customer_id_or_name_with_control_or_format_characters_is_422);
async fn a_customer_id_or_name_with_control_or_format_characters_is_422(app: TestApp) {
    app.register("alpha", "BR", false).await;
    app.add_oem_firewall().await;
    let reseller = app.reseller("alpha");
    let customer =
        |id: &str, name: &str| json!({"id": id, "name": name, "country": "DE", "us_person": false});
    let licence =
        |c: Value| json!({"product": "ACME-FW-K", "seats": 1, "term_days": 30, "customer": c});
    let post = |path: String, token: String, body: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(format!("{}{path}", app.address))
                .insert_header(("authorization", format!("Bearer {token}")))
                .insert_header(("idempotency-key", uuid::Uuid::new_v4().to_string()))
                .send_json(&body)
                .await
                .unwrap();
            crate::helpers::Reply::read(r).await
        }
    };
    // A licence to renew and a review to approve, made with a clean customer.
    let issued = post(
        "/v1/licenses".into(),
        reseller.clone(),
        licence(customer("c-1", "Jane Roe")),
    )
    .await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let renewals = format!(
        "/v1/licenses/{}/renewals",
        issued.body["license"]["id"].as_str().unwrap()
    );
    let mut unknown = licence(customer("br-1", "Exemplo Ltda"));
    unknown["customer"] = json!({"id": "br-1", "name": "Exemplo Ltda", "country": "BR"});
    let in_review = post("/v1/licenses".into(), reseller.clone(), unknown).await;
    assert_eq!(in_review.status, 202, "{}", in_review.text);
    let review = format!(
        "/v1/reviews/{}",
        in_review.body["decision"]["id"].as_str().unwrap()
    );
    let before = app.all_events().await.len();

    let rule = gatekeeper::domain::PlainText::RULE;
    for (id, name, field) in [
        ("c-1\u{0}", "Jane Roe", "customer.id"),
        ("\u{202e}1-c", "Jane Roe", "customer.id"),
        ("c\u{200b}-1", "Jane Roe", "customer.id"),
        ("c-1\u{feff}", "Jane Roe", "customer.id"),
        ("c-1\n", "Jane Roe", "customer.id"),
        ("c-1", "Jane \u{202e}eoR", "customer.name"),
        ("c-1", "Jane\u{0}Roe", "customer.name"),
        ("c-1", "Jane\u{200b}Roe", "customer.name"),
    ] {
        let c = customer(id, name);
        let what = format!("{id:?} / {name:?}");
        let replies = [
            app.preflight(
                "alpha",
                json!({"transaction": "issue", "product": "ACME-FW-K", "customer": c}),
            )
            .await,
            post("/v1/licenses".into(), reseller.clone(), licence(c.clone())).await,
            post(
                renewals.clone(),
                reseller.clone(),
                json!({"term_days": 30, "customer": c}),
            )
            .await,
            post(
                review.clone(),
                app.compliance(),
                json!({"resolution": "approve", "note": "checked", "customer": c}),
            )
            .await,
        ];
        for r in replies {
            r.assert_problem(422, "validation_failed");
            assert_eq!(r.fields(), vec![field], "{what}: {}", r.text);
            if field == "customer.id" {
                assert_eq!(r.body["errors"][0]["message"], rule, "{what}");
            }
        }
    }
    assert_eq!(app.all_events().await.len(), before, "nothing was recorded");
    // A name may hold any letters, and the joiners some scripts spell with
    // (Persian here, with a zero-width non-joiner).
    let r = app
        .preflight(
            "alpha",
            json!({"transaction": "issue", "product": "ACME-FW-K",
                   "customer": customer("c-2", "شرکت می\u{200c}خواهم Müller")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

both!(a_query_parameter_given_twice_is_422_naming_it);
async fn a_query_parameter_given_twice_is_422_naming_it(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let (compliance, reseller) = (app.compliance(), app.reseller("alpha"));
    for (path, token, field) in [
        ("/v1/licenses?limit=1&limit=2", &reseller, "limit"),
        ("/v1/licenses?limit=1&limit=2", &compliance, "limit"),
        (
            "/v1/licenses?cursor=a&limit=5&cursor=a",
            &compliance,
            "cursor",
        ),
        ("/v1/reviews?limit=1&limit=2", &compliance, "limit"),
        ("/v1/reviews?status=open&status=all", &compliance, "status"),
        ("/v1/audit?limit=1&limit=2", &compliance, "limit"),
        (
            "/v1/audit?outcome=deny&outcome=allow",
            &compliance,
            "outcome",
        ),
        (
            "/v1/audit?reseller=alpha&reseller=beta",
            &compliance,
            "reseller",
        ),
        (
            "/v1/audit/checkpoints?limit=1&limit=2",
            &compliance,
            "limit",
        ),
        (
            "/v1/audit/checkpoints?after=0&after=1",
            &compliance,
            "after",
        ),
    ] {
        let r = app.get(path, token).await;
        r.assert_problem(422, "validation_failed");
        assert_eq!(r.fields(), vec![field], "{path}: {}", r.text);
        assert_eq!(
            r.body["errors"][0]["message"], "must be given at most once",
            "{path}"
        );
    }
    // Two parameters given twice are both named; once each is fine.
    let r = app
        .get("/v1/audit?limit=1&after=0&limit=2&after=0", &compliance)
        .await;
    assert_eq!(r.fields(), vec!["after", "limit"], "{}", r.text);
    assert_eq!(
        app.get("/v1/audit?limit=1&after=0", &compliance)
            .await
            .status,
        200
    );
    assert_eq!(app.get("/v1/licenses?limit=1", &reseller).await.status, 200);
}

/// The CRC-32 of gzip (RFC 1952): reflected, polynomial 0xEDB88320.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `data` as a valid gzip member: one stored (uncompressed) DEFLATE block.
fn gzip(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(1); // the last block, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    out
}

both!(a_body_in_a_content_coding_the_service_does_not_decode_is_415);
async fn a_body_in_a_content_coding_the_service_does_not_decode_is_415(app: TestApp) {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the CRC-32 check value");
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let before = app.all_events().await.len();
    let send = |path: &str, token: String, encoding: Option<&str>, body: Vec<u8>| {
        let mut req = app
            .client
            .post(format!("{}{path}", app.address))
            .insert_header(("authorization", format!("Bearer {token}")))
            .insert_header(("content-type", "application/json"));
        if let Some(encoding) = encoding {
            req = req.insert_header(("content-encoding", encoding));
        }
        async move { crate::helpers::Reply::read(req.send_body(body).await.unwrap()).await }
    };
    let preflight = json!({"transaction": "issue", "product": "ACME-FW-K",
                           "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}})
    .to_string();
    let org = json!({"name": "Zipped"}).to_string();
    // A valid gzip of a valid request: were it decoded it would be served,
    // and were it parsed as it is it would be 400.
    for encoding in [
        "gzip",
        "GZIP",
        "x-gzip",
        "identity, gzip",
        "deflate",
        "br",
        "zstd",
        "compress",
        "bogus",
    ] {
        let r = send(
            "/v1/decisions",
            app.reseller("alpha"),
            Some(encoding),
            gzip(preflight.as_bytes()),
        )
        .await;
        r.assert_problem(415, "unsupported_content_encoding");
        assert_eq!(
            r.headers.get("accept-encoding").unwrap(),
            "identity",
            "{encoding}"
        );
        let r = app
            .client
            .put(format!("{}/v1/organizations/zipped", app.address))
            .insert_header(("authorization", format!("Bearer {}", app.admin())))
            .insert_header(("content-encoding", encoding))
            .send_body(gzip(org.as_bytes()))
            .await
            .unwrap();
        crate::helpers::Reply::read(r)
            .await
            .assert_problem(415, "unsupported_content_encoding");
    }
    assert_eq!(app.all_events().await.len(), before, "nothing was recorded");
    // Without a coding, or with `identity`, the same request is served.
    for encoding in [None, Some("identity"), Some("Identity")] {
        let r = send(
            "/v1/decisions",
            app.reseller("alpha"),
            encoding,
            preflight.clone().into_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{encoding:?}: {}", r.text);
    }
    // A request without a body may carry the header.
    let r = app
        .client
        .get(format!("{}/v1/organizations", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.admin())))
        .insert_header(("content-encoding", "gzip"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A refused request's log line names the field and the code, never the
/// caller's value; on both databases, the process as an operator runs it.
#[actix_web::test]
async fn a_refused_customer_value_never_reaches_the_log() {
    for backend in [
        crate::helpers::Backend::Sqlite,
        crate::helpers::Backend::Postgres,
    ] {
        if backend == crate::helpers::Backend::Postgres && !crate::helpers::postgres_expected() {
            continue;
        }
        let (_db, _) = crate::helpers::TestDb::create(backend).unwrap();
        let mut served = crate::served::serve(
            &_db.url(),
            &[("GATEKEEPER_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
        )
        .await;
        let (_, reseller) = served.setup().await;
        let secret = "Zebediah-Quux-4471";
        for customer in [
            // serde quotes a value of the wrong type in its message.
            json!({"id": "c-1", "name": "n", "country": "DE", "us_person": secret}),
            json!({"id": format!("{secret}\u{202e}"), "name": "n", "country": "DE"}),
            json!({"id": "c-1", "name": format!("{secret}\u{0}"), "country": "DE"}),
        ] {
            let body =
                json!({"transaction": "issue", "product": "ACME-FW-K", "customer": customer});
            let (status, reply, _) = served
                .call("POST", "/v1/decisions", &reseller, Some(body), &[])
                .await;
            assert_eq!(status, 422, "{reply}");
        }
        assert_eq!(served.terminate().code(), Some(0));
        let log = served.log();
        assert!(
            !log.contains("Zebediah"),
            "a customer value reached the log: {log}"
        );
        let refusals: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "request refused")
            .collect();
        assert_eq!(refusals.len(), 3, "{log}");
        for (line, field) in
            refusals
                .iter()
                .zip(["customer.us_person", "customer.id", "customer.name"])
        {
            assert_eq!(line["level"], "WARN", "{line}");
            assert_eq!(line["fields"]["code"], "validation_failed", "{line}");
            assert_eq!(line["fields"]["status"], 422, "{line}");
            assert!(
                line["fields"]["fields"].as_str().unwrap().contains(field),
                "{line}"
            );
            assert_eq!(line["span"]["route"], "/v1/decisions", "{line}");
        }
    }
}
