//! Decision: what is asked ([`Request`], [`Party`]), the answer ([`Verdict`] and its
//! [`Reason`]s), nexus, the resolution of a rule's local time, and [`decide`] itself.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, CompiledRule};
use super::lineage::LineagePath;
use crate::domain::{CountryCode, DesignationId, Outcome, PartyRole, RuleId, Sku, Transaction};

/// A party to a transaction, as far as nexus is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Party {
    pub country: CountryCode,
    /// `None`: not stated by the caller.
    pub us_person: Option<bool>,
}

/// What is asked: may `reseller` do `transaction` of `product` for `customer`?
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    pub transaction: Transaction,
    pub product: Sku,
    pub customer: Party,
    pub reseller: Party,
}

/// The requested product is not in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown product {0}")]
pub struct UnknownProduct(pub Sku);

/// The engine's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reasons: Vec<Reason>,
    /// The instant an allowed term must end by (an `ends_service` rule taking effect later for a
    /// party with a nexus or one whose nexus cannot be decided).
    pub not_after: Option<DateTime<Utc>>,
}

/// Why a reason was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Deny: the product's lineage reaches a designated organisation and a party has nexus.
    DesignatedLineage,
    /// Review: as above, but a party's nexus cannot be decided.
    NexusUnknown,
    /// Allow (or review) with `not_after`: an `ends_service` rule takes effect later for a
    /// party with a nexus or one whose nexus cannot be decided.
    ServiceEnds,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::DesignatedLineage => "designated_lineage",
            ReasonCode::NexusUnknown => "nexus_unknown",
            ReasonCode::ServiceEnds => "service_ends",
        }
    }
}

/// One explained reason of a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub designation: DesignationId,
    pub rule: RuleId,
    pub citation: String,
    /// The rule's instant (its local `effective_from` resolved in its time zone).
    pub effective_from: DateTime<Utc>,
    pub party: PartyRole,
    /// From the requested product to the designated organisation.
    pub path: LineagePath,
}

/// Whether a party has the nexus a designation's jurisdiction asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nexus {
    Yes,
    No,
    Unknown,
}

/// Nexus of `party` with `jurisdiction`. For the US: in the US or a territory, or a U.S. person;
/// unknown when outside and `us_person` was not stated. Elsewhere: the country alone decides
/// (`us_person` speaks only to the US).
pub fn nexus(party: &Party, jurisdiction: &CountryCode) -> Nexus {
    if jurisdiction.as_str() == "US" {
        if party.country.is_us_territory_or_us() {
            return Nexus::Yes;
        }
        match party.us_person {
            Some(true) => Nexus::Yes,
            Some(false) => Nexus::No,
            None => Nexus::Unknown,
        }
    } else if &party.country == jurisdiction {
        Nexus::Yes
    } else {
        Nexus::No
    }
}

/// Resolves a local wall-clock time in `tz` to its single instant; a time in a DST gap or
/// overlap is an error message.
pub fn resolve_local(local: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, String> {
    let shown = local.format("%Y-%m-%dT%H:%M:%S");
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::None => Err(format!("{shown} does not exist in {} (DST gap)", tz.name())),
        LocalResult::Ambiguous(..) => Err(format!(
            "{shown} is ambiguous in {} (DST overlap)",
            tz.name()
        )),
    }
}

/// Decides `req` against `catalog` at instant `at`. Pure: one hash lookup plus rule checks;
/// a reason shares its path with the snapshot rather than copying it.
///
/// For each designation that applies and each party: with a nexus, a rule in effect for the
/// transaction denies; with a nexus that cannot be decided, it sends to review; and with
/// either, an `ends_service` rule still ahead caps the term (`service_ends`, `not_after`).
pub fn decide(
    catalog: &Catalog,
    req: &Request,
    at: DateTime<Utc>,
) -> Result<Verdict, UnknownProduct> {
    let Some(applicable) = catalog.lineage.get(req.product.as_str()) else {
        return Err(UnknownProduct(req.product.clone()));
    };

    let mut denials = Vec::new();
    let mut unknowns = Vec::new();
    let mut endings = Vec::new();
    let mut not_after: Option<DateTime<Utc>> = None;

    for a in applicable.iter() {
        let Some(d) = catalog.designations.get(a.designation) else {
            continue;
        };
        // The in-effect rule covering this transaction with the latest instant (ties: smallest id).
        let in_effect = d
            .rules
            .iter()
            .filter(|r| r.instant <= at && r.transactions.contains(&req.transaction))
            .max_by(|x, y| x.instant.cmp(&y.instant).then_with(|| y.id.cmp(&x.id)));
        // The earliest service-ending rule still to come (ties: smallest id).
        let ending = d
            .rules
            .iter()
            .filter(|r| r.ends_service && r.instant > at)
            .min_by(|x, y| (x.instant, &x.id).cmp(&(y.instant, &y.id)));
        let reason = |code: ReasonCode, rule: &CompiledRule, party: PartyRole| Reason {
            code,
            designation: d.id.clone(),
            rule: rule.id.clone(),
            citation: d.citation.clone(),
            effective_from: rule.instant,
            party,
            path: a.path.clone(),
        };
        for (role, party) in [
            (PartyRole::Customer, &req.customer),
            (PartyRole::Reseller, &req.reseller),
        ] {
            match nexus(party, &d.jurisdiction) {
                Nexus::Yes => {
                    if let Some(rule) = in_effect {
                        denials.push(reason(ReasonCode::DesignatedLineage, rule, role));
                    }
                }
                Nexus::Unknown => {
                    if let Some(rule) = in_effect {
                        unknowns.push(reason(ReasonCode::NexusUnknown, rule, role));
                    }
                }
                Nexus::No => continue,
            }
            // A party with a nexus, or whose nexus cannot be decided, may not be served past a
            // service end still ahead: the service cannot know it may (attesting
            // `us_person: false` makes the nexus `No` and lifts the cap).
            if let Some(rule) = ending {
                endings.push(reason(ReasonCode::ServiceEnds, rule, role));
                not_after = Some(not_after.map_or(rule.instant, |t| t.min(rule.instant)));
            }
        }
    }

    let (outcome, mut reasons, not_after) = if !denials.is_empty() {
        (Outcome::Deny, denials, None)
    } else if !unknowns.is_empty() {
        unknowns.extend(endings);
        (Outcome::Review, unknowns, not_after)
    } else {
        (Outcome::Allow, endings, not_after)
    };
    reasons.sort_by(|x, y| {
        (&x.designation, x.party, x.code, &x.rule).cmp(&(&y.designation, y.party, y.code, &y.rule))
    });
    Ok(Verdict {
        outcome,
        reasons,
        not_after,
    })
}
