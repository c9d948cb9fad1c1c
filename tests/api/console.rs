//! The compliance console, driven over HTTP as a browser would (forms,
//! cookies, redirects not followed): development mode's sign-in, the review
//! queue, a case's evidence, its resolution through the same use case and
//! audit trail as the API, and what it refuses (no CSRF token, another
//! origin, a reseller, a forged cookie).

use serde_json::json;

use crate::helpers::{spawn_app_configured, Backend, Reply, TestApp};

/// A service in development mode (the console is served) whose
/// development keys are the test's, so `app.token()` still works.
async fn console_app(backend: Backend) -> Option<TestApp> {
    spawn_app_configured(backend, |c| {
        let keys = c.jwt_public_key_file.take().unwrap();
        c.data_dir = keys.parent().unwrap().to_path_buf();
    })
    .await
}

/// A test on both databases, each with a [`console_app`] (the `both!`
/// macro's shape).
macro_rules! console_both {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                let app = super::console_app(crate::helpers::Backend::Sqlite)
                    .await
                    .expect("SQLite is always available");
                super::$name(app).await;
            }

            #[actix_web::test]
            async fn postgres() {
                if let Some(app) = super::console_app(crate::helpers::Backend::Postgres).await {
                    super::$name(app).await;
                }
            }
        }
    };
}

/// A browser of sorts: no redirects followed, one cookie kept.
struct Browser<'a> {
    app: &'a TestApp,
    client: awc::Client,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Browser {
            app,
            client: awc::Client::builder().disable_redirects().finish(),
            cookie: None,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        let mut req = self.client.get(format!("{}{path}", self.app.address));
        if let Some(c) = &self.cookie {
            req = req.insert_header(("cookie", c.as_str()));
        }
        Reply::read(req.send().await.unwrap()).await
    }

    /// Posts a form from `origin` (the console's own by default).
    async fn post(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.app.address));
        if let Some(o) = origin {
            req = req.insert_header(("origin", o));
        }
        if let Some(c) = &self.cookie {
            req = req.insert_header(("cookie", c.as_str()));
        }
        Reply::read(req.send_form(&form).await.unwrap()).await
    }

    async fn sign_in(&mut self, name: &str, role: &str) -> Reply {
        let origin = self.app.address.clone();
        let reply = self
            .post(
                "/console/sign-in",
                &[("name", name), ("role", role)],
                Some(&origin),
            )
            .await;
        if let Some(set) = reply.header("set-cookie") {
            self.cookie = set.split(';').next().map(String::from);
        }
        reply
    }
}

/// The CSRF token a page's forms carry.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_string()
}

/// A licence request for a Brazilian customer of unknown U.S. status, held
/// for review (202); its decision id.
async fn request_in_review(app: &TestApp, name: &str) -> String {
    app.register("alpha", "BR", false).await;
    app.add_oem_firewall().await;
    let body = json!({"product": "ACME-FW-K", "seats": 40, "term_days": 200,
                      "customer": {"id": "br-1", "name": name, "country": "BR"}});
    let r = app
        .client
        .post(format!("{}/v1/licenses", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.reseller("alpha"))))
        .insert_header(("idempotency-key", uuid::Uuid::new_v4().to_string()))
        .send_json(&body)
        .await
        .unwrap();
    let r = Reply::read(r).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.body["decision"]["id"].as_str().unwrap().to_string()
}

