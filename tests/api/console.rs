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

#[actix_web::test]
async fn a_compliance_officer_resolves_a_review_in_the_console_sqlite() {
    let app = console_app(Backend::Sqlite).await.unwrap();
    a_compliance_officer_resolves_a_review_in_the_console(app).await;
}

#[actix_web::test]
async fn a_compliance_officer_resolves_a_review_in_the_console_postgres() {
    if let Some(app) = console_app(Backend::Postgres).await {
        a_compliance_officer_resolves_a_review_in_the_console(app).await;
    }
}

#[actix_web::test]
async fn outside_development_mode_the_console_is_not_served_yet() {
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

#[actix_web::test]
async fn a_compliance_officer_suspends_and_reinstates_a_licence_in_the_console_sqlite() {
    let app = console_app(Backend::Sqlite).await.unwrap();
    a_compliance_officer_suspends_and_reinstates_a_licence_in_the_console(app).await;
}

#[actix_web::test]
async fn a_compliance_officer_suspends_and_reinstates_a_licence_in_the_console_postgres() {
    if let Some(app) = console_app(Backend::Postgres).await {
        a_compliance_officer_suspends_and_reinstates_a_licence_in_the_console(app).await;
    }
}
