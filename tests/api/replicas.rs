//! Three `gatekeeper serve` processes on one PostgreSQL database, under load.
//!
//! Clients spread licence requests over three replicas while an operator
//! changes the catalogue through them; one change is a new designation,
//! added through the second replica, that makes half of what the load asks
//! for prohibited. Every answer is kept, then held against the audit trail:
//! a designation committed through one replica is honoured by the others
//! from their very next request, no decision is ever recorded against an
//! older catalogue version than the newest committed one, one idempotency
//! key sent to two replicas makes one licence, and the one chain verifies.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::postgres_db;
use crate::served::{assert_durable, serve, Served};

/// The product the new designation prohibits (its vendor is `acme`).
const DESIGNATED: &str = "ACME-VPN";
/// A product of another vendor that stays allowed throughout.
const UNTOUCHED: &str = "GLOBEX-DB";
const DESIGNATION: &str = "de-acme-test-2025";
const REPLICA_NAMES: [&str; 3] = ["A", "B", "C"];
/// Concurrent load clients, each going round the replicas.
const CLIENTS: usize = 6;
/// Answers the load must have had before the designation, and after it.
const WARM_UP: usize = 150;
const COOL_DOWN: usize = 150;
/// Catalogue changes that alter no decision, made during the load.
const CHURN: usize = 8;

/// A licence order of one seat for a customer in Germany, not a U.S. person.
fn order(product: &str, customer: &str) -> Value {
    json!({"product": product, "seats": 1, "term_days": 30,
           "customer": {"id": customer, "name": "Kunde GmbH", "country": "DE", "us_person": false}})
}

/// A German designation of `acme`, in effect since 2020 for issues and renewals.
fn designation() -> Value {
    json!({
        "title": "Test designation of Acme",
        "authority": "Test authority",
        "citation": "TEST 2025/1",
        "organizations": ["acme"],
        "covers_affiliates": true,
        "jurisdiction": "DE",
        "excluded_categories": [],
        "rules": [{"id": "all-sales", "transactions": ["issue", "renew"],
                   "effective_from": "2020-01-01T00:00:00", "time_zone": "Europe/Berlin"}]
    })
}

/// `POST /v1/licenses` with an idempotency key: status, body, and whether
/// the answer was a replay.
async fn issue(replica: &Served, token: &str, key: &str, body: Value) -> (u16, Value, bool) {
    let (status, body, headers) = replica
        .call(
            "POST",
            "/v1/licenses",
            token,
            Some(body),
            &[("idempotency-key", key)],
        )
        .await;
    let replayed = headers
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        == Some("true");
    (status, body, replayed)
}

