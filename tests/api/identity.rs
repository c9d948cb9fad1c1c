//! Identity providers: callers' keys from a JWKS (directly, or through
//! OpenID discovery), kept fresh, skipped when unusable, refused when stale;
//! roles and tenants read where the provider puts them. First against key
//! sets served by the test (shaped like Keycloak's and Entra ID's), then
//! against a real OpenID provider (`oidc-provider`, tests/oidc).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::auth::{claims, eddsa, refuses_the_corpus, sign};
use crate::helpers::{spawn_app_configured, Backend, TestApp, AUDIENCE, ISSUER};
use crate::oidc_provider::{self, OidcProvider};

/// A key set served over HTTP, with a discovery document naming it; counts
/// its fetches, and answers `503` while it is "down".
struct KeyServer {
    base: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
    _server: actix_web::dev::ServerHandle,
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        // Sends the stop at once; its thread then ends.
        drop(self._server.stop(false));
    }
}

impl KeyServer {
    async fn start(jwks: Value) -> KeyServer {
        let jwks = Arc::new(Mutex::new(jwks));
        let fetches = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicBool::new(true));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // On a thread and actix system of its own: the service under test
        // waits for its first fetch on the test's thread.
        let (sent, handle) = std::sync::mpsc::channel();
        let (j, f, u, b) = (jwks.clone(), fetches.clone(), up.clone(), base.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let (j, f, u, b) = (j.clone(), f.clone(), u.clone(), b.clone());
                    let u2 = u.clone();
                    App::new()
                        .route(
                            "/jwks",
                            web::get().to(move || {
                                let (j, f, u) = (j.clone(), f.clone(), u.clone());
                                async move {
                                    f.fetch_add(1, Ordering::SeqCst);
                                    if !u.load(Ordering::SeqCst) {
                                        return HttpResponse::ServiceUnavailable().finish();
                                    }
                                    let body = j.lock().unwrap().clone();
                                    HttpResponse::Ok().json(body)
                                }
                            }),
                        )
                        .route(
                            "/redirect",
                            web::get().to(|| async {
                                HttpResponse::Found()
                                    .insert_header(("location", "/jwks"))
                                    .finish()
                            }),
                        )
                        .route(
                            "/big",
                            web::get().to(|| async {
                                let pad = "x".repeat(600 * 1024);
                                HttpResponse::Ok().json(json!({"keys": [], "pad": pad}))
                            }),
                        )
                        .route(
                            "/other/.well-known/openid-configuration",
                            web::get().to({
                                let b = b.clone();
                                move || {
                                    let b = b.clone();
                                    async move {
                                        // Names the server's base, not `/other`.
                                        HttpResponse::Ok().json(
                                            json!({"issuer": b, "jwks_uri": format!("{b}/jwks")}),
                                        )
                                    }
                                }
                            }),
                        )
                        .route(
                            "/.well-known/openid-configuration",
                            web::get().to(move || {
                                let (b, u) = (b.clone(), u2.clone());
                                async move {
                                    if !u.load(Ordering::SeqCst) {
                                        return HttpResponse::ServiceUnavailable().finish();
                                    }
                                    HttpResponse::Ok()
                                        .json(json!({"issuer": b, "jwks_uri": format!("{b}/jwks")}))
                                }
                            }),
                        )
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
                sent.send(server.handle()).unwrap();
                server.await.unwrap();
            });
        });
        let handle = handle.recv().unwrap();
        KeyServer {
            base,
            jwks,
            fetches,
            up,
            _server: handle,
        }
    }

    fn url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn serve(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/idp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// A PEM Ed25519 public key as a JWK named `kid`.
fn ed_jwk(pem: &str, kid: &str) -> Value {
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem).unwrap();
    json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
           "x": URL_SAFE_NO_PAD.encode(key.to_bytes())})
}

