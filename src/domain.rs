//! Domain vocabulary shared by every layer: validated identifiers ("parse, don't validate")
//! and the small closed enums of the contract.
//!
//! A value of one of these types can only hold a valid value: the constructors are `parse`,
//! `TryFrom<String>` and serde (which goes through `TryFrom<String>`), and all of them check.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Defines a validated string newtype with `parse`, `as_str`, `Display`, `FromStr`,
/// `TryFrom<String>`, `From<T> for String` and serde through `String`.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, $check:path, $rule:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What a valid value looks like, as told to a caller whose value was rejected.
            pub const RULE: &'static str = $rule;

            /// Checks `s` and wraps it; the error is a human-readable message.
            pub fn parse(s: &str) -> Result<Self, String> {
                if $check(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(Self::RULE.to_owned())
                }
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> Result<Self, String> {
                if $check(&s) {
                    Ok(Self(s))
                } else {
                    Err(Self::RULE.to_owned())
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

const MAX_ID_LEN: usize = 64;

/// `[a-z0-9][a-z0-9._-]{0,63}`
fn is_lower_id(s: &str) -> bool {
    let Some((first, rest)) = s.as_bytes().split_first() else {
        return false;
    };
    s.len() <= MAX_ID_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`
fn is_sku(s: &str) -> bool {
    let Some((first, rest)) = s.as_bytes().split_first() else {
        return false;
    };
    s.len() <= MAX_ID_LEN
        && first.is_ascii_alphanumeric()
        && rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// `[a-z][a-z0-9_]{0,63}`
fn is_category(s: &str) -> bool {
    let Some((first, rest)) = s.as_bytes().split_first() else {
        return false;
    };
    s.len() <= MAX_ID_LEN
        && first.is_ascii_lowercase()
        && rest
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn is_country_code(s: &str) -> bool {
    ISO_3166_1_ALPHA_2.binary_search(&s).is_ok()
}

/// Whether `c` is a control character (Unicode general category Cc: NUL, the C0 and C1
/// controls, DEL) or a format character (Cf: the bidi embeddings, overrides, isolates and marks
/// such as U+202E, the zero-width space, joiner and non-joiner, word joiner, byte order mark,
/// soft hyphen, tag characters). The categories are those of the `unicode-properties` crate's
/// tables (Unicode 18).
pub fn is_control_or_format(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control | GeneralCategory::Format
    )
}

/// No control or format character: nothing a database cannot store (PostgreSQL refuses NUL in
/// text), that reorders or hides what is shown (a bidi override or a zero-width character makes
/// two different ids look the same in an export), or that breaks a line of a log or a CSV.
fn is_plain_text(s: &str) -> bool {
    !s.chars().any(is_control_or_format)
}

/// The zero-width non-joiner and joiner: format characters that spell words in some scripts
/// (Persian, the Indic scripts) and build emoji, so a name may hold them.
const NAME_JOINERS: [char; 2] = ['\u{200C}', '\u{200D}'];

/// A name as people write it: any letters, but no control character and no format character
/// other than [`NAME_JOINERS`], so no bidi override can make an export show a name reordered.
fn is_plain_name(s: &str) -> bool {
    !s.chars()
        .any(|c| is_control_or_format(c) && !NAME_JOINERS.contains(&c))
}

validated_string!(
    /// Identifier of an organisation in the catalogue.
    OrgId,
    is_lower_id,
    "must match [a-z0-9][a-z0-9._-]{0,63}"
);
validated_string!(
    /// Identifier of a registered reseller (a tenant).
    ResellerId,
    is_lower_id,
    "must match [a-z0-9][a-z0-9._-]{0,63}"
);
validated_string!(
    /// Identifier of a designation (one legal instrument's ban).
    DesignationId,
    is_lower_id,
    "must match [a-z0-9][a-z0-9._-]{0,63}"
);
validated_string!(
    /// Identifier of a rule within a designation.
    RuleId,
    is_lower_id,
    "must match [a-z0-9][a-z0-9._-]{0,63}"
);
validated_string!(
    /// A product's stock-keeping unit.
    Sku,
    is_sku,
    "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"
);
validated_string!(
    /// A product category: a free lower-case word that designations may exclude.
    Category,
    is_category,
    "must be a lower-case word matching [a-z][a-z0-9_]{0,63}"
);
validated_string!(
    /// An officially assigned ISO 3166-1 alpha-2 country code, upper case.
    CountryCode,
    is_country_code,
    "must be an officially assigned ISO 3166-1 alpha-2 country code in upper case, e.g. US"
);
validated_string!(
    /// Text without control or format characters: what a caller hands back that the service
    /// made (a decision, licence or review id in a path, a cursor), a customer's id, a filter
    /// value. Opaque otherwise.
    PlainText,
    is_plain_text,
    "must not contain control or format characters (Unicode Cc and Cf, such as NUL, bidi overrides or zero-width characters)"
);
validated_string!(
    /// A customer's name: any letters, no control characters, and no format characters but the
    /// zero-width joiner and non-joiner that some scripts need.
    PlainName,
    is_plain_name,
    "must not contain control characters or format characters (Unicode Cc and Cf, such as NUL or bidi overrides) other than the zero-width joiner and non-joiner (U+200D, U+200C)"
);

/// The United States and its territories, which this service counts as "in the United States"
/// (a policy choice, see law.md).
pub const US_AND_TERRITORIES: [&str; 7] = ["US", "PR", "GU", "VI", "AS", "MP", "UM"];

impl CountryCode {
    /// True for the United States and for PR, GU, VI, AS, MP and UM.
    pub fn is_us_territory_or_us(&self) -> bool {
        US_AND_TERRITORIES.contains(&self.0.as_str())
    }
}

/// Every officially assigned ISO 3166-1 alpha-2 code (249), sorted for `binary_search`.
pub const ISO_3166_1_ALPHA_2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Defines a closed snake_case enum with `as_str` and `Display`.
macro_rules! snake_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The snake_case name used on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

snake_enum!(
    /// The kind of licence transaction being screened.
    Transaction {
        /// A new licence (a new agreement).
        Issue => "issue",
        /// The renewal of an existing licence.
        Renew => "renew",
    }
);

snake_enum!(
    /// The outcome of a decision.
    Outcome {
        Allow => "allow",
        Deny => "deny",
        Review => "review",
    }
);

snake_enum!(
    /// Where a licence stands, as stored. (`expired` is not stored: an active licence past its
    /// `expires_at` is shown as expired.)
    Standing {
        /// In force (or expired, past its term).
        Active => "active",
        /// A designation ended its service (`ended_by` says which rule, and when).
        Ended => "ended",
        /// Suspended by compliance, or by an impact review left unresolved past its due time;
        /// reinstating screens it again like a renewal.
        Suspended => "suspended",
        /// Revoked by its reseller or by compliance: final.
        Revoked => "revoked",
    }
);

impl Standing {
    /// The stored text as a standing (`None`: not one).
    pub fn parse(s: &str) -> Option<Standing> {
        Standing::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    /// Its value in a status list (IETF Token Status List, 2 bits): `0` valid, `1` invalid
    /// (ended or revoked), `2` suspended.
    pub fn status_bits(self) -> u8 {
        match self {
            Standing::Active => 0,
            Standing::Ended | Standing::Revoked => 1,
            Standing::Suspended => 2,
        }
    }
}

snake_enum!(
    /// What the source organisation of a relationship is to its target.
    RelKind {
        /// Controlled by the target.
        SubsidiaryOf => "subsidiary_of",
        /// Under common control with the target.
        AffiliateOf => "affiliate_of",
        /// Successor of the target.
        SuccessorOf => "successor_of",
        /// Assignee of the target.
        AssigneeOf => "assignee_of",
        /// The target holds a stake without control: does not carry a designation.
        MinorityOwnedBy => "minority_owned_by",
    }
);

impl RelKind {
    /// Whether a designation carries across the relationship at all: group kinds both ways,
    /// succession kinds one way only (from the predecessor or assignor to the successor or
    /// assignee), a minority stake not.
    pub fn carries(self) -> bool {
        !matches!(self, RelKind::MinorityOwnedBy)
    }
}

/// What an integer field takes, as told to a caller whose value was refused.
pub const INTEGER_RULE: &str = "must be an integer (a number without a fractional part)";

/// Serde for an integer field as JSON Schema reads one: any JSON number without a fractional
/// part is an integer, so `3`, `3.0` and `3e0` are all 3. A fraction, a number outside the
/// range of `i64`, a non-finite number or anything that is not a number is an error whose
/// message says so (a `422` naming the field in a request body). Use it as
/// `#[serde(deserialize_with = "crate::domain::json_integer")]`.
pub fn json_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Integer;

    impl serde::de::Visitor<'_> for Integer {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer (a number without a fractional part)")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(out_of_range()))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // 2^63: every f64 in [-2^63, 2^63) with no fractional part is an i64 (NaN and the
            // infinities are outside).
            const BOUND: f64 = 9_223_372_036_854_775_808.0;
            if !(-BOUND..BOUND).contains(&v) {
                Err(E::custom(out_of_range()))
            } else if v.fract() != 0.0 {
                Err(E::custom(INTEGER_RULE))
            } else {
                // In range and integral, so the conversion is exact.
                Ok(v as i64)
            }
        }
    }

    d.deserialize_any(Integer)
}

fn out_of_range() -> String {
    format!("must be an integer from {} to {}", i64::MIN, i64::MAX)
}

snake_enum!(
    /// The two parties a transaction is evaluated for.
    PartyRole {
        Customer => "customer",
        Reseller => "reseller",
    }
);

/// The end customer of a transaction, as the reseller describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// The reseller's own reference for the customer.
    pub id: String,
    pub name: String,
    pub country: CountryCode,
    #[serde(default)]
    pub us_person: Option<bool>,
}

