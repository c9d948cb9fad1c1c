#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, NaiveDate, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::lineage::Label;
use super::*;
use crate::domain::{
    Category, CountryCode, DesignationId, OrgId, Outcome, PartyRole, RelKind, ResellerId, RuleId,
    Sku, Transaction,
};

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

// ---------------------------------------------------------------------------------------------
// The contract's JSON and wire formats
// ---------------------------------------------------------------------------------------------

#[test]
fn contract_designation_json_round_trips() {
    let spec: DesignationSpec = serde_json::from_str(KASPERSKY_JSON).unwrap();
    assert_eq!(spec.citation, "89 FR 52434");
    assert_eq!(spec.organizations, vec![org("kaspersky-lab-inc")]);
    assert!(spec.covers_affiliates);
    assert_eq!(spec.jurisdiction, cc("US"));
    assert_eq!(spec.rules.len(), 2);
    assert!(
        !spec.rules[0].ends_service,
        "ends_service defaults to false"
    );
    assert!(spec.rules[1].ends_service);
    assert_eq!(spec.rules[0].time_zone, chrono_tz::America::New_York);
    assert_eq!(
        spec.rules[1].effective_from,
        NaiveDate::from_ymd_opt(2024, 9, 29)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
    );

    let mut expected: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    // The only difference on the way back: the defaulted flag is written out.
    expected["rules"][0]["ends_service"] = json!(false);
    let back = serde_json::to_value(&spec).unwrap();
    assert_eq!(back, expected);
    assert_eq!(
        back["rules"][0]["effective_from"],
        json!("2024-07-20T00:00:00")
    );
    let again: DesignationSpec = serde_json::from_value(back).unwrap();
    assert_eq!(again, spec);
}

#[test]
fn specs_reject_unknown_fields_and_bad_values() {
    let mut with_outcome: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    with_outcome["outcome"] = json!("allow");
    assert!(serde_json::from_value::<DesignationSpec>(with_outcome).is_err());

    let mut rule_extra: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    rule_extra["rules"][0]["lifted_at"] = json!("2030-01-01T00:00:00");
    assert!(serde_json::from_value::<DesignationSpec>(rule_extra).is_err());

    let mut bad_zone: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    bad_zone["rules"][0]["time_zone"] = json!("Mars/Olympus_Mons");
    let err = serde_json::from_value::<DesignationSpec>(bad_zone).unwrap_err();
    assert!(err.to_string().contains("unknown IANA time zone"), "{err}");

    let mut bad_country: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    bad_country["jurisdiction"] = json!("us");
    assert!(serde_json::from_value::<DesignationSpec>(bad_country).is_err());

    assert!(serde_json::from_value::<ResellerSpec>(
        json!({"name": "Acme", "country": "US", "us_person": true, "id": "x"})
    )
    .is_err());
    assert!(serde_json::from_value::<RelationshipSpec>(json!({"kind": "owner_of"})).is_err());
    assert_eq!(
        serde_json::from_value::<RelationshipSpec>(json!({"kind": "minority_owned_by"})).unwrap(),
        RelationshipSpec {
            kind: RelKind::MinorityOwnedBy
        }
    );
}

#[test]
fn optional_spec_fields_default_and_are_omitted() {
    let p: ProductSpec = serde_json::from_value(
        json!({"name": "Firewall", "vendor": "acme", "category": "firewall"}),
    )
    .unwrap();
    assert!(p.components.is_empty());
    assert_eq!(p.white_label_of, None);
    let back = serde_json::to_value(&p).unwrap();
    assert_eq!(
        back,
        json!({"name": "Firewall", "vendor": "acme", "category": "firewall", "components": []})
    );

    let o: OrganizationSpec = serde_json::from_value(json!({"name": "Acme"})).unwrap();
    assert_eq!(o.country, None);
    assert!(o.aliases.is_empty());
    assert_eq!(
        serde_json::to_value(&o).unwrap(),
        json!({"name": "Acme", "aliases": []})
    );
}

#[test]
fn contract_example_reason_is_reproduced_exactly() {
    let catalog = build(world());
    let v = decide_at(
        &catalog,
        ISSUE,
        "ACME-FW-K",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(v.not_after, None);
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(
        json,
        json!({
            "outcome": "deny",
            "reasons": [{"code": "designated_lineage", "designation": "us-icts-kaspersky-2024",
                         "rule": "full-cutoff", "citation": "89 FR 52434",
                         "effective_from": "2024-09-29T04:00:00Z", "party": "customer",
                         "path": [{"kind": "product", "id": "ACME-FW-K"},
                                  {"kind": "product", "id": "KAV-ENGINE", "via": "component"},
                                  {"kind": "organization", "id": "ao-kaspersky-lab", "via": "vendor"}]}],
            "not_after": null
        })
    );
    let again: Verdict = serde_json::from_value(json).unwrap();
    assert_eq!(again, v);
}

#[test]
fn allowed_verdict_serializes_not_after_in_utc() {
    let catalog = build(world());
    let v = decide_at(
        &catalog,
        RENEW,
        "KAV",
        party("US", None),
        party("DE", Some(false)),
        "2024-08-01T00:00:00Z",
    );
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["outcome"], json!("allow"));
    assert_eq!(json["not_after"], json!("2024-09-29T04:00:00Z"));
    assert_eq!(json["reasons"][0]["code"], json!("service_ends"));
    assert_eq!(
        json["reasons"][0]["effective_from"],
        json!("2024-09-29T04:00:00Z")
    );
}

// ---------------------------------------------------------------------------------------------
// Law: the two ban dates, to the second, and the renewal policy choice
// ---------------------------------------------------------------------------------------------

#[test]
fn shipped_rules_resolve_to_the_published_instants() {
    let catalog = build(seed_data());
    assert_eq!(
        catalog.rule_instant(&did(KASPERSKY), &rid("new-agreements")),
        Some(t(NEW_AGREEMENTS_UTC))
    );
    assert_eq!(
        catalog.rule_instant(&did(KASPERSKY), &rid("full-cutoff")),
        Some(t(FULL_CUTOFF_UTC))
    );
    assert_eq!(catalog.rule_instant(&did(KASPERSKY), &rid("nope")), None);
    assert_eq!(
        catalog.rule_instant(&did("nope"), &rid("full-cutoff")),
        None
    );
    // The same instants written with the EDT offset.
    assert_eq!(t("2024-07-20T00:00:00-04:00"), t(NEW_AGREEMENTS_UTC));
    assert_eq!(t("2024-09-29T00:00:00-04:00"), t(FULL_CUTOFF_UTC));
}