/// Signs `claims` with a PEM key for `alg`, naming `kid`.
fn sign_pem(pem: &[u8], alg: Algorithm, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A service on SQLite reading callers' keys from `keys` (its JWKS URL, or
/// through discovery with `discovery`), with `vars` edited in.
async fn app_reading(
    keys: &KeyServer,
    discovery: bool,
    edit: impl FnOnce(&mut gatekeeper::config::Config),
) -> TestApp {
    let (url, base) = (keys.url(), keys.base.clone());
    spawn_app_configured(Backend::Sqlite, move |c| {
        c.jwt_public_key_file = None;
        if discovery {
            c.oidc_issuer = Some(base.clone());
            c.jwt_issuer = base;
        } else {
            c.jwt_jwks_url = Some(url);
        }
        edit(c);
    })
    .await
    .unwrap()
}

/// Polls `check` every 100 ms until it holds, for at most `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An admin-only route (registering a reseller) refuses `token`: `403`.
async fn assert_admin_refused(app: &TestApp, token: &str) {
    let body = json!({"name": "B", "country": "DE", "us_person": false});
    let reply = app.put("/v1/resellers/beta", token, body).await;
    assert_eq!(reply.status, 403, "{}", reply.text);
}

/// One metric's value in the app's `/metrics`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.send("GET", "/metrics", None, None).await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

#[actix_web::test]
async fn the_token_corpus_is_refused_against_a_providers_key_set() {
    let keys = KeyServer::start(json!({"keys": []})).await;
    let url = keys.url();
    // The set holds the app's development key (as an Ed25519 JWK) beside
    // Keycloak-shaped keys; it is served before the app's first fetch.
    let app = spawn_app_configured(Backend::Sqlite, |c| {
        let pem = std::fs::read_to_string(c.jwt_public_key_file.take().unwrap()).unwrap();
        let mut set = fixture_json("keycloak-jwks.json");
        set["keys"]
            .as_array_mut()
            .unwrap()
            .push(ed_jwk(&pem, "dev-ed25519"));
        keys.serve(set);
        c.jwt_jwks_url = Some(url);
    })
    .await
    .unwrap();
    let other_issuer = tempfile::tempdir().unwrap();
    let other = gatekeeper::auth::DevKeys::in_dir(other_issuer.path());
    other.ensure().unwrap();
    let other_key = other.private_pem().unwrap();
    let mut theirs = claims();
    theirs["iss"] = json!("https://other-issuer.test");
    let rsa = fixture("keycloak-rs256.pem");
    refuses_the_corpus(
        &app,
        Some("dev-ed25519"),
        vec![
            (
                "kid of another issuer's key",
                sign(&other_key, &eddsa(Some("their-key")), &claims()),
            ),
            (
                "kid of another issuer's key, with its iss",
                sign(&other_key, &eddsa(Some("their-key")), &theirs),
            ),
            (
                "another issuer's key under this set's kid",
                sign(&other_key, &eddsa(Some("dev-ed25519")), &claims()),
            ),
            (
                "the kid of the set's encryption key",
                sign_pem(&rsa, Algorithm::RS256, "Kc9xZ2enc-OAEP", &claims()),
            ),
            (
                "RS256 naming the Ed25519 key's kid",
                sign_pem(&rsa, Algorithm::RS256, "dev-ed25519", &claims()),
            ),
            (
                "PS256 on the RS256 key (its alg is RS256)",
                sign_pem(&rsa, Algorithm::PS256, "Kc9xZ2sig-RS256", &claims()),
            ),
            (
                "an RS256 key's kid on an ES256 signature",
                sign_pem(
                    &fixture("keycloak-es256.pem"),
                    Algorithm::ES256,
                    "Kc9xZ2sig-RS256",
                    &claims(),
                ),
            ),
        ],
    )
    .await;
    // The honest RS256 token of the same set is accepted: the refusals
    // above are about what was changed.
    let good = sign_pem(&rsa, Algorithm::RS256, "Kc9xZ2sig-RS256", &claims());
    assert_eq!(app.get("/v1/designations", &good).await.status, 200);
    // Every made-up kid above asked for a refresh; one was fetched.
    assert_eq!(keys.fetches(), 2, "the start-up fetch and one refresh");
}

/// Claims shaped as Keycloak puts them: realm roles in an array beside its
/// own, the reseller in a claim of a client scope's mapper.
fn keycloak_claims(issuer: &str, roles: &[&str], reseller: Option<&str>) -> Value {
    let now = chrono::Utc::now().timestamp();
    // Keycloak's `sub` for a service account is its user's id.
    let mut c = json!({"iss": issuer, "aud": AUDIENCE, "sub": "5b0f9c1e-7d4a-4c2b-9f3e-2a8d6c1b7e40",
                       "azp": "acme", "typ": "Bearer", "iat": now, "exp": now + 300,
                       "realm_access": {"roles": roles}});
    if let Some(r) = reseller {
        c["gatekeeper"] = json!({"reseller": r});
    }
    c
}

#[actix_web::test]
async fn keycloak_and_entra_shaped_key_sets_load_and_claims_map_to_role_and_tenant() {
    let keys = KeyServer::start(fixture_json("keycloak-jwks.json")).await;
    let app = app_reading(&keys, true, |c| {
        c.jwt_role_claim = "/realm_access/roles".into();
        c.jwt_tenant_claim = "/gatekeeper/reseller".into();
        c.jwks_min_interval = Duration::from_secs(1);
    })
    .await;
    let issuer = keys.base.clone();
    let rsa = fixture("keycloak-rs256.pem");
    let ec = fixture("keycloak-es256.pem");
    let kc = |alg, kid, roles: &[&str], reseller| {
        let pem = if alg == Algorithm::ES256 { &ec } else { &rsa };
        sign_pem(pem, alg, kid, &keycloak_claims(&issuer, roles, reseller))
    };
    let admin = kc(
        Algorithm::RS256,
        "Kc9xZ2sig-RS256",
        &[
            "offline_access",
            "uma_authorization",
            "admin",
            "default-roles-acme",
        ],
        None,
    );
    let put = app
        .put(
            "/v1/resellers/acme",
            &admin,
            json!({"name": "Acme", "country": "DE", "us_person": false}),
        )
        .await;
    assert!(put.status == 200 || put.status == 201, "{}", put.text);
    // The reseller's token (ES256, the other signing key) reads its own
    // events: the role and the tenant came from Keycloak's claims.
    let reseller = kc(
        Algorithm::ES256,
        "Kc9xZ2sig-ES256",
        &["offline_access", "reseller"],
        Some("acme"),
    );
    assert_eq!(app.get("/v1/events", &reseller).await.status, 200);
    // An admin-only route refuses it: the role is `reseller`, not more.
    assert_admin_refused(&app, &reseller).await;
    for (name, token, says) in [
        (
            "two known roles",
            kc(
                Algorithm::RS256,
                "Kc9xZ2sig-RS256",
                &["admin", "compliance"],
                None,
            ),
            "more than one known role",
        ),
        (
            "no known role",
            kc(
                Algorithm::RS256,
                "Kc9xZ2sig-RS256",
                &["offline_access"],
                None,
            ),
            "no known role",
        ),
        (
            "a reseller without the tenant claim",
            kc(Algorithm::RS256, "Kc9xZ2sig-RS256", &["reseller"], None),
            "needs a reseller claim",
        ),
        (
            "signed with the encryption key's kid",
            kc(Algorithm::RS256, "Kc9xZ2enc-OAEP", &["admin"], None),
            "kid",
        ),
    ] {
        let reply = app.get("/v1/designations", &token).await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.text);
        assert!(reply.text.contains(says), "{name}: {}", reply.text);
    }

    // The provider moves to a set shaped like Entra ID's (its keys carry no
    // alg): a token with its new kid makes the service fetch it at once
    // (once the encryption key's kid above is a second old: one such fetch
    // a second, here).
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    keys.serve(fixture_json("entra-jwks.json"));
    let fetched = keys.fetches();
    let entra = sign_pem(
        &fixture("entra-rs256.pem"),
        Algorithm::RS256,
        "nOo3ZDrODXEK1jKWhXslHR_KXEg",
        &keycloak_claims(&issuer, &["compliance"], None),
    );
    assert_eq!(app.get("/v1/audit", &entra).await.status, 200);
    assert_eq!(keys.fetches(), fetched + 1, "one fetch for the unknown kid");
    // Keycloak's keys are no longer published: the admin token, verified
    // before, no longer verifies (the remembered verification was under
    // the old set).
    let gone = app.get("/v1/designations", &admin).await;
    assert_eq!(gone.status, 401, "{}", gone.text);
    assert_eq!(metric(&app, "gatekeeper_jwks_keys").await, 1.0);
    assert!(metric(&app, "gatekeeper_jwks_refreshes_total{result=\"ok\"}").await >= 2.0);
}

