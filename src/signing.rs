//! The service's signing key (Ed25519): it signs licence tokens, which a
//! product verifies offline, and the audit trail's checkpoints; and the
//! public keys (JWKS) that verify both.
//!
//! An edge module: it knows claims and bytes, nothing of the store or the
//! use cases that ask for a signature.

use anyhow::Context;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The `iss` of every licence token.
pub const LICENSE_ISSUER: &str = "license-gatekeeper";
/// The public JWK of an Ed25519 licence key, as `GET /v1/keys` publishes
/// it. Its `kid` is the RFC 7638 thumbprint of the key, so the same key
/// always has the same id.
pub fn public_jwk(key: &ed25519_dalek::VerifyingKey) -> Value {
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes());
    let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(thumbprint_input.as_bytes()));
    json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"})
}

/// The largest JWKS file [`read_jwks_file`] reads: 1 MiB, thousands of keys.
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// Reads a JWKS file of licence-verification keys (see [`parse_jwks`]): the
/// retired keys an operator configures, or the keys `audit verify --keys`
/// trusts.
pub fn read_jwks_file(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_JWKS_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (a JWKS is UTF-8 JSON)", path.display()))?;
    if text.len() as u64 > MAX_JWKS_BYTES {
        anyhow::bail!(
            "{} is larger than {} KiB: not a key set",
            path.display(),
            MAX_JWKS_BYTES / 1024
        );
    }
    parse_jwks(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Reads a JSON Web Key Set of Ed25519 public keys (`{"keys": [...]}`, as
/// `GET /v1/keys` returns it) and returns its keys as the service publishes
/// them. Each key must be an Ed25519 public key (`kty` `OKP`, `crv`
/// `Ed25519`, `x`) with no private part (`d`), whose `kid` is its RFC 7638
/// thumbprint (as every key the service made has); `alg` and `use`, when
/// given, must be `EdDSA` and `sig`. Anything else is an error naming the key.
pub fn parse_jwks(text: &str) -> Result<Vec<Value>, String> {
    let set: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let Some(keys) = set.get("keys").and_then(Value::as_array) else {
        return Err(r#"not a JSON Web Key Set: it needs {"keys": [...]}"#.into());
    };
    keys.iter()
        .enumerate()
        .map(|(i, key)| public_key(key).map_err(|e| format!("key {} of the set: {e}", i + 1)))
        .collect()
}

fn public_key(key: &Value) -> Result<Value, String> {
    let field = |name: &str| key.get(name).and_then(Value::as_str);
    if !key.is_object() {
        return Err("not a JSON object".into());
    }
    if key.get("d").is_some() {
        return Err("holds a private key (`d`); give public keys only".into());
    }
    if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
        return Err(r#"not an Ed25519 key ("kty": "OKP", "crv": "Ed25519")"#.into());
    }
    if key.get("alg").is_some_and(|a| a != "EdDSA") || key.get("use").is_some_and(|u| u != "sig") {
        return Err(r#"not a signing key ("alg": "EdDSA", "use": "sig")"#.into());
    }
    let verifying = field("x")
        .and_then(|x| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .ok()
        })
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .and_then(|bytes| ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok())
        .ok_or("`x` is not an Ed25519 public key (32 bytes, base64url)")?;
    let jwk = public_jwk(&verifying);
    match field("kid") {
        Some(kid) if jwk["kid"] == kid => Ok(jwk),
        Some(kid) => Err(format!(
            "its kid {kid:?} is not the key's RFC 7638 thumbprint {}",
            jwk["kid"]
        )),
        None => Err(format!("it has no kid (its thumbprint is {})", jwk["kid"])),
    }
}

/// The keys the service publishes at `GET /v1/keys` and trusts for its
/// checkpoints: the retired keys the operator configured, oldest first as
/// given, then the current one (once, if also listed as retired).
pub fn key_set(current: Option<&Value>, retired: Vec<Value>) -> Vec<Value> {
    let mut keys: Vec<Value> = Vec::with_capacity(retired.len() + 1);
    for key in retired.into_iter().chain(current.cloned()) {
        keys.retain(|k| k["kid"] != key["kid"]);
        keys.push(key);
    }
    keys
}

/// The claims of a licence token.
#[derive(Debug, Clone, Serialize)]
pub struct LicenseClaims<'a> {
    pub iss: &'static str,
    /// The licence id.
    pub sub: &'a str,
    /// The product the licence is for (so a product checks it is the audience).
    pub aud: &'a str,
    pub product: &'a str,
    pub reseller: &'a str,
    pub customer: &'a str,
    pub seats: i64,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Where the licence's status is published (IETF Token Status List):
    /// `{"status_list": {"idx", "uri"}}`; absent only for a licence without
    /// a status-list index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// The service's signing key (Ed25519): it signs licences, and the audit
/// trail's checkpoints.
pub struct LicenseSigner {
    kid: String,
    /// The key, parsed once and with its public half derived once
    /// (signing through `jsonwebtoken::encode` would parse its PKCS#8 form
    /// and derive the public key again for every token, which doubles a
    /// signature's curve arithmetic).
    raw: ed25519_dalek::SigningKey,
    /// A licence token's header (`typ: JWT`), encoded once: it is the same
    /// for every licence this key signs.
    licence_header: String,
    jwk: Value,
    /// The service's public base URL, which status-list URIs start with.
    public_url: String,
}

impl std::fmt::Debug for LicenseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl LicenseSigner {
    /// A secret for `purpose`, derived from the signing key
    /// (HMAC-SHA256 keyed by it): the same on every replica that holds the
    /// key, and telling nothing of it. The console's session cookies are
    /// signed with one.
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        use hmac::digest::KeyInit;
        use hmac::{Hmac, Mac};
        // The 32-byte key zero-padded to SHA-256's block, as HMAC pads it.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.raw.to_bytes());
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new(&block.into());
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Loads a PKCS#8 PEM Ed25519 private key. Its `kid` is the RFC 7638
    /// thumbprint of its public JWK, so the same key always has the same id.
    pub fn from_pkcs8_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(pem).context("the licence key is not PEM text")?;
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .context("the licence key is not a PKCS#8 Ed25519 private key")?;
        let jwk = public_jwk(&signing.verifying_key());
        let kid = jwk["kid"].as_str().unwrap_or_default().to_string();
        Ok(LicenseSigner {
            licence_header: encoded_header(&kid, "JWT")?,
            kid,
            raw: signing,
            jwk,
            public_url: "http://127.0.0.1:8080".into(),
        })
    }

    /// The same key, publishing status lists under `public_url` (the
    /// service's address as products reach it, without a trailing `/`).
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.public_url = public_url.trim_end_matches('/').to_string();
        self
    }

    /// The URI of status list `list`.
    pub fn status_list_uri(&self, list: i64) -> String {
        format!("{}/v1/status-lists/{list}", self.public_url)
    }

    /// The `status` claim of the licence at status-list index `idx`.
    pub fn status_claim(&self, idx: i64) -> Value {
        let list = idx / crate::status_list::LIST_SIZE;
        json!({"status_list": {"idx": idx % crate::status_list::LIST_SIZE,
                               "uri": self.status_list_uri(list)}})
    }

    /// Signs a status list token (`typ: statuslist+jwt`) with these claims.
    pub fn sign_status_list(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        self.jws(encoded_header(&self.kid, "statuslist+jwt")?, claims)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK, for `GET /v1/keys`.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `message` (Ed25519); the signature in base64url. Checkpoints
    /// are signed so (by the gate's checkpoints use case).
    pub fn sign_message(&self, message: &[u8]) -> String {
        use ed25519_dalek::Signer;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.raw.sign(message).to_bytes())
    }

    /// Signs a licence token with these claims.
    pub fn sign(&self, claims: &LicenseClaims<'_>) -> Result<String, jsonwebtoken::errors::Error> {
        self.jws(self.licence_header.clone(), claims)
    }

    /// The compact JWS of `claims` under `header` (from [`encoded_header`]):
    /// what `jsonwebtoken::encode` makes, byte for byte (Ed25519 is
    /// deterministic), signed with the key as loaded.
    fn jws(
        &self,
        header: String,
        claims: &impl Serialize,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        use ed25519_dalek::Signer;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut token = header;
        token.push('.');
        b64.encode_string(serde_json::to_vec(claims)?, &mut token);
        let signature = self.raw.sign(token.as_bytes());
        token.push('.');
        b64.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

/// A JWS header (`alg: EdDSA`, `kid`, `typ`), base64url-encoded as
/// `jsonwebtoken::encode` encodes it.
fn encoded_header(kid: &str, typ: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    header.typ = Some(typ.into());
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const RFC8037_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";

    #[test]
    fn tokens_are_what_jsonwebtoken_would_sign_byte_for_byte() {
        use jsonwebtoken::{encode, EncodingKey};
        let signer = LicenseSigner::from_pkcs8_pem(RFC8037_PEM.as_bytes()).unwrap();
        let key = EncodingKey::from_ed_pem(RFC8037_PEM.as_bytes()).unwrap();
        let header = |typ: &str| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(signer.kid().to_string());
            header.typ = Some(typ.into());
            header
        };
        let claims = LicenseClaims {
            iss: LICENSE_ISSUER,
            sub: "0190-licence",
            aud: "ACME-FW",
            product: "ACME-FW",
            reseller: "acme",
            customer: "cust \"1\" ü",
            seats: 5,
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            exp: 1_731_536_000,
            status: Some(signer.status_claim(70_000)),
        };
        assert_eq!(
            signer.sign(&claims).unwrap(),
            encode(&header("JWT"), &claims, &key).unwrap()
        );
        let list = json!({"sub": "http://127.0.0.1:8080/v1/status-lists/0", "iat": 1});
        assert_eq!(
            signer.sign_status_list(&list).unwrap(),
            encode(&header("statuslist+jwt"), &list, &key).unwrap()
        );
    }

    #[test]
    fn a_key_set_reads_back_as_published_and_refuses_anything_else() {
        let signer = LicenseSigner::from_pkcs8_pem(RFC8037_PEM.as_bytes()).unwrap();
        let jwk = signer.jwk().clone();
        let published = json!({ "keys": [jwk] }).to_string();
        assert_eq!(parse_jwks(&published).unwrap(), std::slice::from_ref(&jwk));
        // Only what identifies the key is needed; the rest is filled in.
        let bare =
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": jwk["x"], "kid": jwk["kid"]}]});
        assert_eq!(
            parse_jwks(&bare.to_string()).unwrap(),
            std::slice::from_ref(&jwk)
        );
        assert_eq!(parse_jwks(r#"{"keys": []}"#).unwrap(), Vec::<Value>::new());

        let with = |name: &str, value: Value| {
            let mut key = jwk.clone();
            key[name] = value;
            json!({ "keys": [key] }).to_string()
        };
        let mut without_kid = jwk.clone();
        without_kid.as_object_mut().unwrap().remove("kid");
        for (text, expected) in [
            ("not json".to_string(), "not a JSON Web Key Set"),
            (json!([jwk]).to_string(), "needs {\"keys\""),
            (
                json!({"keys": [1]}).to_string(),
                "key 1 of the set: not a JSON object",
            ),
            (with("d", json!("c2VjcmV0")), "private key"),
            (with("kty", json!("RSA")), "not an Ed25519 key"),
            (with("crv", json!("X25519")), "not an Ed25519 key"),
            (with("use", json!("enc")), "not a signing key"),
            (with("alg", json!("ES256")), "not a signing key"),
            (with("x", json!("AAAA")), "`x` is not an Ed25519 public key"),
            (with("x", json!(12)), "`x` is not an Ed25519 public key"),
            (
                with("kid", json!("someone-else")),
                "not the key's RFC 7638 thumbprint",
            ),
            (json!({ "keys": [without_kid] }).to_string(), "has no kid"),
        ] {
            let err = parse_jwks(&text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn the_key_set_lists_retired_keys_then_the_current_one_once() {
        let current = LicenseSigner::from_pkcs8_pem(RFC8037_PEM.as_bytes()).unwrap();
        let old = public_jwk(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key());
        let current = current.jwk().clone();
        assert_eq!(
            key_set(
                Some(&current),
                vec![old.clone(), current.clone(), old.clone()]
            ),
            [old.clone(), current.clone()]
        );
        assert_eq!(key_set(None, vec![old.clone()]), [old]);
    }

    #[test]
    fn the_kid_is_the_jwk_thumbprint() {
        // RFC 8037, appendix A.1 and A.3: this key's thumbprint is known.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        let signer = LicenseSigner::from_pkcs8_pem(pem.as_bytes()).unwrap();
        assert_eq!(
            signer.jwk()["x"],
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(signer.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