async fn a_compliance_officer_resolves_a_review_in_the_console(app: TestApp) {
    let id = request_in_review(&app, "Exemplo <script>alert(1)</script> Ltda").await;
    let mut browser = Browser::new(&app);

    // Signed out: to the sign-in page, which is plain and locked down.
    let out = browser.get("/console/reviews").await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location").unwrap(), "/console/sign-in");
    let sign_in = browser.get("/console/sign-in").await;
    assert_eq!(sign_in.status, 200);
    let csp = sign_in.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(sign_in.header("x-content-type-options").unwrap(), "nosniff");
    assert!(
        sign_in.text.contains("<label for=\"name\">"),
        "labelled fields"
    );

    // A reseller, or a form from another origin, does not get in.
    assert_eq!(browser.sign_in("Rita", "reseller").await.status, 403);
    assert!(browser.cookie.is_none());
    let elsewhere = browser
        .post(
            "/console/sign-in",
            &[("name", "Eve"), ("role", "compliance")],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(elsewhere.status, 403);
    assert!(elsewhere.header("set-cookie").is_none());

    let signed = browser.sign_in("Ada Reviewer", "compliance").await;
    assert_eq!(signed.status, 303, "{}", signed.text);
    let set = signed.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "relaxed in development mode on loopback: {set}"
    );

    // The queue, and the case with its evidence, everything escaped.
    let queue = browser.get("/console/reviews").await;
    assert_eq!(queue.status, 200, "{}", queue.text);
    assert!(queue.text.contains(&id), "{}", queue.text);
    let case = browser.get(&format!("/console/reviews/{id}")).await;
    assert_eq!(case.status, 200, "{}", case.text);
    for evidence in [
        "ACME-FW-K",
        "KAV-ENGINE",
        "ao-kaspersky-lab",
        "us-icts-kaspersky-2024",
        "nexus_unknown",
        "Lineage path",
        "alpha",
    ] {
        assert!(
            case.text.contains(evidence),
            "{evidence} missing: {}",
            case.text
        );
    }
    assert!(case.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!case.text.contains("<script>"), "no script on any page");
    let token = csrf(&case.text);

    // Refused, and nothing done: no token, another origin, no note.
    let path = format!("/console/reviews/{id}");
    let origin = app.address.clone();
    let approve = |csrf: &str, note: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("resolution", "approve".to_string()),
            ("us_person", "false".to_string()),
            ("note", note.to_string()),
        ]
    };
    let send = |f: Vec<(&'static str, String)>, o: Option<String>| {
        let b = &browser;
        let path = path.clone();
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.post(&path, &pairs, o.as_deref()).await
        }
    };
    let wrong = send(approve("not-the-token", "ok"), Some(origin.clone())).await;
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    let foreign = send(approve(&token, "ok"), Some("https://evil.example".into())).await;
    assert_eq!(foreign.status, 403);
    let no_origin = send(approve(&token, "ok"), None).await;
    assert_eq!(no_origin.status, 403);
    let no_note = send(approve(&token, "  "), Some(origin.clone())).await;
    assert_eq!(no_note.status, 422);
    assert!(no_note.text.contains("say why"), "{}", no_note.text);
    let open = app.get("/v1/reviews", &app.compliance()).await;
    assert_eq!(
        open.body["reviews"].as_array().unwrap().len(),
        1,
        "still open"
    );

    // Approved with attested facts: the licence is issued, and the audit
    // trail names the person who signed in.
    let done = send(
        approve(&token, "US status confirmed by phone"),
        Some(origin),
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.text);
    let after = browser.get(&path).await;
    assert!(after.text.contains("approved"), "{}", after.text);
    assert!(after.text.contains("console:Ada Reviewer"));
    let licences = app.get("/v1/licenses?limit=10", &app.compliance()).await;
    assert_eq!(
        licences.body["licenses"].as_array().unwrap().len(),
        1,
        "{}",
        licences.text
    );
    let events = app.all_events().await;
    let resolved = events
        .iter()
        .find(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("review."))
        })
        .unwrap();
    assert_eq!(resolved["actor"]["sub"], "console:Ada Reviewer");
    assert_eq!(resolved["actor"]["role"], "compliance");

    // The trail: filtered as the API filters, a bad filter shown, exported.
    let trail = browser.get("/console/audit?action=review.*&outcome=").await;
    assert_eq!(trail.status, 200, "{}", trail.text);
    assert!(trail.text.contains("review.approve") && !trail.text.contains("catalog.reseller.put"));
    let bad = browser.get("/console/audit?outcome=maybe").await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.text.contains("must be allow, deny or review"),
        "{}",
        bad.text
    );
    let export = browser.get("/console/audit/export?format=ndjson").await;
    assert_eq!(export.status, 200);
    assert!(export
        .header("content-disposition")
        .unwrap()
        .contains("audit.ndjson"));
    assert_eq!(export.text.lines().count(), app.all_events().await.len());
    let verified = browser.get("/console/audit/verification").await;
    assert!(
        verified.text.contains("The chain verifies"),
        "{}",
        verified.text
    );

    // A forged session (the role edited) is no session; an admin's may not
    // resolve reviews.
    let cookie = browser.cookie.clone().unwrap();
    let (payload, mac) = cookie.split_once('.').unwrap();
    browser.cookie = Some(format!("{payload}x.{mac}"));
    assert_eq!(browser.get("/console/reviews").await.status, 303);
    browser.cookie = None;
    browser.sign_in("Root", "admin").await;
    assert_eq!(browser.get("/console/reviews").await.status, 403);
    // Signing out needs the token too, and ends the session.
    let page = browser.get("/console/reviews").await;
    let out = browser
        .post(
            "/console/sign-out",
            &[("csrf", &csrf(&page.text))],
            Some(&app.address),
        )
        .await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

