//! Callers' tokens: verification (hardened beyond the jsonwebtoken defaults)
//! against a configured PEM key or an identity provider's key set, the
//! mapping of the provider's claims to a role and a tenant, and, in
//! development mode, the key pair and the tokens minted with it.
//!
//! - `keys`: the key set, read key by key from a JWKS (what is skipped, and
//!   the algorithm each key allows);
//! - `provider`: an OpenID provider's keys, fetched, refreshed and judged
//!   stale;
//! - `dev`: development mode's key pair and tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::bail;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::ResellerId;

pub mod dev;
pub mod keys;
pub mod provider;

pub use dev::{mint, DevKeys, MintClaims};
use keys::{KeySet, Miss};
use provider::Provider;

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

/// Why a token was refused. The message is safe to return to the caller;
/// the reason labels `gatekeeper_auth_failures_total`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct TokenRejected {
    pub reason: &'static str,
    pub message: String,
}

impl TokenRejected {
    /// A token that is not acceptable (`invalid_token`).
    fn invalid(message: impl Into<String>) -> Self {
        TokenRejected {
            reason: "invalid_token",
            message: message.into(),
        }
    }
}

/// Where a token's claims name the caller's role and tenant: JSON pointers
/// (RFC 6901) into the claims, `/role` and `/reseller` by default (Keycloak
/// puts realm roles at `/realm_access/roles`; Auth0 wants namespaced claims,
/// such as `/https:~1~1gatekeeper.example~1role`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMap {
    role: String,
    tenant: String,
}

impl Default for ClaimMap {
    fn default() -> Self {
        ClaimMap {
            role: "/role".into(),
            tenant: "/reseller".into(),
        }
    }
}

impl ClaimMap {
    /// Checks both pointers: each must start with `/` and use `~` only in
    /// `~0` and `~1`.
    pub fn new(role: &str, tenant: &str) -> anyhow::Result<ClaimMap> {
        for (var, pointer) in [
            ("GATEKEEPER_JWT_ROLE_CLAIM", role),
            ("GATEKEEPER_JWT_TENANT_CLAIM", tenant),
        ] {
            let escapes_ok = pointer
                .split('~')
                .skip(1)
                .all(|rest| rest.starts_with('0') || rest.starts_with('1'));
            if !pointer.starts_with('/') || pointer.len() < 2 || !escapes_ok {
                bail!(
                    "{var} must be a JSON pointer to a claim, such as /role or \
                     /realm_access/roles (`/` in a claim name is written ~1, `~` is ~0)"
                );
            }
        }
        Ok(ClaimMap {
            role: role.into(),
            tenant: tenant.into(),
        })
    }

    /// The role the claims name: a string, or an array holding exactly one
    /// known role (a provider adds roles of its own, such as Keycloak's
    /// `offline_access`, which are ignored).
    fn role(&self, claims: &Value) -> Result<Role, TokenRejected> {
        let refuse = |m: String| Err(TokenRejected::invalid(m));
        match claims.pointer(&self.role) {
            None => refuse(format!("the token lacks the role claim `{}`", self.role)),
            Some(Value::String(role)) => Role::parse(role).map_or_else(
                || refuse("the token's role claim names no known role".into()),
                Ok,
            ),
            Some(Value::Array(roles)) => {
                let mut known = roles
                    .iter()
                    .filter_map(|r| r.as_str().and_then(Role::parse));
                match (known.next(), known.next()) {
                    (Some(role), None) => Ok(role),
                    (None, _) => refuse("the token's role claim names no known role".into()),
                    (Some(_), Some(_)) => {
                        refuse("the token's role claim names more than one known role".into())
                    }
                }
            }
            Some(_) => refuse("the token's role claim is not a string or an array".into()),
        }
    }

    /// The tenant, for a role that has one.
    fn tenant(&self, claims: &Value, role: Role) -> Result<Option<ResellerId>, TokenRejected> {
        if !role.is_tenant() {
            return Ok(None);
        }
        match claims.pointer(&self.tenant) {
            Some(Value::String(id)) => ResellerId::parse(id).map(Some).map_err(|_| {
                TokenRejected::invalid("the token's reseller claim is not a valid reseller id")
            }),
            None | Some(Value::Null) => Err(TokenRejected::invalid(
                "a reseller or integrator token needs a reseller claim",
            )),
            Some(_) => Err(TokenRejected::invalid(
                "the token's reseller claim is not a string",
            )),
        }
    }
}