impl Customer {
    /// Checks what serde cannot: non-empty, bounded strings without control
    /// or format characters ([`PlainText`] for the id, [`PlainName`] for the
    /// name). Returns `(field, message)` pairs, with fields prefixed by `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let id = PlainText::parse(&self.id).err();
        let name = PlainName::parse(&self.name).err();
        for (field, value, max, plain) in
            [("id", &self.id, 128, id), ("name", &self.name, 256, name)]
        {
            if value.trim().is_empty() {
                out.push((format!("{prefix}.{field}"), "must not be empty".to_string()));
            } else if value.chars().count() > max {
                out.push((
                    format!("{prefix}.{field}"),
                    format!("must be at most {max} characters"),
                ));
            } else if let Some(rule) = plain {
                out.push((format!("{prefix}.{field}"), rule));
            }
        }
        out
    }
}

/// Who did something, as recorded in audit events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    pub role: String,
    pub reseller: Option<String>,
}

impl Actor {
    /// The service itself (the shipped catalogue).
    pub fn system() -> Self {
        Actor {
            sub: "gatekeeper".into(),
            role: "system".into(),
            reseller: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn lower_ids_accept_and_reject() {
        for ok in [
            "a",
            "0",
            "kaspersky-lab-inc",
            "a.b_c-d",
            "9x",
            &"a".repeat(64),
        ] {
            assert!(OrgId::parse(ok).is_ok(), "{ok:?} should be accepted");
            assert!(ResellerId::parse(ok).is_ok(), "{ok:?} should be accepted");
            assert!(
                DesignationId::parse(ok).is_ok(),
                "{ok:?} should be accepted"
            );
            assert!(RuleId::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "aB",
            "a b",
            "a/b",
            "é",
            "a\u{e9}",
            &"a".repeat(65),
        ] {
            assert!(OrgId::parse(bad).is_err(), "{bad:?} should be rejected");
            assert!(
                ResellerId::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
            assert!(
                DesignationId::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
            assert!(RuleId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            OrgId::parse("A").unwrap_err(),
            "must match [a-z0-9][a-z0-9._-]{0,63}"
        );
    }

    #[test]
    fn sku_accepts_and_rejects() {
        for ok in ["ACME-FW-K", "kav", "K", "9", "a.B_c-D", &"Z".repeat(64)] {
            assert!(Sku::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in ["", "-K", ".K", "_K", "K K", "K/1", "Kä", &"Z".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn category_accepts_and_rejects() {
        for ok in [
            "antivirus",
            "threat_intelligence",
            "a",
            "a9_",
            &"c".repeat(64),
        ] {
            assert!(Category::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in [
            "",
            "9a",
            "_a",
            "Antivirus",
            "anti-virus",
            "anti.virus",
            "anti virus",
            &"c".repeat(65),
        ] {
            assert!(Category::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn plain_text_refuses_control_and_format_characters() {
        for ok in [
            "c-1",
            "Müller & Söhne",
            "株式会社",
            "0195f3a2-7c1e-7000-8000-000000000000",
            "a b",
            "",
        ] {
            assert!(PlainText::parse(ok).is_ok(), "{ok:?} should be accepted");
            assert!(PlainName::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        // NUL, C0 and C1 controls, DEL, the bidi controls, zero-width characters, the BOM,
        // the soft hyphen, a tag character, the invisible operators.
        for bad in [
            "a\0",
            "a\t",
            "a\n",
            "a\r",
            "\u{1b}[31m",
            "a\u{7f}",
            "a\u{85}",
            "a\u{9f}",
            "a\u{202a}",
            "a\u{202b}",
            "a\u{202c}",
            "a\u{202d}",
            "a\u{202e}",
            "a\u{2066}",
            "a\u{2067}",
            "a\u{2068}",
            "a\u{2069}",
            "a\u{200e}",
            "a\u{200f}",
            "a\u{61c}",
            "a\u{200b}",
            "a\u{2060}",
            "\u{feff}a",
            "a\u{ad}",
            "a\u{e0041}",
            "a\u{2062}",
        ] {
            assert!(PlainText::parse(bad).is_err(), "{bad:?} should be rejected");
            assert!(PlainName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        // The joiners: not in an id, but in a name (Persian spells with the non-joiner).
        for joined in [
            "\u{645}\u{6cc}\u{200c}\u{634}\u{648}\u{62f}",
            "👩\u{200d}💻",
        ] {
            assert!(PlainText::parse(joined).is_err(), "{joined:?} is no id");
            assert!(PlainName::parse(joined).is_ok(), "{joined:?} is a name");
        }
        assert_eq!(PlainText::parse("a\0").unwrap_err(), PlainText::RULE);
    }

    #[test]
    fn country_code_list_is_complete_and_sorted() {
        assert_eq!(ISO_3166_1_ALPHA_2.len(), 249);
        assert!(ISO_3166_1_ALPHA_2.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_3166_1_ALPHA_2
            .iter()
            .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }

    #[test]
    fn country_code_accepts_and_rejects() {
        for ok in [
            "US", "GB", "DE", "RU", "BR", "PR", "GU", "VI", "AS", "MP", "UM", "AD", "ZW", "SS",
            "BQ", "AX",
        ] {
            assert!(CountryCode::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        // Lower case, user-assigned, reserved, withdrawn, alpha-3 and junk.
        for bad in [
            "us", "Us", "uS", "XX", "XK", "ZZ", "AA", "UK", "EU", "AN", "YU", "USA", "U", "", " US",
        ] {
            assert!(
                CountryCode::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn us_and_territories() {
        for c in ["US", "PR", "GU", "VI", "AS", "MP", "UM"] {
            assert!(
                CountryCode::parse(c).unwrap().is_us_territory_or_us(),
                "{c}"
            );
        }
        for c in ["DE", "GB", "CA", "MX", "RU", "VG", "FM", "MH", "PW"] {
            assert!(
                !CountryCode::parse(c).unwrap().is_us_territory_or_us(),
                "{c}"
            );
        }
    }

    #[test]
    fn newtypes_round_trip_through_serde_and_reject_invalid_json() {
        let org: OrgId = serde_json::from_str("\"ao-kaspersky-lab\"").unwrap();
        assert_eq!(org.as_str(), "ao-kaspersky-lab");
        assert_eq!(org.to_string(), "ao-kaspersky-lab");
        assert_eq!(serde_json::to_string(&org).unwrap(), "\"ao-kaspersky-lab\"");
        let err = serde_json::from_str::<OrgId>("\"AO\"").unwrap_err();
        assert!(err.to_string().contains("must match"), "{err}");
        assert!(serde_json::from_str::<CountryCode>("\"us\"").is_err());
        assert!(serde_json::from_str::<CountryCode>("\"XX\"").is_err());
        assert!(serde_json::from_str::<Sku>("\"\"").is_err());
        let c = CountryCode::try_from("US".to_owned()).unwrap();
        assert_eq!(String::from(c), "US");
        assert!(Sku::try_from("bad sku".to_owned()).is_err());
        assert_eq!("KAV".parse::<Sku>().unwrap().as_str(), "KAV");
    }

    #[test]
    fn enums_use_snake_case_on_the_wire() {
        for t in Transaction::ALL {
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<Transaction>(&json).unwrap(), *t);
        }
        for o in Outcome::ALL {
            let json = serde_json::to_string(o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
        }
        for k in RelKind::ALL {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<RelKind>(&json).unwrap(), *k);
        }
        assert_eq!(
            serde_json::to_string(&RelKind::MinorityOwnedBy).unwrap(),
            "\"minority_owned_by\""
        );
        assert_eq!(PartyRole::Customer.as_str(), "customer");
        assert_eq!(PartyRole::Reseller.to_string(), "reseller");
        assert!(serde_json::from_str::<Transaction>("\"Issue\"").is_err());
    }

    #[test]
    fn an_integer_field_takes_any_number_without_a_fractional_part() {
        #[derive(Debug, Deserialize)]
        struct Body {
            #[serde(deserialize_with = "json_integer")]
            n: i64,
        }
        let parse = |json: &str| {
            serde_json::from_str::<Body>(&format!(r#"{{"n": {json}}}"#))
                .map(|b| b.n)
                .map_err(|e| e.to_string())
        };
        for (json, n) in [
            ("3", 3),
            ("3.0", 3),
            ("-3.0", -3),
            ("-0.0", 0),
            ("3e0", 3),
            ("1e3", 1000),
            ("2.5e1", 25),
            ("0.0", 0),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
            ("-9223372036854774784.0", -9_223_372_036_854_774_784),
        ] {
            assert_eq!(parse(json), Ok(n), "{json}");
        }
        let range = "must be an integer from -9223372036854775808 to 9223372036854775807";
        for (json, message) in [
            ("2.5", INTEGER_RULE),
            ("-0.5", INTEGER_RULE),
            ("3.000001", INTEGER_RULE),
            ("1e-1", INTEGER_RULE),
            ("9223372036854775808", range),
            ("18446744073709551616", range),
            ("9223372036854775808.0", range),
            ("-9223372036854777856.0", range),
            ("1e300", range),
            ("\"3\"", "expected an integer"),
            ("true", "expected an integer"),
            ("null", "expected an integer"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(message), "{json}: {err}");
        }
        // JSON has no non-finite numbers, but another deserializer might hand one over.
        use serde::de::value::{Error, F64Deserializer};
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = json_integer(F64Deserializer::<Error>::new(v)).unwrap_err();
            assert_eq!(err.to_string(), range, "{v}");
        }
    }

    #[test]
    fn only_minority_stakes_do_not_carry() {
        assert!(RelKind::SubsidiaryOf.carries());
        assert!(RelKind::AffiliateOf.carries());
        assert!(RelKind::SuccessorOf.carries());
        assert!(RelKind::AssigneeOf.carries());
        assert!(!RelKind::MinorityOwnedBy.carries());
    }
}