console_both!(a_compliance_officer_resolves_a_review_in_the_console);

#[actix_web::test]
async fn without_a_way_to_sign_in_the_console_is_not_served() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let client = awc::Client::builder().disable_redirects().finish();
    for path in ["/console/", "/console/sign-in", "/console/reviews"] {
        let r = client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

/// A licence for a German customer (nothing designated about it); its id.
async fn issued(app: &TestApp) -> String {
    app.register("beta", "DE", false).await;
    app.admin_put(
        "/v1/products/ACME-VPN",
        json!({"name": "Acme VPN", "vendor": "acme", "category": "vpn"}),
    )
    .await;
    let body = json!({"product": "ACME-VPN", "seats": 5, "term_days": 30,
                      "customer": {"id": "de-1", "name": "Kunde GmbH", "country": "DE", "us_person": false}});
    let r = app
        .client
        .post(format!("{}/v1/licenses", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.reseller("beta"))))
        .insert_header(("idempotency-key", uuid::Uuid::new_v4().to_string()))
        .send_json(&body)
        .await
        .unwrap();
    let r = Reply::read(r).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["license"]["id"].as_str().unwrap().to_string()
}

async fn licence_status(app: &TestApp, id: &str) -> serde_json::Value {
    app.get(&format!("/v1/licenses/{id}"), &app.compliance())
        .await
        .body["status"]
        .clone()
}

async fn a_compliance_officer_suspends_and_reinstates_a_licence_in_the_console(app: TestApp) {
    app.admin_put(
        "/v1/organizations/acme",
        json!({"name": "Acme Networks", "country": "DE"}),
    )
    .await;
    let id = issued(&app).await;
    let mut browser = Browser::new(&app);
    browser.sign_in("Ada Reviewer", "compliance").await;
    let list = browser.get("/console/licenses").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.text.contains(&id) && list.text.contains("Kunde GmbH"));
    let page = format!("/console/licenses/{id}");
    let shown = browser.get(&page).await;
    assert!(shown.text.contains("Suspend the licence"), "{}", shown.text);
    let token = csrf(&shown.text);
    let origin = app.address.clone();
    // Without a reason, or without the token: refused, nothing changes.
    let bare = browser
        .post(
            &format!("{page}/suspension"),
            &[("csrf", &token), ("reason", " ")],
            Some(&origin),
        )
        .await;
    assert_eq!(bare.status, 422);
    assert!(bare.text.contains("say why"), "{}", bare.text);
    let forged = browser
        .post(
            &format!("{page}/suspension"),
            &[("csrf", "forged"), ("reason", "x")],
            Some(&origin),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(licence_status(&app, &id).await, "active");

    let suspended = browser
        .post(
            &format!("{page}/suspension"),
            &[("csrf", &token), ("reason", "Customer under investigation")],
            Some(&origin),
        )
        .await;
    assert_eq!(suspended.status, 303, "{}", suspended.text);
    assert_eq!(licence_status(&app, &id).await, "suspended");
    let shown = browser.get(&page).await;
    assert!(shown.text.contains("Customer under investigation"));
    assert!(shown.text.contains("console:Ada Reviewer"));
    assert!(shown.text.contains("Reinstate the licence"));

    let reinstated = browser
        .post(
            &format!("{page}/reinstatement"),
            &[("csrf", &token)],
            Some(&origin),
        )
        .await;
    assert_eq!(reinstated.status, 303, "{}", reinstated.text);
    assert_eq!(licence_status(&app, &id).await, "active");
    let actors: Vec<String> = app
        .all_events()
        .await
        .iter()
        .filter(|e| e["actor"]["sub"] == "console:Ada Reviewer")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    // The suspension, then the reinstatement (a decision, as a renewal is).
    assert_eq!(actors, ["license.suspend", "decision.reinstate"]);
}

