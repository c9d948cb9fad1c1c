//! A corpus of bad tokens: every one is `401`, and none makes the service
//! reach out to an address named in the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer;
use serde_json::{json, Value};

use crate::both;
use crate::helpers::{TestApp, AUDIENCE, ISSUER};

pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Signs any header and claims with an Ed25519 key, as an attacker with
/// (or without) the right key could.
pub fn sign(private_pem: &[u8], header: &Value, claims: &Value) -> String {
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(std::str::from_utf8(private_pem).unwrap())
        .unwrap();
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

pub fn claims() -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "role": "admin", "iat": now, "exp": now + 300})
}

/// The header of an honest token: naming the key's `kid` when the service
/// reads a key set.
pub fn eddsa(kid: Option<&str>) -> Value {
    match kid {
        Some(kid) => json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        None => json!({"alg": "EdDSA", "typ": "JWT"}),
    }
}

both!(the_token_corpus_is_refused);
async fn the_token_corpus_is_refused(app: TestApp) {
    refuses_the_corpus(&app, None, Vec::new()).await;
}

/// Every token of the corpus, and of `extra`, is refused by `app`, whose
/// callers sign with its development key (named `kid` in its key set, if any).
pub async fn refuses_the_corpus(app: &TestApp, kid: Option<&str>, extra: Vec<(&str, String)>) {
    let eddsa = || eddsa(kid);
    let key = app.private_pem();
    let now = chrono::Utc::now().timestamp();
    let probe = "/v1/designations";

    // The control: the same signing path with honest inputs is accepted, so
    // every refusal below is about what was changed.
    let good = sign(&key, &eddsa(), &claims());
    assert_eq!(app.get(probe, &good).await.status, 200);

    let other_keys = tempfile::tempdir().unwrap();
    let other = gatekeeper::auth::DevKeys::in_dir(other_keys.path());
    other.ensure().unwrap();

    let without = |field: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(field);
        sign(&key, &eddsa(), &c)
    };
    let with = |field: &str, value: Value| {
        let mut c = claims();
        c[field] = value;
        sign(&key, &eddsa(), &c)
    };
    let header_with = |field: &str, value: Value| {
        let mut h = eddsa();
        h[field] = value;
        sign(&key, &h, &claims())
    };
    let edited = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c["sub"] = json!("root");
        format!("{}.{}.{}", parts[0], b64(&c), parts[2])
    };
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(&std::fs::read(app.public_pem_path()).unwrap())
            .unwrap(),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let local = format!("http://{}/jwks.json", listener.local_addr().unwrap());

    let mut corpus: Vec<(&str, String)> = vec![
        ("garbage", "not-a-token".into()),
        ("two segments", good.rsplit_once('.').unwrap().0.to_string()),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims())
            ),
        ),
        (
            "alg none, signature kept",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "none"})),
                b64(&claims()),
                good.split('.').nth(2).unwrap()
            ),
        ),
        ("HS256 keyed with the public key", hs256_with_public_key),
        (
            "RS256 header on an EdDSA signature",
            sign(&key, &json!({"alg": "RS256"}), &claims()),
        ),
        (
            "wrong key",
            sign(&other.private_pem().unwrap(), &eddsa(), &claims()),
        ),
        ("edited claims", edited),
        ("wrong iss", with("iss", json!("https://evil.test"))),
        ("iss a number", with("iss", json!(42))),
        ("iss an array of the issuer", with("iss", json!([ISSUER]))),
        (
            "iss an array of the issuer and another",
            with("iss", json!(["https://evil.test", ISSUER])),
        ),
        ("iss an object", with("iss", json!({"iss": ISSUER}))),
        ("iss null", with("iss", Value::Null)),
        ("iss true", with("iss", json!(true))),
        ("wrong aud", with("aud", json!("someone-else"))),
        ("missing iss", without("iss")),
        ("missing aud", without("aud")),
        ("missing exp", without("exp")),
        ("missing sub", without("sub")),
        ("missing role", without("role")),
        ("unknown role", with("role", json!("superuser"))),
        ("empty sub", with("sub", json!(""))),
        ("expired 90 s ago", with("exp", json!(now - 90))),
        (
            "expired 35 s ago (leeway is 30 s)",
            with("exp", json!(now - 35)),
        ),
        ("nbf 90 s ahead", with("nbf", json!(now + 90))),
        (
            "nbf 35 s ahead (leeway is 30 s)",
            with("nbf", json!(now + 35)),
        ),
        (
            "string-typed exp",
            with("exp", json!((now + 300).to_string())),
        ),
        (
            "reseller without reseller claim",
            with("role", json!("reseller")),
        ),
        ("unknown crit", header_with("crit", json!(["exp"]))),
        ("jku to a local listener", header_with("jku", json!(local))),
        ("x5u to a local listener", header_with("x5u", json!(local))),
        ("kid with path traversal", {
            let mut h = eddsa();
            h["kid"] = json!("../../etc/passwd' OR 1=1 --");
            sign(&other.private_pem().unwrap(), &h, &claims())
        }),
    ];
    corpus.extend(extra);
    for (name, token) in &corpus {
        let reply = app.get(probe, token).await;
        assert_eq!(reply.status, 401, "{name} was not refused: {}", reply.text);
        reply.assert_problem(401, "unauthorized");
        assert_eq!(
            reply.headers.get("www-authenticate").unwrap(),
            "Bearer",
            "{name}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "a token made the service connect to the address in its header"
    );

    // Within the 30 s leeway, a just-expired token is still accepted.
    assert_eq!(
        app.get(probe, &with("exp", json!(now - 10))).await.status,
        200
    );

    // No token, or not a bearer token.
    app.send("GET", probe, None, None)
        .await
        .assert_problem(401, "unauthorized");
    let basic = app
        .client
        .get(format!("{}{probe}", app.address))
        .insert_header(("authorization", "Basic YWRtaW46YWRtaW4="))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}
