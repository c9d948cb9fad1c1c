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

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub mod state;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Writes `value` in the RFC 8785 (JCS) canonical encoding.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
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
        Value::Object(map) => write_object(map, None, out),
    }
}

/// Writes an object's members in JCS order, leaving out the member `skip`.
fn write_object(map: &Map<String, Value>, skip: Option<&str>, out: &mut String) {
    out.push('{');
    let mut first = true;
    let mut member = |key: &String, item: &Value| {
        if skip == Some(key.as_str()) {
            return;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(key, out);
        out.push(':');
        write_canonical(item, out);
    };
    // The map iterates in code point (UTF-8 byte) order, which is UTF-16
    // order unless a key holds a character at or above U+E000 (a lead byte
    // of 0xEE or more): only then sort again.
    if map.keys().any(|k| k.bytes().any(|b| b >= 0xEE)) {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_by(|a, b| utf16_order(a.0, b.0));
        entries.into_iter().for_each(|(k, v)| member(k, v));
    } else {
        map.iter().for_each(|(k, v)| member(k, v));
    }
    out.push('}');
}

/// RFC 8785 3.2.3: keys compare as arrays of UTF-16 code units.
fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// RFC 8785 3.2.2.2: `"`, `\` and the C0 controls escaped (short forms where
/// JSON has them, else `\u00xx` in lower case); everything else literal.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every escaped byte is ASCII, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Every integer of at most this magnitude is exactly a double.
const EXACT_INTEGERS: u64 = 1 << 53;

/// RFC 8785 3.2.2.3: a number as ECMAScript's `Number.prototype.toString`
/// writes the double it is. Integers a double holds exactly (every number in
/// an event) are their digits.
fn write_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= EXACT_INTEGERS {
            let _ = write!(out, "{i}");
            return;
        }
    } else if let Some(u) = n.as_u64() {
        if u <= EXACT_INTEGERS {
            let _ = write!(out, "{u}");
            return;
        }
    }
    write_double(n.as_f64().unwrap_or(f64::NAN), out);
}

/// The shortest digits of `x` (`digits` × 10^(`exponent` + 1 − their
/// count), as Rust writes them) and `n`, the position of the decimal point,
/// with ECMAScript's tie-break: when `x` lies exactly halfway between two
/// shortest candidates, the even one (Rust rounds such a tie up).
fn ties_to_even(x: f64, digits: String, exponent: i32) -> (String, i32) {
    let k = digits.len() as i32;
    let scale = exponent - (k - 1); // value = digits × 10^scale
    let unchanged = |digits: String| (digits, scale + k);
    let Ok(d) = digits.parse::<u64>() else {
        return unchanged(digits);
    };
    if d % 2 == 0 {
        return unchanged(digits);
    }
    // The exact decimal value of x: every double has at most 767
    // significant digits, so 800 leave nothing out.
    let exact = format!("{x:.800e}");
    let Some((mantissa, exact_exp)) = exact.split_once('e') else {
        return unchanged(digits);
    };
    let Ok(exact_exp) = exact_exp.parse::<i32>() else {
        return unchanged(digits);
    };
    let exact = normal(mantissa.replace('.', ""), exact_exp - 800);
    for neighbour in [d - 1, d + 1] {
        // Halfway between d and its neighbour: (d + neighbour) × 5 × 10^(scale − 1).
        let midpoint = normal(
            ((u128::from(d) + u128::from(neighbour)) * 5).to_string(),
            scale - 1,
        );
        let reads_back = format!("{neighbour}e{scale}").parse::<f64>() == Ok(x);
        if neighbour > 0 && midpoint == exact && reads_back {
            let (text, shift) = normal(neighbour.to_string(), scale);
            return (text.clone(), shift + text.len() as i32);
        }
    }
    unchanged(digits)
}

/// A decimal `digits` × 10^`scale` without trailing zeros: equal values are
/// equal pairs.
fn normal(mut digits: String, mut scale: i32) -> (String, i32) {
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
        scale += 1;
    }
    let trimmed = digits.trim_start_matches('0');
    let digits = if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    };
    (digits, scale)
}

/// ECMAScript's `Number::toString(x)` for a finite double (JSON has no
/// others; a NaN, which cannot occur, is written `null` as ECMAScript's
/// `JSON.stringify` would).
fn write_double(x: f64, out: &mut String) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    if x == 0.0 {
        out.push('0'); // and -0 too
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust writes the shortest digits that read back as the same double,
    // the nearest such when there are several: ECMAScript's digits too.
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits = ties_to_even(x.abs(), digits, exponent);
    let (digits, n) = (digits.0, digits.1);
    let k = digits.len() as i32;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        (0..n - k).for_each(|_| out.push('0'));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        (0..-n).for_each(|_| out.push('0'));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{}",
            if n - 1 < 0 { '-' } else { '+' },
            (n - 1).abs()
        );
    }
}

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
enum Line {
    /// A whole line (its end, `\n`, left out) is in the buffer.
    Whole,
    /// The line is longer than the bound: the buffer holds its start, the
    /// rest is unread.
    TooLong,
}

/// Reads up to the next `\n` into `buf`, at most `max` bytes of it; `None`
/// at the end of the input. A last line without `\n` counts; `\r` is kept.
fn read_line(
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