#[actix_web::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_a_minute() {
    let keys = KeyServer::start(fixture_json("entra-jwks.json")).await;
    let app = app_reading(&keys, false, |c| c.jwt_issuer = ISSUER.into()).await;
    eventually(Duration::from_secs(10), "the first fetch", async || {
        keys.fetches() >= 1
    })
    .await;
    let entra = fixture("entra-rs256.pem");
    let floods: Vec<String> = (0..200)
        .map(|i| {
            let mut c = claims();
            c["role"] = json!("admin");
            sign_pem(&entra, Algorithm::RS256, &format!("made-up-{i}"), &c)
        })
        .collect();
    let mut refused = 0;
    for chunk in floods.chunks(20) {
        let replies =
            futures_util::future::join_all(chunk.iter().map(|t| app.get("/v1/designations", t)))
                .await;
        refused += replies.iter().filter(|r| r.status == 401).count();
    }
    assert_eq!(refused, 200);
    assert_eq!(
        keys.fetches(),
        2,
        "the start-up fetch and one refresh, not 200"
    );
    // The real key still verifies, without a fetch.
    let mut c = claims();
    c["role"] = json!("admin");
    let good = sign_pem(&entra, Algorithm::RS256, "nOo3ZDrODXEK1jKWhXslHR_KXEg", &c);
    assert_eq!(app.get("/v1/designations", &good).await.status, 200);
    assert_eq!(keys.fetches(), 2);
}

