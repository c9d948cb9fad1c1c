//! The audit hash chain, as pure code over JSON values.
//!
//! An event is exported as a JSON object. Its `hash` is the SHA-256, in lower
//! case hex, of the RFC 8785 (JSON Canonicalization Scheme, JCS) canonical
//! JSON of every other field of the exported object, `prev_hash` included;
//! `prev_hash` is the `hash` of the event before it (64 zeros for the
//! first). So any JCS implementation can check an export, and the same
//! functions compute the chain when writing and check it when reading.
//!
//! [`canonical_json`] is JCS: no insignificant white space; object members
//! sorted by their keys' UTF-16 code units (not their UTF-8 bytes: the two
//! differ between U+E000–U+FFFF and characters above U+FFFF); strings with
//! only `"`, `\` and U+0000–U+001F escaped (`\b`, `\t`, `\n`, `\f`, `\r`,
//! else `\u00xx` in lower case) and everything else as literal UTF-8; numbers
//! as ECMAScript writes a double. Events hold integers only, all well within
//! the ±2^53 that a double holds exactly, so their numbers are plain digits.
//!
//! The offline verifier ([`verify_ndjson`]) is strict: each line of an
//! export must be exactly the canonical JSON of its whole event (`hash`
//! included), which is what `GET /v1/audit` streams, and at most
//! [`MAX_LINE_BYTES`] long.

mod canonical;
pub mod outbox;
pub mod state;
mod verify;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use canonical::canonical_json;
use canonical::write_object;
pub use verify::{
    parse_checkpoints, read_checkpoints, verify, verify_ndjson, Checkpoint, Fault, Report,
    Verifier, MAX_CHECKPOINTS_BYTES, MAX_LINE_BYTES,
};
#[cfg(test)]
use verify::{read_line, Line};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an exported event: SHA-256 over the canonical encoding of
/// every field but `hash`.
pub fn event_hash(event: &Value) -> String {
    match event {
        Value::Object(map) => {
            let mut text = String::new();
            write_object(map, Some("hash"), &mut text);
            hex::encode(Sha256::digest(text.as_bytes()))
        }
        other => canonical_and_hash(other).1,
    }
}

/// The canonical encoding of an event that has no `hash` yet, and its hash
/// (as [`event_hash`] computes it): what the store writes, computed once.
pub fn canonical_and_hash(unsealed: &Value) -> (String, String) {
    let text = canonical_json(unsealed);
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    (text, hash)
}

