//! Decisions by law: the two ban dates to the second and the renewal policy, nexus on the
//! customer and reseller side, and designations effective at an instant in a named time zone.

use serde_json::json;

use super::*;

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
