//! The engine's unit tests, one file per part of `policy`, over the shared fixtures below: the
//! contract's designation, a world of products and group relationships exercising every point
//! of law, and the decision-table runner.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{
    Category, CountryCode, DesignationId, OrgId, Outcome, PartyRole, RelKind, RuleId, Sku,
    Transaction,
};

mod catalog;
mod decide;
mod lineage;
mod properties;
mod validation;
mod wire;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The contract's designation, verbatim.
const KASPERSKY_JSON: &str = r#"{
  "title": "Kaspersky Lab, Inc. ICTS Final Determination",
  "authority": "US Department of Commerce, BIS",
  "citation": "89 FR 52434",
  "organizations": ["kaspersky-lab-inc"],
  "covers_affiliates": true,
  "jurisdiction": "US",
  "excluded_categories": ["threat_intelligence", "security_training", "consulting"],
  "rules": [
    {"id": "new-agreements", "transactions": ["issue"],
     "effective_from": "2024-07-20T00:00:00", "time_zone": "America/New_York"},
    {"id": "full-cutoff", "transactions": ["issue", "renew"],
     "effective_from": "2024-09-29T00:00:00", "time_zone": "America/New_York", "ends_service": true}
  ]
}"#;

const KASPERSKY: &str = "us-icts-kaspersky-2024";
const KASPERSKY_ORGS: [(&str, &str); 4] = [
    ("kaspersky-lab-inc", "US"),
    ("ao-kaspersky-lab", "RU"),
    ("ooo-kaspersky-group", "RU"),
    ("kaspersky-labs-limited", "GB"),
];

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}
fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}
fn cc(s: &str) -> CountryCode {
    CountryCode::parse(s).unwrap()
}
fn did(s: &str) -> DesignationId {
    DesignationId::parse(s).unwrap()
}
fn rid(s: &str) -> RuleId {
    RuleId::parse(s).unwrap()
}
fn cat(s: &str) -> Category {
    Category::parse(s).unwrap()
}
/// Any RFC 3339 instant ("…Z" or "…-04:00"), as UTC.
fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}
fn party(country: &str, us_person: Option<bool>) -> Party {
    Party {
        country: cc(country),
        us_person,
    }
}

/// The shipped designation as the contract states it: parsed from its JSON, all four group
/// companies listed.
fn shipped_designation() -> DesignationSpec {
    let mut d: DesignationSpec = serde_json::from_str(KASPERSKY_JSON).unwrap();
    for (id, _) in KASPERSKY_ORGS.iter().skip(1) {
        d.organizations.push(org(id));
    }
    d
}

fn add_org(data: &mut CatalogData, id: &str, country: Option<&str>) {
    data.organizations.insert(
        org(id),
        OrganizationSpec {
            name: format!("{id} name"),
            country: country.map(cc),
            aliases: vec![],
        },
    );
}

fn add_product(
    data: &mut CatalogData,
    id: &str,
    vendor: &str,
    category: &str,
    components: &[&str],
    white_label_of: Option<&str>,
) {
    data.products.insert(
        sku(id),
        ProductSpec {
            name: format!("{id} product"),
            vendor: org(vendor),
            category: cat(category),
            components: components.iter().map(|c| sku(c)).collect(),
            white_label_of: white_label_of.map(sku),
        },
    );
}

fn relate(data: &mut CatalogData, source: &str, kind: RelKind, target: &str) {
    data.relationships.insert((org(source), org(target)), kind);
}

/// What a new database holds: the four group companies and the shipped designation.
fn seed_data() -> CatalogData {
    let mut data = CatalogData::default();
    for (id, country) in KASPERSKY_ORGS {
        add_org(&mut data, id, Some(country));
    }
    data.designations
        .insert(did(KASPERSKY), shipped_designation());
    data
}

