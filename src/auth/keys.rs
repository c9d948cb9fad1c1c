//! The keys that verify callers' tokens, as one [`KeySet`]: the configured
//! PEM key, or the signing keys of an identity provider's JWKS (RFC 7517).
//!
//! A JWKS is read key by key: one key the service cannot use is skipped
//! (with the reason logged), never fatal to the others. Skipped are keys for
//! encryption (`use` other than `sig`, or `key_ops` without `verify`),
//! symmetric keys (`oct`: a published HMAC secret would let anyone sign),
//! RSA keys under 2048 bits, curves other than P-256, P-384 and Ed25519, and
//! algorithms other than the RSA, ECDSA and EdDSA ones. A key without `alg`
//! takes the algorithm of its type (RSA: RS256, P-256: ES256, P-384: ES384,
//! Ed25519: EdDSA), as Entra ID publishes its keys. The algorithm a token may
//! use is always the key's, never the token's choice.

use anyhow::{bail, Context};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every algorithm a key may verify: the RSA ones, ECDSA on P-256 and
/// P-384, and Ed25519. Never HMAC, never `none`.
pub const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The RSA algorithms a PEM RSA key (which names none) verifies.
const RSA_ALGORITHMS: &[Algorithm] = ALGORITHMS.split_at(6).0;

/// The smallest RSA modulus accepted, in bits (NIST SP 800-131A).
const RSA_MIN_BITS: usize = 2048;

/// One key that verifies tokens, and the algorithms it verifies.
pub struct VerifyKey {
    /// `None` for the configured PEM key, which verifies whatever `kid` a
    /// token names (it is the only key).
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// The keys tokens are verified against, with a fingerprint of their
/// content: a verification remembered under one set counts only while the
/// set is the same.
pub struct KeySet {
    keys: Vec<VerifyKey>,
    fingerprint: [u8; 32],
}

/// Why no key of a set verifies a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// The token names a `kid` the set does not hold: a refresh may bring it.
    UnknownKid,
    /// The token names no `kid`, and the set does not have exactly one key
    /// for its algorithm.
    NoKid,
    /// The key named verifies another algorithm.
    WrongAlgorithm,
}

impl KeySet {
    /// The set of one PEM public key (Ed25519, EC P-256 or RSA). Its
    /// algorithms follow from its type.
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<KeySet> {
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, vec![Algorithm::EdDSA])
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, vec![Algorithm::ES256])
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, RSA_ALGORITHMS.to_vec())
        } else {
            bail!("the JWT public key is not a PEM Ed25519, EC P-256 or RSA public key");
        };
        let fingerprint = Sha256::digest(pem).into();
        Ok(KeySet {
            keys: vec![VerifyKey {
                kid: None,
                algorithms,
                key,
            }],
            fingerprint,
        })
    }

    /// The usable keys of a JWKS document, and a line for each key skipped.
    /// A document that is not a JWKS is an error; so is one with no usable
    /// key (a set that would refuse every token is not installed).
    pub fn from_jwks(body: &[u8]) -> anyhow::Result<(KeySet, Vec<String>)> {
        let doc: Value = serde_json::from_slice(body).context("the key set is not JSON")?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            bail!("the key set is not a JWKS (no `keys` array)");
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        let mut digest = Sha256::new();
        for (i, entry) in entries.iter().enumerate() {
            let name = entry
                .get("kid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("key #{i}"), |kid| format!("key `{kid}`"));
            match usable(entry) {
                Ok((key, material)) => {
                    digest.update(material.as_bytes());
                    digest.update([0]);
                    keys.push(key);
                }
                Err(why) => skipped.push(format!("{name} skipped: {why}")),
            }
        }
        if keys.is_empty() {
            bail!(
                "the key set holds no key this service can verify tokens with ({} skipped{})",
                skipped.len(),
                skipped
                    .first()
                    .map(|s| format!("; {s}"))
                    .unwrap_or_default()
            );
        }
        Ok((
            KeySet {
                keys,
                fingerprint: digest.finalize().into(),
            },
            skipped,
        ))
    }

    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every algorithm some key of the set verifies.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all: Vec<Algorithm> = Vec::new();
        for alg in self.keys.iter().flat_map(|k| k.algorithms.iter()) {
            if !all.contains(alg) {
                all.push(*alg);
            }
        }
        all
    }

    /// The key that verifies a token with header `kid` and `alg`.
    ///
    /// Tie-breaks: the configured PEM key (the only key of its set, with no
    /// `kid`) answers any `kid`; a `kid` names the key of that `kid` for the
    /// token's algorithm (a provider may publish one `kid` for several
    /// algorithms); a token without `kid` is verified only when exactly one
    /// key of the set takes its algorithm.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, Miss> {
        if let [only] = self.keys.as_slice() {
            if only.kid.is_none() {
                return match only.algorithms.contains(&alg) {
                    true => Ok(&only.key),
                    false => Err(Miss::WrongAlgorithm),
                };
            }
        }
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(Miss::UnknownKid);
                }
                named
                    .find(|k| k.algorithms.contains(&alg))
                    .map(|k| &k.key)
                    .ok_or(Miss::WrongAlgorithm)
            }
            None => {
                let mut taking = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (taking.next(), taking.next()) {
                    (Some(only), None) => Ok(&only.key),
                    _ => Err(Miss::NoKid),
                }
            }
        }
    }
}

