//! Licences: the term arithmetic, the JSON shape callers see, and the
//! signed token a product verifies offline.

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

/// When a term of `term_days` from `from` ends, cut at `not_after`.
pub fn term_end(
    from: DateTime<Utc>,
    term_days: i64,
    not_after: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let end = from + Duration::days(term_days);
    match not_after {
        Some(limit) if limit < end => limit,
        _ => end,
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
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signing.verifying_key().as_bytes());
        let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(thumbprint_input.as_bytes()));
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
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