console_both!(a_compliance_officer_suspends_and_reinstates_a_licence_in_the_console);

console_both!(licences_are_searched_and_each_shows_its_history);
async fn licences_are_searched_and_each_shows_its_history(app: TestApp) {
    app.admin_put(
        "/v1/organizations/acme",
        json!({"name": "Acme Networks", "country": "DE"}),
    )
    .await;
    let id = issued(&app).await;
    let mut browser = Browser::new(&app);
    browser.sign_in("Ada Reviewer", "compliance").await;

    let found = |r: &Reply| r.text.contains(&format!("/console/licenses/{id}\""));
    let by_reseller = browser
        .get("/console/licenses?reseller=beta&product=&status=")
        .await;
    assert_eq!(by_reseller.status, 200, "{}", by_reseller.text);
    assert!(found(&by_reseller), "{}", by_reseller.text);
    for miss in [
        "/console/licenses?reseller=alpha",
        "/console/licenses?product=OTHER",
        "/console/licenses?status=suspended",
    ] {
        let r = browser.get(miss).await;
        assert_eq!(r.status, 200, "{miss}: {}", r.text);
        assert!(!found(&r) && r.text.contains("No licences match"), "{miss}");
    }
    let both = browser
        .get("/console/licenses?reseller=beta&product=ACME-VPN&status=active")
        .await;
    assert!(found(&both), "{}", both.text);
    let bad = browser
        .get("/console/licenses?reseller=Not%20an%20id&status=gone")
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.text.contains("reseller: ") && bad.text.contains("status: must be one of"));
    let jump = browser.get(&format!("/console/licenses?id={id}")).await;
    assert_eq!(jump.status, 303);
    assert_eq!(
        jump.header("location").unwrap(),
        format!("/console/licenses/{id}")
    );

    // The history: every event of the trail that names the licence, and
    // only those, in chain order; a suspension joins it.
    let page = format!("/console/licenses/{id}");
    let token = csrf(&browser.get(&page).await.text);
    let suspended = browser
        .post(
            &format!("{page}/suspension"),
            &[("csrf", &token), ("reason", "Checking the customer")],
            Some(&app.address.clone()),
        )
        .await;
    assert_eq!(suspended.status, 303, "{}", suspended.text);
    let naming: Vec<serde_json::Value> = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.to_string().contains(&format!("\"{id}\"")))
        .collect();
    assert!(
        naming.len() >= 2,
        "the issue and the suspension: {naming:#?}"
    );
    let shown = browser.get(&page).await;
    let history = &shown.text[shown.text.find("id=\"history\"").unwrap()..];
    assert!(
        history.contains(&format!("{} events, in chain order", naming.len())),
        "{history}"
    );
    let mut at = 0;
    for e in &naming {
        let action = format!("<code>{}</code>", e["action"].as_str().unwrap());
        let found = history[at..].find(&action).map(|i| at + i);
        at = found.unwrap_or_else(|| panic!("{action} not in order: {history}"));
    }
    assert!(history.contains("license.suspend"), "{history}");
}

