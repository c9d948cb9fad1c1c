//! The decision engine on generated catalogues: `cargo bench --bench engine`.
//!
//! Three catalogue sizes, counted in graph nodes (organisations + products, half each):
//! `1k`, `100k` and `1m`. For each selected size this prints one line with the snapshot's
//! build time and memory, measured in a fresh child process so one size's freed memory cannot
//! hide the next one's growth, e.g.
//!
//! ```text
//! catalog 1m: 1,000,000 nodes (...), build 4.63 s, +883 MiB RSS holding it (...)
//! ```
//!
//! then benchmarks `decide()` (`decide/<size>/{allow,deny_deep,review,mixed}`) and, for `1k`
//! and `100k`, `Catalog::build` (`build/<size>`; the `1m` build is the single timed build of
//! the line above, as ten multi-second builds would blow the time budget).
//!
//! Selecting sizes: a criterion filter (`cargo bench --bench engine -- 1k`, `-- 'decide/100k'`)
//! or `ENGINE_BENCH_SIZES=1k,100k`. A size's catalogue is generated only when one of its
//! benchmarks runs. Under `cargo test --benches` (criterion's test mode) only `1k` runs unless
//! `ENGINE_BENCH_SIZES` says otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use criterion::{BatchSize, Criterion, SamplingMode};
use gatekeeper::audit::state::catalog_digest;

use gatekeeper::domain::{
    Category, CountryCode, DesignationId, OrgId, Outcome, RelKind, RuleId, Sku, Transaction,
};
use gatekeeper::policy::{
    decide, Catalog, CatalogData, DesignationSpec, OrganizationSpec, Party, ProductSpec, Request,
    RuleSpec,
};

/// Catalogue sizes: label (also the benchmark-id component) and total nodes.
const SIZES: [(&str, usize); 3] = [("1k", 1_000), ("100k", 100_000), ("1m", 1_000_000)];

/// Set (to a size label) in the child process that measures one size's build and memory.
const MEASURE_ENV: &str = "ENGINE_BENCH_MEASURE";
/// Comma-separated size labels to run (default: all; `1k` in test mode).
const SIZES_ENV: &str = "ENGINE_BENCH_SIZES";

/// Distinct requests per kind: many different products, so a warm cache does not flatter.
const REQUESTS_PER_KIND: usize = 16_384;
/// A denial counts as "deep" from this many path steps (product ... listed organisation).
const DEEP_PATH_STEPS: usize = 8;

/// The instant every decision is taken at: after most generated rules, before some.
fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

// ---------------------------------------------------------------------------------------------
// Deterministic generator
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, seedable, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

const COUNTRIES: [&str; 12] = [
    "RU", "GB", "US", "DE", "CN", "IL", "IN", "BR", "JP", "FR", "NL", "CA",
];
const CATEGORIES: [&str; 9] = [
    "antivirus",
    "antivirus",
    "endpoint_protection",
    "firewall",
    "vpn",
    "backup",
    "threat_intelligence",
    "security_training",
    "consulting",
];
const CARVE_OUTS: [&str; 3] = ["threat_intelligence", "security_training", "consulting"];
const JURISDICTIONS: [&str; 6] = ["GB", "DE", "FR", "JP", "AU", "CA"];
/// Rules take effect at local noon, which no zone skips or repeats on these dates.
const TIME_ZONES: [Tz; 10] = [
    chrono_tz::America::New_York,
    chrono_tz::America::Los_Angeles,
    chrono_tz::America::Sao_Paulo,
    chrono_tz::Europe::London,
    chrono_tz::Europe::Berlin,
    chrono_tz::Europe::Moscow,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Asia::Tokyo,
    chrono_tz::Australia::Sydney,
    chrono_tz::Pacific::Auckland,
];

fn org_id(i: usize) -> OrgId {
    OrgId::parse(&format!("org-{i:07}")).unwrap()
}

fn sku(i: usize) -> Sku {
    Sku::parse(&format!("SKU-{i:07}")).unwrap()
}

fn cc(s: &str) -> CountryCode {
    CountryCode::parse(s).unwrap()
}