#[actix_web::test]
async fn past_the_staleness_limit_every_token_is_refused_until_the_provider_is_back() {
    let keys = KeyServer::start(fixture_json("entra-jwks.json")).await;
    let app = app_reading(&keys, true, |c| {
        c.jwks_refresh = Duration::from_secs(1);
        c.jwks_min_interval = Duration::from_secs(1);
        c.jwks_max_stale = Duration::from_secs(5);
    })
    .await;
    let mut c = claims();
    c["iss"] = json!(keys.base);
    let token = sign_pem(
        &fixture("entra-rs256.pem"),
        Algorithm::RS256,
        "nOo3ZDrODXEK1jKWhXslHR_KXEg",
        &c,
    );
    assert_eq!(app.get("/v1/designations", &token).await.status, 200);
    keys.up.store(false, Ordering::SeqCst);
    let down_at = std::time::Instant::now();
    // The last good set serves within the limit, once fetching has failed…
    let errors = "gatekeeper_jwks_refreshes_total{result=\"error\"}";
    eventually(Duration::from_secs(3), "a failed fetch", async || {
        metric(&app, errors).await >= 1.0
    })
    .await;
    assert_eq!(app.get("/v1/designations", &token).await.status, 200);
    // …and past it every token is refused, remembered or not.
    eventually(Duration::from_secs(10), "refused once stale", async || {
        app.get("/v1/designations", &token).await.status == 401
    })
    .await;
    assert!(
        down_at.elapsed() >= Duration::from_secs(3),
        "not before the limit"
    );
    let refused = app.get("/v1/designations", &token).await;
    refused.assert_problem(401, "unauthorized");
    assert!(
        refused.text.contains("could not be refreshed"),
        "{}",
        refused.text
    );
    let ready = app.send("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(
        ready.text.contains("GATEKEEPER_JWKS_MAX_STALE"),
        "{}",
        ready.text
    );
    assert!(metric(&app, "gatekeeper_jwks_age_seconds").await > 5.0);
    assert!(metric(&app, "gatekeeper_jwks_refreshes_total{result=\"error\"}").await >= 1.0);
    assert!(
        metric(
            &app,
            "gatekeeper_auth_failures_total{reason=\"keys_unavailable\"}"
        )
        .await
            >= 1.0
    );
    // The provider returns: so do the service and the token.
    keys.up.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "served again", async || {
        app.get("/v1/designations", &token).await.status == 200
    })
    .await;
    assert_eq!(app.send("GET", "/readyz", None, None).await.status, 200);
    assert!(metric(&app, "gatekeeper_jwks_age_seconds").await < 5.0);
}

