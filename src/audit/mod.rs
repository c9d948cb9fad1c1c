//! The audit hash chain, as pure code over JSON values.
//!
//! An event is exported as a JSON object. Its `hash` is the SHA-256, in lower
//! case hex, of the canonical encoding of every other field of the exported
//! object, `prev_hash` included; `prev_hash` is the `hash` of the event before
//! it (64 zeros for the first). The canonical encoding is JSON with object
//! keys sorted by their UTF-8 bytes, no insignificant white space, and
//! strings escaped as serde_json escapes them; events hold integers, never
//! floats. So an exported event carries all that is needed to check it, and
//! the same functions compute the chain when writing and check it when
//! reading.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Writes `value` in the canonical encoding.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The hash of an exported event: SHA-256 over the canonical encoding of
/// every field but `hash`.
pub fn event_hash(event: &Value) -> String {
    let body = match event {
        Value::Object(map) if map.contains_key("hash") => {
            let mut without = map.clone();
            without.remove("hash");
            canonical_json(&Value::Object(without))
        }
        other => canonical_json(other),
    };
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// Why a chain does not verify, at the first event that breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The event is not an object with an integer `seq` and string hashes.
    Malformed,
    /// `hash` is not the hash of the event's fields: it was edited.
    HashMismatch,
    /// `prev_hash` is not the hash of the event before it.
    BrokenLink,
    /// `seq` skips a number: events are missing.
    Gap,
    /// `seq` goes backwards or repeats: events were reordered or duplicated.
    Reordered,
    /// The chain verifies but does not end at the head recorded beside it:
    /// events were cut from (or slipped onto) its end.
    HeadMismatch,
}

/// The result of checking a sequence of exported events.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub events_checked: u64,
    /// The last event that verified: `(seq, hash)`.
    pub head: Option<(i64, String)>,
    pub first_invalid_seq: Option<i64>,
    pub fault: Option<Fault>,
}

/// Checks events one by one, in the order given, from the genesis.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    report: Report,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            report: Report {
                ok: true,
                events_checked: 0,
                head: None,
                first_invalid_seq: None,
                fault: None,
            },
        }
    }

    /// Checks the next event; returns false once the chain is broken (later
    /// events are not checked).
    pub fn push(&mut self, event: &Value) -> bool {
        if !self.report.ok {
            return false;
        }
        let seq = event.get("seq").and_then(Value::as_i64);
        let hash = event.get("hash").and_then(Value::as_str);
        let prev = event.get("prev_hash").and_then(Value::as_str);
        let fault = match (seq, hash, prev) {
            (Some(seq), Some(hash), Some(prev)) => {
                if seq > self.expected_seq {
                    Some((seq, Fault::Gap))
                } else if seq < self.expected_seq {
                    Some((seq, Fault::Reordered))
                } else if event_hash(event) != hash {
                    Some((seq, Fault::HashMismatch))
                } else if prev != self.prev_hash {
                    Some((seq, Fault::BrokenLink))
                } else {
                    self.expected_seq += 1;
                    self.prev_hash = hash.to_string();
                    self.report.events_checked += 1;
                    self.report.head = Some((seq, hash.to_string()));
                    None
                }
            }
            _ => Some((seq.unwrap_or(self.expected_seq), Fault::Malformed)),
        };
        if let Some((seq, fault)) = fault {
            self.report.ok = false;
            self.report.first_invalid_seq = Some(seq);
            self.report.fault = Some(fault);
            return false;
        }
        true
    }

    pub fn finish(self) -> Report {
        self.report
    }

    /// Finishes, also checking that the chain ends exactly at `head`, the
    /// `(seq, hash)` recorded elsewhere (`(0, GENESIS_HASH)` for none).
    pub fn finish_at(mut self, head: (i64, &str)) -> Report {
        if self.report.ok {
            let (last_seq, last_hash) = match &self.report.head {
                Some((seq, hash)) => (*seq, hash.as_str()),
                None => (0, GENESIS_HASH),
            };
            if (last_seq, last_hash) != head {
                self.report.ok = false;
                self.report.first_invalid_seq = Some(last_seq.min(head.0) + 1);
                self.report.fault = Some(Fault::HeadMismatch);
            }
        }
        self.report
    }
}

/// Checks a whole sequence of exported events.
pub fn verify<'a>(events: impl IntoIterator<Item = &'a Value>) -> Report {
    let mut verifier = Verifier::new();
    for event in events {
        if !verifier.push(event) {
            break;
        }
    }
    verifier.finish()
}

/// Completes an event (every field but `hash`) with its hash.
pub fn seal(mut event: serde_json::Map<String, Value>) -> (serde_json::Map<String, Value>, String) {
    event.remove("hash");
    let hash = hex::encode(Sha256::digest(
        canonical_json(&Value::Object(event.clone())).as_bytes(),
    ));
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
            (Some(3), Some(Fault::Gap))
        );

        let mut events = chain(4);
        events.swap(1, 2);
        let report = verify(&events);
        assert_eq!(report.fault, Some(Fault::Gap));
        assert_eq!(report.first_invalid_seq, Some(3));
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
            v.push(e);
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