fn noon(rng: &mut Rng, first: NaiveDate, spread_days: usize) -> NaiveDateTime {
    let day = first + chrono::Days::new(rng.below(spread_days) as u64);
    day.and_hms_opt(12, 0, 0).unwrap()
}

/// A catalogue of `total` nodes: `total / 2` organisations and the rest products.
///
/// - Organisations come in corporate groups: a subsidiary chain 10-50 deep (each member a
///   `subsidiary_of` the previous one, now and then of an earlier one, making a tree).
///   Groups are linked sparsely (few enough not to percolate into one giant group): 10% of
///   groups have an `affiliate_of`, 5% a `successor_of`, 3% an `assignee_of` link to another
///   group, and half hold or give 1-3 `minority_owned_by` stakes, which must not carry.
/// - Products, in generation order (components only point backwards, so there are no
///   cycles): 65% plain products, 25% OEM products embedding 1-5 plain products, 3% platform
///   suites embedding 20-100 plain or OEM products, 7% white-label rebrands of any of those.
///   Every vendor is a random organisation, so most sit deep in a chain.
/// - Designations: 10 (1k), 30 (100k) or 50 (1m), each listing a group's parent, often a
///   subsidiary in its upper third, sometimes an organisation of another group; 80% cover
///   affiliates, 70% are US, half carve out categories; two or three rules each, at local
///   noon in one of ten time zones, some taking effect after the benchmark instant.
fn generate(total: usize) -> CatalogData {
    let mut rng = Rng(0x6761_7465_6b65_6570 ^ total as u64);
    let mut data = CatalogData::default();
    let n_orgs = total / 2;
    let n_products = total - n_orgs;

    // Organisations in groups (subsidiary chains).
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    while start < n_orgs {
        let end = (start + rng.between(10, 50)).min(n_orgs);
        groups.push((start, end));
        start = end;
    }
    for (g, &(start, end)) in groups.iter().enumerate() {
        let country = COUNTRIES[g % COUNTRIES.len()];
        for i in start..end {
            data.organizations.insert(
                org_id(i),
                OrganizationSpec {
                    name: format!("Organisation {i}"),
                    country: Some(cc(country)),
                    aliases: if i % 10 == 0 {
                        vec![format!("Org {i} Holdings")]
                    } else {
                        vec![]
                    },
                },
            );
            if i > start {
                let parent = if rng.chance(0.85) {
                    i - 1
                } else {
                    rng.between(start, i - 1)
                };
                data.relationships
                    .insert((org_id(i), org_id(parent)), RelKind::SubsidiaryOf);
            }
        }
    }
    let other_group_org = |rng: &mut Rng, g: usize| loop {
        let h = rng.below(groups.len());
        if h != g || groups.len() == 1 {
            let (s, e) = groups[h];
            break rng.between(s, e - 1);
        }
    };
    for (g, &(start, end)) in groups.iter().enumerate() {
        let mut link = |rng: &mut Rng, p: f64, kind: RelKind| {
            if rng.chance(p) {
                let source = rng.between(start, end - 1);
                let target = other_group_org(rng, g);
                if source != target {
                    data.relationships
                        .insert((org_id(source), org_id(target)), kind);
                }
            }
        };
        link(&mut rng, 0.10, RelKind::AffiliateOf);
        link(&mut rng, 0.05, RelKind::SuccessorOf);
        link(&mut rng, 0.03, RelKind::AssigneeOf);
        if rng.chance(0.5) {
            for _ in 0..rng.between(1, 3) {
                link(&mut rng, 1.0, RelKind::MinorityOwnedBy);
            }
        }
    }

    // Products.
    let plain_end = n_products * 65 / 100;
    let oem_end = n_products * 90 / 100;
    let platform_end = n_products * 93 / 100;
    let categories: Vec<Category> = CATEGORIES
        .iter()
        .map(|c| Category::parse(c).unwrap())
        .collect();
    let mut product_category: Vec<usize> = Vec::with_capacity(n_products);
    for i in 0..n_products {
        let (components, white_label_of) = if i < plain_end {
            (vec![], None)
        } else if i < oem_end {
            let n = rng.between(1, 5).min(plain_end);
            (distinct(&mut rng, n, plain_end), None)
        } else if i < platform_end {
            let n = rng.between(20, 100).min(oem_end);
            (distinct(&mut rng, n, oem_end), None)
        } else {
            (vec![], Some(rng.below(platform_end)))
        };
        let category = match white_label_of {
            Some(w) => product_category[w],
            None => rng.below(categories.len()),
        };
        product_category.push(category);
        data.products.insert(
            sku(i),
            ProductSpec {
                name: format!("Product {i}"),
                vendor: org_id(rng.below(n_orgs)),
                category: categories[category].clone(),
                components: components.into_iter().map(sku).collect(),
                white_label_of: white_label_of.map(sku),
            },
        );
    }

    // Designations.
    let n_designations = match total {
        0..=1_000 => 10,
        1_001..=100_000 => 30,
        _ => 50,
    };
    for d in 0..n_designations {
        let g = rng.below(groups.len());
        let (start, end) = groups[g];
        let mut organizations = vec![org_id(start)];
        if rng.chance(0.6) && end - start > 3 {
            organizations.push(org_id(rng.between(start + 1, start + (end - start) / 3)));
        }
        if rng.chance(0.2) {
            organizations.push(org_id(other_group_org(&mut rng, g)));
        }
        let jurisdiction = if rng.chance(0.7) {
            "US"
        } else {
            rng.pick(&JURISDICTIONS)
        };
        let excluded_categories = if rng.chance(0.5) {
            CARVE_OUTS[..rng.between(1, 3)]
                .iter()
                .map(|c| Category::parse(c).unwrap())
                .collect()
        } else {
            vec![]
        };
        let time_zone = *rng.pick(&TIME_ZONES);
        let first = noon(&mut rng, NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(), 450);
        let cutoff = first.date() + chrono::Days::new(rng.between(30, 400) as u64);
        let mut rules = vec![
            RuleSpec {
                id: RuleId::parse("new-agreements").unwrap(),
                transactions: vec![Transaction::Issue],
                effective_from: first,
                time_zone,
                ends_service: false,
            },
            RuleSpec {
                id: RuleId::parse("full-cutoff").unwrap(),
                transactions: vec![Transaction::Issue, Transaction::Renew],
                effective_from: cutoff.and_hms_opt(12, 0, 0).unwrap(),
                time_zone,
                ends_service: true,
            },
        ];
        if rng.chance(0.3) {
            rules.push(RuleSpec {
                id: RuleId::parse("phase-3").unwrap(),
                transactions: vec![Transaction::Renew],
                effective_from: noon(&mut rng, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 700),
                time_zone: *rng.pick(&TIME_ZONES),
                ends_service: false,
            });
        }
        data.designations.insert(
            DesignationId::parse(&format!("des-{d:03}")).unwrap(),
            DesignationSpec {
                title: format!("Designation {d}"),
                authority: "Generated authority".to_owned(),
                citation: format!("{} FR {}", 80 + d, 10_000 + d),
                organizations,
                covers_affiliates: rng.chance(0.8),
                jurisdiction: cc(jurisdiction),
                excluded_categories,
                rules,
            },
        );
    }
    data
}

