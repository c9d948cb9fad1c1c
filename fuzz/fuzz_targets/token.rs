//! Token validation (`Authenticator::verify`): it never panics, and it never
//! accepts a token that the configured key did not sign exactly as it is.
//!
//! The key is a fixed test key (derived from a public seed, so not a secret),
//! so the tokens minted from it here are byte-identical to the committed
//! seeds in `fuzz/seeds/token/`. Each input is tried twice:
//! - raw: the input itself (lossily as UTF-8) is the token;
//! - structured: the first byte picks one of the minted tokens and the rest
//!   are 3-byte edits of it (overwrite, insert, delete, truncate), so the
//!   fuzzer explores near-valid tokens.
//!
//! Either way, a token `verify` accepts must be one of the valid minted
//! tokens, byte for byte; and those must be accepted.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use gatekeeper::auth::{mint, Authenticator, MintClaims, Role};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://gatekeeper.fuzz.invalid";
const AUDIENCE: &str = "license-gatekeeper";
/// The seed of the fuzz-only signing key. Public on purpose: it signs nothing real.
const TEST_KEY_SEED: [u8; 32] = *b"gatekeeper fuzz-only test key 01";
const IAT: i64 = 1_700_000_000;
/// 2100-01-01: the committed seed tokens stay valid.
const FAR_FUTURE: i64 = 4_102_444_800;

struct Harness {
    auth: Authenticator,
    /// Tokens the key signed whose claims are valid: the only ones `verify` may accept.
    valid: Vec<String>,
    /// Tokens the key signed whose claims must be refused.
    refused: Vec<String>,
}

fn claims(sub: &str, role: Role, reseller: Option<&str>) -> MintClaims {
    MintClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: sub.into(),
        role,
        reseller: reseller.map(String::from),
        iat: IAT,
        exp: FAR_FUTURE,
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let signing = ed25519_dalek::SigningKey::from_bytes(&TEST_KEY_SEED);
        let private = signing
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding the test private key");
        let public = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding the test public key");
        let auth = Authenticator::from_public_pem(public.as_bytes(), ISSUER, AUDIENCE)
            .expect("the test public key");
        let sign = |c: &MintClaims| mint(private.as_bytes(), c).expect("minting a test token");
        let valid: Vec<String> = [
            claims("alice", Role::Reseller, Some("acme")),
            claims("bob", Role::Admin, None),
            claims("carol", Role::Compliance, None),
        ]
        .iter()
        .map(sign)
        .collect();
        let refused: Vec<String> = [
            MintClaims {
                exp: 1_000_000_000,
                iat: 999_999_000,
                ..claims("alice", Role::Reseller, Some("acme"))
            },
            claims("dave", Role::Integrator, None),
            claims("erin", Role::Reseller, Some("Not A Reseller!")),
            MintClaims {
                aud: "someone-else".into(),
                ..claims("bob", Role::Admin, None)
            },
            claims(" ", Role::Admin, None),
        ]
        .iter()
        .map(sign)
        .collect();
        for t in &valid {
            assert!(auth.verify(t).is_ok(), "a valid minted token is refused");
        }
        for t in &refused {
            assert!(
                auth.verify(t).is_err(),
                "an invalid minted token is accepted"
            );
        }
        Harness {
            auth,
            valid,
            refused,
        }
    })
}

fn check(h: &Harness, token: &str) {
    let is_valid = h.valid.iter().any(|v| v.as_bytes() == token.as_bytes());
    match h.auth.verify(token) {
        Ok(principal) => assert!(
            is_valid,
            "accepted a token the key did not sign as it is: {token:?} -> {principal:?}"
        ),
        Err(e) => assert!(!is_valid, "refused a valid token: {e}"),
    }
}

/// Applies 3-byte edits `[op|pos_hi, pos_lo, value]` to `bytes`.
fn edit(bytes: &mut Vec<u8>, edits: &[u8]) {
    for e in edits.chunks_exact(3) {
        let pos = (usize::from(e[0] & 0x3f) << 8 | usize::from(e[1])) % (bytes.len() + 1);
        match e[0] >> 6 {
            0 if pos < bytes.len() => bytes[pos] = e[2],
            0 | 1 => bytes.insert(pos, e[2]),
            2 if pos < bytes.len() => {
                bytes.remove(pos);
            }
            _ => bytes.truncate(pos),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    check(h, &String::from_utf8_lossy(data));
    if let Some((&pick, edits)) = data.split_first() {
        let all = h.valid.len() + h.refused.len();
        let i = usize::from(pick) % all;
        let base = h
            .valid
            .get(i)
            .unwrap_or_else(|| &h.refused[i - h.valid.len()]);
        let mut bytes = base.clone().into_bytes();
        edit(&mut bytes, edits);
        check(h, &String::from_utf8_lossy(&bytes));
    }
});