/// A licence of a U.S. customer for `product`, as reseller alpha; its id.
async fn us_licence(app: &TestApp, product: &str) -> String {
    let customer = json!({"id": "c-us", "name": "Initech", "country": "US"});
    crate::impact::licensed(app, product, customer).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

console_both!(impact_runs_and_previews_are_read_and_run_in_the_console);
async fn impact_runs_and_previews_are_read_and_run_in_the_console(app: TestApp) {
    crate::impact::vendors(&app).await;
    let reached = us_licence(&app, "SCY-AV").await;
    let untouched = us_licence(&app, "OTHER-FW").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("Ada Reviewer", "compliance").await;
    let origin = app.address.clone();

    let form = browser.get("/console/impact/preview").await;
    assert_eq!(form.status, 200, "{}", form.text);
    assert!(form.text.contains("<label for=\"changes\">"));
    let token = csrf(&form.text);
    let change = r#"[{"op": "put",
        "path": "/v1/organizations/secure-cy/relationships/ao-kaspersky-lab",
        "body": {"kind": "subsidiary_of"}}]"#;

    // Refused, recording nothing: no token, a path that is no entry's,
    // text that is not JSON.
    let before = app.all_events().await.len();
    let forged = browser
        .post(
            "/console/impact/preview",
            &[("csrf", "x"), ("changes", change)],
            Some(&origin),
        )
        .await;
    assert_eq!(forged.status, 403);
    let wrong_path = browser
        .post(
            "/console/impact/preview",
            &[
                ("csrf", &token),
                (
                    "changes",
                    r#"[{"op": "put", "path": "/v1/widgets/x", "body": {}}]"#,
                ),
            ],
            Some(&origin),
        )
        .await;
    assert_eq!(wrong_path.status, 422);
    assert!(wrong_path
        .text
        .contains("changes[0].path: must be a catalogue entry"));
    let not_json = browser
        .post(
            "/console/impact/preview",
            &[("csrf", &token), ("changes", "[{")],
            Some(&origin),
        )
        .await;
    assert_eq!(not_json.status, 422, "{}", not_json.text);
    assert!(not_json.text.contains("aria-invalid=\"true\""));
    assert_eq!(app.all_events().await.len(), before);

    // The preview: what the change would do, recorded as a preview only.
    let preview = browser
        .post(
            "/console/impact/preview",
            &[("csrf", &token), ("changes", change)],
            Some(&origin),
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.text);
    let result = &preview.text[preview.text.find("id=\"result\"").unwrap()..];
    assert!(result.contains(&reached), "{result}");
    assert!(!result.contains(&untouched), "{result}");
    assert!(result.contains("us-icts-kaspersky-2024"), "{result}");
    let events = app.all_events().await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(events[before]["action"], "impact.preview");
    assert_eq!(events[before]["actor"]["sub"], "console:Ada Reviewer");
    assert!(browser
        .get("/console/impact")
        .await
        .text
        .contains("No impact runs yet"));

    // The change made: its run, with the licence it acted on.
    app.admin_put(
        "/v1/organizations/secure-cy/relationships/ao-kaspersky-lab",
        json!({"kind": "subsidiary_of"}),
    )
    .await;
    let run = crate::impact::settled(&app, 1).await[0].clone();
    let run_id = run["id"].as_str().unwrap();
    let runs = browser.get("/console/impact").await;
    assert!(
        runs.text.contains(&format!("/console/impact/{run_id}\"")),
        "{}",
        runs.text
    );
    let shown = browser.get(&format!("/console/impact/{run_id}")).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert!(shown
        .text
        .contains(&format!("/console/licenses/{reached}\"")));
    assert!(!shown.text.contains(&untouched));
    assert_eq!(browser.get("/console/impact/no-such-run").await.status, 404);
}

