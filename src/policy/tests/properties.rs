//! Properties (proptest): random catalogues, parties and instants, checked against a reference
//! breadth-first search and against each other.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::NaiveDate;
use proptest::prelude::*;

use super::*;

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

    /// (f) The reach of a change is sound: a product outside it gets the same verdict from the
    /// snapshot before the change and the one after, for any transaction, parties and instant;
    /// and building the same content again reaches nothing.
    #[test]
    fn a_product_outside_a_changes_reach_keeps_its_verdict(
        w in world_strategy(),
        change in 0usize..4, a in 0usize..8, b in 0usize..8, kind in 0usize..4,
        tx in tx_strategy(), customer in party_strategy(), reseller in party_strategy(),
        at in instant_strategy(),
    ) {
        let before = build(materialize(&w, None));
        prop_assert!(reach_of_change(&before, &build(materialize(&w, Some(7)))).is_empty());
        let mut next = w.clone();
        match change {
            // A relationship added (or replacing the one there).
            0 => {
                let (a, b) = (a % w.orgs, b % w.orgs);
                prop_assume!(a != b);
                next.relationships.retain(|(x, y, _)| (*x, *y) != (a, b));
                next.relationships.push((a, b, CARRYING[kind]));
            }
            // The second designation reaches affiliates, or stops reaching them.
            1 => next.extra_covers = !next.extra_covers,
            // One of its rules moves a day.
            2 => next.extra_rules[0].0 += 1,
            // A product changes category (carve-outs).
            _ => {
                let p = a % next.products.len();
                next.products[p].1 = (next.products[p].1 + 1) % CATEGORIES.len();
            }
        }
        let after = build(materialize(&next, None));
        let reach = reach_of_change(&before, &after);
        let vb = verdicts(&before, &w, tx, &customer, &reseller, at);
        let va = verdicts(&after, &w, tx, &customer, &reseller, at);
        for (i, (x, y)) in vb.iter().zip(&va).enumerate() {
            if !reach.products.contains(&sku(&sku_name(i))) {
                prop_assert_eq!(x, y, "product {} is outside the reach", i);
            }
        }
        // The reverse index agrees with the closure it inverts.
        for d in after.data().designations.keys() {
            for (i, _) in w.products.iter().enumerate() {
                let p = sku(&sku_name(i));
                prop_assert_eq!(
                    after.reached_by(d).contains(&p),
                    after.lineage_path(d, &p).is_some()
                );
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