/// The seed plus a world of products and group relationships exercising every point of law.
fn world() -> CatalogData {
    let mut d = seed_data();
    for (id, country) in [
        ("acme", "US"),
        ("whitelabel-co", "DE"),
        ("sub1", "US"),
        ("sub2", "US"),
        ("sub3", "US"),
        ("kl-holding", "CY"),
        ("kl-affiliate", "RU"),
        ("kl-sister", "GB"),
        ("kl-successor", "RU"),
        ("succ-parent", "AE"),
        ("old-kaspersky", "RU"),
        ("kl-assignee", "GB"),
        ("kl-assignor", "RU"),
        ("minor-co", "DE"),
        ("investor", "DE"),
    ] {
        add_org(&mut d, id, Some(country));
    }
    use RelKind::*;
    relate(&mut d, "sub1", SubsidiaryOf, "kaspersky-lab-inc");
    relate(&mut d, "sub2", SubsidiaryOf, "sub1");
    relate(&mut d, "sub3", SubsidiaryOf, "sub2");
    relate(&mut d, "kaspersky-lab-inc", SubsidiaryOf, "kl-holding");
    relate(&mut d, "kl-affiliate", AffiliateOf, "ooo-kaspersky-group");
    relate(&mut d, "kaspersky-labs-limited", AffiliateOf, "kl-sister");
    relate(&mut d, "kl-successor", SuccessorOf, "ao-kaspersky-lab");
    relate(&mut d, "kl-successor", SubsidiaryOf, "succ-parent");
    relate(&mut d, "ooo-kaspersky-group", SuccessorOf, "old-kaspersky");
    relate(&mut d, "kl-assignee", AssigneeOf, "kaspersky-labs-limited");
    relate(&mut d, "ao-kaspersky-lab", AssigneeOf, "kl-assignor");
    relate(&mut d, "minor-co", MinorityOwnedBy, "ao-kaspersky-lab");
    relate(&mut d, "ao-kaspersky-lab", MinorityOwnedBy, "investor");

    add_product(&mut d, "KAV", "kaspersky-lab-inc", "antivirus", &[], None);
    add_product(
        &mut d,
        "KAV-ENGINE",
        "ao-kaspersky-lab",
        "antivirus",
        &[],
        None,
    );
    add_product(&mut d, "ACME-CORE", "acme", "firewall", &[], None);
    add_product(&mut d, "ACME-FW", "acme", "firewall", &["ACME-CORE"], None);
    add_product(
        &mut d,
        "ACME-FW-K",
        "acme",
        "firewall",
        &["KAV-ENGINE"],
        None,
    );
    add_product(
        &mut d,
        "WL-AV",
        "whitelabel-co",
        "antivirus",
        &[],
        Some("KAV"),
    );
    add_product(
        &mut d,
        "KTI",
        "ao-kaspersky-lab",
        "threat_intelligence",
        &[],
        None,
    );
    add_product(
        &mut d,
        "KTI-PLUS",
        "ao-kaspersky-lab",
        "threat_intelligence",
        &["KAV-ENGINE"],
        None,
    );
    add_product(
        &mut d,
        "KTRAIN",
        "kaspersky-labs-limited",
        "security_training",
        &[],
        None,
    );
    add_product(
        &mut d,
        "KCONSULT",
        "ooo-kaspersky-group",
        "consulting",
        &[],
        None,
    );
    add_product(&mut d, "ACME-TI-ONLY", "acme", "siem", &["KTI"], None);
    // A carve-out shelters the supplied product, not the label of the one that carries it: a
    // third party's product of each carved-out category that embeds the engine, one that
    // white-labels a Kaspersky product, and a suite whose TI module (Kaspersky's own, shipping
    // the engine) is the only way in.
    add_product(
        &mut d,
        "ACME-TI-K",
        "acme",
        "threat_intelligence",
        &["KAV-ENGINE"],
        None,
    );
    add_product(
        &mut d,
        "ACME-TRAIN-K",
        "acme",
        "security_training",
        &["KAV-ENGINE"],
        None,
    );
    add_product(
        &mut d,
        "ACME-CONSULT-K",
        "acme",
        "consulting",
        &["KAV-ENGINE"],
        None,
    );
    add_product(
        &mut d,
        "WL-TI",
        "whitelabel-co",
        "threat_intelligence",
        &[],
        Some("KAV"),
    );
    add_product(
        &mut d,
        "ACME-SUITE-KTI",
        "acme",
        "suite",
        &["KTI-PLUS"],
        None,
    );
    add_product(
        &mut d,
        "ACME-MIXED",
        "acme",
        "siem",
        &["KTI", "KAV-ENGINE"],
        None,
    );
    add_product(&mut d, "SUB3-AV", "sub3", "antivirus", &[], None);
    add_product(&mut d, "HOLD-AV", "kl-holding", "antivirus", &[], None);
    add_product(&mut d, "AFF-AV", "kl-affiliate", "antivirus", &[], None);
    add_product(&mut d, "SISTER-AV", "kl-sister", "antivirus", &[], None);
    add_product(&mut d, "SUCC-AV", "kl-successor", "antivirus", &[], None);
    add_product(
        &mut d,
        "SUCC-PARENT-AV",
        "succ-parent",
        "antivirus",
        &[],
        None,
    );
    add_product(&mut d, "PRED-AV", "old-kaspersky", "antivirus", &[], None);
    add_product(&mut d, "ASSIGN-AV", "kl-assignee", "antivirus", &[], None);
    add_product(&mut d, "ASSIGNOR-AV", "kl-assignor", "antivirus", &[], None);
    add_product(&mut d, "MINOR-AV", "minor-co", "antivirus", &[], None);
    add_product(&mut d, "INVESTOR-AV", "investor", "antivirus", &[], None);
    add_product(
        &mut d,
        "SUB3-SUITE",
        "acme",
        "suite",
        &["ACME-CORE", "SUB3-AV"],
        None,
    );
    d
}