/// Completes an event (every field but `hash`) with its hash.
pub fn seal(mut event: serde_json::Map<String, Value>) -> (serde_json::Map<String, Value>, String) {
    event.remove("hash");
    let hash = event_hash(&Value::Object(event.clone()));
    event.insert("hash".into(), Value::String(hash.clone()));
    (event, hash)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<Value> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let event = json!({"seq": seq, "action": "decision.preflight",
                                   "subject": {"b": 1, "a": [true, null, "x"]}, "prev_hash": prev});
                let Value::Object(map) = event else {
                    unreachable!()
                };
                let (sealed, hash) = seal(map);
                prev = hash;
                Value::Object(sealed)
            })
            .collect()
    }

    #[test]
    fn canonical_encoding_sorts_keys_and_drops_white_space() {
        let v: Value =
            serde_json::from_str(r#"{ "b": {"z": 1, "a": "é\n"}, "a": [2, 1] }"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":[2,1],"b":{"a":"é\n","z":1}}"#);
    }

    /// RFC 8785 section 3.2.2: literals, numbers and a string with escapes.
    #[test]
    fn canonical_json_matches_the_rfc_8785_example() {
        let v: Value = serde_json::from_str(
            r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
                "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
                "literals": [null, true, false]}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 section 3.2.3: keys sort by UTF-16 code units, so the emoji
    /// (U+1F600, surrogates D83D DE00) comes before U+FB33, although its
    /// UTF-8 bytes (F0 ...) come after those of U+FB33 (EF ...).
    #[test]
    fn keys_sort_by_utf16_code_units_not_utf8_bytes() {
        let v: Value = serde_json::from_str(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
                "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
             \"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\
             \"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    /// RFC 8785 appendix B: doubles as ECMAScript writes them.
    #[test]
    fn numbers_are_written_as_ecmascript_writes_doubles() {
        let vectors = [
            (0x0000000000000000u64, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in vectors {
            let v = json!(f64::from_bits(bits));
            assert_eq!(canonical_json(&v), expected, "{bits:016x}");
        }
        // Integers: digits while a double holds them exactly, then as the double.
        assert_eq!(
            canonical_json(&json!([0, -7, 9007199254740992i64])),
            "[0,-7,9007199254740992]"
        );
        assert_eq!(canonical_json(&json!(u64::MAX)), "18446744073709552000");
        assert_eq!(canonical_json(&json!(i64::MIN)), "-9223372036854776000");
    }

    /// RFC 8785 section 3.2.2.2: only `"`, `\` and U+0000 to U+001F are
    /// escaped, with the short forms JSON has and lower-case `\u00xx`.
    #[test]
    fn strings_escape_only_what_jcs_escapes() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        assert_eq!(
            canonical_json(&json!(all_controls)),
            r#""\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f""#
        );
        let literal = "\"q\" \\ / \u{7f} \u{80} \u{2028} \u{2029} \u{feff} é 😀";
        assert_eq!(
            canonical_json(&json!(literal)),
            "\"\\\"q\\\" \\\\ / \u{7f} \u{80} \u{2028} \u{2029} \u{feff} é 😀\""
        );
    }

    /// An event's `hash` is the SHA-256 of the RFC 8785 canonical JSON of the
    /// event without `hash`. The expected text and hash were computed with an
    /// independent JCS implementation (Python's `rfc8785` 0.1.4).
    #[test]
    fn the_hash_is_sha256_of_the_jcs_form_without_hash() {
        let event = json!({
            "seq": 7, "action": "catalog.organization.put", "prev_hash": GENESIS_HASH,
            "subject": {"name": "Zoë \"Q\" \\ back\u{1}\t\n\u{1f}\u{7f}\u{2028} 😀",
                        "\u{fb33}": 1, "😀": 2, "z": [true, null, -3]},
            "hash": "not part of the hash",
        });
        let mut without = event.clone();
        without.as_object_mut().unwrap().remove("hash");
        assert_eq!(
            canonical_json(&without),
            "{\"action\":\"catalog.organization.put\",\"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"seq\":7,\"subject\":{\"name\":\"Zoë \\\"Q\\\" \\\\ back\\u0001\\t\\n\\u001f\u{7f}\u{2028} 😀\",\"z\":[true,null,-3],\"😀\":2,\"\u{fb33}\":1}}"
        );
        let expected = "75657f11ef6584d96b399c38bbf27aa6934dcd976aed8405068daaf325e1f01c";
        assert_eq!(event_hash(&event), expected);
        assert_eq!(canonical_and_hash(&without).1, expected);
        let Value::Object(map) = event else {
            unreachable!()
        };
        assert_eq!(seal(map).1, expected);
    }

    #[test]
    fn a_clean_chain_verifies() {
        let events = chain(5);
        let report = verify(&events);
        assert!(report.ok);
        assert_eq!(report.events_checked, 5);
        assert_eq!(report.head.as_ref().unwrap().0, 5);
        assert_eq!(report.head.unwrap().1, events[4]["hash"].as_str().unwrap());
    }

    #[test]
    fn an_edited_field_is_a_hash_mismatch() {
        let mut events = chain(4);
        events[2]["subject"]["b"] = json!(2);
        let report = verify(&events);
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(3), Some(Fault::HashMismatch))
        );
        assert_eq!(report.events_checked, 2);
    }

    #[test]
    fn a_deleted_event_is_a_gap_and_a_swap_is_a_reordering() {
        let mut events = chain(4);
        events.remove(1);
        let report = verify(&events);
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(2), Some(Fault::Gap)),
            "the missing seq"
        );

        let mut events = chain(4);
        events.swap(1, 2);
        let report = verify(&events);
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(2), Some(Fault::Reordered))
        );

        let mut events = chain(4);
        events.pop();
        events.remove(1);
        let report = verify(&events);
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(2), Some(Fault::Gap)),
            "a gap at the end too"
        );
    }

    #[test]
    fn a_rehashed_edit_breaks_the_next_link() {
        let mut events = chain(3);
        events[1]["subject"]["b"] = json!(7);
        let Value::Object(map) = events[1].clone() else {
            unreachable!()
        };
        events[1] = Value::Object(seal(map).0);
        let report = verify(&events);
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(3), Some(Fault::BrokenLink))
        );
    }

    #[test]
    fn a_cut_tail_does_not_reach_the_recorded_head() {
        let events = chain(4);
        let head = (4, events[3]["hash"].as_str().unwrap().to_string());
        let mut v = Verifier::new();
        events[..3].iter().for_each(|e| {
            assert!(v.push(e));
        });
        let report = v.finish_at((head.0, &head.1));
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(4), Some(Fault::HeadMismatch))
        );
        let mut v = Verifier::new();
        events.iter().for_each(|e| {
            v.push(e);
        });
        assert!(v.finish_at((head.0, &head.1)).ok);
        assert!(Verifier::new().finish_at((0, GENESIS_HASH)).ok);
    }

    fn sign(events: &[Value], seq: i64, key: &ed25519_dalek::SigningKey, kid: &str) -> Checkpoint {
        use base64::Engine as _;
        use ed25519_dalek::Signer;
        let hash = events[(seq - 1) as usize]["hash"]
            .as_str()
            .unwrap()
            .to_string();
        let at = "2026-01-01T00:00:00Z".to_string();
        let signature = key.sign(Checkpoint::message(seq, &hash, &at, kid).as_bytes());
        Checkpoint {
            seq,
            hash,
            at,
            kid: kid.into(),
            signature: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(signature.to_bytes()),
        }
    }

    fn jwk(key: &ed25519_dalek::SigningKey, kid: &str) -> Value {
        use base64::Engine as _;
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
               "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())})
    }

    #[test]
    fn checkpoints_catch_a_cut_tail_and_a_rewritten_chain() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let keys = vec![jwk(&key, "k1")];
        let events = chain(6);
        let checkpoints = vec![sign(&events, 3, &key, "k1"), sign(&events, 6, &key, "k1")];

        let mut v = Verifier::with_checkpoints(&checkpoints, &keys);
        events.iter().for_each(|e| assert!(v.push(e)));
        let report = v.finish();
        assert!(report.ok);
        assert_eq!(report.checkpoints_checked, 2);

        // The tail cut: the chain still links, but the checkpoint at 6 is beyond it.
        let mut v = Verifier::with_checkpoints(&checkpoints, &keys);
        events[..4].iter().for_each(|e| assert!(v.push(e)));
        let report = v.finish();
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(5), Some(Fault::CheckpointBeyondChain))
        );

        // A chain rewritten from event 2 on (every hash recomputed) links, but not to the checkpoint.
        let mut rewritten = chain(6);
        rewritten[1]["subject"]["b"] = json!(99);
        let mut prev = rewritten[0]["hash"].as_str().unwrap().to_string();
        for e in rewritten.iter_mut().skip(1) {
            e["prev_hash"] = json!(prev);
            let Value::Object(map) = e.clone() else {
                unreachable!()
            };
            *e = Value::Object(seal(map).0);
            prev = e["hash"].as_str().unwrap().to_string();
        }
        assert!(verify(&rewritten).ok, "a rewritten chain links on its own");
        let mut v = Verifier::with_checkpoints(&checkpoints, &keys);
        let _ = rewritten.iter().all(|e| v.push(e));
        let report = v.finish();
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(3), Some(Fault::CheckpointMismatch))
        );

        // A forged checkpoint, or one by an unknown key, does not count.
        let mut forged = checkpoints.clone();
        forged[0].hash = rewritten[2]["hash"].as_str().unwrap().to_string();
        let report = Verifier::with_checkpoints(&forged, &keys).finish();
        assert_eq!(report.fault, Some(Fault::CheckpointSignature));
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let report = Verifier::with_checkpoints(&[sign(&events, 3, &other, "k1")], &keys).finish();
        assert_eq!(report.fault, Some(Fault::CheckpointSignature));
    }

    /// An export of `events`, one canonical line each, as `GET /v1/audit` streams it.
    fn export(events: &[Value]) -> String {
        events.iter().map(|e| canonical_json(e) + "\n").collect()
    }

    fn verify_text(text: &str) -> Report {
        verify_ndjson(text.as_bytes(), &[], &[]).unwrap()
    }

    #[test]
    fn an_export_of_canonical_lines_verifies() {
        let events = chain(4);
        let text = export(&events);
        let report = verify_text(&text);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.events_checked, 4);
        // A last line without its line end is still the same bytes.
        assert!(verify_text(text.trim_end_matches('\n')).ok);
    }

    /// A line whose first `outcome` says allow and whose last says deny:
    /// serde_json keeps the last, another parser the first. It used to
    /// verify, since the hash covers what serde_json kept.
    #[test]
    fn a_line_with_a_repeated_key_is_not_canonical() {
        let mut events = chain(3);
        events[1]["outcome"] = json!("deny");
        let Value::Object(map) = events[1].clone() else {
            unreachable!()
        };
        events[1] = Value::Object(seal(map).0);
        events[2]["prev_hash"] = events[1]["hash"].clone();
        let Value::Object(map) = events[2].clone() else {
            unreachable!()
        };
        events[2] = Value::Object(seal(map).0);
        let clean = export(&events);
        assert!(verify_text(&clean).ok);
        let line = canonical_json(&events[1]);
        let doubled = line.replacen('{', r#"{"outcome":"allow","#, 1);
        assert_eq!(
            serde_json::from_str::<Value>(&doubled).unwrap(),
            events[1],
            "serde_json reads the same event"
        );
        let text = clean.replacen(&line, &doubled, 1);
        let report = verify_text(&text);
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(2), Some(Fault::NotCanonical))
        );
        assert_eq!(report.events_checked, 1);
    }

    #[test]
    fn crlf_white_space_reordered_keys_and_other_escapes_are_not_canonical() {
        let events = chain(3);
        let clean = export(&events);
        let line = canonical_json(&events[1]);
        let pretty = serde_json::to_string_pretty(&events[1])
            .unwrap()
            .replace('\n', "");
        let reordered = {
            // `seq` first: the same members in another order.
            let Value::Object(map) = &events[1] else {
                unreachable!()
            };
            let rest: Vec<String> = map
                .iter()
                .filter(|(k, _)| *k != "seq")
                .map(|(k, v)| format!("{}:{}", canonical_json(&json!(k)), canonical_json(v)))
                .collect();
            format!(r#"{{"seq":2,{}}}"#, rest.join(","))
        };
        let escaped = line.replace(r#""x""#, r#""\u0078""#);
        assert_ne!(escaped, line);
        for (what, variant) in [
            ("CRLF", format!("{line}\r")),
            ("a space", line.replacen(':', ": ", 1)),
            ("leading white space", format!(" {line}")),
            ("pretty-printed", pretty),
            ("reordered keys", reordered),
            ("an escaped letter", escaped),
        ] {
            let parsed: Value = serde_json::from_str(&variant).unwrap();
            assert_eq!(parsed, events[1], "{what}: the same event");
            let report = verify_text(&clean.replacen(&line, &variant, 1));
            assert_eq!(
                (report.first_invalid_seq, report.fault),
                (Some(2), Some(Fault::NotCanonical)),
                "{what}"
            );
        }
        // CRLF on every line, as a Windows tool would write it.
        let report = verify_text(&clean.replace('\n', "\r\n"));
        assert_eq!(report.fault, Some(Fault::NotCanonical));
    }

    #[test]
    fn blank_lines_and_lines_that_are_not_json_are_malformed() {
        let events = chain(3);
        let line = canonical_json(&events[1]);
        for bad in ["", "not json", "\u{feff}{}", "{\"seq\": 2"] {
            let text = export(&events).replacen(&format!("{line}\n"), &format!("{bad}\n"), 1);
            let report = verify_text(&text);
            assert_eq!(
                (report.first_invalid_seq, report.fault),
                (Some(2), Some(Fault::Malformed)),
                "{bad:?}"
            );
        }
        let mut bytes = export(&events).into_bytes();
        bytes.splice(0..0, [0xff, b'\n']);
        let report = verify_ndjson(&bytes[..], &[], &[]).unwrap();
        assert_eq!(report.fault, Some(Fault::Malformed), "not UTF-8");
    }

    #[test]
    fn an_empty_export_is_not_a_verified_chain() {
        let report = verify_text("");
        assert!(!report.ok);
        assert_eq!(
            (
                report.first_invalid_seq,
                report.fault,
                report.events_checked
            ),
            (Some(1), Some(Fault::Empty), 0)
        );
        assert_eq!(report.to_json()["reason"], "empty");
        let report = verify_text("\n");
        assert_eq!(
            report.fault,
            Some(Fault::Malformed),
            "a blank line is not an event"
        );
    }

    /// An endless line is refused at the bound, without reading it all.
    #[test]
    fn an_over_long_line_is_malformed_at_its_position_and_never_read_whole() {
        let events = chain(2);
        let text = export(&events);
        let endless = std::io::Read::chain(text.as_bytes(), std::io::repeat(b'x'));
        let report = verify_ndjson(std::io::BufReader::new(endless), &[], &[]).unwrap();
        assert_eq!(
            (
                report.first_invalid_seq,
                report.fault,
                report.events_checked
            ),
            (Some(3), Some(Fault::Malformed), 2)
        );

        let mut buf = Vec::new();
        let mut reader = std::io::BufReader::new(std::io::repeat(b'x'));
        assert_eq!(
            read_line(&mut reader, &mut buf, 1000).unwrap(),
            Some(Line::TooLong)
        );
        assert!(buf.capacity() <= 1000, "{}", buf.capacity());
        let mut reader = std::io::BufReader::with_capacity(7, &b"abc\r\n\nlast"[..]);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, &mut buf, 4).unwrap() {
            lines.push((line, String::from_utf8(buf.clone()).unwrap()));
        }
        assert_eq!(
            lines,
            [
                (Line::Whole, "abc\r".to_string()),
                (Line::Whole, String::new()),
                (Line::Whole, "last".to_string())
            ]
        );
        let mut reader = &b"12345\n"[..];
        assert_eq!(
            read_line(&mut reader, &mut buf, 4).unwrap(),
            Some(Line::TooLong)
        );
    }

    #[test]
    fn checkpoints_files_are_bounded() {
        let err = read_checkpoints(std::io::repeat(b' ')).unwrap_err();
        assert!(err.contains("larger than 64 MiB"), "{err}");
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let events = chain(2);
        let checkpoint = sign(&events, 2, &key, "k1");
        let line = serde_json::to_string(&checkpoint).unwrap();
        let list = read_checkpoints(format!("{line}\n\n{line}\n").as_bytes()).unwrap();
        assert_eq!(list, [checkpoint.clone(), checkpoint.clone()]);
        // The listing's keys are not returned: they are not to be trusted.
        let listing = json!({"checkpoints": [checkpoint], "keys": [{"kid": "k1"}], "next": null});
        assert_eq!(
            parse_checkpoints(&listing.to_string()).unwrap(),
            [checkpoint]
        );
    }

    #[test]
    fn a_repeated_event_is_a_reordering() {
        let mut events = chain(3);
        let again = events[1].clone();
        events.insert(2, again);
        let report = verify(&events);
        assert_eq!(
            (report.first_invalid_seq, report.fault),
            (Some(2), Some(Fault::Reordered))
        );
    }
}