#[actix_web::test]
async fn tokens_arriving_together_with_a_new_kid_share_one_fetch() {
    let keys = KeyServer::start(fixture_json("entra-jwks.json")).await;
    let app = app_reading(&keys, false, |c| c.jwt_issuer = ISSUER.into()).await;
    assert_eq!(keys.fetches(), 1);
    // The provider moves to another set; 20 callers come at once with its kid.
    keys.serve(fixture_json("keycloak-jwks.json"));
    let mut c = claims();
    c["role"] = json!("admin");
    let token = sign_pem(
        &fixture("keycloak-rs256.pem"),
        Algorithm::RS256,
        "Kc9xZ2sig-RS256",
        &c,
    );
    let replies =
        futures_util::future::join_all((0..20).map(|_| app.get("/v1/designations", &token))).await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        served,
        20,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(keys.fetches(), 2, "one fetch for the 20");
}

#[actix_web::test]
async fn a_redirect_an_oversized_set_or_another_issuer_is_a_failed_fetch() {
    let keys = KeyServer::start(fixture_json("entra-jwks.json")).await;
    let entra = fixture("entra-rs256.pem");
    let kid = "nOo3ZDrODXEK1jKWhXslHR_KXEg";
    for (what, path, discovery) in [
        ("a redirect (not followed)", "/redirect", false),
        ("a body over 512 KiB", "/big", false),
        ("a discovery document naming another issuer", "/other", true),
    ] {
        let url = format!("{}{path}", keys.base);
        let issuer = url.clone();
        let app = spawn_app_configured(Backend::Sqlite, move |c| {
            c.jwt_public_key_file = None;
            if discovery {
                c.oidc_issuer = Some(url.clone());
                c.jwt_issuer = url;
            } else {
                c.jwt_jwks_url = Some(url);
            }
        })
        .await
        .unwrap();
        let ready = app.send("GET", "/readyz", None, None).await;
        assert_eq!(ready.status, 503, "{what}: {}", ready.text);
        assert!(
            ready.text.contains("not been fetched"),
            "{what}: {}",
            ready.text
        );
        let mut c = claims();
        c["iss"] = json!(if discovery {
            issuer
        } else {
            ISSUER.to_string()
        });
        let token = sign_pem(&entra, Algorithm::RS256, kid, &c);
        assert_eq!(
            app.get("/v1/designations", &token).await.status,
            401,
            "{what}"
        );
        assert!(
            metric(&app, "gatekeeper_jwks_refreshes_total{result=\"error\"}").await >= 1.0,
            "{what}"
        );
    }
}

// ---- A real OpenID provider -------------------------------------------------

/// Clients of the provider, with claims shaped as Keycloak's mappers put
/// them (realm roles in an array, the reseller in a claim of its own).
fn clients() -> Value {
    json!([
        {"client_id": "ops-admin", "client_secret": "s-admin",
         "claims": {"realm_access": {"roles": ["offline_access", "admin"]}}},
        {"client_id": "acme-shop", "client_secret": "s-acme",
         "claims": {"realm_access": {"roles": ["offline_access", "reseller"]},
                    "gatekeeper": {"reseller": "acme"}}},
        {"client_id": "audit-team", "client_secret": "s-audit",
         "claims": {"realm_access": {"roles": ["compliance"]}}},
    ])
}