fn build(data: CatalogData) -> Catalog {
    match Catalog::build(1, data) {
        Ok(c) => c,
        Err(issues) => panic!("catalogue should build: {issues:#?}"),
    }
}

fn issues_of(data: CatalogData) -> Vec<CatalogIssue> {
    match Catalog::build(1, data) {
        Ok(_) => panic!("catalogue should have been rejected"),
        Err(issues) => issues,
    }
}

/// `"ACME-FW-K > component:KAV-ENGINE > vendor:ao-kaspersky-lab"`: the first step is the
/// product; `vendor` and relationship labels lead to organisations, `component` and
/// `white_label_of` to products.
fn path(s: &str) -> Vec<PathStep> {
    let mut steps = s.split(" > ");
    let first = steps.next().unwrap();
    let mut out = vec![PathStep {
        kind: NodeKind::Product,
        id: first.to_owned(),
        via: None,
    }];
    for step in steps {
        let (via, id) = step.split_once(':').unwrap();
        let kind = match via {
            "component" | "white_label_of" => NodeKind::Product,
            _ => NodeKind::Organization,
        };
        out.push(PathStep {
            kind,
            id: id.to_owned(),
            via: Some(via.to_owned()),
        });
    }
    out
}

fn decide_at(
    catalog: &Catalog,
    transaction: Transaction,
    product: &str,
    customer: Party,
    reseller: Party,
    at: &str,
) -> Verdict {
    let req = Request {
        transaction,
        product: sku(product),
        customer,
        reseller,
    };
    decide(catalog, &req, t(at)).unwrap()
}

const ISSUE: Transaction = Transaction::Issue;
const RENEW: Transaction = Transaction::Renew;
use PartyRole::{Customer as C, Reseller as R};
use ReasonCode::{DesignatedLineage as DL, NexusUnknown as NU, ServiceEnds as SE};

const NEW_AGREEMENTS_UTC: &str = "2024-07-20T04:00:00Z";
const FULL_CUTOFF_UTC: &str = "2024-09-29T04:00:00Z";
const LATER: &str = "2025-01-02T10:00:00Z";

/// One row of a decision table. Every reason is expected to cite the shipped designation.
struct Case {
    name: &'static str,
    tx: Transaction,
    product: &'static str,
    customer: (&'static str, Option<bool>),
    reseller: (&'static str, Option<bool>),
    at: &'static str,
    outcome: Outcome,
    not_after: Option<&'static str>,
    reasons: &'static [(ReasonCode, &'static str, PartyRole)],
}

fn run_cases(catalog: &Catalog, cases: &[Case]) {
    for c in cases {
        let v = decide_at(
            catalog,
            c.tx,
            c.product,
            party(c.customer.0, c.customer.1),
            party(c.reseller.0, c.reseller.1),
            c.at,
        );
        assert_eq!(v.outcome, c.outcome, "{}: outcome ({v:#?})", c.name);
        assert_eq!(v.not_after, c.not_after.map(t), "{}: not_after", c.name);
        let got: Vec<(ReasonCode, &str, PartyRole)> = v
            .reasons
            .iter()
            .map(|r| (r.code, r.rule.as_str(), r.party))
            .collect();
        assert_eq!(got, c.reasons, "{}: reasons", c.name);
        for r in &v.reasons {
            assert_eq!(r.designation.as_str(), KASPERSKY, "{}", c.name);
            assert_eq!(r.citation, "89 FR 52434", "{}", c.name);
            assert_eq!(
                Some(r.effective_from),
                catalog.rule_instant(&r.designation, &r.rule),
                "{}: effective_from is the rule's instant",
                c.name
            );
            assert_eq!(
                r.path.first().map(|s| s.id.as_str()),
                Some(c.product),
                "{}: path starts at the product",
                c.name
            );
        }
    }
}

const US: (&str, Option<bool>) = ("US", None);
const DE_NO: (&str, Option<bool>) = ("DE", Some(false));
