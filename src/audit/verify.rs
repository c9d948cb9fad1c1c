//! Verifying a chain: event by event ([`Verifier`], shared by the server
//! and the CLI), an NDJSON export read strictly line by line
//! ([`verify_ndjson`]), and signed checkpoints ([`Checkpoint`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{canonical_json, event_hash, GENESIS_HASH};

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
    /// Events are out of order (the missing `seq` comes later), or repeated.
    Reordered,
    /// The chain verifies but does not end at the head recorded beside it:
    /// events were cut from (or slipped onto) its end.
    HeadMismatch,
    /// A signed checkpoint names another hash for this `seq`: the chain was
    /// rewritten after the checkpoint was signed.
    CheckpointMismatch,
    /// A signed checkpoint lies beyond the chain's end: events were cut.
    CheckpointBeyondChain,
    /// A checkpoint's signature does not verify with a published key.
    CheckpointSignature,
    /// A column the service filters or lists events by (`seq`, `id`, `at`,
    /// `action`, `outcome`, `reseller`, `prev_hash`, `what_if`) differs from
    /// the hashed event: an edit that would hide the event from a filtered listing.
    IndexMismatch,
    /// The state the service acts on (a catalogue entry, a licence, a
    /// decision, a review) is not what the chain records; `row` names it.
    StateMismatch,
    /// A line of an export is JSON but not exactly the canonical JSON of
    /// its event: keys repeated (a parser keeps one of them) or reordered,
    /// white space, a CRLF line end, an escape or number written otherwise.
    /// Two readers could see two events in it, so it is refused whole.
    NotCanonical,
    /// The export holds no event: there is no chain to verify.
    Empty,
}

/// The result of checking a sequence of exported events.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub events_checked: u64,
    /// Signed checkpoints found to agree with the chain.
    pub checkpoints_checked: u64,
    /// The last event that verified: `(seq, hash)`.
    pub head: Option<(i64, String)>,
    pub first_invalid_seq: Option<i64>,
    pub fault: Option<Fault>,
    /// The row at fault, as `table/key` (for [`Fault::StateMismatch`]).
    pub row: Option<String>,
}

impl Report {
    /// The report as the API returns it and the CLI prints it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "ok": self.ok,
            "events_checked": self.events_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "head": self.head.as_ref().map(|(seq, hash)| serde_json::json!({"seq": seq, "hash": hash})),
            "first_invalid_seq": self.first_invalid_seq,
            "reason": self.fault,
            "row": self.row,
        })
    }
}

/// The longest line [`verify_ndjson`] reads: 16 MiB. A legitimate event is
/// far shorter: a catalogue change holds a request body of at most 64 KiB,
/// and a decision one reason per designation and party that applies, each
/// with its lineage path (a few hundred bytes for the shipped catalogue).
/// A longer line is reported `malformed` at its position, and never read
/// whole.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The largest checkpoints file [`read_checkpoints`] reads: 64 MiB, about
/// 280,000 checkpoints (six months at one a minute). A checkpoint vouches for
/// the whole chain up to its `seq`, so a longer archive is verified as well
/// with its newest checkpoints (`tail -n 100000 archive.ndjson`).
pub const MAX_CHECKPOINTS_BYTES: u64 = 64 * 1024 * 1024;

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A whole line (its end, `\n`, left out) is in the buffer.
    Whole,
    /// The line is longer than the bound: the buffer holds its start, the
    /// rest is unread.
    TooLong,
}

/// Reads up to the next `\n` into `buf`, at most `max` bytes of it; `None`
/// at the end of the input. A last line without `\n` counts; `\r` is kept.
pub(super) fn read_line(
    reader: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut started = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(started.then_some(Line::Whole));
        }
        started = true;
        let (take, end) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        let needed = buf.len() + take;
        if needed > max {
            return Ok(Some(Line::TooLong));
        }
        if needed > buf.capacity() {
            // Grow as a Vec would, but never past the bound.
            let target = needed.max(buf.capacity() * 2).min(max);
            buf.reserve_exact(target - buf.len());
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take + usize::from(end));
        if end {
            return Ok(Some(Line::Whole));
        }
    }
}

