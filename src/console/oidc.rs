//! Signing in to the console through the identity provider: OpenID Connect's
//! authorization code flow with PKCE (RFC 7636, `S256`), as a public client
//! (`GATEKEEPER_CONSOLE_CLIENT_ID`) of `GATEKEEPER_OIDC_ISSUER`.
//!
//! 1. `GET /console/sign-in/provider` seals a [`Login`] (random `state`,
//!    `nonce` and verifier) into a cookie of its own and sends the browser to
//!    the provider's `authorization_endpoint` (from the discovery document
//!    the key refresher reads).
//! 2. `GET /console/callback?code&state` takes that cookie back, checks
//!    `state`, and exchanges the code with the verifier at the
//!    `token_endpoint`. The ID token is checked as the API checks tokens
//!    (same keys, issuer, algorithm rules and claim mapping for role and
//!    tenant), with `aud` the console's client, and its `nonce` the login's.
//!
//! Failure modes, each a page that says what happened and changes nothing:
//! the provider's `error` answer, a callback without its login (timed out
//! after ten minutes, another browser, or a forged one), a `state` that does
//! not match, an exchange the provider refuses or that cannot reach it, an
//! ID token that does not verify or has another `nonce`, and a role other
//! than compliance or admin. The login cookie is cleared on every outcome.
//!
//! The login cookie is `SameSite=Lax` (the provider's redirect back is a
//! cross-site navigation, which a `Strict` cookie would not come with) and
//! scoped to the callback's path; the session cookie stays `Strict`, so the
//! callback answers with a page that moves on to the queue from this origin
//! (a redirect would still count as the cross-site navigation).

use std::sync::Arc;

use serde_json::Value;

use super::session::{tokens_match, Login};
use crate::auth::provider::{post_form, Provider};
use crate::auth::{Authenticator, Principal};

/// The login cookie's name.
pub const LOGIN_COOKIE: &str = "gk_console_login";

/// Where the provider sends the browser back, under the console.
pub const CALLBACK_PATH: &str = "/console/callback";

/// The scopes asked for: the ID token, and a name to show.
const SCOPE: &str = "openid profile";

/// The console as a client of the identity provider.
#[derive(Clone)]
pub struct ConsoleClient {
    client_id: String,
    /// The API's verifier, for the tokens issued to `client_id`.
    id_tokens: Authenticator,
    provider: Arc<Provider>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ConsoleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleClient")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Why a sign-in through the provider did not end in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The provider's discovery document has not named its endpoints (yet).
    NoEndpoints,
    /// The exchange failed: the provider refused the code, or could not be
    /// reached.
    Exchange(String),
    /// The ID token did not verify, or is not the one this login asked for.
    IdToken(String),
}

impl ConsoleClient {
    /// The console as `client_id` of the provider `api` verifies tokens of.
    pub fn new(client_id: &str, api: &Authenticator) -> anyhow::Result<Option<Self>> {
        let Some(provider) = api.provider() else {
            return Ok(None);
        };
        Ok(Some(ConsoleClient {
            client_id: client_id.to_string(),
            id_tokens: api.for_audience(client_id),
            provider: Arc::clone(provider),
            http: crate::auth::provider::client()?,
        }))
    }

    /// Where to send the browser to sign in, for `login`.
    pub fn authorization_url(&self, login: &Login) -> Result<String, Failure> {
        let endpoints = self.provider.endpoints().ok_or(Failure::NoEndpoints)?;
        let mut url = url::Url::parse(&endpoints.authorization)
            .map_err(|e| Failure::Exchange(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &login.redirect_uri)
            .append_pair("scope", SCOPE)
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &login.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// The code exchanged, and the ID token checked: the person it names,
    /// with the name to show.
    pub async fn finish(
        &self,
        login: &Login,
        code: &str,
    ) -> Result<(Principal, Option<String>), Failure> {
        let endpoints = self.provider.endpoints().ok_or(Failure::NoEndpoints)?;
        let answer = post_form(
            &self.http,
            &endpoints.token,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &login.redirect_uri),
                ("client_id", &self.client_id),
                ("code_verifier", &login.verifier),
            ],
        )
        .await
        .map_err(|e| Failure::Exchange(format!("{e:#}")))?;
        let id_token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::Exchange("the provider's answer has no id_token".into()))?;
        let (principal, claims) = self
            .id_tokens
            .verify_once(id_token)
            .await
            .map_err(|e| Failure::IdToken(e.message))?;
        check_id_claims(&self.client_id, &claims, login)?;
        Ok((principal, shown_name(&claims)))
    }
}

/// OpenID Connect Core 1.0, 3.1.3.7, beyond what every token's check does:
/// the `nonce` is the login's, and `azp`, when there or needed (several
/// audiences), is this client.
fn check_id_claims(client_id: &str, claims: &Value, login: &Login) -> Result<(), Failure> {
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if !tokens_match(&login.nonce, nonce) {
        return Err(Failure::IdToken(
            "the ID token is not the one this sign-in asked for (nonce)".into(),
        ));
    }
    let several = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    let azp = claims.get("azp").and_then(Value::as_str);
    if (several || azp.is_some()) && azp != Some(client_id) {
        return Err(Failure::IdToken(
            "the ID token was issued to another client (azp)".into(),
        ));
    }
    Ok(())
}

/// The name the pages show: `name`, `preferred_username` or `email`, if it
/// is plain text of at most 100 characters.
fn shown_name(claims: &Value) -> Option<String> {
    ["name", "preferred_username", "email"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(Value::as_str))
        .map(str::trim)
        .find(|n| !n.is_empty() && n.chars().count() <= 100 && !n.chars().any(char::is_control))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_id_token_must_carry_the_logins_nonce_and_be_this_clients() {
        let login = Login {
            state: "s".into(),
            nonce: "n-1".into(),
            verifier: "v".into(),
            redirect_uri: "http://127.0.0.1/console/callback".into(),
            exp: 0,
        };
        let ok = |claims: Value| check_id_claims("console", &claims, &login).is_ok();
        assert!(ok(json!({"nonce": "n-1", "aud": "console"})));
        assert!(ok(
            json!({"nonce": "n-1", "aud": ["console"], "azp": "console"})
        ));
        assert!(!ok(json!({"nonce": "n-2", "aud": "console"})));
        assert!(!ok(json!({"aud": "console"})));
        assert!(!ok(json!({"nonce": "n-1", "aud": ["console", "other"]})));
        assert!(!ok(
            json!({"nonce": "n-1", "aud": "console", "azp": "other"})
        ));
    }

    #[test]
    fn the_shown_name_is_the_first_plain_one() {
        assert_eq!(
            shown_name(&json!({"name": " ", "preferred_username": "ada", "email": "a@x"})),
            Some("ada".into())
        );
        assert_eq!(shown_name(&json!({"name": "a\u{7}b"})), None);
        assert_eq!(shown_name(&json!({"sub": "x"})), None);
    }
}