console_both!(the_catalogue_is_read_by_compliance_and_edited_by_admins);
async fn the_catalogue_is_read_by_compliance_and_edited_by_admins(app: TestApp) {
    crate::impact::vendors(&app).await;
    app.admin_put(
        "/v1/organizations/other/relationships/secure-cy",
        json!({"kind": "subsidiary_of"}),
    )
    .await;
    let origin = app.address.clone();

    // Compliance reads, and may not write.
    let mut reader = Browser::new(&app);
    reader.sign_in("Ada Reviewer", "compliance").await;
    let overview = reader.get("/console/catalogue").await;
    assert_eq!(overview.status, 200, "{}", overview.text);
    for listed in [
        "SCY-AV",
        "secure-cy",
        "us-icts-kaspersky-2024",
        "subsidiary of",
    ] {
        assert!(
            overview.text.contains(listed),
            "{listed}: {}",
            overview.text
        );
    }
    assert!(overview.text.contains("Read-only"));
    let entry = reader
        .get("/console/catalogue/organizations/secure-cy")
        .await;
    assert_eq!(entry.status, 200);
    assert!(entry.text.contains("Secure Cyprus Ltd") && entry.text.contains("readonly"));
    assert!(!entry
        .text
        .contains("<form method=\"post\" action=\"/console/catalogue"));
    let token = csrf(&entry.text);
    let denied = reader
        .post(
            "/console/catalogue/organizations",
            &[("csrf", &token), ("id", "secure-cy"), ("name", "Renamed")],
            Some(&origin),
        )
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        reader
            .get("/console/catalogue/organizations/new")
            .await
            .status,
        403
    );

    // An admin starts at the catalogue, and edits it.
    let mut admin = Browser::new(&app);
    let signed = admin.sign_in("Root", "admin").await;
    assert_eq!(signed.header("location").unwrap(), "/console/catalogue");
    let form = admin
        .get("/console/catalogue/organizations/secure-cy")
        .await;
    assert!(form.text.contains(">Save<"), "{}", form.text);
    let token = csrf(&form.text);
    let save = |fields: Vec<(&'static str, &'static str)>, token: String| {
        let admin = &admin;
        let origin = origin.clone();
        async move {
            let mut pairs = vec![("csrf", token.as_str())];
            pairs.extend(fields);
            admin
                .post("/console/catalogue/organizations", &pairs, Some(&origin))
                .await
        }
    };
    // A bad value: shown on its field, nothing changed.
    let bad = save(
        vec![
            ("existing", "true"),
            ("id", "secure-cy"),
            ("name", "Secure Cyprus Ltd"),
            ("country", "Cyprus"),
            ("aliases", "[]"),
        ],
        token.clone(),
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("id=\"country-error\""), "{}", bad.text);
    assert!(bad.text.contains("aria-describedby=\"country-error\""));
    let not_json = save(
        vec![("id", "secure-cy"), ("name", "X"), ("aliases", "[")],
        token.clone(),
    )
    .await;
    assert_eq!(not_json.status, 422);
    assert!(not_json.text.contains("is not JSON"), "{}", not_json.text);
    let forged = save(vec![("id", "secure-cy"), ("name", "X")], "forged".into()).await;
    assert_eq!(forged.status, 403);
    assert_eq!(org(&app).await["name"], "Secure Cyprus Ltd");

    let renamed = save(
        vec![
            ("existing", "true"),
            ("id", "secure-cy"),
            ("name", "Secure Cyprus Holdings"),
            ("country", "CY"),
            ("aliases", r#"["SecureCY"]"#),
        ],
        token.clone(),
    )
    .await;
    assert_eq!(renamed.status, 303, "{}", renamed.text);
    assert_eq!(
        renamed.header("location").unwrap(),
        "/console/catalogue/organizations/secure-cy"
    );
    let stored = org(&app).await;
    assert_eq!(stored["name"], "Secure Cyprus Holdings");
    assert_eq!(stored["aliases"], json!(["SecureCY"]));
    let added = save(
        vec![("id", "new-org"), ("name", "New Org"), ("country", "DE")],
        token,
    )
    .await;
    assert_eq!(added.status, 303, "{}", added.text);
    let new = app.get("/v1/organizations/new-org", &app.admin()).await;
    assert_eq!(new.status, 200);
    assert_eq!(new.body["aliases"], json!([]));
    let by_console: Vec<serde_json::Value> = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["actor"]["sub"] == "console:Root")
        .collect();
    assert_eq!(by_console.len(), 2, "{by_console:#?}");
    assert!(by_console.iter().all(|e| e["actor"]["role"] == "admin"));
}

async fn org(app: &TestApp) -> serde_json::Value {
    app.get("/v1/organizations/secure-cy", &app.admin())
        .await
        .body
}