/// A service on SQLite trusting `provider` through discovery.
async fn app_trusting(provider: &OidcProvider, refresh: u64, max_stale: u64) -> TestApp {
    let issuer = provider.issuer.clone();
    spawn_app_configured(Backend::Sqlite, move |c| {
        c.jwt_public_key_file = None;
        c.oidc_issuer = Some(issuer.clone());
        c.jwt_issuer = issuer;
        c.jwt_role_claim = "/realm_access/roles".into();
        c.jwt_tenant_claim = "/gatekeeper/reseller".into();
        c.jwks_refresh = Duration::from_secs(refresh);
        c.jwks_min_interval = Duration::from_secs(1);
        c.jwks_max_stale = Duration::from_secs(max_stale);
    })
    .await
    .unwrap()
}

#[actix_web::test]
async fn a_real_providers_tokens_are_accepted_with_the_mapped_role_and_tenant() {
    if !oidc_provider::available_or_skip("a_real_providers_tokens_are_accepted") {
        return;
    }
    for alg in ["RS256", "ES256", "EdDSA"] {
        let provider =
            oidc_provider::start_with(clients(), alg, &[("OIDC_AUDIENCE", AUDIENCE)]).await;
        let app = app_trusting(&provider, 300, 3600).await;
        let admin = provider.token("ops-admin", "s-admin").await;
        let (header, _) = oidc_provider::jwt_parts(&admin);
        assert_eq!(header["alg"], alg, "{header}");
        let put = app
            .put(
                "/v1/resellers/acme",
                &admin,
                json!({"name": "Acme Shop", "country": "DE", "us_person": false}),
            )
            .await;
        assert!(
            put.status == 200 || put.status == 201,
            "{alg}: {}",
            put.text
        );
        let product = app
            .put(
                "/v1/products/KAV-ENGINE",
                &admin,
                json!({"name": "Kaspersky Anti-Virus engine", "vendor": "ao-kaspersky-lab", "category": "antivirus"}),
            )
            .await;
        assert!(
            product.status == 200 || product.status == 201,
            "{alg}: {}",
            product.text
        );
        let shop = provider.token("acme-shop", "s-acme").await;
        let asked = app
            .post(
                "/v1/decisions",
                &shop,
                json!({"transaction": "issue", "product": "KAV-ENGINE",
                       "customer": {"id": "c-1", "name": "Jane Roe", "country": "US"}}),
            )
            .await;
        assert_eq!(asked.status, 200, "{alg}: {}", asked.text);
        assert_eq!(
            asked.body["decision"]["outcome"], "deny",
            "{alg}: {}",
            asked.text
        );
        // The audit trail names the provider's subject and the mapped role
        // and tenant.
        let audit = provider.token("audit-team", "s-audit").await;
        let trail = app.get("/v1/audit?limit=200", &audit).await;
        assert_eq!(trail.status, 200, "{}", trail.text);
        let actors: Vec<&Value> = trail.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["actor"])
            .collect();
        assert!(
            actors.iter().any(|a| a["sub"] == "acme-shop"
                && a["role"] == "reseller"
                && a["reseller"] == "acme"),
            "{alg}: {actors:?}"
        );
        assert!(
            actors
                .iter()
                .any(|a| a["sub"] == "ops-admin" && a["role"] == "admin"),
            "{alg}: {actors:?}"
        );
        // A compliance token is not a reseller's.
        assert_eq!(app.get("/v1/events", &audit).await.status, 200);
        assert_admin_refused(&app, &audit).await;
    }
}