/// One JWK as a verifying key, with a canonical text of what it is (for the
/// set's fingerprint), or why it is skipped.
fn usable(jwk: &Value) -> Result<(VerifyKey, String), String> {
    let text = |field: &str| jwk.get(field).and_then(Value::as_str);
    if !jwk.is_object() {
        return Err("not a JSON object".into());
    }
    match text("use") {
        None | Some("sig") => {}
        Some(other) => return Err(format!("its use is `{other}`, not `sig`")),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("its key_ops do not include `verify`".into());
        }
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("its kid is not a string".into()),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(alg)) => Some(alg.as_str()),
        Some(_) => return Err("its alg is not a string".into()),
    };
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name).ok_or_else(|| format!("it has no `{name}`"))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("its `{name}` is not base64url"))
    };
    let one = |wanted: Algorithm, named: &str| -> Result<Vec<Algorithm>, String> {
        match alg {
            None => Ok(vec![wanted]),
            Some(a) if a == named => Ok(vec![wanted]),
            Some(a) => Err(format!("its alg `{a}` is not accepted for its key type")),
        }
    };
    let (algorithms, key, material) = match text("kty") {
        Some("RSA") => {
            let n = field("n")?;
            let e = field("e")?;
            let bits = modulus_bits(&n);
            if bits < RSA_MIN_BITS {
                return Err(format!(
                    "its RSA modulus has {bits} bits, under {RSA_MIN_BITS}"
                ));
            }
            let algorithms = match alg {
                None => vec![Algorithm::RS256],
                Some(a) => match RSA_ALGORITHMS.iter().find(|r| alg_name(**r) == a) {
                    Some(r) => vec![*r],
                    None => return Err(format!("its alg `{a}` is not an RSA signature algorithm")),
                },
            };
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            (algorithms, key, format!("RSA {}.{}", hex(&n), hex(&e)))
        }
        Some("EC") => {
            let (wanted, name, size) = match text("crv") {
                Some("P-256") => (Algorithm::ES256, "ES256", 32),
                Some("P-384") => (Algorithm::ES384, "ES384", 48),
                Some(crv) => return Err(format!("its curve `{crv}` is not accepted")),
                None => return Err("it has no `crv`".into()),
            };
            let algorithms = one(wanted, name)?;
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != size || y.len() != size {
                return Err("its coordinates are not the curve's size".into());
            }
            let key = DecodingKey::from_ec_components(
                text("x").unwrap_or_default(),
                text("y").unwrap_or_default(),
            )
            .map_err(|e| format!("its EC key does not load: {e}"))?;
            (
                algorithms,
                key,
                format!("EC {name} {}.{}", hex(&x), hex(&y)),
            )
        }
        Some("OKP") => {
            match text("crv") {
                Some("Ed25519") => {}
                Some(crv) => return Err(format!("its curve `{crv}` is not accepted")),
                None => return Err("it has no `crv`".into()),
            }
            let algorithms = match alg {
                None | Some("EdDSA") | Some("Ed25519") => vec![Algorithm::EdDSA],
                Some(a) => return Err(format!("its alg `{a}` is not accepted for Ed25519")),
            };
            let x = field("x")?;
            if x.len() != 32 {
                return Err("its Ed25519 key is not 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(text("x").unwrap_or_default())
                .map_err(|e| format!("its Ed25519 key does not load: {e}"))?;
            (algorithms, key, format!("OKP {}", hex(&x)))
        }
        Some("oct") => return Err("it is a symmetric (oct) key".into()),
        Some(other) => return Err(format!("its key type `{other}` is not accepted")),
        None => return Err("it has no `kty`".into()),
    };
    let material = format!(
        "{} {:?} {material}",
        kid.as_deref().unwrap_or("-"),
        algorithms
    );
    Ok((
        VerifyKey {
            kid,
            algorithms,
            key,
        },
        material,
    ))
}

/// The bit length of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(first) => &n[first..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An algorithm's JOSE name (`RS256`, `EdDSA`, …).
pub fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A 2048-bit modulus (its top bit set) and the usual exponent: enough
    /// for loading and skipping, not for verifying.
    fn rsa(kid: &str, bits: usize) -> Value {
        let mut n = vec![0xffu8; bits / 8];
        n[bits / 8 - 1] = 0x01;
        json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"})
    }

    fn ed(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&[7u8; 32])})
    }

    fn set(keys: Vec<Value>) -> anyhow::Result<(KeySet, Vec<String>)> {
        KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn keys_it_cannot_use_are_skipped_each_with_its_reason() {
        let mut enc = rsa("enc", 2048);
        enc["use"] = json!("enc");
        enc["alg"] = json!("RSA-OAEP");
        let mut ops = rsa("wrap", 2048);
        ops["key_ops"] = json!(["wrapKey"]);
        let mut hs = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        hs["alg"] = json!("HS256");
        let small = rsa("small", 1024);
        let p521 = json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"});
        let mut rsa_es = rsa("mixed", 2048);
        rsa_es["alg"] = json!("ES256");
        let (keys, skipped) = set(vec![
            enc,
            ops,
            hs,
            small,
            p521,
            rsa_es,
            json!("not an object"),
            json!({"kty": "XYZ", "kid": "new"}),
            rsa("good", 2048),
            ed("ed"),
        ])
        .unwrap();
        assert_eq!(keys.len(), 2, "{skipped:?}");
        assert_eq!(skipped.len(), 8, "{skipped:?}");
        for (kid, why) in [
            ("enc", "use is `enc`"),
            ("wrap", "key_ops"),
            ("hmac", "symmetric"),
            ("small", "1024 bits"),
            ("p521", "P-521"),
            ("mixed", "`ES256` is not an RSA signature algorithm"),
            ("#6", "not a JSON object"),
            ("new", "`XYZ`"),
        ] {
            assert!(
                skipped.iter().any(|s| s.contains(kid) && s.contains(why)),
                "{kid}: {skipped:?}"
            );
        }
    }

    #[test]
    fn a_key_without_alg_takes_its_types_algorithm() {
        let (keys, _) = set(vec![rsa("r", 2048), ed("e")]).unwrap();
        assert!(keys.find(Some("r"), Algorithm::RS256).is_ok());
        assert_eq!(
            keys.find(Some("r"), Algorithm::PS256).err(),
            Some(Miss::WrongAlgorithm),
            "a key without alg is RS256 only"
        );
        assert!(keys.find(Some("e"), Algorithm::EdDSA).is_ok());
        assert_eq!(
            keys.find(Some("e"), Algorithm::RS256).err(),
            Some(Miss::WrongAlgorithm)
        );
        let mut ps = rsa("p", 2048);
        ps["alg"] = json!("PS384");
        let (keys, _) = set(vec![ps]).unwrap();
        assert!(keys.find(Some("p"), Algorithm::PS384).is_ok());
        assert_eq!(
            keys.find(Some("p"), Algorithm::RS256).err(),
            Some(Miss::WrongAlgorithm)
        );
    }

    #[test]
    fn kids_pick_keys_and_a_token_without_kid_needs_one_candidate() {
        let (keys, _) = set(vec![rsa("a", 2048), rsa("b", 2048), ed("e")]).unwrap();
        assert_eq!(
            keys.find(Some("zzz"), Algorithm::RS256).err(),
            Some(Miss::UnknownKid)
        );
        assert_eq!(
            keys.find(None, Algorithm::RS256).err(),
            Some(Miss::NoKid),
            "two RSA keys"
        );
        assert!(keys.find(None, Algorithm::EdDSA).is_ok(), "one Ed25519 key");
    }

    #[test]
    fn a_set_with_no_usable_key_or_no_keys_array_is_an_error() {
        let mut enc = rsa("enc", 2048);
        enc["use"] = json!("enc");
        let err = set(vec![enc]).err().unwrap().to_string();
        assert!(err.contains("no key this service can verify"), "{err}");
        assert!(KeySet::from_jwks(b"{}").is_err());
        assert!(KeySet::from_jwks(b"<html>").is_err());
    }

    #[test]
    fn the_fingerprint_follows_the_usable_keys_only() {
        let a = set(vec![rsa("a", 2048), ed("e")]).unwrap().0;
        let mut enc = rsa("enc", 2048);
        enc["use"] = json!("enc");
        let same = set(vec![rsa("a", 2048), enc, ed("e")]).unwrap().0;
        let other = set(vec![rsa("a", 2048)]).unwrap().0;
        assert_eq!(a.fingerprint(), same.fingerprint());
        assert_ne!(a.fingerprint(), other.fingerprint());
    }
}
