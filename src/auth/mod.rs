//! Callers' tokens: verification (hardened beyond the jsonwebtoken defaults)
//! and, in development mode, the key pair and the tokens minted with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::ResellerId;

/// Clock leeway for `exp` and `nbf`, in seconds (the contract allows at most 30).
pub const LEEWAY_SECONDS: u64 = 30;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reseller,
    Integrator,
    Compliance,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reseller => "reseller",
            Role::Integrator => "integrator",
            Role::Compliance => "compliance",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reseller" => Some(Role::Reseller),
            "integrator" => Some(Role::Integrator),
            "compliance" => Some(Role::Compliance),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Resellers and integrators act for a tenant named by their `reseller` claim.
    pub fn is_tenant(self) -> bool {
        matches!(self, Role::Reseller | Role::Integrator)
    }
}

/// The verified caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub role: Role,
    /// The tenant, for resellers and integrators (taken only from the verified claim).
    pub reseller: Option<ResellerId>,
}

/// Why a token was refused. The message is safe to return to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TokenRejected(pub String);

#[derive(Deserialize)]
struct Claims {
    /// A string: jsonwebtoken also takes an array of issuers and accepts the
    /// token when any of them is accepted, which RFC 7519 does not allow.
    iss: String,
    sub: String,
    exp: u64,
    role: String,
    #[serde(default)]
    reseller: Option<String>,
}

/// Header parameters we refuse outright: we never fetch keys named by a token,
/// and we implement no extension a token could mark critical.
const REFUSED_HEADER_PARAMS: &[&str] = &["crit", "jku", "x5u", "jwk", "x5c", "b64", "zip", "enc"];

/// Verifies callers' tokens against one configured public key.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    verified: Arc<VerifiedTokens>,
}

/// Tokens already verified, so that a caller's next requests skip the
/// signature check (an Ed25519 verification costs tens of microseconds, the
/// largest cost of a request before the database). Keyed by the SHA-256 of
/// the token (the token itself is not kept); an entry counts only until the
/// token's `exp` (with the same leeway), and the map is bounded: when full,
/// expired entries go, and if none has expired, all do.
#[derive(Default)]
struct VerifiedTokens {
    map: Mutex<HashMap<[u8; 32], (Principal, u64)>>,
}

/// Distinct tokens remembered at most (a few MiB).
const VERIFIED_TOKENS: usize = 16_384;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl VerifiedTokens {
    fn get(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let mut map = self.map.lock().ok()?;
        match map.get(digest) {
            Some((principal, exp)) if now <= exp.saturating_add(LEEWAY_SECONDS) => {
                Some(principal.clone())
            }
            Some(_) => {
                map.remove(digest);
                None
            }
            None => None,
        }
    }

    fn put(&self, digest: [u8; 32], principal: Principal, exp: u64, now: u64) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= VERIFIED_TOKENS {
            map.retain(|_, (_, exp)| now <= exp.saturating_add(LEEWAY_SECONDS));
            if map.len() >= VERIFIED_TOKENS {
                map.clear();
            }
        }
        map.insert(digest, (principal, exp));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds a verifier from a PEM public key (Ed25519, RSA or EC P-256).
    /// The accepted algorithms follow from the key's type, never from a token.
    pub fn from_public_pem(pem: &[u8], issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, vec![Algorithm::EdDSA])
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, vec![Algorithm::ES256])
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (
                key,
                vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
            )
        } else {
            bail!("the JWT public key is not a PEM Ed25519, EC P-256 or RSA public key");
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Ok(Authenticator {
            key,
            validation,
            verified: Arc::default(),
        })
    }

    /// Verifies a compact JWS and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenRejected> {
        self.verify_at(token, unix_now())
    }

    /// [`Authenticator::verify`], with `now` (Unix seconds) deciding whether
    /// a remembered verification still counts.
    fn verify_at(&self, token: &str, now: u64) -> Result<Principal, TokenRejected> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.verified.get(&digest, now) {
            return Ok(principal);
        }
        let (principal, exp) = self.verify_signed(token)?;
        self.verified.put(digest, principal.clone(), exp, now);
        Ok(principal)
    }

    /// The full check: header, signature, claims.
    fn verify_signed(&self, token: &str) -> Result<(Principal, u64), TokenRejected> {
        check_header(token, &self.validation.algorithms)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| TokenRejected(describe(&e)))?;
        let claims = data.claims;
        if !self
            .validation
            .iss
            .as_ref()
            .is_some_and(|accepted| accepted.contains(&claims.iss))
        {
            return Err(TokenRejected("the token's issuer is not accepted".into()));
        }
        if claims.sub.trim().is_empty() {
            return Err(TokenRejected("the token's sub claim is empty".into()));
        }
        let role = Role::parse(&claims.role)
            .ok_or_else(|| TokenRejected("the token's role claim names no known role".into()))?;
        let reseller = match (role.is_tenant(), claims.reseller) {
            (true, Some(id)) => Some(ResellerId::parse(&id).map_err(|_| {
                TokenRejected("the token's reseller claim is not a valid reseller id".into())
            })?),
            (true, None) => {
                return Err(TokenRejected(
                    "a reseller or integrator token needs a reseller claim".into(),
                ))
            }
            (false, _) => None,
        };
        Ok((
            Principal {
                sub: claims.sub,
                role,
                reseller,
            },
            claims.exp,
        ))
    }
}