/// Header parameters we refuse outright: we never fetch keys named by a token,
/// and we implement no extension a token could mark critical.
const REFUSED_HEADER_PARAMS: &[&str] = &["crit", "jku", "x5u", "jwk", "x5c", "b64", "zip", "enc"];

/// The keys tokens are checked against.
#[derive(Clone)]
enum Keys {
    /// A configured PEM key (or development mode's).
    Fixed(Arc<KeySet>),
    /// An identity provider's key set, kept fresh.
    Provider(Arc<Provider>),
}

/// Verifies callers' tokens.
#[derive(Clone)]
pub struct Authenticator {
    keys: Keys,
    issuer: String,
    /// One validation per accepted algorithm, each accepting only it
    /// (jsonwebtoken wants a validation's algorithms in one family).
    validations: Arc<[(Algorithm, Validation)]>,
    claims: ClaimMap,
    verified: Arc<VerifiedTokens>,
}

/// Tokens already verified, so that a caller's next requests skip the
/// signature check (an Ed25519 verification costs tens of microseconds, the
/// largest cost of a request before the database). Keyed by the SHA-256 of
/// the token (the token itself is not kept); an entry counts only until the
/// token's `exp` (with the same leeway), and only under the key set it was
/// verified with (a key the provider retires stops verifying at the next
/// refresh). The map is bounded: when full, expired entries go, and if none
/// has expired, all do.
#[derive(Default)]
struct VerifiedTokens {
    map: Mutex<HashMap<[u8; 32], Remembered>>,
}

/// A verified token's caller, its `exp`, and the fingerprint of the key set
/// that verified it.
#[derive(Clone)]
struct Remembered {
    principal: Principal,
    exp: u64,
    keys: [u8; 32],
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
    fn get(&self, digest: &[u8; 32], now: u64, keys: &[u8; 32]) -> Option<Principal> {
        let mut map = self.map.lock().ok()?;
        match map.get(digest) {
            Some(r) if now <= r.exp.saturating_add(LEEWAY_SECONDS) && &r.keys == keys => {
                Some(r.principal.clone())
            }
            Some(_) => {
                map.remove(digest);
                None
            }
            None => None,
        }
    }

    fn put(&self, digest: [u8; 32], remembered: Remembered, now: u64) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= VERIFIED_TOKENS {
            map.retain(|_, r| now <= r.exp.saturating_add(LEEWAY_SECONDS));
            if map.len() >= VERIFIED_TOKENS {
                map.clear();
            }
        }
        map.insert(digest, remembered);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// Why a verification attempt did not name a caller.
enum Refusal {
    Rejected(TokenRejected),
    /// The token names a `kid` the key set does not hold (yet).
    UnknownKid,
}

impl From<TokenRejected> for Refusal {
    fn from(e: TokenRejected) -> Self {
        Refusal::Rejected(e)
    }
}

impl Refusal {
    fn rejected(self) -> TokenRejected {
        match self {
            Refusal::Rejected(e) => e,
            Refusal::UnknownKid => TokenRejected::invalid(
                "the token's key (kid) is not one the identity provider publishes",
            ),
        }
    }
}

impl Authenticator {
    /// Builds a verifier from a PEM public key (Ed25519, RSA or EC P-256).
    /// The accepted algorithms follow from the key's type, never from a token.
    pub fn from_public_pem(pem: &[u8], issuer: &str, audience: &str) -> anyhow::Result<Self> {
        Ok(Self::with_keys(
            Keys::Fixed(Arc::new(KeySet::from_pem(pem)?)),
            issuer,
            audience,
        ))
    }

    /// Builds a verifier of the tokens `issuer` signs with the keys
    /// `provider` keeps fresh.
    pub fn from_provider(provider: Arc<Provider>, issuer: &str, audience: &str) -> Self {
        Self::with_keys(Keys::Provider(provider), issuer, audience)
    }

    fn with_keys(keys: Keys, issuer: &str, audience: &str) -> Self {
        // Every asymmetric algorithm; the key a token names allows only its
        // own (`verify_signed`), and the token's must be one of them.
        let validations = keys::ALGORITHMS.map(|alg| {
            let mut validation = Validation::new(alg);
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.leeway = LEEWAY_SECONDS;
            (alg, validation)
        });
        Authenticator {
            keys,
            issuer: issuer.to_string(),
            validations: Arc::new(validations),
            claims: ClaimMap::default(),
            verified: Arc::default(),
        }
    }