/// Whether a decision names the test designation among its reasons.
fn cites_designation(decision: &Value) -> bool {
    decision["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["designation"] == DESIGNATION && r["code"] == "designated_lineage")
}

/// One answer a load client kept.
struct Shot {
    replica: usize,
    product: &'static str,
    sent: Instant,
    done: Instant,
    status: u16,
    licence: Option<String>,
    decision: Value,
    /// The problem's code and detail, for an answer that is one.
    problem: Option<String>,
}

/// `CLIENTS` clients, each sending its requests round the replicas (client
/// `c`'s `i`-th request to replica `(c + i) % 3`), alternating the two
/// products, each request with a key of its own, until `stop` is set.
async fn spread_load(
    replicas: &[&Served],
    reseller: &str,
    stop: &Cell<bool>,
    log: &RefCell<Vec<Shot>>,
) {
    let runs = (0..CLIENTS).map(|c| async move {
        let mut i = 0usize;
        while !stop.get() {
            let replica = (c + i) % replicas.len();
            let product = if i.is_multiple_of(2) {
                DESIGNATED
            } else {
                UNTOUCHED
            };
            let key = format!("spread-{c}-{i}-{}", uuid::Uuid::new_v4().simple());
            let sent = Instant::now();
            let (status, body, _) = issue(
                replicas[replica],
                reseller,
                &key,
                order(product, &format!("load-{c}")),
            )
            .await;
            log.borrow_mut().push(Shot {
                replica,
                product,
                sent,
                done: Instant::now(),
                status,
                licence: body["license"]["id"].as_str().map(String::from),
                decision: body["decision"].clone(),
                problem: body["code"]
                    .as_str()
                    .map(|code| format!("{code}: {}", body["detail"])),
            });
            i += 1;
        }
    });
    futures_util::future::join_all(runs).await;
}

/// Waits until the load has kept at least `n` answers.
async fn answers_at_least(log: &RefCell<Vec<Shot>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.borrow().len() < n {
        assert!(Instant::now() < deadline, "the load stalled");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Catalogue changes that alter no decision (the name of `globex`), each
/// through the next replica, while the load runs: every one is a new
/// catalogue version the other replicas learn of only from the database.
async fn churn(replicas: &[&Served], admin: &str, rounds: std::ops::Range<usize>) {
    for n in rounds {
        let (status, body, _) = replicas[n % replicas.len()]
            .call(
                "PUT",
                "/v1/organizations/globex",
                admin,
                Some(json!({"name": format!("Globex {n}"), "country": "US"})),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The catalogue both tests use (reseller `alpha`, `acme` and `globex`
/// with a product each), written round the replicas.
async fn seed(replicas: &[&Served; 3], admin: &str) {
    for (n, (path, body)) in [
        (
            "/v1/resellers/alpha",
            json!({"name": "Alpha", "country": "DE", "us_person": false}),
        ),
        ("/v1/organizations/acme", json!({"name": "Acme"})),
        (
            "/v1/organizations/globex",
            json!({"name": "Globex", "country": "US"}),
        ),
        (
            "/v1/products/ACME-VPN",
            json!({"name": "VPN", "vendor": "acme", "category": "vpn"}),
        ),
        (
            "/v1/products/GLOBEX-DB",
            json!({"name": "DB", "vendor": "globex", "category": "database"}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body, _) = replicas[n % 3]
            .call("PUT", path, admin, Some(body), &[])
            .await;
        assert_eq!(status, 201, "{path}: {body}");
    }
}

/// What the operator saw of the designation and of the requests right after it.
struct Change {
    put_sent: Instant,
    put_acked: Instant,
    /// The first answers of C and A after B's acknowledgement, and how long
    /// C took to give its answer.
    next_c: Value,
    next_a: Value,
    next_preflight_c: Value,
    next_c_ms: f64,
    /// Licence ids of the key sent to two replicas at once, and the counts
    /// of 201s, replays among them, 409s, and 201s from A and from C.
    one_key: Vec<String>,
    one_key_counts: (usize, usize, usize, usize, usize),
    /// A licence issued before the designation, and its replay after it.
    early: String,
    early_replay: (u16, Value, bool),
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Three replicas on the database at `url`, sharing one data directory
/// (returned first: it must outlive them). The first migrates, seeds and
/// makes the development keys; the others start on the same database and
/// keys.
async fn three_replicas(url: &str) -> (tempfile::TempDir, Served, Served, Served) {
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().to_str().unwrap().to_string();
    let env = [("GATEKEEPER_DATA_DIR", keys_dir.as_str())];
    let a = serve(url, &env).await;
    let b = serve(url, &env).await;
    let c = serve(url, &env).await;
    (keys, a, b, c)
}

#[actix_web::test]
async fn three_replicas_on_one_database_agree_on_the_catalogue_keys_and_chain() {
    let Some((db, _)) = postgres_db() else {
        return;
    };
    let url = db.url();
    let (_keys, a, b, c) = three_replicas(&url).await;
    let replicas = [&a, &b, &c];

    let admin = a.token(&["--role", "admin"]);
    let reseller = a.token(&["--role", "reseller", "--reseller", "alpha"]);
    let compliance = a.token(&["--role", "compliance"]);
    seed(&replicas, &admin).await;
    // One key set: every replica publishes the same licence keys.
    let mut jwks = Vec::new();
    for r in replicas {
        let (status, body, _) = r.call("GET", "/v1/keys", "", None, &[]).await;
        assert_eq!(status, 200);
        jwks.push(body);
    }
    assert!(jwks.iter().all(|k| *k == jwks[0]), "{jwks:?}");

    let stop = Cell::new(false);
    let log = RefCell::new(Vec::<Shot>::new());
    let started = Instant::now();
    let load = spread_load(&replicas, &reseller, &stop, &log);
    let operator = async {
        answers_at_least(&log, WARM_UP / 3).await;
        // A licence of the soon designated product, issued before.
        let early_body = order(DESIGNATED, "early");
        let (status, body, _) = issue(&a, &reseller, "early-key", early_body.clone()).await;
        assert_eq!(status, 201, "{body}");
        let early = body["license"]["id"].as_str().unwrap().to_string();
        churn(&replicas, &admin, 0..CHURN / 2).await;
        answers_at_least(&log, WARM_UP).await;

        // The designation, through B.
        let put_sent = Instant::now();
        let (status, body, _) = b
            .call(
                "PUT",
                &format!("/v1/designations/{DESIGNATION}"),
                &admin,
                Some(designation()),
                &[],
            )
            .await;
        let put_acked = Instant::now();
        assert_eq!(status, 201, "{body}");
        // The very next requests to C and to A.
        let (status, next_c, _) =
            issue(&c, &reseller, "next-at-c", order(DESIGNATED, "next")).await;
        let next_c_ms = put_acked.elapsed().as_secs_f64() * 1e3;
        assert_eq!(status, 403, "C's next answer: {next_c}");
        let (status, next_a, _) =
            issue(&a, &reseller, "next-at-a", order(DESIGNATED, "next")).await;
        assert_eq!(status, 403, "A's next answer: {next_a}");
        let (status, preflight, _) = c
            .call(
                "POST",
                "/v1/decisions",
                &reseller,
                Some(json!({"transaction": "issue", "product": DESIGNATED,
                            "customer": {"id": "next", "name": "n", "country": "DE", "us_person": false}})),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{preflight}");
        // The licence issued before is still the answer to its key: a
        // replay, not a new decision.
        let early_replay = issue(&c, &reseller, "early-key", early_body).await;

        // One key, sent to A and C at once, then once more to each replica.
        let one_key_body = order(UNTOUCHED, "one-key");
        let answers = futures_util::future::join_all((0..24).map(|i| {
            let (replica, body) = (if i % 2 == 0 { &a } else { &c }, one_key_body.clone());
            let reseller = &reseller;
            async move { issue(replica, reseller, "one-key-two-replicas", body).await }
        }))
        .await;
        let mut later = Vec::new();
        for r in replicas {
            later.push(issue(r, &reseller, "one-key-two-replicas", one_key_body.clone()).await);
        }
        assert!(
            answers.iter().all(|(s, body, _)| *s == 201
                || (*s == 409 && body["code"] == "idempotency_key_in_flight")),
            "{:?}",
            answers
                .iter()
                .map(|(s, b, _)| (s, &b["code"]))
                .collect::<Vec<_>>()
        );
        assert!(
            later.iter().all(|(s, _, replayed)| *s == 201 && *replayed),
            "{:?}",
            later.iter().map(|(s, _, r)| (s, r)).collect::<Vec<_>>()
        );
        let created = answers.iter().filter(|(s, _, _)| *s == 201).count();
        let replays = answers.iter().filter(|(s, _, r)| *s == 201 && *r).count();
        let conflicts = answers.iter().filter(|(s, _, _)| *s == 409).count();
        assert_eq!(created - replays, 1, "one first answer across replicas");
        // Both replicas answered with the licence (A's even, C's odd).
        let created_at = |first: usize| {
            answers
                .iter()
                .skip(first)
                .step_by(2)
                .filter(|(s, _, _)| *s == 201)
                .count()
        };
        let (at_a, at_c) = (created_at(0), created_at(1));
        assert!(at_a > 0 && at_c > 0, "201s: A {at_a}, C {at_c}");
        let one_key = answers
            .iter()
            .chain(&later)
            .filter(|(s, _, _)| *s == 201)
            .map(|(_, body, _)| body["license"]["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();

        churn(&replicas, &admin, CHURN / 2..CHURN).await;
        let so_far = log.borrow().len();
        answers_at_least(&log, so_far + COOL_DOWN).await;
        stop.set(true);
        Change {
            put_sent,
            put_acked,
            next_c,
            next_a,
            next_preflight_c: preflight["decision"].clone(),
            next_c_ms,
            one_key,
            one_key_counts: (created, replays, conflicts, at_a, at_c),
            early,
            early_replay,
        }
    };
    let ((), change) = futures_util::future::join(load, operator).await;
    let elapsed = started.elapsed().as_secs_f64();
    let log = log.into_inner();

    // The load's answers: allowed, or refused by the designation.
    if let Some(odd) = log.iter().find(|s| s.status != 201 && s.status != 403) {
        panic!(
            "only 201 or 403: {:?}; the first other was {:?}; replica {}'s log ends:\n{}",
            log.iter()
                .filter(|s| s.status != 201 && s.status != 403)
                .map(|s| (REPLICA_NAMES[s.replica], s.status))
                .collect::<Vec<_>>(),
            odd.problem,
            REPLICA_NAMES[odd.replica],
            tail(&replicas[odd.replica].log(), 40)
        );
    }
    for s in &log {
        let late = s.sent > change.put_acked;
        match s.product {
            UNTOUCHED => assert_eq!(s.status, 201, "{}", s.decision),
            _ if s.done < change.put_sent => assert_eq!(s.status, 201, "{}", s.decision),
            _ if late => {
                assert_eq!(
                    s.status, 403,
                    "a {DESIGNATED} licence from replica {} after the designation: {}",
                    REPLICA_NAMES[s.replica], s.decision
                );
                assert!(cites_designation(&s.decision), "{}", s.decision);
            }
            _ => {}
        }
    }
    for next in [&change.next_c, &change.next_a] {
        assert_eq!(next["code"], "prohibited_transaction", "{next}");
        assert!(cites_designation(&next["decision"]), "{next}");
    }
    assert_eq!(change.next_preflight_c["outcome"], "deny");
    assert!(cites_designation(&change.next_preflight_c));
    let (status, body, replayed) = &change.early_replay;
    assert!(*status == 201 && *replayed, "{status} {body}");
    assert_eq!(body["license"]["id"], change.early.as_str());
    assert!(change.one_key.iter().all(|id| *id == change.one_key[0]));

    // Every acknowledged licence is there, with the decision that allowed it.
    let mut acknowledged: Vec<String> = log.iter().filter_map(|s| s.licence.clone()).collect();
    acknowledged.push(change.early.clone());
    acknowledged.push(change.one_key[0].clone());
    let store = assert_durable(&url, &acknowledged);

    // The audit trail, in sequence order: each decision carries the version
    // of the latest catalogue change before it.
    let mut newest: Option<i64> = None;
    let mut versions = BTreeSet::new();
    let mut designation_seq = None;
    let mut designation_version = None;
    let mut decisions: HashMap<i64, Value> = HashMap::new();
    let mut violations = Vec::new();
    let (mut allowing, mut events, mut one_key_licences) = (0usize, 0usize, 0usize);
    store
        .for_each_event(&Default::default(), |e| {
            events += 1;
            let seq = e["seq"].as_i64().unwrap();
            let action = e["action"].as_str().unwrap_or_default();
            let version: i64 = e["policy_version"].as_str().unwrap().parse().unwrap();
            if action.starts_with("catalog.") {
                if newest.is_some_and(|n| version < n) {
                    violations.push(format!(
                        "seq {seq}: catalogue version {version} after {newest:?}"
                    ));
                }
                newest = Some(version);
                if action == "catalog.designation.put" && e["subject"]["id"] == DESIGNATION {
                    designation_seq = Some(seq);
                    designation_version = Some(version);
                }
            } else if action.starts_with("decision.") {
                versions.insert(version);
                if Some(version) != newest {
                    violations.push(format!(
                        "seq {seq}: a decision on catalogue version {version}, \
                         the newest committed being {newest:?}"
                    ));
                }
                let decision = &e["decision"];
                if decision["policy_version"] != e["policy_version"] || decision["audit_seq"] != seq
                {
                    violations.push(format!("seq {seq}: the decision disagrees with its event"));
                }
                if action == "decision.issue" && e["outcome"] == "allow" {
                    allowing += 1;
                    if e["subject"]["customer"]["id"] == "one-key" {
                        one_key_licences += 1;
                    }
                }
                if action == "decision.issue" && e["subject"]["product"] == DESIGNATED {
                    let after = designation_seq.is_some();
                    if after != (e["outcome"] == "deny") {
                        violations.push(format!(
                            "seq {seq}: {} for {DESIGNATED} with the designation {}",
                            e["outcome"],
                            if after {
                                "committed"
                            } else {
                                "not yet committed"
                            }
                        ));
                    }
                }
                decisions.insert(seq, decision.clone());
            }
            true
        })
        .unwrap();
    assert!(
        violations.is_empty(),
        "{} violations, first ones: {:#?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    let designation_seq = designation_seq.expect("the designation's event");
    let designation_version = designation_version.unwrap().to_string();
    // C's and A's next answers were decided on the designation's version.
    for next in [
        &change.next_c["decision"],
        &change.next_a["decision"],
        &change.next_preflight_c,
    ] {
        assert_eq!(
            next["policy_version"],
            designation_version.as_str(),
            "{next}"
        );
        assert!(next["audit_seq"].as_i64().unwrap() > designation_seq);
    }
    // Each answer is the decision its event recorded.
    let mut checked_answers = 0usize;
    for s in &log {
        let seq = s.decision["audit_seq"]
            .as_i64()
            .expect("a decision in every answer");
        assert_eq!(decisions.get(&seq), Some(&s.decision), "seq {seq}");
        checked_answers += 1;
    }
    // One allowing event per licence; the key sent to two replicas made one.
    let licences = store.licenses(None, None, 1_000_000).unwrap().rows.len();
    assert_eq!(allowing, licences, "one allowing event per licence");
    assert_eq!(one_key_licences, 1, "one key, one licence");
    // One chain, verified by the store and by every replica.
    let report = store.verify_chain(&[], &a.license_keys()).unwrap();
    assert!(report.ok, "{report:?}");
    for r in replicas {
        let (status, body, _) = r
            .call("GET", "/v1/audit/verify", &compliance, None, &[])
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ok"], true, "{body}");
        assert!(body["events_checked"].as_u64().unwrap() >= events as u64);
    }

    // Figures.
    let per_replica = |status: u16| {
        (0..3)
            .map(|r| {
                format!(
                    "{}={}",
                    REPLICA_NAMES[r],
                    log.iter()
                        .filter(|s| s.replica == r && s.status == status)
                        .count()
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut latencies: Vec<f64> = log
        .iter()
        .map(|s| (s.done - s.sent).as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let (created, replays, conflicts, at_a, at_c) = change.one_key_counts;
    eprintln!(
        "replicas: 3 gatekeeper processes on one PostgreSQL, {CLIENTS} clients round-robin, \
         {:.1} s: {} licence requests, {:.0} req/s (p50 {:.0} ms, p99 {:.0} ms)",
        elapsed,
        log.len(),
        log.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    eprintln!(
        "replicas: licences issued per replica: {}",
        per_replica(201)
    );
    eprintln!("replicas: refusals per replica: {}", per_replica(403));
    eprintln!(
        "replicas: designation committed through B at seq {designation_seq} (catalogue version \
         {designation_version}); the very next requests to C and to A, sent at once after B's 201, \
         were refused (C answered in {:.0} ms)",
        change.next_c_ms
    );
    eprintln!(
        "replicas: {} decisions checked against the newest committed catalogue version \
         ({} versions used; {CHURN} catalogue changes and the designation during the load); \
         {checked_answers} answers matched to their events",
        decisions.len(),
        versions.len(),
    );
    eprintln!(
        "replicas: one key sent 24 times at once to A and C, then to A, B, C: {created} 201s \
         (A {at_a}, C {at_c}; {replays} of them replays), {conflicts} 409s in flight, then 3 replays: \
         1 licence"
    );
    eprintln!(
        "replicas: {licences} licences, {allowing} allowing events; chain of {events} events \
         verified by the store and by all three replicas"
    );
}

/// Licences renewed at once through all three replicas.
const RENEWED: usize = 4;
/// Renewals each load client asks for, and licences it issues between them.
const RENEWALS_PER_CLIENT: usize = 40;

/// Six clients renew the same four licences round the three replicas while
/// they issue new ones: every renewal reads the licence and writes it back,
/// so two replicas renewing one licence at once race on its row, and a
/// batch prepared on a head another replica has moved must be run again
/// rather than committed. A renewal adds its term to the licence's expiry
/// (it is still in the future), so a lost or doubled renewal shows in the
/// expiry: each licence ends exactly one day later per acknowledged renewal.
#[actix_web::test]
async fn three_replicas_renewing_the_same_licences_lose_no_renewal() {
    let Some((db, _)) = postgres_db() else {
        return;
    };
    let url = db.url();
    let (_keys, a, b, c) = three_replicas(&url).await;
    let replicas = [&a, &b, &c];
    let admin = a.token(&["--role", "admin"]);
    let reseller = a.token(&["--role", "reseller", "--reseller", "alpha"]);
    seed(&replicas, &admin).await;

    let mut first_expiry = Vec::new();
    let mut ids = Vec::new();
    for n in 0..RENEWED {
        let (status, body, _) = issue(
            replicas[n % 3],
            &reseller,
            &format!("renewed-{n}"),
            order(UNTOUCHED, &format!("renewed-{n}")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["license"]["id"].as_str().unwrap().to_string());
        first_expiry.push(expiry(&body["license"]));
    }

    let started = Instant::now();
    let clients = (0..CLIENTS).map(|c| {
        let (replicas, reseller, ids) = (&replicas, &reseller, &ids);
        async move {
            let mut renewed = vec![0usize; RENEWED];
            let mut issued = Vec::new();
            for i in 0..RENEWALS_PER_CLIENT {
                let replica = replicas[(c + i) % 3];
                let n = (c + i) % RENEWED;
                let (status, body, _) = replica
                    .call(
                        "POST",
                        &format!("/v1/licenses/{}/renewals", ids[n]),
                        reseller,
                        Some(json!({"term_days": 1})),
                        &[("idempotency-key", &format!("renew-{c}-{i}"))],
                    )
                    .await;
                assert_eq!(
                    status,
                    200,
                    "a renewal through replica {}: {body}",
                    REPLICA_NAMES[(c + i) % 3]
                );
                renewed[n] += 1;
                let (status, body, _) = issue(
                    replicas[(c + i + 1) % 3],
                    reseller,
                    &format!("between-{c}-{i}"),
                    order(UNTOUCHED, &format!("between-{c}")),
                )
                .await;
                assert_eq!(status, 201, "{body}");
                issued.push(body["license"]["id"].as_str().unwrap().to_string());
            }
            (renewed, issued)
        }
    });
    let done = futures_util::future::join_all(clients).await;
    let elapsed = started.elapsed().as_secs_f64();

    let mut renewed = [0usize; RENEWED];
    let mut acknowledged = ids.clone();
    for (counts, issued) in done {
        for (n, k) in counts.into_iter().enumerate() {
            renewed[n] += k;
        }
        acknowledged.extend(issued);
    }
    let store = assert_durable(&url, &acknowledged);
    for n in 0..RENEWED {
        let (status, body, _) = a
            .call(
                "GET",
                &format!("/v1/licenses/{}", ids[n]),
                &reseller,
                None,
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let days = (expiry(&body) - first_expiry[n]).num_seconds() as f64 / 86_400.0;
        assert_eq!(
            days, renewed[n] as f64,
            "licence {n} renewed {} times: its expiry moved {days} days",
            renewed[n]
        );
    }
    // One renewal event per acknowledged renewal, and one chain.
    let mut renewals = 0usize;
    store
        .for_each_event(&Default::default(), |e| {
            if e["action"] == "decision.renew" && e["outcome"] == "allow" {
                renewals += 1;
            }
            true
        })
        .unwrap();
    assert_eq!(renewals, CLIENTS * RENEWALS_PER_CLIENT);
    let report = store.verify_chain(&[], &a.license_keys()).unwrap();
    assert!(report.ok, "{report:?}");
    eprintln!(
        "replicas: {} renewals of {RENEWED} licences and {} issues through 3 replicas in {elapsed:.1} s; \
         expiries moved by exactly the renewals acknowledged; chain verified",
        CLIENTS * RENEWALS_PER_CLIENT,
        CLIENTS * RENEWALS_PER_CLIENT,
    );
}

fn expiry(license: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(license["expires_at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{license}: {e}"))
}

/// Rounds of the race below.
const SUSPENSION_ROUNDS: usize = 12;
/// Renewals sent through replica A at once with each suspension.
const RENEWALS_PER_ROUND: usize = 8;

/// A suspension through replica B landing among renewals through replica A.
/// A's renewals read the licence before their batch is written, and A's
/// writer takes a licence it last wrote itself as read (its memory of the
/// versions it wrote knows nothing of B's suspension, which changes the
/// licence's `updated_at` but not its decision). A renewal written from what
/// it read would set the licence active again; the batch's statement writes
/// a licence back only at the version it read, else the batch runs again
/// under the lock, where the licence reads as suspended. So an acknowledged
/// suspension is never undone, and every renewal is applied before it (200)
/// or refused after it (409).
#[actix_web::test]
async fn a_suspension_through_one_replica_is_never_undone_by_renewals_through_another() {
    let Some((db, _)) = postgres_db() else {
        return;
    };
    let url = db.url();
    let (_keys, a, b, c) = three_replicas(&url).await;
    let admin = a.token(&["--role", "admin"]);
    let reseller = a.token(&["--role", "reseller", "--reseller", "alpha"]);
    let compliance = a.token(&["--role", "compliance"]);
    seed(&[&a, &b, &c], &admin).await;
    let (status, body, _) = issue(&a, &reseller, "suspended", order(UNTOUCHED, "suspended")).await;
    assert_eq!(status, 201, "{body}");
    let id = body["license"]["id"].as_str().unwrap().to_string();
    let renewals = format!("/v1/licenses/{id}/renewals");
    let suspension = format!("/v1/licenses/{id}/suspension");
    let mut refused = 0;
    for round in 0..SUSPENSION_ROUNDS {
        let keys: Vec<String> = (0..RENEWALS_PER_ROUND)
            .map(|n| format!("race-{round}-{n}"))
            .collect();
        let headers: Vec<[(&str, &str); 1]> = keys
            .iter()
            .map(|key| [("idempotency-key", key.as_str())])
            .collect();
        let renew = futures_util::future::join_all(headers.iter().map(|headers| {
            a.call(
                "POST",
                &renewals,
                &reseller,
                Some(json!({"term_days": 1})),
                headers,
            )
        }));
        let suspend = b.call(
            "POST",
            &suspension,
            &compliance,
            Some(json!({"reason": format!("round {round}")})),
            &[],
        );
        let (renewed, (status, body, _)) = futures_util::future::join(renew, suspend).await;
        assert_eq!(status, 200, "the suspension: {body}");
        let statuses: Vec<u16> = renewed.iter().map(|(s, _, _)| *s).collect();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "round {round}: {:?}",
            renewed.iter().map(|(_, b, _)| b).collect::<Vec<_>>()
        );
        refused += statuses.iter().filter(|s| **s == 409).count();
        for replica in [&a, &b, &c] {
            let (status, now, _) = replica
                .call("GET", &format!("/v1/licenses/{id}"), &compliance, None, &[])
                .await;
            assert_eq!(status, 200, "{now}");
            assert_eq!(
                now["status"], "suspended",
                "round {round}: renewals {statuses:?} left {now}"
            );
        }
        let (status, body, _) = b.call("DELETE", &suspension, &compliance, None, &[]).await;
        assert_eq!(status, 200, "the reinstatement: {body}");
    }
    assert!(refused > 0, "no renewal came after a suspension");
    let (status, verdict, _) = c
        .call("GET", "/v1/audit/verify", &compliance, None, &[])
        .await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["ok"], true, "{verdict}");
}