#[test]
#[rustfmt::skip]
fn ban_dates_to_the_second() {
    let catalog = build(world());
    let a = |name, tx, at, outcome, not_after, reasons| Case {
        name, tx, product: "KAV", customer: US, reseller: DE_NO, at, outcome, not_after, reasons,
    };
    use Outcome::{Allow, Deny};
    let cut = Some(FULL_CUTOFF_UTC);
    run_cases(&catalog, &[
        a("issue one second before 20 July (UTC)", ISSUE, "2024-07-20T03:59:59Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("issue at 20 July 04:00Z", ISSUE, "2024-07-20T04:00:00Z", Deny, None, &[(DL, "new-agreements", C)]),
        a("issue one second before 20 July (EDT offset)", ISSUE, "2024-07-19T23:59:59-04:00", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("issue at 20 July 00:00 EDT", ISSUE, "2024-07-20T00:00:00-04:00", Deny, None, &[(DL, "new-agreements", C)]),
        a("issue between the dates", ISSUE, "2024-08-15T12:00:00Z", Deny, None, &[(DL, "new-agreements", C)]),
        a("issue just before the full cut-off", ISSUE, "2024-09-29T03:59:59Z", Deny, None, &[(DL, "new-agreements", C)]),
        a("issue at the full cut-off cites the latest rule", ISSUE, "2024-09-29T04:00:00Z", Deny, None, &[(DL, "full-cutoff", C)]),
        a("issue long after", ISSUE, LATER, Deny, None, &[(DL, "full-cutoff", C)]),
        a("issue well before 20 July", ISSUE, "2024-07-01T12:00:00Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("renew one second before 29 Sept (UTC)", RENEW, "2024-09-29T03:59:59Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("renew at 29 Sept 04:00Z", RENEW, "2024-09-29T04:00:00Z", Deny, None, &[(DL, "full-cutoff", C)]),
        a("renew one second before 29 Sept (EDT offset)", RENEW, "2024-09-28T23:59:59-04:00", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("renew at 29 Sept 00:00 EDT", RENEW, "2024-09-29T00:00:00-04:00", Deny, None, &[(DL, "full-cutoff", C)]),
        a("renew at 20 July is a continuation", RENEW, "2024-07-20T04:00:00Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("renew between the dates is cut at the full cut-off", RENEW, "2024-08-15T12:00:00Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("renew before any ban", RENEW, "2024-01-01T00:00:00Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        a("renew long after", RENEW, LATER, Deny, None, &[(DL, "full-cutoff", C)]),
    ]);
}

#[test]
fn reading_renewals_as_new_agreements_is_a_data_change() {
    let mut data = world();
    let d = data.designations.get_mut(&did(KASPERSKY)).unwrap();
    d.rules[0].transactions = vec![Transaction::Issue, Transaction::Renew];
    let catalog = build(data);
    let v = decide_at(
        &catalog,
        RENEW,
        "KAV",
        party("US", None),
        party("DE", Some(false)),
        "2024-08-15T12:00:00Z",
    );
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(v.reasons.len(), 1);
    assert_eq!(v.reasons[0].rule.as_str(), "new-agreements");
    assert_eq!(v.reasons[0].effective_from, t(NEW_AGREEMENTS_UTC));
    // Before 20 July the renewal is still allowed, cut at the full cut-off.
    let v = decide_at(
        &catalog,
        RENEW,
        "KAV",
        party("US", None),
        party("DE", Some(false)),
        "2024-07-20T03:59:59Z",
    );
    assert_eq!(v.outcome, Outcome::Allow);
    assert_eq!(v.not_after, Some(t(FULL_CUTOFF_UTC)));
}

#[test]
fn service_end_applies_regardless_of_the_rules_transactions() {
    // An ends_service rule cuts the term even when it lists only `issue`.
    let mut data = world();
    let d = data.designations.get_mut(&did(KASPERSKY)).unwrap();
    d.rules[1].transactions = vec![Transaction::Issue];
    let catalog = build(data);
    let v = decide_at(
        &catalog,
        RENEW,
        "KAV",
        party("US", None),
        party("DE", Some(false)),
        "2024-08-15T12:00:00Z",
    );
    assert_eq!(v.outcome, Outcome::Allow);
    assert_eq!(v.not_after, Some(t(FULL_CUTOFF_UTC)));
    // At the very instant it takes effect, the cap is no longer "later": no cap, no reason.
    let v = decide_at(
        &catalog,
        RENEW,
        "KAV",
        party("US", None),
        party("DE", Some(false)),
        FULL_CUTOFF_UTC,
    );
    assert_eq!(v.outcome, Outcome::Allow);
    assert_eq!(v.not_after, None);
    assert!(v.reasons.is_empty());
    // And after it, a renewal is no longer covered by any rule: allowed, no cap left.
    let v = decide_at(
        &catalog,
        RENEW,
        "KAV",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Allow);
    assert_eq!(v.not_after, None);
    assert!(v.reasons.is_empty());
}

#[test]
fn rule_ties_are_broken_by_smallest_rule_id_whatever_the_list_order() {
    for order in [[0usize, 1], [1, 0]] {
        let mut data = world();
        let d = data.designations.get_mut(&did(KASPERSKY)).unwrap();
        let mut b = d.rules[1].clone();
        b.id = rid("b-rule");
        let mut a = b.clone();
        a.id = rid("a-rule");
        let pair = [a, b];
        d.rules = order.iter().map(|&i| pair[i].clone()).collect();
        let catalog = build(data);
        let v = decide_at(
            &catalog,
            ISSUE,
            "KAV",
            party("US", None),
            party("DE", Some(false)),
            LATER,
        );
        assert_eq!(v.reasons.len(), 1);
        assert_eq!(v.reasons[0].rule.as_str(), "a-rule", "order {order:?}");
        let v = decide_at(
            &catalog,
            ISSUE,
            "KAV",
            party("US", None),
            party("DE", Some(false)),
            "2024-08-01T00:00:00Z",
        );
        assert_eq!(v.outcome, Outcome::Allow);
        assert_eq!(v.reasons.len(), 1);
        assert_eq!(v.reasons[0].rule.as_str(), "a-rule", "order {order:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Law: who is covered on the customer side (U.S. nexus), and the reseller as a party
// ---------------------------------------------------------------------------------------------

#[test]
#[rustfmt::skip]
fn nexus_of_customers_and_resellers() {
    let catalog = build(world());
    let c = |name, customer, reseller, outcome, reasons| Case {
        name, tx: ISSUE, product: "KAV", customer, reseller, at: LATER, outcome, not_after: None, reasons,
    };
    use Outcome::{Allow, Deny, Review};
    let deny_c: &[(ReasonCode, &str, PartyRole)] = &[(DL, "full-cutoff", C)];
    let deny_r: &[(ReasonCode, &str, PartyRole)] = &[(DL, "full-cutoff", R)];
    let mut cases = vec![
        c("US customer", US, DE_NO, Deny, deny_c),
        c("US customer who says us_person false is still in the US", ("US", Some(false)), DE_NO, Deny, deny_c),
        c("U.S. citizen abroad", ("DE", Some(true)), DE_NO, Deny, deny_c),
        c("U.S. reseller selling to a German customer", DE_NO, ("US", Some(true)), Deny, deny_r),
        c("U.S.-person reseller based abroad", DE_NO, ("GB", Some(true)), Deny, deny_r),
        c("foreign reseller selling to a U.S. customer", US, DE_NO, Deny, deny_c),
        c("both parties in the U.S.", US, ("US", Some(true)), Deny, &[(DL, "full-cutoff", C), (DL, "full-cutoff", R)]),
        c("German customer through a German reseller", DE_NO, DE_NO, Allow, &[]),
        c("Russian customer, not a U.S. person", ("RU", Some(false)), DE_NO, Allow, &[]),
        c("Brazilian customer, us_person missing", ("BR", None), DE_NO, Review, &[(NU, "full-cutoff", C)]),
        c("British Virgin Islands is not a U.S. territory", ("VG", None), DE_NO, Review, &[(NU, "full-cutoff", C)]),
        c("reseller abroad with us_person missing", DE_NO, ("BR", None), Review, &[(NU, "full-cutoff", R)]),
        c("both unknown", ("BR", None), ("BR", None), Review, &[(NU, "full-cutoff", C), (NU, "full-cutoff", R)]),
        c("deny beats review", ("BR", None), ("US", Some(true)), Deny, deny_r),
    ];
    // Each territory counts as "in the United States", whatever us_person says.
    for territory in ["PR", "GU", "VI", "AS", "MP", "UM"] {
        for us_person in [None, Some(false), Some(true)] {
            cases.push(c("territory customer", (territory, us_person), DE_NO, Deny, deny_c));
            cases.push(c("territory reseller", DE_NO, (territory, us_person), Deny, deny_r));
        }
    }
    run_cases(&catalog, &cases);
}

#[test]
#[rustfmt::skip]
fn unknown_nexus_depends_on_the_date() {
    let catalog = build(world());
    let c = |name, tx, at, outcome, not_after, reasons| Case {
        name, tx, product: "KAV", customer: ("BR", None), reseller: DE_NO, at, outcome, not_after, reasons,
    };
    use Outcome::{Allow, Review};
    let cut = Some(FULL_CUTOFF_UTC);
    // Before a rule is in force the party is allowed, but capped at the full cut-off exactly as a
    // U.S. person would be: the service cannot know it may serve past it.
    run_cases(&catalog, &[
        c("issue before 20 July", ISSUE, "2024-07-20T03:59:59Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        c("issue at 20 July", ISSUE, "2024-07-20T04:00:00Z", Review, cut, &[(NU, "new-agreements", C), (SE, "full-cutoff", C)]),
        c("renew between the dates: no rule for renew yet", RENEW, "2024-08-15T12:00:00Z", Allow, cut, &[(SE, "full-cutoff", C)]),
        c("renew after the full cut-off", RENEW, "2024-09-29T04:00:00Z", Review, None, &[(NU, "full-cutoff", C)]),
    ]);
}

#[test]
#[rustfmt::skip]
fn term_cap_comes_from_parties_with_a_nexus_or_an_unknown_one() {
    let catalog = build(world());
    let c = |name, customer, reseller, not_after, reasons| Case {
        name, tx: RENEW, product: "KAV", customer, reseller, at: "2024-08-15T12:00:00Z",
        outcome: Outcome::Allow, not_after, reasons,
    };
    let cut = Some(FULL_CUTOFF_UTC);
    run_cases(&catalog, &[
        c("US customer", US, DE_NO, cut, &[(SE, "full-cutoff", C)]),
        c("US reseller", DE_NO, ("US", Some(true)), cut, &[(SE, "full-cutoff", R)]),
        c("both", US, ("US", Some(true)), cut, &[(SE, "full-cutoff", C), (SE, "full-cutoff", R)]),
        c("no nexus: no cap", DE_NO, DE_NO, None, &[]),
        c("unknown nexus: capped like a known one", ("BR", None), DE_NO, cut, &[(SE, "full-cutoff", C)]),
        c("unknown reseller nexus: capped", DE_NO, ("BR", None), cut, &[(SE, "full-cutoff", R)]),
        c("unknown customer, U.S. reseller", ("BR", None), ("US", Some(true)), cut, &[(SE, "full-cutoff", C), (SE, "full-cutoff", R)]),
        c("attesting us_person false lifts the cap", ("BR", Some(false)), DE_NO, None, &[]),
    ]);
}

#[test]
fn nexus_function_table() {
    let us = cc("US");
    let gb = cc("GB");
    for (country, us_person, for_us, for_gb) in [
        ("US", None, Nexus::Yes, Nexus::No),
        ("PR", Some(false), Nexus::Yes, Nexus::No),
        ("DE", Some(true), Nexus::Yes, Nexus::No),
        ("DE", Some(false), Nexus::No, Nexus::No),
        ("DE", None, Nexus::Unknown, Nexus::No),
        ("GB", None, Nexus::Unknown, Nexus::Yes),
        ("GB", Some(true), Nexus::Yes, Nexus::Yes),
        ("GB", Some(false), Nexus::No, Nexus::Yes),
    ] {
        let p = party(country, us_person);
        assert_eq!(nexus(&p, &us), for_us, "{country} {us_person:?} for US");
        assert_eq!(nexus(&p, &gb), for_gb, "{country} {us_person:?} for GB");
    }
}

// ---------------------------------------------------------------------------------------------
// Law: the supplier side (affiliates, subsidiaries, parents, successors, assignees), OEM and
// white-label products, and the carve-outs
// ---------------------------------------------------------------------------------------------

/// Products the shipped designation reaches, with the exact shortest explaining path.
const COVERED: &[(&str, &str)] = &[
    ("KAV", "KAV > vendor:kaspersky-lab-inc"),
    ("KAV-ENGINE", "KAV-ENGINE > vendor:ao-kaspersky-lab"),
    // OEM engine inside another vendor's product: the contract's example.
    ("ACME-FW-K", "ACME-FW-K > component:KAV-ENGINE > vendor:ao-kaspersky-lab"),
    ("WL-AV", "WL-AV > white_label_of:KAV > vendor:kaspersky-lab-inc"),
    // Carve-outs shelter the supplied product alone: a product of a carved-out category that
    // embeds or white-labels a covered product is covered, through it.
    ("KTI-PLUS", "KTI-PLUS > component:KAV-ENGINE > vendor:ao-kaspersky-lab"),
    ("ACME-TI-K", "ACME-TI-K > component:KAV-ENGINE > vendor:ao-kaspersky-lab"),
    ("ACME-TRAIN-K", "ACME-TRAIN-K > component:KAV-ENGINE > vendor:ao-kaspersky-lab"),
    ("ACME-CONSULT-K", "ACME-CONSULT-K > component:KAV-ENGINE > vendor:ao-kaspersky-lab"),
    ("WL-TI", "WL-TI > white_label_of:KAV > vendor:kaspersky-lab-inc"),
    (
        "ACME-SUITE-KTI",
        "ACME-SUITE-KTI > component:KTI-PLUS > component:KAV-ENGINE > vendor:ao-kaspersky-lab",
    ),
    // Carved-out component beside a covered one: denied via the covered one.
    ("ACME-MIXED", "ACME-MIXED > component:KAV-ENGINE > vendor:ao-kaspersky-lab"),
    (
        "SUB3-AV",
        "SUB3-AV > vendor:sub3 > subsidiary_of:sub2 > subsidiary_of:sub1 > subsidiary_of:kaspersky-lab-inc",
    ),
    (
        "SUB3-SUITE",
        "SUB3-SUITE > component:SUB3-AV > vendor:sub3 > subsidiary_of:sub2 > subsidiary_of:sub1 > subsidiary_of:kaspersky-lab-inc",
    ),
    ("HOLD-AV", "HOLD-AV > vendor:kl-holding > parent_of:kaspersky-lab-inc"),
    ("AFF-AV", "AFF-AV > vendor:kl-affiliate > affiliate_of:ooo-kaspersky-group"),
    ("SISTER-AV", "SISTER-AV > vendor:kl-sister > affiliate_of:kaspersky-labs-limited"),
    // Succession carries to the successor or assignee, and on through its group.
    ("SUCC-AV", "SUCC-AV > vendor:kl-successor > successor_of:ao-kaspersky-lab"),
    (
        "SUCC-PARENT-AV",
        "SUCC-PARENT-AV > vendor:succ-parent > parent_of:kl-successor > successor_of:ao-kaspersky-lab",
    ),
    ("ASSIGN-AV", "ASSIGN-AV > vendor:kl-assignee > assignee_of:kaspersky-labs-limited"),
];

/// Products the shipped designation does not reach: carve-outs, minority stakes, others.
const NOT_COVERED: &[(&str, &str)] = &[
    ("ACME-FW", "unrelated vendor"),
    ("ACME-CORE", "unrelated vendor"),
    ("KTI", "threat-intelligence carve-out"),
    ("KTRAIN", "security-training carve-out"),
    ("KCONSULT", "consulting carve-out"),
    ("ACME-TI-ONLY", "embeds only a carved-out component"),
    // Succession runs one way: Kaspersky's predecessor and assignor are not covered by it.
    (
        "PRED-AV",
        "predecessor: ooo-kaspersky-group is the successor of its vendor",
    ),
    (
        "ASSIGNOR-AV",
        "assignor: ao-kaspersky-lab is the assignee of its vendor",
    ),
    (
        "MINOR-AV",
        "vendor is minority-owned by a designated company",
    ),
    (
        "INVESTOR-AV",
        "vendor holds a minority stake in a designated company",
    ),
];

#[test]
fn covered_products_are_denied_with_the_shortest_path() {
    let catalog = build(world());
    for (product, expected) in COVERED {
        let v = decide_at(
            &catalog,
            ISSUE,
            product,
            party("US", None),
            party("DE", Some(false)),
            LATER,
        );
        assert_eq!(v.outcome, Outcome::Deny, "{product}");
        assert_eq!(v.reasons.len(), 1, "{product}");
        assert_eq!(v.reasons[0].code, DL, "{product}");
        assert_eq!(v.reasons[0].party, C, "{product}");
        assert_eq!(v.reasons[0].path, path(expected), "{product}");
        assert_eq!(
            catalog.lineage_path(&did(KASPERSKY), &sku(product)),
            Some(path(expected).as_slice()),
            "{product}"
        );
    }
}

#[test]
fn uncovered_products_are_allowed_without_any_reason() {
    let catalog = build(world());
    for (product, why) in NOT_COVERED {
        for (tx, at) in [(ISSUE, LATER), (RENEW, "2024-08-15T12:00:00Z")] {
            let v = decide_at(
                &catalog,
                tx,
                product,
                party("US", None),
                party("US", Some(true)),
                at,
            );
            assert_eq!(v.outcome, Outcome::Allow, "{product}: {why}");
            assert!(v.reasons.is_empty(), "{product}: {why}");
            assert_eq!(
                v.not_after, None,
                "{product}: {why}: the designation does not apply at all"
            );
        }
        assert_eq!(
            catalog.lineage_path(&did(KASPERSKY), &sku(product)),
            None,
            "{product}"
        );
    }
}

#[test]
fn designation_without_affiliates_reaches_only_listed_organisations() {
    let mut data = world();
    data.designations
        .get_mut(&did(KASPERSKY))
        .unwrap()
        .covers_affiliates = false;
    let catalog = build(data);
    for product in ["KAV", "KAV-ENGINE", "ACME-FW-K", "WL-AV", "ACME-MIXED"] {
        let v = decide_at(
            &catalog,
            ISSUE,
            product,
            party("US", None),
            party("DE", Some(false)),
            LATER,
        );
        assert_eq!(
            v.outcome,
            Outcome::Deny,
            "{product}: product edges are still followed"
        );
    }
    for product in [
        "SUB3-AV",
        "SUB3-SUITE",
        "HOLD-AV",
        "AFF-AV",
        "SISTER-AV",
        "SUCC-AV",
        "SUCC-PARENT-AV",
        "ASSIGN-AV",
    ] {
        let v = decide_at(
            &catalog,
            ISSUE,
            product,
            party("US", None),
            party("DE", Some(false)),
            LATER,
        );
        assert_eq!(v.outcome, Outcome::Allow, "{product}: no relationship step");
        assert!(v.reasons.is_empty(), "{product}");
    }
}

#[test]
fn only_the_listed_company_without_the_entity_list_companies_still_covers_the_group() {
    // The contract's JSON alone lists only kaspersky-lab-inc; with covers_affiliates, a
    // group company linked to it is covered, one not linked is not.
    let mut data = world();
    data.designations.insert(
        did(KASPERSKY),
        serde_json::from_str(KASPERSKY_JSON).unwrap(),
    );
    relate(
        &mut data,
        "ao-kaspersky-lab",
        RelKind::AffiliateOf,
        "kaspersky-lab-inc",
    );
    let catalog = build(data);
    let v = decide_at(
        &catalog,
        ISSUE,
        "ACME-FW-K",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(
        v.reasons[0].path,
        path("ACME-FW-K > component:KAV-ENGINE > vendor:ao-kaspersky-lab > affiliate_of:kaspersky-lab-inc")
    );
    let v = decide_at(
        &catalog,
        ISSUE,
        "KTRAIN",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Allow);
    let v = decide_at(
        &catalog,
        ISSUE,
        "ASSIGN-AV",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(
        v.outcome,
        Outcome::Allow,
        "kaspersky-labs-limited is not linked here"
    );
}

#[test]
fn minority_stake_in_the_path_breaks_the_chain() {
    // minor-co is minority-owned by ao-kaspersky-lab, and its subsidiary is therefore not reached.
    let mut data = world();
    add_org(&mut data, "minor-sub", None);
    relate(&mut data, "minor-sub", RelKind::SubsidiaryOf, "minor-co");
    add_product(
        &mut data,
        "MINOR-SUB-AV",
        "minor-sub",
        "antivirus",
        &[],
        None,
    );
    let catalog = build(data.clone());
    let v = decide_at(
        &catalog,
        ISSUE,
        "MINOR-SUB-AV",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Allow);
    // Turning the stake into control carries the designation across.
    relate(
        &mut data,
        "minor-co",
        RelKind::SubsidiaryOf,
        "ao-kaspersky-lab",
    );
    let catalog = build(data);
    let v = decide_at(
        &catalog,
        ISSUE,
        "MINOR-SUB-AV",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(
        v.reasons[0].path,
        path("MINOR-SUB-AV > vendor:minor-sub > subsidiary_of:minor-co > subsidiary_of:ao-kaspersky-lab")
    );
}

/// Ties between equally short paths go to the smallest label by name; the engine compares
/// labels by their declaration order, so that order must be the names' order.
#[test]
fn edge_labels_are_declared_in_name_order() {
    for pair in Label::ALL.windows(2) {
        assert!(pair[0] < pair[1], "{pair:?}");
        assert!(pair[0].as_str() < pair[1].as_str(), "{pair:?}");
    }
}

#[test]
fn shortest_path_wins_and_ties_do_not_depend_on_component_order() {
    // Two equally short routes to the group: via ENGINE-A and via ENGINE-B; and a longer one.
    let mut base = world();
    add_product(
        &mut base,
        "ENGINE-A",
        "ao-kaspersky-lab",
        "antivirus",
        &[],
        None,
    );
    add_product(
        &mut base,
        "ENGINE-B",
        "kaspersky-lab-inc",
        "antivirus",
        &[],
        None,
    );
    let mut paths = BTreeSet::new();
    for components in [
        ["SUB3-AV", "ENGINE-B", "ENGINE-A"],
        ["ENGINE-A", "SUB3-AV", "ENGINE-B"],
        ["ENGINE-B", "ENGINE-A", "SUB3-AV"],
    ] {
        let mut data = base.clone();
        add_product(&mut data, "BUNDLE", "acme", "suite", &components, None);
        let catalog = build(data);
        let v = decide_at(
            &catalog,
            ISSUE,
            "BUNDLE",
            party("US", None),
            party("DE", Some(false)),
            LATER,
        );
        paths.insert(format!("{:?}", v.reasons[0].path));
        assert_eq!(
            v.reasons[0].path,
            path("BUNDLE > component:ENGINE-A > vendor:ao-kaspersky-lab")
        );
    }
    assert_eq!(paths.len(), 1);
}

#[test]
fn several_designations_give_one_reason_each_sorted_by_id() {
    let mut data = world();
    let mut other = shipped_designation();
    other.title = "Another determination".into();
    other.citation = "90 FR 1".into();
    other.organizations = vec![org("acme")];
    data.designations.insert(did("aaa-acme"), other);
    let catalog = build(data);
    let v = decide_at(
        &catalog,
        ISSUE,
        "ACME-FW-K",
        party("US", None),
        party("US", Some(true)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Deny);
    let got: Vec<(&str, PartyRole, &str)> = v
        .reasons
        .iter()
        .map(|r| (r.designation.as_str(), r.party, r.citation.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("aaa-acme", C, "90 FR 1"),
            ("aaa-acme", R, "90 FR 1"),
            (KASPERSKY, C, "89 FR 52434"),
            (KASPERSKY, R, "89 FR 52434"),
        ]
    );
    assert_eq!(v.reasons[0].path, path("ACME-FW-K > vendor:acme"));
}

#[test]
fn review_keeps_the_term_cap_of_parties_with_nexus() {
    // A British designation that only ends service later, and the U.S. one with an unknown
    // customer: review, with the cap the British reseller's designation imposes.
    let mut data = world();
    let gb: DesignationSpec = serde_json::from_value(json!({
        "title": "UK test", "authority": "UK", "citation": "SI 2025/1",
        "organizations": ["kaspersky-lab-inc"], "covers_affiliates": true, "jurisdiction": "GB",
        "rules": [{"id": "stop", "transactions": ["renew"],
                   "effective_from": "2025-06-01T00:00:00", "time_zone": "Europe/London",
                   "ends_service": true}]
    }))
    .unwrap();
    data.designations.insert(did("gb-test"), gb);
    let catalog = build(data);
    let v = decide_at(
        &catalog,
        ISSUE,
        "KAV",
        party("BR", None),
        party("GB", Some(false)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Review);
    assert_eq!(v.not_after, Some(t("2025-05-31T23:00:00Z")));
    let got: Vec<(&str, ReasonCode, PartyRole)> = v
        .reasons
        .iter()
        .map(|r| (r.designation.as_str(), r.code, r.party))
        .collect();
    assert_eq!(got, vec![("gb-test", SE, R), (KASPERSKY, NU, C)]);
}

// ---------------------------------------------------------------------------------------------
// Law: designations are data, effective at an instant in a named time zone
// ---------------------------------------------------------------------------------------------

fn london_designation(local: &str) -> DesignationSpec {
    serde_json::from_value(json!({
        "title": "UK designation of Example Ltd",
        "authority": "HM Treasury, OFSI",
        "citation": "SI 2025/123",
        "organizations": ["example-ltd"],
        "covers_affiliates": true,
        "jurisdiction": "GB",
        "rules": [{"id": "all", "transactions": ["issue", "renew"],
                   "effective_from": local, "time_zone": "Europe/London", "ends_service": true}]
    }))
    .unwrap()
}

#[test]
fn new_designation_in_another_time_zone_added_at_run_time() {
    let mut data = world();
    add_org(&mut data, "example-ltd", Some("GB"));
    add_product(&mut data, "EX-AV", "example-ltd", "antivirus", &[], None);
    let v1 = build(data.clone());
    assert_eq!(v1.version(), 1);
    let gb_customer = party("GB", Some(false));
    let v = decide_at(
        &v1,
        ISSUE,
        "EX-AV",
        gb_customer.clone(),
        party("DE", Some(false)),
        "2025-04-01T00:00:00Z",
    );
    assert_eq!(v.outcome, Outcome::Allow);

    // 00:30 on 30 March 2025 is before the 01:00 UTC spring-forward: still GMT.
    data.designations.insert(
        did("uk-example-2025"),
        london_designation("2025-03-30T00:30:00"),
    );
    let v2 = Catalog::build(2, data).unwrap();
    assert_eq!(v2.version(), 2);
    let d = did("uk-example-2025");
    assert_eq!(
        v2.rule_instant(&d, &rid("all")),
        Some(t("2025-03-30T00:30:00Z"))
    );

    let at = |s| {
        decide_at(
            &v2,
            ISSUE,
            "EX-AV",
            gb_customer.clone(),
            party("DE", Some(false)),
            s,
        )
    };
    let before = at("2025-03-30T00:29:59Z");
    assert_eq!(before.outcome, Outcome::Allow);
    assert_eq!(before.not_after, Some(t("2025-03-30T00:30:00Z")));
    let after = at("2025-03-30T00:30:00Z");
    assert_eq!(after.outcome, Outcome::Deny);
    assert_eq!(after.reasons[0].designation, d);
    assert_eq!(after.reasons[0].citation, "SI 2025/123");
    assert_eq!(after.reasons[0].path, path("EX-AV > vendor:example-ltd"));

    // us_person speaks only to the U.S.: a U.S. person in Germany has no British nexus,
    // and a U.S. customer is not a British one.
    for p in [
        party("DE", Some(true)),
        party("US", None),
        party("DE", None),
    ] {
        let v = decide_at(
            &v2,
            ISSUE,
            "EX-AV",
            p.clone(),
            party("DE", Some(false)),
            "2025-04-01T00:00:00Z",
        );
        assert_eq!(v.outcome, Outcome::Allow, "{p:?}");
        assert!(v.reasons.is_empty(), "{p:?}");
    }
    // A British reseller is a party with nexus.
    let v = decide_at(
        &v2,
        RENEW,
        "EX-AV",
        party("DE", Some(false)),
        party("GB", Some(false)),
        "2025-04-01T00:00:00Z",
    );
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(v.reasons[0].party, R);
    // The earlier snapshot is untouched.
    let v = decide_at(
        &v1,
        ISSUE,
        "EX-AV",
        gb_customer,
        party("DE", Some(false)),
        "2025-04-01T00:00:00Z",
    );
    assert_eq!(v.outcome, Outcome::Allow);
}

#[test]
fn summer_time_is_honoured_in_london() {
    let mut data = world();
    add_org(&mut data, "example-ltd", Some("GB"));
    data.designations.insert(
        did("uk-example-2025"),
        london_designation("2025-07-01T00:00:00"),
    );
    let catalog = build(data);
    assert_eq!(
        catalog.rule_instant(&did("uk-example-2025"), &rid("all")),
        Some(t("2025-06-30T23:00:00Z"))
    );
}

fn dst_issue(zone: &str, local: &str) -> Vec<CatalogIssue> {
    let mut data = world();
    let mut d = shipped_designation();
    d.rules.truncate(1);
    d.rules[0].effective_from = local.parse().unwrap();
    d.rules[0].time_zone = zone.parse().unwrap();
    data.designations.insert(did("dst-test"), d);
    issues_of(data)
}

#[test]
fn local_time_in_a_dst_gap_is_rejected() {
    let issues = dst_issue("America/New_York", "2025-03-09T02:30:00");
    assert_eq!(
        issues,
        vec![CatalogIssue {
            entity: EntityKind::Designation,
            id: "dst-test".into(),
            field: "rules[0].effective_from".into(),
            message: "2025-03-09T02:30:00 does not exist in America/New_York (DST gap)".into(),
        }]
    );
    let issues = dst_issue("Europe/London", "2025-03-30T01:30:00");
    assert_eq!(issues.len(), 1);
    assert!(issues[0].message.contains("(DST gap)"), "{issues:?}");
    assert_eq!(issues[0].field, "rules[0].effective_from");
}

#[test]
fn local_time_in_a_dst_overlap_is_rejected() {
    let issues = dst_issue("America/New_York", "2025-11-02T01:30:00");
    assert_eq!(
        issues,
        vec![CatalogIssue {
            entity: EntityKind::Designation,
            id: "dst-test".into(),
            field: "rules[0].effective_from".into(),
            message: "2025-11-02T01:30:00 is ambiguous in America/New_York (DST overlap)".into(),
        }]
    );
    // Just outside the gap and the overlap is fine.
    let mut data = world();
    let mut d = shipped_designation();
    d.rules[0].effective_from = "2025-11-02T02:00:00".parse().unwrap();
    d.rules[1].effective_from = "2025-03-09T03:00:00".parse().unwrap();
    data.designations.insert(did("dst-test"), d);
    let catalog = build(data);
    assert_eq!(
        catalog.rule_instant(&did("dst-test"), &rid("new-agreements")),
        Some(t("2025-11-02T07:00:00Z"))
    );
    assert_eq!(
        catalog.rule_instant(&did("dst-test"), &rid("full-cutoff")),
        Some(t("2025-03-09T07:00:00Z"))
    );
}

// ---------------------------------------------------------------------------------------------
// Catalogue validation
// ---------------------------------------------------------------------------------------------

fn has_issue(issues: &[CatalogIssue], entity: EntityKind, id: &str, field: &str) -> bool {
    issues
        .iter()
        .any(|i| i.entity == entity && i.id == id && i.field == field)
}

#[test]
fn validation_issues_name_entity_and_field() {
    use EntityKind::*;
    type Mutation = Box<dyn Fn(&mut CatalogData)>;
    let cases: Vec<(&str, Mutation, EntityKind, &str, &str, &str)> = vec![
        (
            "unknown vendor",
            Box::new(|d| add_product(d, "X", "ghost", "antivirus", &[], None)),
            Product,
            "X",
            "vendor",
            "unknown organization ghost",
        ),
        (
            "unknown component",
            Box::new(|d| add_product(d, "X", "acme", "suite", &["KAV", "GHOST"], None)),
            Product,
            "X",
            "components[1]",
            "unknown product GHOST",
        ),
        (
            "self component",
            Box::new(|d| add_product(d, "X", "acme", "suite", &["X"], None)),
            Product,
            "X",
            "components[0]",
            "a product may not list itself",
        ),
        (
            "self white label",
            Box::new(|d| add_product(d, "X", "acme", "suite", &[], Some("X"))),
            Product,
            "X",
            "white_label_of",
            "a product may not list itself",
        ),
        (
            "unknown white label",
            Box::new(|d| add_product(d, "X", "acme", "suite", &[], Some("GHOST"))),
            Product,
            "X",
            "white_label_of",
            "unknown product GHOST",
        ),
        (
            "empty product name",
            Box::new(|d| d.products.get_mut(&sku("KAV")).unwrap().name = "   ".into()),
            Product,
            "KAV",
            "name",
            "must not be empty",
        ),
        (
            "long organisation name",
            Box::new(|d| d.organizations.get_mut(&org("acme")).unwrap().name = "x".repeat(257)),
            Organization,
            "acme",
            "name",
            "must be at most 256 characters",
        ),
        (
            "empty alias",
            Box::new(|d| {
                d.organizations.get_mut(&org("acme")).unwrap().aliases =
                    vec!["ACME".into(), "".into()]
            }),
            Organization,
            "acme",
            "aliases[1]",
            "must not be empty",
        ),
        (
            "empty reseller name",
            Box::new(|d| {
                d.resellers.insert(
                    ResellerId::parse("acme").unwrap(),
                    ResellerSpec {
                        name: "".into(),
                        country: cc("US"),
                        us_person: true,
                    },
                );
            }),
            Reseller,
            "acme",
            "name",
            "must not be empty",
        ),
        (
            "unknown designation org",
            Box::new(|d| {
                d.designations
                    .get_mut(&did(KASPERSKY))
                    .unwrap()
                    .organizations
                    .push(org("ghost"))
            }),
            Designation,
            KASPERSKY,
            "organizations[4]",
            "unknown organization ghost",
        ),
        (
            "no designation org",
            Box::new(|d| {
                d.designations
                    .get_mut(&did(KASPERSKY))
                    .unwrap()
                    .organizations
                    .clear()
            }),
            Designation,
            KASPERSKY,
            "organizations",
            "must name at least one organization",
        ),
        (
            "duplicate rule id",
            Box::new(|d| {
                let spec = d.designations.get_mut(&did(KASPERSKY)).unwrap();
                spec.rules[1].id = rid("new-agreements");
            }),
            Designation,
            KASPERSKY,
            "rules[1].id",
            "duplicate rule id new-agreements",
        ),
        (
            "no rules",
            Box::new(|d| {
                d.designations
                    .get_mut(&did(KASPERSKY))
                    .unwrap()
                    .rules
                    .clear()
            }),
            Designation,
            KASPERSKY,
            "rules",
            "must have at least one rule",
        ),
        (
            "rule without transactions",
            Box::new(|d| {
                d.designations.get_mut(&did(KASPERSKY)).unwrap().rules[1]
                    .transactions
                    .clear()
            }),
            Designation,
            KASPERSKY,
            "rules[1].transactions",
            "must name at least one transaction",
        ),
        (
            "empty citation",
            Box::new(|d| d.designations.get_mut(&did(KASPERSKY)).unwrap().citation = "".into()),
            Designation,
            KASPERSKY,
            "citation",
            "must not be empty",
        ),
        (
            "empty title",
            Box::new(|d| d.designations.get_mut(&did(KASPERSKY)).unwrap().title = " ".into()),
            Designation,
            KASPERSKY,
            "title",
            "must not be empty",
        ),
        (
            "empty authority",
            Box::new(|d| d.designations.get_mut(&did(KASPERSKY)).unwrap().authority = "\t".into()),
            Designation,
            KASPERSKY,
            "authority",
            "must not be empty",
        ),
        (
            "unknown relationship target",
            Box::new(|d| relate(d, "acme", RelKind::SubsidiaryOf, "ghost")),
            Relationship,
            "acme/ghost",
            "target",
            "unknown organization ghost",
        ),
        (
            "unknown relationship source",
            Box::new(|d| relate(d, "ghost", RelKind::AffiliateOf, "acme")),
            Relationship,
            "ghost/acme",
            "id",
            "unknown organization ghost",
        ),
        (
            "relationship to itself",
            Box::new(|d| relate(d, "acme", RelKind::AffiliateOf, "acme")),
            Relationship,
            "acme/acme",
            "target",
            "an organization cannot be related to itself",
        ),
    ];
    for (name, mutate, entity, id, field, message) in cases {
        let mut data = world();
        mutate(&mut data);
        let issues = issues_of(data);
        let expected = CatalogIssue {
            entity,
            id: id.into(),
            field: field.into(),
            message: message.into(),
        };
        assert_eq!(issues, vec![expected], "{name}");
    }
}

#[test]
fn component_cycle_is_rejected_on_every_product_of_the_cycle() {
    let mut data = world();
    add_product(&mut data, "A", "acme", "suite", &["KAV", "B"], None);
    add_product(&mut data, "B", "acme", "suite", &["A"], None);
    // Points into the cycle but is not on it.
    add_product(&mut data, "C", "acme", "suite", &["A"], None);
    let issues = issues_of(data);
    let message = "forms a cycle among products A, B";
    assert_eq!(
        issues,
        vec![
            CatalogIssue {
                entity: EntityKind::Product,
                id: "A".into(),
                field: "components".into(),
                message: message.into()
            },
            CatalogIssue {
                entity: EntityKind::Product,
                id: "B".into(),
                field: "components".into(),
                message: message.into()
            },
        ]
    );
}

#[test]
fn cycle_through_a_white_label_is_rejected() {
    let mut data = world();
    add_product(&mut data, "W1", "acme", "suite", &[], Some("W3"));
    add_product(&mut data, "W2", "acme", "suite", &[], Some("W1"));
    add_product(&mut data, "W3", "acme", "suite", &["W2"], None);
    let issues = issues_of(data);
    let fields: Vec<(&str, &str)> = issues
        .iter()
        .map(|i| (i.id.as_str(), i.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("W1", "white_label_of"),
            ("W2", "white_label_of"),
            ("W3", "components")
        ]
    );
    assert!(issues
        .iter()
        .all(|i| i.message == "forms a cycle among products W1, W2, W3"));
}

#[test]
fn every_issue_is_reported_at_once_and_sorted() {
    let mut data = world();
    add_product(&mut data, "Z", "ghost", "suite", &["Z", "NOPE"], None);
    relate(&mut data, "acme", RelKind::SubsidiaryOf, "ghost");
    data.designations.get_mut(&did(KASPERSKY)).unwrap().rules[1].id = rid("new-agreements");
    data.organizations.get_mut(&org("acme")).unwrap().name = "".into();
    let issues = issues_of(data.clone());
    let keys: Vec<(EntityKind, &str, &str)> = issues
        .iter()
        .map(|i| (i.entity, i.id.as_str(), i.field.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (EntityKind::Organization, "acme", "name"),
            (EntityKind::Relationship, "acme/ghost", "target"),
            (EntityKind::Product, "Z", "components[0]"),
            (EntityKind::Product, "Z", "components[1]"),
            (EntityKind::Product, "Z", "vendor"),
            (EntityKind::Designation, KASPERSKY, "rules[1].id"),
        ]
    );
    let mut sorted = issues.clone();
    sorted.sort();
    assert_eq!(sorted, issues);
    assert!(has_issue(&issues, EntityKind::Product, "Z", "vendor"));
    assert_eq!(issues_of(data), issues, "deterministic");
}

#[test]
fn long_component_chain_builds_without_recursion_limits() {
    let mut data = world();
    add_product(
        &mut data,
        "CHAIN-0",
        "ao-kaspersky-lab",
        "antivirus",
        &[],
        None,
    );
    for i in 1..1000 {
        let prev = format!("CHAIN-{}", i - 1);
        add_product(
            &mut data,
            &format!("CHAIN-{i}"),
            "acme",
            "suite",
            &[prev.as_str()],
            None,
        );
    }
    let catalog = build(data.clone());
    let p = catalog
        .lineage_path(&did(KASPERSKY), &sku("CHAIN-999"))
        .unwrap();
    assert_eq!(p.len(), 1001);
    // Closing the chain into a loop is caught.
    data.products.get_mut(&sku("CHAIN-0")).unwrap().components = vec![sku("CHAIN-999")];
    let issues = issues_of(data);
    assert_eq!(issues.len(), 1000);
    assert!(
        issues[0].message.ends_with("... (1000 in all)"),
        "{}",
        issues[0].message
    );
}

// ---------------------------------------------------------------------------------------------
// The snapshot API
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_product_is_an_error() {
    let catalog = build(world());
    let req = Request {
        transaction: ISSUE,
        product: sku("NO-SUCH-SKU"),
        customer: party("US", None),
        reseller: party("US", Some(true)),
    };
    assert_eq!(
        decide(&catalog, &req, t(LATER)),
        Err(UnknownProduct(sku("NO-SUCH-SKU")))
    );
    let empty = Catalog::build(0, CatalogData::default()).unwrap();
    assert_eq!(
        decide(&empty, &req, t(LATER)).unwrap_err().to_string(),
        "unknown product NO-SUCH-SKU"
    );
}

#[test]
fn catalog_is_shareable_and_exposes_its_data() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Catalog>();
    let mut data = world();
    data.resellers.insert(
        ResellerId::parse("acme").unwrap(),
        ResellerSpec {
            name: "Acme Resale".into(),
            country: cc("US"),
            us_person: true,
        },
    );
    let catalog = Catalog::build(42, data.clone()).unwrap();
    assert_eq!(catalog.version(), 42);
    assert_eq!(catalog.data(), &data);
    assert_eq!(
        catalog.product(&sku("KAV")).unwrap().vendor,
        org("kaspersky-lab-inc")
    );
    assert!(catalog.product(&sku("NOPE")).is_none());
    assert_eq!(
        catalog
            .reseller(&ResellerId::parse("acme").unwrap())
            .unwrap()
            .name,
        "Acme Resale"
    );
    assert!(catalog
        .reseller(&ResellerId::parse("other").unwrap())
        .is_none());
    assert!(catalog.designation(&did(KASPERSKY)).is_some());
    assert!(catalog.organization(&org("sub3")).is_some());
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

const CATEGORIES: [&str; 3] = ["antivirus", "threat_intelligence", "firewall"];
const CARRYING: [RelKind; 4] = [
    RelKind::SubsidiaryOf,
    RelKind::AffiliateOf,
    RelKind::SuccessorOf,
    RelKind::AssigneeOf,
];

/// A random catalogue: the four group companies plus a few others, a few products (components
/// and white labels only point to earlier products, so no cycles), random relationships, the
/// shipped designation and a random second one.
#[derive(Clone, Debug)]
struct World {
    orgs: usize,
    products: Vec<(usize, usize, Vec<usize>, Option<usize>)>,
    relationships: Vec<(usize, usize, RelKind)>,
    extra_orgs: Vec<usize>,
    extra_covers: bool,
    extra_excluded: Vec<usize>,
    extra_rules: Vec<(i64, Vec<Transaction>, bool)>,
}

fn org_name(i: usize) -> String {
    match KASPERSKY_ORGS.get(i) {
        Some((id, _)) => (*id).to_owned(),
        None => format!("o{i}"),
    }
}

fn sku_name(i: usize) -> String {
    format!("P{i}")
}

fn rel_kind() -> impl Strategy<Value = RelKind> {
    prop::sample::select(RelKind::ALL.to_vec())
}

fn transactions() -> impl Strategy<Value = Vec<Transaction>> {
    prop::sample::select(vec![
        vec![Transaction::Issue],
        vec![Transaction::Renew],
        vec![Transaction::Issue, Transaction::Renew],
    ])
}

fn world_strategy() -> impl Strategy<Value = World> {
    (4usize..8, 1usize..7).prop_flat_map(|(orgs, products)| {
        let product = (
            0..orgs,
            0..CATEGORIES.len(),
            prop::collection::vec(any::<usize>(), 0..3),
            any::<Option<usize>>(),
        );
        (
            Just(orgs),
            prop::collection::vec(product, products),
            prop::collection::vec((0..orgs, 0..orgs, rel_kind()), 0..8),
            prop::collection::vec(0..orgs, 1..3),
            any::<bool>(),
            prop::collection::vec(0..CATEGORIES.len(), 0..2),
            prop::collection::vec((-60i64..240, transactions(), any::<bool>()), 1..3),
        )
            .prop_map(
                |(
                    orgs,
                    raw_products,
                    rels,
                    extra_orgs,
                    extra_covers,
                    extra_excluded,
                    extra_rules,
                )| {
                    let products = raw_products
                        .into_iter()
                        .enumerate()
                        .map(|(i, (vendor, category, components, white))| {
                            let components = if i == 0 {
                                vec![]
                            } else {
                                components.into_iter().map(|c| c % i).collect()
                            };
                            let white = white.filter(|_| i > 0).map(|w| w % i);
                            (vendor, category, components, white)
                        })
                        .collect();
                    let mut seen = BTreeSet::new();
                    let relationships = rels
                        .into_iter()
                        .filter(|(a, b, _)| a != b && seen.insert((*a, *b)))
                        .collect();
                    World {
                        orgs,
                        products,
                        relationships,
                        extra_orgs,
                        extra_covers,
                        extra_excluded,
                        extra_rules,
                    }
                },
            )
    })
}

/// Deterministic Fisher-Yates driven by `seed` (splitmix64).
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// The catalogue data of `w`; with `seed`, every list and the insertion order are shuffled.
fn materialize(w: &World, seed: Option<u64>) -> CatalogData {
    let mix = |v: &mut dyn FnMut(u64), salt: u64| {
        if let Some(s) = seed {
            v(s.wrapping_mul(31).wrapping_add(salt));
        }
    };
    let mut data = CatalogData::default();
    let mut org_order: Vec<usize> = (0..w.orgs).collect();
    mix(&mut |s| shuffle(&mut org_order, s), 1);
    for i in org_order {
        add_org(&mut data, &org_name(i), None);
    }
    let mut product_order: Vec<usize> = (0..w.products.len()).collect();
    mix(&mut |s| shuffle(&mut product_order, s), 2);
    for i in product_order {
        let (vendor, category, components, white) = &w.products[i];
        let mut components: Vec<String> = components.iter().map(|&c| sku_name(c)).collect();
        mix(&mut |s| shuffle(&mut components, s), 3 + i as u64);
        let components: Vec<&str> = components.iter().map(String::as_str).collect();
        let white = white.map(sku_name);
        add_product(
            &mut data,
            &sku_name(i),
            &org_name(*vendor),
            CATEGORIES[*category],
            &components,
            white.as_deref(),
        );
    }
    let mut rels = w.relationships.clone();
    mix(&mut |s| shuffle(&mut rels, s), 100);
    for (a, b, kind) in rels {
        relate(&mut data, &org_name(a), kind, &org_name(b));
    }

    let mut shipped = shipped_designation();
    mix(&mut |s| shuffle(&mut shipped.organizations, s), 101);
    mix(&mut |s| shuffle(&mut shipped.rules, s), 102);
    let base = NaiveDate::from_ymd_opt(2024, 7, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut rules: Vec<RuleSpec> = w
        .extra_rules
        .iter()
        .enumerate()
        .map(|(i, (days, transactions, ends_service))| RuleSpec {
            id: rid(&format!("r{i}")),
            transactions: transactions.clone(),
            effective_from: base + chrono::Duration::days(*days),
            time_zone: chrono_tz::UTC,
            ends_service: *ends_service,
        })
        .collect();
    mix(&mut |s| shuffle(&mut rules, s), 103);
    let mut organizations: Vec<OrgId> = w.extra_orgs.iter().map(|&o| org(&org_name(o))).collect();
    mix(&mut |s| shuffle(&mut organizations, s), 104);
    let extra = DesignationSpec {
        title: "Extra".into(),
        authority: "Test".into(),
        citation: "T 1".into(),
        organizations,
        covers_affiliates: w.extra_covers,
        jurisdiction: cc("US"),
        excluded_categories: w
            .extra_excluded
            .iter()
            .map(|&c| cat(CATEGORIES[c]))
            .collect(),
        rules,
    };
    // Insert the designations in either order.
    if seed.is_some_and(|s| s % 2 == 1) {
        data.designations.insert(did("extra"), extra);
        data.designations.insert(did(KASPERSKY), shipped);
    } else {
        data.designations.insert(did(KASPERSKY), shipped);
        data.designations.insert(did("extra"), extra);
    }
    data
}

fn party_strategy() -> impl Strategy<Value = Party> {
    (
        prop::sample::select(vec!["US", "PR", "UM", "DE", "BR", "GB", "RU"]),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(c, p)| party(c, p))
}

fn instant_strategy() -> impl Strategy<Value = DateTime<Utc>> {
    let start = t("2024-06-01T00:00:00Z").timestamp();
    let end = t("2025-03-01T00:00:00Z").timestamp();
    prop_oneof![
        prop::sample::select(vec![
            t("2024-07-20T03:59:59Z"),
            t(NEW_AGREEMENTS_UTC),
            t("2024-09-29T03:59:59Z"),
            t(FULL_CUTOFF_UTC),
        ]),
        (start..end).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
    ]
}

fn tx_strategy() -> impl Strategy<Value = Transaction> {
    prop::sample::select(Transaction::ALL.to_vec())
}

fn verdicts(
    catalog: &Catalog,
    w: &World,
    tx: Transaction,
    customer: &Party,
    reseller: &Party,
    at: DateTime<Utc>,
) -> Vec<Verdict> {
    (0..w.products.len())
        .map(|i| {
            let req = Request {
                transaction: tx,
                product: sku(&sku_name(i)),
                customer: customer.clone(),
                reseller: reseller.clone(),
            };
            decide(catalog, &req, at).unwrap()
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    P(Sku),
    O(OrgId),
}

/// A straightforward forward search from the product, independent of the engine: the length of
/// the shortest path to a listed organisation, if any. A carve-out shelters the supplied
/// product only: a product of an excluded category is walked through by its components and
/// white label, never by its vendor.
fn reference_distance(data: &CatalogData, d: &DesignationSpec, start: &Sku) -> Option<usize> {
    let excluded = |s: &Sku| d.excluded_categories.contains(&data.products[s].category);
    let mut dist = BTreeMap::new();
    let mut queue = VecDeque::new();
    dist.insert(Node::P(start.clone()), 0usize);
    queue.push_back(Node::P(start.clone()));
    while let Some(node) = queue.pop_front() {
        let k = dist[&node];
        if let Node::O(o) = &node {
            if d.organizations.contains(o) {
                return Some(k);
            }
        }
        let mut next = Vec::new();
        match &node {
            Node::P(s) => {
                let p = &data.products[s];
                if !excluded(s) {
                    next.push(Node::O(p.vendor.clone()));
                }
                for c in p.components.iter().chain(p.white_label_of.iter()) {
                    next.push(Node::P(c.clone()));
                }
            }
            // `a kind b`: `a` is covered when `b` is, for every kind but a minority stake; `b`
            // when `a` is only for group kinds (succession never reaches the predecessor or
            // assignor).
            Node::O(o) if d.covers_affiliates => {
                for ((a, b), kind) in &data.relationships {
                    let group = matches!(kind, RelKind::SubsidiaryOf | RelKind::AffiliateOf);
                    let succession = matches!(kind, RelKind::SuccessorOf | RelKind::AssigneeOf);
                    if (group || succession) && a == o {
                        next.push(Node::O(b.clone()));
                    }
                    if group && b == o {
                        next.push(Node::O(a.clone()));
                    }
                }
            }
            Node::O(_) => {}
        }
        for n in next {
            if !dist.contains_key(&n) {
                dist.insert(n.clone(), k + 1);
                queue.push_back(n);
            }
        }
    }
    None
}

/// Whether `from -> to` labelled `via` is a real edge of the catalogue, as the engine may walk it.
fn is_real_edge(data: &CatalogData, d: &DesignationSpec, from: &PathStep, to: &PathStep) -> bool {
    let via = to.via.as_deref().unwrap_or("");
    match (from.kind, to.kind) {
        (NodeKind::Product, NodeKind::Organization) => {
            via == "vendor" && data.products[&sku(&from.id)].vendor.as_str() == to.id
        }
        (NodeKind::Product, NodeKind::Product) => {
            let p = &data.products[&sku(&from.id)];
            let target = sku(&to.id);
            match via {
                "component" => p.components.contains(&target),
                "white_label_of" => p.white_label_of.as_ref() == Some(&target),
                _ => false,
            }
        }
        (NodeKind::Organization, NodeKind::Organization) => {
            let (a, b) = (org(&from.id), org(&to.id));
            let ahead = data
                .relationships
                .get(&(a.clone(), b.clone()))
                .map(|k| match k {
                    RelKind::SubsidiaryOf => "subsidiary_of",
                    RelKind::AffiliateOf => "affiliate_of",
                    RelKind::SuccessorOf => "successor_of",
                    RelKind::AssigneeOf => "assignee_of",
                    RelKind::MinorityOwnedBy => "-",
                });
            // Succession is never walked back, to the predecessor or assignor.
            let back = data.relationships.get(&(b, a)).map(|k| match k {
                RelKind::SubsidiaryOf => "parent_of",
                RelKind::AffiliateOf => "affiliate_of",
                RelKind::SuccessorOf | RelKind::AssigneeOf | RelKind::MinorityOwnedBy => "-",
            });
            d.covers_affiliates && (ahead == Some(via) || back == Some(via))
        }
        (NodeKind::Organization, NodeKind::Product) => false,
    }
}

fn check_path(
    data: &CatalogData,
    d: &DesignationSpec,
    product: &Sku,
    steps: &[PathStep],
) -> Result<(), TestCaseError> {
    let first = steps
        .first()
        .ok_or_else(|| TestCaseError::fail("empty path"))?;
    prop_assert_eq!(first.kind, NodeKind::Product);
    prop_assert_eq!(&first.id, product.as_str());
    prop_assert_eq!(&first.via, &None);
    let last = steps
        .last()
        .ok_or_else(|| TestCaseError::fail("empty path"))?;
    prop_assert_eq!(last.kind, NodeKind::Organization);
    prop_assert!(
        d.organizations.contains(&org(&last.id)),
        "path ends at {}",
        last.id
    );
    for pair in steps.windows(2) {
        prop_assert!(
            is_real_edge(data, d, &pair[0], &pair[1]),
            "not an edge: {:?}",
            pair
        );
    }
    // The supplied product (the one the vendor step leaves) is not carved out; products of
    // excluded categories before it are walked through.
    let vendor_steps: Vec<&[PathStep]> = steps
        .windows(2)
        .filter(|pair| pair[1].via.as_deref() == Some("vendor"))
        .collect();
    prop_assert_eq!(vendor_steps.len(), 1, "one vendor step: {:?}", steps);
    let supplied = &vendor_steps[0][0];
    let category = &data.products[&sku(&supplied.id)].category;
    prop_assert!(
        !d.excluded_categories.contains(category),
        "supplies excluded {}",
        supplied.id
    );
    prop_assert_eq!(
        Some(steps.len() - 1),
        reference_distance(data, d, product),
        "not shortest"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) Adding a carrying relationship (or one in place of a minority stake) never turns a
    /// deny into allow or review.
    #[test]
    fn adding_a_carrying_relationship_never_lifts_a_denial(
        w in world_strategy(),
        a in 0usize..8, b in 0usize..8, kind in 0usize..4,
        tx in tx_strategy(), customer in party_strategy(), reseller in party_strategy(),
        at in instant_strategy(),
    ) {
        let (a, b) = (a % w.orgs, b % w.orgs);
        prop_assume!(a != b);
        // Adding, not replacing: turning a group kind into a succession kind takes a direction
        // away (succession carries one way). Only a stake without control, which carries
        // nothing, may be replaced.
        // (Not a rejection: too many of those abort the run.)
        let existing = w.relationships.iter().find(|(x, y, _)| (*x, *y) == (a, b)).map(|r| r.2);
        if existing.is_some_and(|k| k != RelKind::MinorityOwnedBy) {
            return Ok(());
        }
        let before = build(materialize(&w, None));
        let mut more = w.clone();
        more.relationships.retain(|(x, y, _)| (*x, *y) != (a, b));
        more.relationships.push((a, b, CARRYING[kind]));
        let after = build(materialize(&more, None));
        let vb = verdicts(&before, &w, tx, &customer, &reseller, at);
        let va = verdicts(&after, &w, tx, &customer, &reseller, at);
        for (x, y) in vb.iter().zip(&va) {
            if x.outcome == Outcome::Deny {
                prop_assert_eq!(y.outcome, Outcome::Deny);
            }
        }
    }

    /// (b) Moving the customer into the U.S. never turns a deny into anything else.
    #[test]
    fn moving_the_customer_into_the_us_never_lifts_a_denial(
        w in world_strategy(), tx in tx_strategy(),
        customer in party_strategy(), reseller in party_strategy(), at in instant_strategy(),
    ) {
        let catalog = build(materialize(&w, None));
        let moved = Party { country: cc("US"), us_person: customer.us_person };
        let before = verdicts(&catalog, &w, tx, &customer, &reseller, at);
        let after = verdicts(&catalog, &w, tx, &moved, &reseller, at);
        for (x, y) in before.iter().zip(&after) {
            if x.outcome == Outcome::Deny {
                prop_assert_eq!(y.outcome, Outcome::Deny);
            }
            // And a U.S. customer is never left to review on its own account.
            prop_assert!(y.reasons.iter().all(|r| !(r.party == PartyRole::Customer && r.code == ReasonCode::NexusUnknown)));
        }
    }

    /// (c) Verdicts (outcome, reasons, paths, cap) do not depend on insertion or list order.
    #[test]
    fn verdicts_do_not_depend_on_insertion_order(
        w in world_strategy(), seed in any::<u64>(), tx in tx_strategy(),
        customer in party_strategy(), reseller in party_strategy(), at in instant_strategy(),
    ) {
        let plain = build(materialize(&w, None));
        let shuffled = build(materialize(&w, Some(seed)));
        prop_assert_eq!(
            verdicts(&plain, &w, tx, &customer, &reseller, at),
            verdicts(&shuffled, &w, tx, &customer, &reseller, at)
        );
    }

    /// (d) A later instant never turns a deny into allow (no rule lifts a prohibition).
    #[test]
    fn later_instants_never_lift_a_denial(
        w in world_strategy(), tx in tx_strategy(),
        customer in party_strategy(), reseller in party_strategy(),
        at in instant_strategy(), later in 0i64..40_000_000,
    ) {
        let catalog = build(materialize(&w, None));
        let before = verdicts(&catalog, &w, tx, &customer, &reseller, at);
        let after = verdicts(&catalog, &w, tx, &customer, &reseller, at + chrono::Duration::seconds(later));
        for (x, y) in before.iter().zip(&after) {
            if x.outcome == Outcome::Deny {
                prop_assert_eq!(y.outcome, Outcome::Deny);
            }
        }
        // The shipped designation alone, to the second around its dates.
        let mut shipped_only = w.clone();
        shipped_only.extra_orgs.clear();
        let mut data = materialize(&shipped_only, None);
        data.designations.remove(&did("extra"));
        let catalog = build(data);
        let before = verdicts(&catalog, &w, tx, &customer, &reseller, at);
        let after = verdicts(&catalog, &w, tx, &customer, &reseller, at + chrono::Duration::seconds(later));
        for (x, y) in before.iter().zip(&after) {
            if x.outcome == Outcome::Deny {
                prop_assert_eq!(y.outcome, Outcome::Deny);
            }
        }
    }

    /// (e) Every path starts at the product, ends at a listed organisation, walks real edges,
    /// supplies no product of an excluded category and is a shortest one; the closure agrees with an independent
    /// search; and verdicts are internally consistent.
    #[test]
    fn paths_are_real_shortest_and_verdicts_consistent(
        w in world_strategy(), tx in tx_strategy(),
        customer in party_strategy(), reseller in party_strategy(), at in instant_strategy(),
    ) {
        let data = materialize(&w, None);
        let catalog = build(data.clone());
        for (id, d) in &data.designations {
            for s in data.products.keys() {
                let got = catalog.lineage_path(id, s);
                prop_assert_eq!(got.is_some(), reference_distance(&data, d, s).is_some(), "{} {}", id, s);
                if let Some(steps) = got {
                    check_path(&data, d, s, steps)?;
                }
            }
        }
        for (i, v) in verdicts(&catalog, &w, tx, &customer, &reseller, at).iter().enumerate() {
            let product = sku(&sku_name(i));
            for r in &v.reasons {
                let d = &data.designations[&r.designation];
                check_path(&data, d, &product, &r.path)?;
                prop_assert_eq!(Some(r.effective_from), catalog.rule_instant(&r.designation, &r.rule));
                let rule = d.rules.iter().find(|x| x.id == r.rule).unwrap();
                match r.code {
                    ReasonCode::ServiceEnds => {
                        prop_assert!(rule.ends_service && r.effective_from > at);
                    }
                    _ => prop_assert!(r.effective_from <= at && rule.transactions.contains(&tx)),
                }
            }
            let codes: BTreeSet<ReasonCode> = v.reasons.iter().map(|r| r.code).collect();
            match v.outcome {
                Outcome::Deny => {
                    prop_assert_eq!(codes, BTreeSet::from([ReasonCode::DesignatedLineage]));
                    prop_assert_eq!(v.not_after, None);
                }
                Outcome::Review => {
                    prop_assert!(codes.contains(&ReasonCode::NexusUnknown));
                    prop_assert!(!codes.contains(&ReasonCode::DesignatedLineage));
                }
                Outcome::Allow => {
                    prop_assert!(codes.iter().all(|c| *c == ReasonCode::ServiceEnds));
                }
            }
            let cap = v.reasons.iter().filter(|r| r.code == ReasonCode::ServiceEnds).map(|r| r.effective_from).min();
            if v.outcome != Outcome::Deny {
                prop_assert_eq!(v.not_after, cap);
            }
            // Short of a denial, exactly the parties with a nexus or an undecidable one get a
            // service end of each applying designation that has one still ahead (the earliest).
            if v.outcome != Outcome::Deny {
                for (id, d) in &data.designations {
                    let next_end = d
                        .rules
                        .iter()
                        .filter(|r| r.ends_service)
                        .map(|r| resolve_local(r.effective_from, r.time_zone).unwrap())
                        .filter(|instant| *instant > at)
                        .min();
                    let applies = reference_distance(&data, d, &product).is_some();
                    for (role, p) in [(PartyRole::Customer, &customer), (PartyRole::Reseller, &reseller)] {
                        let expected = next_end.filter(|_| applies && nexus(p, &d.jurisdiction) != Nexus::No);
                        let got = v
                            .reasons
                            .iter()
                            .find(|r| &r.designation == id && r.party == role && r.code == ReasonCode::ServiceEnds)
                            .map(|r| r.effective_from);
                        prop_assert_eq!(got, expected, "{} {:?}", id, role);
                    }
                }
            }
            let mut sorted = v.reasons.clone();
            sorted.sort_by(|x, y| (&x.designation, x.party).cmp(&(&y.designation, y.party)));
            prop_assert_eq!(&sorted, &v.reasons);
        }
    }
}