/// `n` distinct indices below `bound`, sorted.
fn distinct(rng: &mut Rng, n: usize, bound: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(n);
    while out.len() < n {
        let x = rng.below(bound);
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out.sort_unstable();
    out
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn party(country: &str, us_person: Option<bool>) -> Party {
    Party {
        country: cc(country),
        us_person,
    }
}

fn request(product: &Sku, customer: Party, reseller: Party) -> Request {
    Request {
        transaction: Transaction::Issue,
        product: product.clone(),
        customer,
        reseller,
    }
}

struct Requests {
    /// Products no designation says anything about; customer and reseller outside the US.
    allow: Vec<Request>,
    /// Products whose lineage reaches a designated organisation by a long path; US customer.
    deny_deep: Vec<Request>,
    /// Products covered by a US designation; customer abroad, U.S.-person status unstated.
    review: Vec<Request>,
    /// The three above in equal shares, interleaved.
    mixed: Vec<Request>,
    /// Path lengths (steps) of the deep denials: min, mean, max; share reached through an
    /// OEM component or white-label edge.
    deny_path: (usize, f64, usize, f64),
}

/// Probes products in random order with `decide` itself to sort them into the three kinds.
fn requests(catalog: &Catalog) -> Requests {
    let at = at();
    let mut rng = Rng(7);
    let mut skus: Vec<&Sku> = catalog.data().products.keys().collect();
    rng.shuffle(&mut skus);
    let (mut allow, mut deny_deep, mut review) = (Vec::new(), Vec::new(), Vec::new());
    let (mut steps_sum, mut steps_min, mut steps_max, mut via_oem) = (0, usize::MAX, 0, 0);
    for product in skus {
        if allow.len() >= REQUESTS_PER_KIND
            && deny_deep.len() >= REQUESTS_PER_KIND
            && review.len() >= REQUESTS_PER_KIND
        {
            break;
        }
        let probe = request(product, party("US", None), party("GB", Some(false)));
        let verdict = decide(catalog, &probe, at).unwrap();
        match verdict.outcome {
            Outcome::Allow if verdict.reasons.is_empty() && allow.len() < REQUESTS_PER_KIND => {
                allow.push(request(
                    product,
                    party("BR", Some(false)),
                    party("NL", Some(false)),
                ));
            }
            Outcome::Deny => {
                let path = verdict
                    .reasons
                    .iter()
                    .map(|r| &r.path)
                    .max_by_key(|p| p.len());
                let steps = path.map_or(0, |p| p.len());
                if steps >= DEEP_PATH_STEPS && deny_deep.len() < REQUESTS_PER_KIND {
                    steps_sum += steps;
                    steps_min = steps_min.min(steps);
                    steps_max = steps_max.max(steps);
                    let first_via = path.and_then(|p| p.get(1)).and_then(|s| s.via.as_deref());
                    if matches!(first_via, Some("component" | "white_label_of")) {
                        via_oem += 1;
                    }
                    deny_deep.push(probe);
                }
                let abroad = request(product, party("DE", None), party("DE", Some(false)));
                if review.len() < REQUESTS_PER_KIND
                    && decide(catalog, &abroad, at).unwrap().outcome == Outcome::Review
                {
                    review.push(abroad);
                }
            }
            _ => {}
        }
    }
    let mut mixed = Vec::new();
    for i in 0..allow.len().min(deny_deep.len()).min(review.len()) {
        for kind in [&allow, &deny_deep, &review] {
            mixed.push(kind[i].clone());
        }
    }
    let n = deny_deep.len().max(1) as f64;
    Requests {
        deny_path: (
            steps_min.min(steps_max),
            steps_sum as f64 / n,
            steps_max,
            via_oem as f64 / n,
        ),
        allow,
        deny_deep,
        review,
        mixed,
    }
}

// ---------------------------------------------------------------------------------------------
// Build time and memory, measured in a fresh process
// ---------------------------------------------------------------------------------------------

/// `VmRSS` and `VmHWM` of this process, in KiB (zero where `/proc` is unavailable).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn seconds(d: Duration) -> String {
    if d.as_secs_f64() < 1.0 {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// The child's job: generate, build once, hold, and print the `catalog <size>:` line.
fn measure(label: &str) {
    let Some(&(_, total)) = SIZES.iter().find(|(l, _)| *l == label) else {
        eprintln!("{MEASURE_ENV}: unknown size {label:?}");
        std::process::exit(2);
    };
    let (rss0, _) = memory_kib();
    let started = Instant::now();
    let data = generate(total);
    let generated = started.elapsed();
    let (rss_data, _) = memory_kib();
    let (orgs, products) = (data.organizations.len(), data.products.len());
    let (relationships, designations) = (data.relationships.len(), data.designations.len());
    // What the service adds whenever it loads or changes the catalogue: the
    // digest it holds the stored catalogue to (the chain must vouch for it).
    let started = Instant::now();
    black_box(catalog_digest(black_box(&data)));
    let digested = started.elapsed();
    let started = Instant::now();
    let catalog = Catalog::build(1, data).unwrap();
    let built = started.elapsed();
    let (rss_catalog, hwm) = memory_kib();
    println!(
        "catalog {label}: {} nodes ({} orgs, {} products, {} relationships, {} designations), \
         build {}, digest {}, +{} RSS holding it (its CatalogData alone +{}; peak +{}; generate {})",
        thousands(orgs + products),
        thousands(orgs),
        thousands(products),
        thousands(relationships),
        designations,
        seconds(built),
        seconds(digested),
        mib(rss_catalog.saturating_sub(rss0)),
        mib(rss_data.saturating_sub(rss0)),
        mib(hwm.saturating_sub(rss0)),
        seconds(generated),
    );
    black_box(&catalog);
}

fn measure_in_child(label: &str) {
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(exe).env(MEASURE_ENV, label).status();
    if !matches!(status, Ok(s) if s.success()) {
        println!("catalog {label}: measurement failed: {status:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

struct Fixture {
    catalog: Catalog,
    requests: Requests,
}

fn build_fixture(label: &str, total: usize, test_mode: bool) -> Fixture {
    if !test_mode {
        measure_in_child(label);
    }
    let catalog = Catalog::build(1, generate(total)).unwrap();
    let requests = requests(&catalog);
    let (min, mean, max, oem) = requests.deny_path;
    println!(
        "requests {label}: allow {}, deny_deep {} (path {min}-{max} steps, mean {mean:.1}, \
         {:.0}% entering via an OEM component or white label), review {}",
        requests.allow.len(),
        requests.deny_deep.len(),
        oem * 100.0,
        requests.review.len(),
    );
    assert!(
        !requests.allow.is_empty() && !requests.deny_deep.is_empty() && !requests.review.is_empty(),
        "the generator must produce every kind of request"
    );
    Fixture { catalog, requests }
}

fn bench_size(c: &mut Criterion, label: &str, total: usize, test_mode: bool) {
    let fixture: OnceCell<Fixture> = OnceCell::new();
    let get = || fixture.get_or_init(|| build_fixture(label, total, test_mode));
    let at = at();

    let mut group = c.benchmark_group(format!("decide/{label}"));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    type Pick = fn(&Requests) -> &Vec<Request>;
    let kinds: [(&str, Pick); 4] = [
        ("allow", |r| &r.allow),
        ("deny_deep", |r| &r.deny_deep),
        ("review", |r| &r.review),
        ("mixed", |r| &r.mixed),
    ];
    for (name, pick) in kinds {
        group.bench_function(name, |b| {
            let f = get();
            let requests = pick(&f.requests);
            let mut i = 0;
            b.iter(|| {
                let req = &requests[i % requests.len()];
                i += 1;
                decide(black_box(&f.catalog), black_box(req), at)
            });
        });
    }
    group.finish();

    if total <= 100_000 {
        let mut group = c.benchmark_group("build");
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(if total <= 1_000 { 2 } else { 12 }));
        group.bench_function(label, |b| {
            let data = get().catalog.data();
            b.iter_batched(
                || data.clone(),
                |data| Catalog::build(1, data).unwrap(),
                BatchSize::LargeInput,
            );
        });
        group.finish();
    }
}

fn main() {
    if let Ok(label) = std::env::var(MEASURE_ENV) {
        measure(&label);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let test_mode = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let sizes: BTreeSet<String> = match std::env::var(SIZES_ENV) {
        Ok(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        Err(_) if test_mode => ["1k".to_owned()].into(),
        Err(_) => SIZES.iter().map(|(l, _)| (*l).to_owned()).collect(),
    };
    let mut c = Criterion::default().configure_from_args();
    for (label, total) in SIZES {
        if sizes.contains(label) {
            bench_size(&mut c, label, total, test_mode);
        }
    }
    c.final_summary();
}