/// Checks the protected header before any signature work: the algorithm must
/// be one the configured key allows, and no parameter we refuse may be there.
fn check_header(token: &str, allowed: &[Algorithm]) -> Result<(), TokenRejected> {
    let reject = |m: &str| Err(TokenRejected(m.to_string()));
    let Some(header_b64) = token.split('.').next() else {
        return reject("the token is not a compact JWS");
    };
    if token.split('.').count() != 3 {
        return reject("the token is not a compact JWS");
    }
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header_b64) else {
        return reject("the token's header is not base64url");
    };
    let Ok(serde_json::Value::Object(header)) = serde_json::from_slice::<serde_json::Value>(&bytes)
    else {
        return reject("the token's header is not a JSON object");
    };
    if let Some(param) = REFUSED_HEADER_PARAMS
        .iter()
        .find(|p| header.contains_key(**p))
    {
        return Err(TokenRejected(format!(
            "the token's header carries `{param}`, which this service does not accept"
        )));
    }
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .unwrap_or_default();
    let accepted = allowed.iter().any(|a| {
        serde_json::to_value(a)
            .ok()
            .and_then(|v| v.as_str().map(|s| s == alg))
            == Some(true)
    });
    if !accepted {
        return reject("the token's algorithm is not the one of the configured key");
    }
    Ok(())
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidIssuer => "the token's issuer is not accepted".into(),
        K::InvalidAudience => "the token's audience is not accepted".into(),
        K::MissingRequiredClaim(c) => format!("the token lacks the required claim `{c}`"),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidAlgorithm => "the token's algorithm is not the one of the configured key".into(),
        _ => "the token is malformed or its claims are invalid".into(),
    }
}

/// Development keys: an Ed25519 key pair kept in the data folder.
#[derive(Debug, Clone)]
pub struct DevKeys {
    pub private_pem_path: PathBuf,
    pub public_pem_path: PathBuf,
}

impl DevKeys {
    /// The pair that signs development callers' tokens.
    pub fn in_dir(dir: &Path) -> Self {
        Self::named(dir, "dev-signing-key")
    }

    /// The pair that signs licences in development mode.
    pub fn license_in_dir(dir: &Path) -> Self {
        Self::named(dir, "dev-license-key")
    }

    fn named(dir: &Path, stem: &str) -> Self {
        DevKeys {
            private_pem_path: dir.join(format!("{stem}.pem")),
            public_pem_path: dir.join(format!("{stem}.pub.pem")),
        }
    }