/// Reads a checkpoints file of at most [`MAX_CHECKPOINTS_BYTES`] (see
/// [`parse_checkpoints`] for its forms).
pub fn read_checkpoints(reader: impl std::io::Read) -> Result<Vec<Checkpoint>, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    reader
        .take(MAX_CHECKPOINTS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the checkpoints: {e}"))?;
    if bytes.len() as u64 > MAX_CHECKPOINTS_BYTES {
        return Err(format!(
            "the checkpoints file is larger than {} MiB; each checkpoint vouches for the whole \
             chain up to its seq, so verify with the newest ones (e.g. the last 100,000 lines)",
            MAX_CHECKPOINTS_BYTES / (1024 * 1024)
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("checkpoints: not UTF-8: {e}"))?;
    parse_checkpoints(text)
}

/// Reads checkpoints kept elsewhere: the body of `GET /v1/audit/checkpoints`
/// (`{"checkpoints": [...], "keys": [...], "next": ...}`), a JSON array of
/// checkpoints, or one checkpoint per line. Keys beside the checkpoints are
/// ignored: whoever wrote the checkpoints could have written them, so the
/// keys a verifier trusts come from elsewhere (`audit verify --keys`).
pub fn parse_checkpoints(text: &str) -> Result<Vec<Checkpoint>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(|e| format!("checkpoints: {e}"));
    }
    if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(trimmed) {
        if let Some(list) = map.remove("checkpoints") {
            return serde_json::from_value(list).map_err(|e| format!("checkpoints: {e}"));
        }
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("checkpoints line {}: {e}", i + 1))
        })
        .collect()
}

/// Verifies an NDJSON export (one event per line, as `GET /v1/audit`
/// streams it), line by line in memory bounded by [`MAX_LINE_BYTES`],
/// against `checkpoints`, whose signatures must verify with `keys`. Each
/// line must be exactly the canonical JSON of its event
/// ([`Fault::NotCanonical`]); an export without events is
/// [`Fault::Empty`].
pub fn verify_ndjson(
    mut reader: impl std::io::BufRead,
    checkpoints: &[Checkpoint],
    keys: &[Value],
) -> std::io::Result<Report> {
    let mut verifier = Verifier::with_checkpoints(checkpoints, keys);
    let mut line = Vec::new();
    let mut lines = 0u64;
    while verifier.is_ok() {
        match read_line(&mut reader, &mut line, MAX_LINE_BYTES)? {
            None => break,
            Some(Line::TooLong) => {
                let seq = verifier.expected_seq;
                verifier.fail(seq, Fault::Malformed);
            }
            Some(Line::Whole) => {
                verifier.push_line(&line);
            }
        }
        lines += 1;
    }
    if lines == 0 && verifier.is_ok() {
        verifier.fail(1, Fault::Empty);
    }
    Ok(verifier.finish())
}

/// A signed statement that the chain's event `seq` has hash `hash`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    /// When it was signed (RFC 3339).
    pub at: String,
    /// The signing key's id, as published in the JWKS.
    pub kid: String,
    /// Ed25519 over [`Checkpoint::message`], base64url without padding.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: the canonical JSON of `{at, hash, kid, seq}`.
    pub fn message(seq: i64, hash: &str, at: &str, kid: &str) -> String {
        canonical_json(&serde_json::json!({"seq": seq, "hash": hash, "at": at, "kid": kid}))
    }

    /// Whether the signature verifies with the key of `kid` among `keys`
    /// (Ed25519 JWKs).
    pub fn signature_verifies(&self, keys: &[Value]) -> bool {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let Some(jwk) = keys
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(&self.kid))
        else {
            return false;
        };
        let key = jwk
            .get("x")
            .and_then(Value::as_str)
            .and_then(|x| b64.decode(x).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .and_then(|bytes| ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok());
        let signature = b64
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| ed25519_dalek::Signature::from_bytes(&bytes));
        match (key, signature) {
            (Some(key), Some(signature)) => key
                .verify_strict(
                    Self::message(self.seq, &self.hash, &self.at, &self.kid).as_bytes(),
                    &signature,
                )
                .is_ok(),
            _ => false,
        }
    }
}

