//! An identity provider's key set, as the service reads it from the network
//! (`auth::keys::KeySet::from_jwks`). It never panics; a set it accepts holds
//! at least one key, and every entry of the `keys` array is either a key or
//! a reason it was skipped; looking a key up, by any `kid` and algorithm,
//! never panics either.
#![no_main]

use gatekeeper::auth::keys::{KeySet, ALGORITHMS};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let Ok((keys, skipped)) = KeySet::from_jwks(bytes) else {
        return;
    };
    assert!(!keys.is_empty(), "a set without a usable key was accepted");
    let doc: Value = serde_json::from_slice(bytes).expect("an accepted set is JSON");
    let entries = doc["keys"].as_array().expect("an accepted set has keys");
    assert_eq!(keys.len() + skipped.len(), entries.len());
    for entry in entries {
        let kid = entry.get("kid").and_then(Value::as_str);
        for alg in ALGORITHMS {
            let _ = keys.find(kid, alg);
            let _ = keys.find(None, alg);
        }
    }
});
