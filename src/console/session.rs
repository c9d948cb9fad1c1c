//! The console's session: a cookie the service signs (HMAC-SHA256 with a
//! secret derived from the licence key, so every replica reads it), naming
//! the signed-in person, their role, when it ends, and the CSRF token every
//! state-changing form must carry. Nothing is kept on the server: signing out
//! clears the cookie, and a session ends at its `exp` whatever happens.
//!
//! A sign-in through the identity provider is carried the same way while
//! the person is at the provider ([`Login`]: the `state`, `nonce` and PKCE
//! verifier, for ten minutes). Each kind is signed under a purpose of its
//! own, so one is never taken for the other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Role;

/// The cookie's name.
pub const COOKIE: &str = "gk_console";

/// How long a session lasts, in seconds (a working day).
pub const LIFETIME: i64 = 8 * 3600;

/// A signed-in person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who, as the audit trail names them (`console:` and the name given
    /// in development mode; the provider's `sub` otherwise).
    pub sub: String,
    pub role: Role,
    /// Unix seconds.
    pub exp: i64,
    /// The token every form that changes something carries back.
    pub csrf: String,
    /// The name shown on the pages, when the provider gives one (the trail
    /// names `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Session {
    /// Who the pages say is signed in.
    pub fn shown_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }
}

/// How long a sign-in at the identity provider may take, in seconds.
pub const LOGIN_LIFETIME: i64 = 600;

/// A sign-in under way at the identity provider: what the callback checks
/// the provider's answer against (RFC 6749 `state`, OpenID `nonce`, RFC 7636
/// PKCE verifier) and the redirect URI the code was asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub redirect_uri: String,
    pub exp: i64,
}

impl Login {
    /// PKCE's `S256` challenge of the verifier.
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Signs and reads session cookies.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    pub fn new(key: [u8; 32]) -> Self {
        Sessions { key }
    }

    fn mac(&self, purpose: &str, payload: &str) -> Vec<u8> {
        use hmac::digest::KeyInit;
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.key);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A cookie value: `value` as JSON, then its signature under `purpose`.
    fn seal_as<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
        let mac = URL_SAFE_NO_PAD.encode(self.mac(purpose, &payload));
        format!("{payload}.{mac}")
    }

    /// What a cookie value sealed under `purpose` holds, if its signature
    /// holds.
    fn open_as<T: DeserializeOwned>(&self, purpose: &str, value: &str) -> Option<T> {
        let (payload, mac) = value.split_once('.')?;
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.mac(purpose, payload);
        if !constant_time_eq(&given, &expected) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    /// A new session for `sub` in `role`, from `now` (Unix seconds).
    pub fn open(&self, sub: String, role: Role, now: i64) -> Session {
        Session {
            sub,
            role,
            exp: now + LIFETIME,
            csrf: random_token(),
            name: None,
        }
    }

    /// The cookie's value: the session, then its signature.
    pub fn seal(&self, session: &Session) -> String {
        self.seal_as("session", session)
    }

    /// The session a cookie value holds, if its signature holds and it has
    /// not ended by `now`.
    pub fn open_cookie(&self, value: &str, now: i64) -> Option<Session> {
        let session: Session = self.open_as("session", value)?;
        (now < session.exp).then_some(session)
    }

    /// A new sign-in at the provider, to come back to `redirect_uri`.
    pub fn begin_login(&self, redirect_uri: String, now: i64) -> Login {
        Login {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            redirect_uri,
            exp: now + LOGIN_LIFETIME,
        }
    }

    pub fn seal_login(&self, login: &Login) -> String {
        self.seal_as("login", login)
    }

    /// The sign-in a cookie value holds, if its signature holds and it has
    /// not timed out by `now`.
    pub fn open_login(&self, value: &str, now: i64) -> Option<Login> {
        let login: Login = self.open_as("login", value)?;
        (now < login.exp).then_some(login)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `given` is the session's CSRF token (in constant time).
pub fn csrf_matches(session: &Session, given: &str) -> bool {
    tokens_match(&session.csrf, given)
}

/// Whether two tokens are the same (in constant time).
pub fn tokens_match(expected: &str, given: &str) -> bool {
    constant_time_eq(expected.as_bytes(), given.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_sealed_session_opens_until_it_ends_and_an_edited_one_never() {
        let sessions = Sessions::new([7; 32]);
        let s = sessions.open("console:ada".into(), Role::Compliance, 1_000);
        let cookie = sessions.seal(&s);
        assert_eq!(sessions.open_cookie(&cookie, 1_001), Some(s.clone()));
        assert_eq!(sessions.open_cookie(&cookie, 1_000 + LIFETIME), None);
        // The role edited, the signature kept.
        let mut admin = s.clone();
        admin.role = Role::Admin;
        let forged = format!(
            "{}.{}",
            sessions.seal(&admin).split('.').next().unwrap(),
            cookie.split('.').nth(1).unwrap()
        );
        assert_eq!(sessions.open_cookie(&forged, 1_001), None);
        // Another key (another deployment) does not read it.
        assert_eq!(Sessions::new([8; 32]).open_cookie(&cookie, 1_001), None);
        assert_eq!(sessions.open_cookie("garbage", 1_001), None);
        assert!(csrf_matches(&s, &s.csrf.clone()));
        assert!(!csrf_matches(&s, "x"));
    }

    #[test]
    fn a_login_is_never_taken_for_a_session_nor_the_other_way() {
        let sessions = Sessions::new([7; 32]);
        let login = sessions.begin_login("http://127.0.0.1/console/callback".into(), 1_000);
        let sealed = sessions.seal_login(&login);
        assert_eq!(sessions.open_login(&sealed, 1_001), Some(login.clone()));
        assert_eq!(sessions.open_login(&sealed, 1_000 + LOGIN_LIFETIME), None);
        assert_eq!(sessions.open_cookie(&sealed, 1_001), None);
        let session = sessions.seal(&sessions.open("console:ada".into(), Role::Admin, 1_000));
        assert_eq!(sessions.open_login(&session, 1_001), None);
        // RFC 7636, appendix B.
        let rfc = Login {
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ..login
        };
        assert_eq!(
            rfc.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