/// Checks events one by one, in the order given, from the genesis, and
/// against any signed checkpoints.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    /// A `seq` seen ahead of the expected one: a gap, unless the expected
    /// event comes next (then the events were reordered).
    ahead: bool,
    checkpoints: BTreeMap<i64, String>,
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
            ahead: false,
            checkpoints: BTreeMap::new(),
            report: Report {
                ok: true,
                events_checked: 0,
                checkpoints_checked: 0,
                head: None,
                first_invalid_seq: None,
                fault: None,
                row: None,
            },
        }
    }

    /// A verifier that also holds the chain to `checkpoints`, whose
    /// signatures must verify with `keys` (Ed25519 JWKs).
    pub fn with_checkpoints(checkpoints: &[Checkpoint], keys: &[Value]) -> Self {
        let mut verifier = Self::new();
        for checkpoint in checkpoints {
            if !checkpoint.signature_verifies(keys) {
                verifier.fail(checkpoint.seq, Fault::CheckpointSignature);
                return verifier;
            }
            verifier
                .checkpoints
                .insert(checkpoint.seq, checkpoint.hash.clone());
        }
        verifier
    }

    fn fail(&mut self, seq: i64, fault: Fault) {
        self.report.ok = false;
        self.report.first_invalid_seq = Some(seq);
        self.report.fault = Some(fault);
    }

    /// Fails the chain for a reason found outside the events themselves (a
    /// column beside an event, a row of state), unless it failed already.
    pub fn reject(&mut self, seq: Option<i64>, fault: Fault, row: Option<String>) {
        if self.report.ok {
            self.report.ok = false;
            self.report.first_invalid_seq = seq;
            self.report.fault = Some(fault);
            self.report.row = row;
        }
    }

    /// Whether every event so far verified.
    pub fn is_ok(&self) -> bool {
        self.report.ok
    }

    /// Whether the event at `seq` is the last one pushed and it verified
    /// (an event pushed ahead of its turn is judged only by the next push).
    pub fn verified(&self, seq: i64) -> bool {
        self.report.ok && self.report.head.as_ref().is_some_and(|(s, _)| *s == seq)
    }

    /// Checks the next line of an export: JSON that is exactly the canonical
    /// JSON of its event, then the event as [`Verifier::push`] does.
    pub fn push_line(&mut self, line: &[u8]) -> bool {
        if !self.report.ok {
            return false;
        }
        let Ok(event) = serde_json::from_slice::<Value>(line) else {
            self.fail(self.expected_seq, Fault::Malformed);
            return false;
        };
        if canonical_json(&event).as_bytes() != line {
            let seq = event.get("seq").and_then(Value::as_i64);
            self.fail(seq.unwrap_or(self.expected_seq), Fault::NotCanonical);
            return false;
        }
        self.push(&event)
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
        let (Some(seq), Some(hash), Some(prev)) = (seq, hash, prev) else {
            self.fail(seq.unwrap_or(self.expected_seq), Fault::Malformed);
            return false;
        };
        if self.ahead {
            let fault = if seq == self.expected_seq {
                Fault::Reordered
            } else {
                Fault::Gap
            };
            self.fail(self.expected_seq, fault);
            return false;
        }
        let fault = if seq > self.expected_seq {
            self.ahead = true;
            return true;
        } else if seq < self.expected_seq {
            Some(Fault::Reordered)
        } else if event_hash(event) != hash {
            Some(Fault::HashMismatch)
        } else if prev != self.prev_hash {
            Some(Fault::BrokenLink)
        } else if self.checkpoints.get(&seq).is_some_and(|h| h != hash) {
            Some(Fault::CheckpointMismatch)
        } else {
            None
        };
        if let Some(fault) = fault {
            self.fail(seq, fault);
            return false;
        }
        if self.checkpoints.contains_key(&seq) {
            self.report.checkpoints_checked += 1;
        }
        self.expected_seq += 1;
        self.prev_hash = hash.to_string();
        self.report.events_checked += 1;
        self.report.head = Some((seq, hash.to_string()));
        true
    }

    /// Finishes: the chain must reach every checkpoint.
    pub fn finish(mut self) -> Report {
        if self.report.ok && self.ahead {
            self.fail(self.expected_seq, Fault::Gap);
        }
        if self.report.ok {
            let last = self.expected_seq - 1;
            if self.checkpoints.range(last + 1..).next().is_some() {
                self.fail(last + 1, Fault::CheckpointBeyondChain);
            }
        }
        self.report
    }

    /// Finishes, also checking that the chain ends exactly at `head`, the
    /// `(seq, hash)` recorded elsewhere (`(0, GENESIS_HASH)` for none).
    pub fn finish_at(self, head: (i64, &str)) -> Report {
        let mut report = self.finish();
        if report.ok {
            let (last_seq, last_hash) = match &report.head {
                Some((seq, hash)) => (*seq, hash.as_str()),
                None => (0, GENESIS_HASH),
            };
            if (last_seq, last_hash) != head {
                report.ok = false;
                report.first_invalid_seq = Some(last_seq.min(head.0) + 1);
                report.fault = Some(Fault::HeadMismatch);
            }
        }
        report
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