/// Who reads which page: the API's role matrix, as the console applies it.
#[actix_web::test]
async fn each_page_is_served_to_the_roles_the_api_serves() {
    let app = console_app(Backend::Sqlite).await.unwrap();
    let pages = [
        ("/console/reviews", true, false),
        ("/console/licenses", true, false),
        ("/console/audit", true, false),
        ("/console/audit/verification", true, false),
        ("/console/impact", true, true),
        ("/console/impact/preview", true, true),
        ("/console/catalogue", true, true),
        ("/console/catalogue/products/new", false, true),
    ];
    let mut compliance = Browser::new(&app);
    compliance.sign_in("Ada", "compliance").await;
    let mut admin = Browser::new(&app);
    admin.sign_in("Root", "admin").await;
    let signed_out = Browser::new(&app);
    for (path, for_compliance, for_admin) in pages {
        for (who, browser, allowed) in [
            ("compliance", &compliance, for_compliance),
            ("admin", &admin, for_admin),
        ] {
            let status = browser.get(path).await.status;
            assert_eq!(status, if allowed { 200 } else { 403 }, "{who} {path}");
        }
        assert_eq!(signed_out.get(path).await.status, 303, "signed out {path}");
    }
}

/// The value of cookie `name` in a reply's `Set-Cookie` headers, with the
/// whole header.
fn set_cookie(reply: &Reply, name: &str) -> Option<(String, String)> {
    reply
        .headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| {
            let value = c.split(';').next().unwrap()[name.len() + 1..].to_string();
            (value, c.to_string())
        })
}

/// A sign-in begun at the provider: where the browser is sent, and the
/// login cookie (its flags checked).
async fn begin_sign_in(browser: &Browser<'_>) -> (String, String) {
    let r = browser.get("/console/sign-in/provider").await;
    assert_eq!(r.status, 303, "{}", r.text);
    let (login, header) = set_cookie(&r, "gk_console_login").unwrap();
    for flag in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/console/callback",
        "Secure",
    ] {
        assert!(header.contains(flag), "{header}");
    }
    (r.header("location").unwrap(), login)
}

/// The path and query of a URL on the service.
fn on_service(app: &TestApp, url: &str) -> String {
    url.strip_prefix(&app.address)
        .unwrap_or_else(|| panic!("{url} is not on {}", app.address))
        .to_string()
}