    /// Reads the role and tenant where `claims` says.
    pub fn with_claims(mut self, claims: ClaimMap) -> Self {
        self.claims = claims;
        self
    }

    /// The identity provider whose keys this verifier uses, if any.
    pub fn provider(&self) -> Option<&Arc<Provider>> {
        match &self.keys {
            Keys::Provider(p) => Some(p),
            Keys::Fixed(_) => None,
        }
    }

    /// Why no token can be verified now (the provider's keys are missing or
    /// stale), for `/readyz`.
    pub fn unavailable(&self) -> Option<String> {
        self.current_keys().err().map(|e| e.message)
    }

    fn current_keys(&self) -> Result<Arc<KeySet>, TokenRejected> {
        match &self.keys {
            Keys::Fixed(keys) => Ok(Arc::clone(keys)),
            Keys::Provider(p) => p.current().map_err(|e| TokenRejected {
                reason: "keys_unavailable",
                message: e.0,
            }),
        }
    }

    /// Verifies a compact JWS against the keys held now and returns the
    /// caller it names (a `kid` the provider has not been asked about is
    /// refused: see [`Authenticator::authenticate`]).
    pub fn verify(&self, token: &str) -> Result<Principal, TokenRejected> {
        self.verify_at(token, unix_now()).map_err(Refusal::rejected)
    }

    /// [`Authenticator::verify`], and for a token naming a `kid` the
    /// provider's set does not hold, one refresh of the set (shared with
    /// other requests and rate-limited: see `provider`) and a second look.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, TokenRejected> {
        match self.verify_at(token, unix_now()) {
            Err(Refusal::UnknownKid) => {
                if let Keys::Provider(provider) = &self.keys {
                    provider.refresh_for_unknown_kid().await;
                }
                self.verify_at(token, unix_now()).map_err(Refusal::rejected)
            }
            other => other.map_err(Refusal::rejected),
        }
    }

    /// The check, with `now` (Unix seconds) deciding whether a remembered
    /// verification still counts. Keys that cannot be used refuse every
    /// token, remembered or not.
    fn verify_at(&self, token: &str, now: u64) -> Result<Principal, Refusal> {
        let keys = self.current_keys()?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.verified.get(&digest, now, keys.fingerprint()) {
            return Ok(principal);
        }
        let (principal, exp, _) = self.verify_signed(token, &keys)?;
        let remembered = Remembered {
            principal: principal.clone(),
            exp,
            keys: *keys.fingerprint(),
        };
        self.verified.put(digest, remembered, now);
        Ok(principal)
    }

    /// The full check: header, key, signature, claims. Returns the caller,
    /// the token's `exp` and its claims.
    fn verify_signed(
        &self,
        token: &str,
        keys: &KeySet,
    ) -> Result<(Principal, u64, Value), Refusal> {
        let (alg, kid) = check_header(token, &keys.algorithms())?;
        let key = keys.find(kid.as_deref(), alg).map_err(|miss| match miss {
            Miss::UnknownKid => Refusal::UnknownKid,
            Miss::NoKid => Refusal::Rejected(TokenRejected::invalid(
                "the token names no key (kid), and more than one key could verify it",
            )),
            Miss::WrongAlgorithm => Refusal::Rejected(TokenRejected::invalid(
                "the token's algorithm is not the one of its key",
            )),
        })?;
        let validation = self
            .validations
            .iter()
            .find_map(|(a, v)| (*a == alg).then_some(v))
            .ok_or_else(|| TokenRejected::invalid("the token's algorithm is not accepted"))?;
        let data = jsonwebtoken::decode::<Value>(token, key, validation)
            .map_err(|e| TokenRejected::invalid(describe(&e)))?;
        let claims = data.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        // A string: jsonwebtoken also takes an array of issuers and accepts
        // the token when any of them is accepted, which RFC 7519 does not allow.
        if text("iss") != Some(self.issuer.as_str()) {
            return Err(TokenRejected::invalid("the token's issuer is not accepted").into());
        }
        let sub = match text("sub") {
            Some(sub) if !sub.trim().is_empty() => sub.to_string(),
            Some(_) => return Err(TokenRejected::invalid("the token's sub claim is empty").into()),
            None => {
                return Err(TokenRejected::invalid("the token's sub claim is not a string").into())
            }
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| TokenRejected::invalid("the token's exp claim is not a whole number"))?;
        let role = self.claims.role(&claims)?;
        let reseller = self.claims.tenant(&claims, role)?;
        Ok((
            Principal {
                sub,
                role,
                reseller,
            },
            exp,
            claims,
        ))
    }

