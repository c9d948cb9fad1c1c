//! The console's session: a cookie the service signs (HMAC-SHA256 with a
//! secret derived from the licence key, so every replica reads it), naming
//! the signed-in person, their role, when it ends, and the CSRF token every
//! state-changing form must carry. Nothing is kept on the server: signing out
//! clears the cookie, and a session ends at its `exp` whatever happens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

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

    fn mac(&self, payload: &str) -> Vec<u8> {
        use hmac::digest::KeyInit;
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.key);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session for `sub` in `role`, from `now` (Unix seconds).
    pub fn open(&self, sub: String, role: Role, now: i64) -> Session {
        let csrf = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        Session {
            sub,
            role,
            exp: now + LIFETIME,
            csrf,
        }
    }

    /// The cookie's value: the session, then its signature.
    pub fn seal(&self, session: &Session) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        format!("{payload}.{mac}")
    }

    /// The session a cookie value holds, if its signature holds and it has
    /// not ended by `now`.
    pub fn open_cookie(&self, value: &str, now: i64) -> Option<Session> {
        let (payload, mac) = value.split_once('.')?;
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.mac(payload);
        if !constant_time_eq(&given, &expected) {
            return None;
        }
        let session: Session =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (now < session.exp).then_some(session)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `given` is the session's CSRF token (in constant time).
pub fn csrf_matches(session: &Session, given: &str) -> bool {
    constant_time_eq(session.csrf.as_bytes(), given.as_bytes())
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
}