#[actix_web::test]
async fn people_sign_in_through_the_identity_provider() {
    use crate::oidc_provider;
    if !oidc_provider::available_or_skip("people_sign_in_through_the_identity_provider") {
        return;
    }
    // The service's port first: the provider must know the redirect URI.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let provider = oidc_provider::start_with_accounts(
        json!([
            oidc_provider::public_client("console", &format!("{base}/console/callback")),
            {"client_id": "audit-team", "client_secret": "s-audit",
             "claims": {"realm_access": {"roles": ["compliance"]}}}
        ]),
        json!({
            "ada": {"name": "Ada Reviewer", "realm_access": {"roles": ["offline_access", "compliance"]}},
            "rita": {"realm_access": {"roles": ["reseller"]}, "gatekeeper": {"reseller": "alpha"}}
        }),
        "ES256",
        &[("OIDC_AUDIENCE", crate::helpers::AUDIENCE)],
    )
    .await;
    let issuer = provider.issuer.clone();
    let app = spawn_app_configured(Backend::Sqlite, move |c| {
        c.listen = format!("127.0.0.1:{port}");
        c.jwt_public_key_file = None;
        c.oidc_issuer = Some(issuer.clone());
        c.jwt_issuer = issuer;
        c.jwt_role_claim = "/realm_access/roles".into();
        c.jwt_tenant_claim = "/gatekeeper/reseller".into();
        c.console_client_id = Some("console".into());
    })
    .await
    .unwrap();
    let mut browser = Browser::new(&app);

    // Only the provider's way in: no local sign-in outside development mode.
    let page = browser.get("/console/sign-in").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Sign in with your identity provider"));
    assert!(!page.text.contains("name=\"role\""));
    let local = browser
        .post(
            "/console/sign-in",
            &[("name", "Eve"), ("role", "compliance")],
            Some(&app.address.clone()),
        )
        .await;
    assert_eq!(local.status, 404);

    // A sign-in begins: its login cookie, and the provider's address with PKCE.
    let (to, login) = begin_sign_in(&browser).await;
    let asked = url::Url::parse(&to).unwrap();
    assert!(to.starts_with(&provider.issuer), "{to}");
    let param = |k: &str| {
        asked
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param("client_id").as_deref(), Some("console"));
    assert!(param("state").is_some() && param("nonce").is_some());

    // Ada signs in: a session, the login cookie cleared, her name shown.
    let back = provider.sign_in(&to, "ada").await.unwrap();
    let callback = on_service(&app, &back);
    browser.cookie = Some(format!("gk_console_login={login}"));
    let signed = browser.get(&callback).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    assert!(
        signed.text.contains("url=/console/reviews"),
        "{}",
        signed.text
    );
    let (session, header) = set_cookie(&signed, "gk_console").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Secure"] {
        assert!(header.contains(flag), "{header}");
    }
    let (cleared, _) = set_cookie(&signed, "gk_console_login").unwrap();
    assert!(cleared.is_empty());
    // The same answer again: the code is spent, no session.
    let replayed = browser.get(&callback).await;
    assert_eq!(replayed.status, 502, "{}", replayed.text);
    assert!(set_cookie(&replayed, "gk_console").is_none());

    browser.cookie = Some(format!("gk_console={session}"));
    let queue = browser.get("/console/reviews").await;
    assert_eq!(queue.status, 200, "{}", queue.text);
    assert!(queue.text.contains("Ada Reviewer"));
    // What she does is hers in the trail: the provider's sub, her role.
    let form = browser.get("/console/impact/preview").await;
    let preview = browser
        .post(
            "/console/impact/preview",
            &[
                ("csrf", &csrf(&form.text)),
                (
                    "changes",
                    r#"[{"op": "put", "path": "/v1/organizations/x-labs", "body": {"name": "X Labs"}}]"#,
                ),
            ],
            Some(&app.address.clone()),
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.text);
    let trail = app
        .get(
            "/v1/audit?action=impact.preview",
            &provider.token("audit-team", "s-audit").await,
        )
        .await;
    let last = trail.body["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "impact.preview");
    assert_eq!(last["actor"]["sub"], "ada");
    assert_eq!(last["actor"]["role"], "compliance");

    // Refused, no session: another state, no login cookie, the provider's
    // error, a reseller.
    browser.cookie = None;
    let (to, login) = begin_sign_in(&browser).await;
    let back = provider.sign_in(&to, "ada").await.unwrap();
    let state = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let forged = on_service(&app, &back).replace(&format!("state={state}"), "state=forged");
    browser.cookie = Some(format!("gk_console_login={login}"));
    let wrong_state = browser.get(&forged).await;
    assert_eq!(wrong_state.status, 400, "{}", wrong_state.text);
    assert!(set_cookie(&wrong_state, "gk_console").is_none());
    browser.cookie = None;
    let no_login = browser.get(&on_service(&app, &back)).await;
    assert_eq!(no_login.status, 400, "{}", no_login.text);
    assert!(no_login.text.contains("did not start here"));
    browser.cookie = Some(format!("gk_console_login={login}"));
    let denied = browser
        .get("/console/callback?error=access_denied&error_description=Not%20today")
        .await;
    assert_eq!(denied.status, 403);
    assert!(denied.text.contains("Not today"));

    browser.cookie = None;
    let (to, login) = begin_sign_in(&browser).await;
    let back = provider.sign_in(&to, "rita").await.unwrap();
    browser.cookie = Some(format!("gk_console_login={login}"));
    let reseller = browser.get(&on_service(&app, &back)).await;
    assert_eq!(reseller.status, 403, "{}", reseller.text);
    assert!(reseller
        .text
        .contains("resellers and integrators use the API"));
    assert!(set_cookie(&reseller, "gk_console").is_none());
}