    /// A verifier of the tokens the same issuer makes for `audience`, such
    /// as the console's ID tokens (`aud` its client id): the same keys,
    /// checks and claim mapping, and a cache of its own.
    pub fn for_audience(&self, audience: &str) -> Authenticator {
        let mut other = Self::with_keys(self.keys.clone(), &self.issuer, audience);
        other.claims = self.claims.clone();
        other
    }

    /// Verifies a token once (nothing remembered: an ID token is used once)
    /// with one refresh for an unknown `kid`, as [`Authenticator::authenticate`]
    /// does, and returns its caller and all its claims.
    pub async fn verify_once(&self, token: &str) -> Result<(Principal, Value), TokenRejected> {
        let attempt = || -> Result<(Principal, Value), Refusal> {
            let keys = self.current_keys()?;
            let (principal, _, claims) = self.verify_signed(token, &keys)?;
            Ok((principal, claims))
        };
        match attempt() {
            Err(Refusal::UnknownKid) => {
                if let Keys::Provider(provider) = &self.keys {
                    provider.refresh_for_unknown_kid().await;
                }
                attempt().map_err(Refusal::rejected)
            }
            other => other.map_err(Refusal::rejected),
        }
    }
}

/// The JOSE header's parameters a verification uses.
#[derive(Deserialize)]
struct JoseHeader {
    alg: Algorithm,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks the protected header before any signature work: the algorithm
/// must be one a key of the set allows, and no parameter we refuse may be
/// there. Returns the algorithm and the `kid`.
fn check_header(
    token: &str,
    allowed: &[Algorithm],
) -> Result<(Algorithm, Option<String>), TokenRejected> {
    let reject = |m: &str| Err(TokenRejected::invalid(m));
    let Some(header_b64) = token.split('.').next() else {
        return reject("the token is not a compact JWS");
    };
    if token.split('.').count() != 3 {
        return reject("the token is not a compact JWS");
    }
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header_b64) else {
        return reject("the token's header is not base64url");
    };
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&bytes) else {
        return reject("the token's header is not a JSON object");
    };
    if let Some(param) = REFUSED_HEADER_PARAMS
        .iter()
        .find(|p| header.contains_key(**p))
    {
        return Err(TokenRejected::invalid(format!(
            "the token's header carries `{param}`, which this service does not accept"
        )));
    }
    let parsed = serde_json::from_value::<JoseHeader>(Value::Object(header)).ok();
    match parsed {
        Some(JoseHeader { alg, kid }) if allowed.contains(&alg) => Ok((alg, kid)),
        _ => reject("the token's algorithm is not one the configured keys verify"),
    }
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

    /// The fingerprint of the key set the remembered tokens were verified with.
    const SET: [u8; 32] = [9; 32];

    fn remembered(exp: u64) -> Remembered {
        Remembered {
            principal: principal(),
            exp,
            keys: SET,
        }
    }

    #[test]
    fn a_remembered_verification_counts_only_under_the_same_key_set() {
        let tokens = VerifiedTokens::default();
        let exp = 1_900_000_000;
        tokens.put([1; 32], remembered(exp), exp - 600);
        assert_eq!(tokens.get(&[1; 32], exp - 60, &[8; 32]), None);
        assert_eq!(tokens.len(), 0, "dropped once the set changed");
    }

    #[test]
    fn a_remembered_verification_counts_until_exp_and_leeway_only() {
        let tokens = VerifiedTokens::default();
        let exp = 1_900_000_000;
        tokens.put([1; 32], remembered(exp), exp - 600);
        assert_eq!(tokens.get(&[1; 32], exp, &SET), Some(principal()));
        assert_eq!(
            tokens.get(&[1; 32], exp + LEEWAY_SECONDS, &SET),
            Some(principal())
        );
        assert_eq!(tokens.get(&[2; 32], exp, &SET), None, "another token");
        assert_eq!(tokens.get(&[1; 32], exp + LEEWAY_SECONDS + 1, &SET), None);
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
            tokens.put(digest, remembered(exp), now);
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
