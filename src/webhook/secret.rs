//! Endpoint secrets and Standard Webhooks signatures.
//!
//! A secret is `whsec_` followed by the standard base64 of 32 random bytes;
//! the bytes are the HMAC-SHA256 key. A delivery's signature is
//! `v1,<base64 of HMAC(key, "{id}.{timestamp}.{body}")>`; during a rotation's
//! overlap the header carries one signature per secret, separated by spaces,
//! and a receiver accepts a delivery when any of them verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// The prefix of every secret.
pub const PREFIX: &str = "whsec_";

/// A secret that is not `whsec_` and base64.
#[derive(Debug, thiserror::Error)]
#[error("a webhook secret is whsec_ followed by base64")]
pub struct BadSecret;

/// A new secret from the operating system's random source.
pub fn generate() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The SHA-256 of the secret as written (lower-case hex): what the audit
/// trail keeps of it, so verification can check the stored secret without
/// the trail ever holding one.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The HMAC key a secret holds.
fn key(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let encoded = secret.strip_prefix(PREFIX).ok_or(BadSecret)?;
    STANDARD.decode(encoded).map_err(|_| BadSecret)
}

/// One signature, `v1,<base64>`, of a delivery's id, timestamp (unix
/// seconds) and body.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per secret, in order.
pub fn signature_header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let signatures = secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_generated_secret_is_prefixed_base64_of_32_bytes() {
        let s = generate();
        assert_eq!(key(&s).unwrap().len(), 32);
        assert_ne!(s, generate());
    }

    /// The example of the Standard Webhooks specification's reference
    /// libraries (secret, id, timestamp and body as they publish them).
    #[test]
    fn signs_as_the_reference_libraries_do() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let got = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn one_signature_per_secret_and_bad_secrets_are_refused() {
        let (a, b) = (generate(), generate());
        let header = signature_header(&[&a, &b], "evt_1", 1, b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            vec![
                sign(&a, "evt_1", 1, b"{}").unwrap(),
                sign(&b, "evt_1", 1, b"{}").unwrap()
            ]
        );
        assert!(sign("nope", "evt_1", 1, b"{}").is_err());
        assert!(sign("whsec_!!", "evt_1", 1, b"{}").is_err());
    }
}