#[actix_web::test]
async fn rotating_the_providers_key_loses_no_request_under_load() {
    if !oidc_provider::available_or_skip("rotating_the_providers_key") {
        return;
    }
    let provider = std::rc::Rc::new(
        oidc_provider::start_with(clients(), "RS256", &[("OIDC_AUDIENCE", AUDIENCE)]).await,
    );
    // No background refresh within the test: the new key is learned from its
    // first tokens (one shared fetch), the retired one dropped by the next.
    let app = std::rc::Rc::new(app_trusting(&provider, 300, 3600).await);
    let old = provider.token("ops-admin", "s-admin").await;
    assert_eq!(app.get("/v1/designations", &old).await.status, 200);
    let (old_header, _) = oidc_provider::jwt_parts(&old);

    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let statuses = std::rc::Rc::new(std::cell::RefCell::new(Vec::<(u16, String)>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (provider, app, stop, statuses) = (
            provider.clone(),
            app.clone(),
            stop.clone(),
            statuses.clone(),
        );
        load.push(actix_web::rt::spawn(async move {
            while !stop.get() {
                // A fresh token every time: each is signed with the key the
                // provider signs with at that moment.
                let token = provider.token("audit-team", "s-audit").await;
                let kid = oidc_provider::jwt_parts(&token).0["kid"].to_string();
                for _ in 0..5 {
                    let reply = app.get("/v1/designations", &token).await;
                    statuses
                        .borrow_mut()
                        .push((reply.status.as_u16(), kid.clone()));
                }
            }
        }));
    }
    let pause = |s| actix_web::rt::time::sleep(Duration::from_millis(s));
    pause(1000).await;
    // New key first (published, not signing), then signing with it, then
    // the old one retired.
    let added = provider.add_key().await;
    pause(1500).await;
    let promoted = provider.promote_key().await;
    pause(1500).await;
    let retired = provider.retire_keys().await;
    pause(2500).await;
    stop.set(true);
    for task in load {
        task.await.unwrap();
    }
    let statuses = statuses.take();
    let kids: std::collections::BTreeSet<&String> = statuses.iter().map(|(_, k)| k).collect();
    assert_eq!(kids.len(), 2, "tokens of both keys were used: {kids:?}");
    let lost: Vec<&(u16, String)> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        lost.is_empty(),
        "{} of {} requests lost during the rotation ({added} {promoted} {retired}): {:?}",
        lost.len(),
        statuses.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(statuses.len() > 100, "a steady load: {}", statuses.len());
    let first_kid = &statuses[0].1;
    eprintln!(
        "rotation: {} requests over 4 clients, {} with tokens of the old key and {} of the new, {} refused",
        statuses.len(),
        statuses.iter().filter(|(_, k)| k == first_kid).count(),
        statuses.iter().filter(|(_, k)| k != first_kid).count(),
        lost.len()
    );
    // The retired key no longer verifies: the token signed with it before
    // the rotation (still within its exp) is refused after the next fetch
    // (asked for here by a token naming a kid the provider never had).
    assert_ne!(oidc_provider::jwt_parts(&old).0["kid"], promoted["signing"]);
    assert_eq!(
        app.get("/v1/designations", &old).await.status,
        200,
        "not yet"
    );
    let made_up = sign_pem(
        &fixture("keycloak-rs256.pem"),
        Algorithm::RS256,
        "never-published",
        &claims(),
    );
    assert_eq!(app.get("/v1/designations", &made_up).await.status, 401);
    let refused = app.get("/v1/designations", &old).await;
    assert_eq!(refused.status, 401, "{old_header}: {}", refused.text);
    // Three fetches: at start-up, one for the new key's first tokens
    // (however many arrived at once), one for the made-up kid.
    let fetched = metric(&app, "gatekeeper_jwks_refreshes_total{result=\"ok\"}").await;
    assert_eq!(fetched, 3.0);
}

#[actix_web::test]
async fn the_real_provider_stopped_past_the_staleness_limit_then_back() {
    if !oidc_provider::available_or_skip("the_real_provider_stopped") {
        return;
    }
    let mut provider =
        oidc_provider::start_with(clients(), "EdDSA", &[("OIDC_AUDIENCE", AUDIENCE)]).await;
    let app = app_trusting(&provider, 1, 3).await;
    let token = provider.token("audit-team", "s-audit").await;
    assert_eq!(app.get("/v1/audit", &token).await.status, 200);
    provider.stop();
    eventually(Duration::from_secs(15), "refused once stale", async || {
        app.get("/v1/audit", &token).await.status == 401
    })
    .await;
    assert_eq!(app.send("GET", "/readyz", None, None).await.status, 503);
    provider.restart().await;
    eventually(Duration::from_secs(15), "served again", async || {
        app.get("/v1/audit", &token).await.status == 200
    })
    .await;
    assert_eq!(app.send("GET", "/readyz", None, None).await.status, 200);
    let fresh = provider.token("audit-team", "s-audit").await;
    assert_eq!(app.get("/v1/audit", &fresh).await.status, 200);
}
