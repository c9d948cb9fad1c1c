//! Catalogue validation: every issue that keeps a catalogue from being built, by entity and
//! field, cycles included.

use super::*;
use crate::domain::ResellerId;

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