    /// Loads the pair, creating it on first use. Returns whether it was
    /// created. A private key already there is never replaced (a missing
    /// public half is written again from it): a development key never
    /// rotates, so what it signed keeps verifying.
    pub fn ensure(&self) -> anyhow::Result<bool> {
        if self.private_pem_path.exists() && self.public_pem_path.exists() {
            return Ok(false);
        }
        use ed25519_dalek::pkcs8::{
            spki::der::pem::LineEnding, DecodePrivateKey, EncodePrivateKey, EncodePublicKey,
        };
        if self.private_pem_path.exists() {
            let pem = String::from_utf8(self.private_pem()?)
                .context("the development private key is not PEM text")?;
            let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).with_context(|| {
                format!(
                    "{} is not a PKCS#8 Ed25519 private key",
                    self.private_pem_path.display()
                )
            })?;
            let public = signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .context("encoding the development public key")?;
            std::fs::write(&self.public_pem_path, public.as_bytes())
                .with_context(|| format!("writing {}", self.public_pem_path.display()))?;
            return Ok(false);
        }
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let private = signing
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the development private key")?;
        let public = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the development public key")?;
        if let Some(dir) = self.private_pem_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data folder {}", dir.display()))?;
        }
        write_private(&self.private_pem_path, private.as_bytes())?;
        std::fs::write(&self.public_pem_path, public.as_bytes())
            .with_context(|| format!("writing {}", self.public_pem_path.display()))?;
        Ok(true)
    }

    pub fn public_pem(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.public_pem_path)
            .with_context(|| format!("reading {}", self.public_pem_path.display()))
    }

    pub fn private_pem(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.private_pem_path)
            .with_context(|| format!("reading {}", self.private_pem_path.display()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The claims of a token this service mints (development mode, and tests).
#[derive(Debug, Clone, Serialize)]
pub struct MintClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reseller: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Signs `claims` with an Ed25519 private key in PKCS#8 PEM.
pub fn mint(private_pem: &[u8], claims: &MintClaims) -> anyhow::Result<String> {
    let key = EncodingKey::from_ed_pem(private_pem)
        .context("the signing key is not an Ed25519 PEM key")?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &key).context("signing the token")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dev_keys_mint_tokens_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DevKeys::in_dir(dir.path());
        assert!(keys.ensure().unwrap());
        assert!(!keys.ensure().unwrap(), "a second call keeps the pair");
        let private = keys.private_pem().unwrap();
        let public = keys.public_pem().unwrap();
        std::fs::remove_file(&keys.public_pem_path).unwrap();
        assert!(
            !keys.ensure().unwrap(),
            "a lost public half is not a new pair"
        );
        assert_eq!(
            keys.private_pem().unwrap(),
            private,
            "the key never rotates"
        );
        assert_eq!(keys.public_pem().unwrap(), public);
        let auth =
            Authenticator::from_public_pem(&keys.public_pem().unwrap(), "iss", "aud").unwrap();
        let now = chrono::Utc::now().timestamp();
        let claims = MintClaims {
            iss: "iss".into(),
            aud: "aud".into(),
            sub: "alice".into(),
            role: Role::Reseller,
            reseller: Some("acme".into()),
            iat: now,
            exp: now + 60,
        };
        let token = mint(&keys.private_pem().unwrap(), &claims).unwrap();
        let p = auth.verify(&token).unwrap();
        assert_eq!(p.role, Role::Reseller);
        assert_eq!(p.reseller.unwrap().as_str(), "acme");
        let wrong_aud =
            Authenticator::from_public_pem(&keys.public_pem().unwrap(), "iss", "other").unwrap();
        assert!(wrong_aud.verify(&token).is_err());
    }

    fn principal() -> Principal {
        Principal {
            sub: "alice".into(),
            role: Role::Reseller,
            reseller: Some(ResellerId::parse("acme").unwrap()),
        }
    }

    #[test]
    fn a_remembered_verification_counts_until_exp_and_leeway_only() {
        let tokens = VerifiedTokens::default();
        let exp = 1_900_000_000;
        tokens.put([1; 32], principal(), exp, exp - 600);
        assert_eq!(tokens.get(&[1; 32], exp), Some(principal()));
        assert_eq!(
            tokens.get(&[1; 32], exp + LEEWAY_SECONDS),
            Some(principal())
        );
        assert_eq!(tokens.get(&[2; 32], exp), None, "another token");
        assert_eq!(tokens.get(&[1; 32], exp + LEEWAY_SECONDS + 1), None);
        assert_eq!(tokens.len(), 0, "an expired entry is dropped when seen");
    }

    #[test]
    fn the_remembered_tokens_are_bounded() {
        let tokens = VerifiedTokens::default();
        let now = 1_800_000_000;
        for i in 0..VERIFIED_TOKENS + 100 {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            // Half of them expired by `now`.
            let exp = if i % 2 == 0 { now - 3600 } else { now + 3600 };
            tokens.put(digest, principal(), exp, now);
            assert!(tokens.len() <= VERIFIED_TOKENS);
        }
        assert!(
            tokens.len() > VERIFIED_TOKENS / 4,
            "live entries survive a sweep"
        );
    }

    #[test]
    fn a_tampered_copy_of_a_remembered_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DevKeys::in_dir(dir.path());
        keys.ensure().unwrap();
        let auth =
            Authenticator::from_public_pem(&keys.public_pem().unwrap(), "iss", "aud").unwrap();
        let now = chrono::Utc::now().timestamp();
        let claims = |role| MintClaims {
            iss: "iss".into(),
            aud: "aud".into(),
            sub: "alice".into(),
            role,
            reseller: Some("acme".into()),
            iat: now,
            exp: now + 60,
        };
        let token = mint(&keys.private_pem().unwrap(), &claims(Role::Reseller)).unwrap();
        let first = auth.verify(&token).unwrap();
        assert_eq!(auth.verify(&token).unwrap(), first, "remembered");
        assert_eq!(auth.verified.len(), 1);
        // The same claims with the role edited, and the first signature kept.
        let admin = mint(&keys.private_pem().unwrap(), &claims(Role::Admin)).unwrap();
        let mut parts: Vec<&str> = admin.split('.').collect();
        parts[2] = token.split('.').nth(2).unwrap();
        assert!(auth.verify(&parts.join(".")).is_err());
        // A flipped signature character.
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(auth.verify(&String::from_utf8(flipped).unwrap()).is_err());
        assert_eq!(auth.verified.len(), 1, "refusals are not remembered");
        // Another verifier (another key) does not share what this one knows.
        let other = tempfile::tempdir().unwrap();
        let other_keys = DevKeys::in_dir(other.path());
        other_keys.ensure().unwrap();
        let stranger =
            Authenticator::from_public_pem(&other_keys.public_pem().unwrap(), "iss", "aud")
                .unwrap();
        assert!(stranger.verify(&token).is_err());
    }
}
