//! Licences: the term arithmetic, the JSON shape callers see, the signed
//! token a product verifies offline, and the public keys that verify it.

use anyhow::Context;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit::Checkpoint;
use crate::store::licenses::LicenseRow;

/// The `iss` of every licence token.
pub const LICENSE_ISSUER: &str = "license-gatekeeper";
pub const MAX_SEATS: i64 = 1_000_000;
pub const MAX_TERM_DAYS: i64 = 3650;

/// When a term of `term_days` from `from` ends, cut at `not_after`; to the
/// microsecond, as every stored instant (a rule may name a finer instant).
pub fn term_end(
    from: DateTime<Utc>,
    term_days: i64,
    not_after: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    let end = from + Duration::days(term_days);
    match not_after {
        Some(limit) if limit < end => limit.trunc_subsecs(6),
        _ => end.trunc_subsecs(6),
    }
}

/// How long after the request that sets it a licence may expire, at most.
pub const MAX_EXPIRY_YEARS: u32 = 10;

/// The latest a licence set by a request at `requested_at` may expire:
/// [`MAX_EXPIRY_YEARS`] calendar years later (and never past the latest
/// instant the store reads back).
pub fn latest_expiry(requested_at: DateTime<Utc>) -> DateTime<Utc> {
    let latest = crate::store::latest_storable();
    requested_at
        .checked_add_months(chrono::Months::new(12 * MAX_EXPIRY_YEARS))
        .map_or(latest, |cap| cap.min(latest))
}

/// [`term_end`], unless the licence would then expire after
/// [`latest_expiry`] of `requested_at`: then `Err` with the longest term
/// from `from` that would not (`0` when there is none).
pub fn capped_term_end(
    from: DateTime<Utc>,
    term_days: i64,
    not_after: Option<DateTime<Utc>>,
    requested_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, i64> {
    let latest = latest_expiry(requested_at);
    // Checked: `from` may be a stored expiry far in the future.
    let end = Duration::try_days(term_days)
        .and_then(|term| from.checked_add_signed(term))
        .map(|_| term_end(from, term_days, not_after));
    match end {
        Some(end) if end <= latest => Ok(end),
        _ => Err((latest - from).num_days().max(0)),
    }
}

/// The licence as callers see it.
pub fn license_json(l: &LicenseRow, now: DateTime<Utc>) -> Value {
    json!({
        "id": l.id,
        "product": l.product,
        "reseller": l.reseller,
        "customer": l.customer,
        "seats": l.seats,
        "starts_at": l.starts_at,
        "expires_at": l.expires_at,
        "status": if now < l.expires_at { "active" } else { "expired" },
        "decision_id": l.decision_id,
        "token": l.token,
    })
}

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
}

/// The service's signing key (Ed25519): it signs licences, and the audit
/// trail's checkpoints.
pub struct LicenseSigner {
    kid: String,
    key: EncodingKey,
    raw: ed25519_dalek::SigningKey,
    jwk: Value,
}

impl std::fmt::Debug for LicenseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl LicenseSigner {
    /// Loads a PKCS#8 PEM Ed25519 private key. Its `kid` is the RFC 7638
    /// thumbprint of its public JWK, so the same key always has the same id.
    pub fn from_pkcs8_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(pem).context("the licence key is not PEM text")?;
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .context("the licence key is not a PKCS#8 Ed25519 private key")?;
        let jwk = public_jwk(&signing.verifying_key());
        let kid = jwk["kid"].as_str().unwrap_or_default().to_string();
        let key = EncodingKey::from_ed_pem(pem).context("loading the licence key")?;
        Ok(LicenseSigner {
            kid,
            key,
            raw: signing,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK, for `GET /v1/keys`.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs a checkpoint over the chain's event `seq` with hash `hash`.
    pub fn sign_checkpoint(&self, seq: i64, hash: &str, at: DateTime<Utc>) -> Checkpoint {
        use ed25519_dalek::Signer;
        let at = crate::store::format_instant(at);
        let signature = self
            .raw
            .sign(Checkpoint::message(seq, hash, &at, &self.kid).as_bytes());
        Checkpoint {
            seq,
            hash: hash.to_string(),
            at,
            kid: self.kid.clone(),
            signature: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(signature.to_bytes()),
        }
    }

    /// Signs the token of `license`.
    pub fn sign(
        &self,
        license: &LicenseRow,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let claims = LicenseClaims {
            iss: LICENSE_ISSUER,
            sub: &license.id,
            aud: &license.product,
            product: &license.product,
            reseller: &license.reseller,
            customer: customer_id,
            seats: license.seats,
            iat: now.timestamp(),
            nbf: license.starts_at.timestamp(),
            exp: license.expires_at.timestamp(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).context("signing a licence")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_term_is_cut_at_not_after() {
        let from = at("2024-09-01T00:00:00Z");
        assert_eq!(term_end(from, 365, None), at("2025-09-01T00:00:00Z"));
        assert_eq!(
            term_end(from, 365, Some(at("2024-09-29T04:00:00Z"))),
            at("2024-09-29T04:00:00Z")
        );
        assert_eq!(
            term_end(from, 7, Some(at("2024-09-29T04:00:00Z"))),
            at("2024-09-08T00:00:00Z")
        );
    }

    #[test]
    fn a_licence_expires_at_most_ten_years_after_the_request() {
        let now = at("2025-03-01T12:00:00.123456Z");
        let cap = at("2035-03-01T12:00:00.123456Z");
        assert_eq!(latest_expiry(now), cap);
        // Ten calendar years, with two leap days: 3652 days here.
        assert_eq!(
            capped_term_end(now, 3650, None, now),
            Ok(now + Duration::days(3650))
        );
        let from = now + Duration::days(3650);
        assert_eq!(
            capped_term_end(from, 2, None, now),
            Ok(from + Duration::days(2))
        );
        assert_eq!(capped_term_end(from, 3, None, now), Err(2));
        // The cap holds to the microsecond: exactly ten years is allowed.
        let exact = cap - Duration::days(1);
        assert_eq!(capped_term_end(exact, 1, None, now), Ok(cap));
        let over = exact + Duration::microseconds(1);
        assert_eq!(capped_term_end(over, 1, None, now), Err(0));
        // A term a `not_after` cuts below the cap is fine.
        let limit = at("2030-01-01T00:00:00Z");
        assert_eq!(capped_term_end(from, 3650, Some(limit), now), Ok(limit));
        // A stored expiry already past the cap: nothing can be added.
        assert_eq!(
            capped_term_end(cap + Duration::days(9), 1, None, now),
            Err(0)
        );
        // Never past what the store reads back, even near the year 9999.
        let late = at("9995-06-01T00:00:00Z");
        assert_eq!(latest_expiry(late), crate::store::latest_storable());
        assert!(capped_term_end(late, 3650, None, late).is_err());
        let last = crate::store::latest_storable();
        assert_eq!(capped_term_end(last, 3650, None, last), Err(0));
    }

    const RFC8037_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";

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
        let checkpoint = signer.sign_checkpoint(7, "ab", Utc::now());
        assert!(checkpoint.signature_verifies(&[signer.jwk().clone()]));
        let mut edited = checkpoint.clone();
        edited.seq = 8;
        assert!(!edited.signature_verifies(&[signer.jwk().clone()]));
    }
}
