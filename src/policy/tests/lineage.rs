//! Law: the supplier side (affiliates, subsidiaries, parents, successors, assignees), OEM and
//! white-label products, and the carve-outs; the lineage closure and its shortest paths.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::policy::lineage::Label;

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
