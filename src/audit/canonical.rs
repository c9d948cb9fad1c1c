//! The RFC 8785 (JCS) canonical JSON the chain hashes: sorted keys by
//! UTF-16 code units, minimal escapes, numbers as ECMAScript writes them
//! (the module doc of [`super`] says it in full).

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

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
pub(super) fn write_object(map: &Map<String, Value>, skip: Option<&str>, out: &mut String) {
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
