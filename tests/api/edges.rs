//! The service's edges under abuse by a caller with a valid token, or none:
//! bodies that never arrive, more connections than the process has files,
//! more requests than it handles at once, floods of bad tokens, scrapes of
//! `/metrics`, and a database that stops taking writes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::both;
use crate::helpers::{sample, start, Backend, TestApp, TestDb};
use crate::served::serve_with_open_files;

/// A preflight whose head is sent in full and whose body (promised to be
/// 1,000 bytes) stops after its first byte.
fn stalled(address: &str, path: &str, token: &str) -> TcpStream {
    stalled_as("POST", address, path, token)
}

/// [`stalled`] with another method.
fn stalled_as(method: &str, address: &str, path: &str, token: &str) -> TcpStream {
    let address = address.trim_start_matches("http://");
    let mut s = TcpStream::connect(address).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    )
    .unwrap();
    s
}

/// Everything the server sends on `s` until it closes it (or `wait` passes:
/// then `None`), read off the test's runtime (which serves the in-process
/// servers' start-up).
async fn answer(mut s: TcpStream, wait: Duration) -> Option<String> {
    actix_web::rt::task::spawn_blocking(move || read_all(&mut s, wait))
        .await
        .unwrap()
}

fn read_all(s: &mut TcpStream, wait: Duration) -> Option<String> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut bytes = Vec::new();
    match s.read_to_end(&mut bytes) {
        Ok(_) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => None,
    }
}

/// The status line's code of a raw answer.
fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

both!(a_body_that_does_not_arrive_is_408_and_limits_come_before_it);
async fn a_body_that_does_not_arrive_is_408_and_limits_come_before_it(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let mut config = app.config.clone();
    config.request_timeout = Duration::from_secs(1);
    config.rate_limit = Some(gatekeeper::api::limits::Limit {
        rate: 0.001,
        burst: 2.0,
    });
    let address = start(&config);
    let token = app.reseller("alpha");

    // The body never comes: 408 once the timeout has passed, and the
    // connection is closed (the rest of the body is not waited for).
    let s = stalled(&address, "/v1/decisions", &token);
    let raw = answer(s, Duration::from_secs(20))
        .await
        .expect("answered and closed");
    assert_eq!(status_of(&raw), 408, "{raw}");
    assert!(raw.contains("\"code\":\"request_timeout\""), "{raw}");
    assert!(raw.contains("application/problem+json"), "{raw}");

    // That request took one of the tenant's two; one more spends the other.
    let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                      "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}});
    let view = app.via(&address);
    let r = view
        .send("POST", "/v1/decisions", &token, Some(body.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Now the tenant is over its limit: refused before its body is read,
    // with no byte of the body sent and long before the body timeout.
    // (Were the body read first, this would be a 408 after the timeout.)
    let s = stalled(&address, "/v1/decisions", &token);
    let raw = answer(s, Duration::from_secs(20)).await.expect("answered");
    assert_eq!(status_of(&raw), 429, "{raw}");
    // A caller whose role may not make the request is refused before its
    // body too: a reseller's catalogue write.
    let s = stalled_as("PUT", &address, "/v1/resellers/mallory", &token);
    let raw = answer(s, Duration::from_secs(20)).await.expect("answered");
    assert_eq!(status_of(&raw), 403, "{raw}");
    // And one without a token.
    let s = stalled(&address, "/v1/decisions", "not-a-token");
    let raw = answer(s, Duration::from_secs(20)).await.expect("answered");
    assert_eq!(status_of(&raw), 401, "{raw}");
}

/// A few hundred connections that each send a valid head and one byte of
/// their body, against a server whose open-file limit is 256: the server
/// never runs out of descriptors, cuts each off with `408`, and answers
/// `/healthz` throughout.
#[actix_web::test]
async fn stalled_bodies_cannot_exhaust_open_files_and_healthz_answers_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gk.db").display());
    let served =
        serve_with_open_files(&url, &[("GATEKEEPER_REQUEST_TIMEOUT", "2")], Some(256)).await;
    let (_, reseller) = served.setup().await;
    let address = served.base.clone();
    const STALLED: usize = 400;
    // /healthz, polled from another thread every 250 ms from before the
    // stalled connections come until they are all cut off.
    let probe_address = address.trim_start_matches("http://").to_string();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let prober = std::thread::spawn(move || {
        let mut polls = Vec::new();
        loop {
            let asked = Instant::now();
            let ok = TcpStream::connect(&probe_address)
                .and_then(|mut s| {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                    Ok(read_all(&mut s, Duration::from_secs(20)))
                })
                .ok()
                .flatten()
                .is_some_and(|raw| status_of(&raw) == 200);
            polls.push((ok, asked.elapsed()));
            if done_rx.recv_timeout(Duration::from_millis(250)).is_ok() {
                return polls;
            }
        }
    });
    let started = Instant::now();
    // Each stalled connection is read on a thread of its own from the moment
    // it is opened (connecting waits while the backlog is full).
    let cutters: Vec<_> = (0..STALLED)
        .map(|_| {
            let s = stalled(&address, "/v1/decisions", &reseller);
            std::thread::spawn(move || {
                let mut s = s;
                read_all(&mut s, Duration::from_secs(60))
                    .is_some_and(|raw| raw.is_empty() || status_of(&raw) == 408)
            })
        })
        .collect();
    let opened = started.elapsed();
    let cut = cutters
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|cut| *cut)
        .count();
    let all_cut = started.elapsed();
    done_tx.send(()).unwrap();
    let polls = prober.join().unwrap();
    let slowest = polls.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "{STALLED} stalled bodies, open-file limit 256: opened in {:.1} s, all cut off after \
         {:.1} s; {} /healthz polls, slowest {:.2} s",
        opened.as_secs_f64(),
        all_cut.as_secs_f64(),
        polls.len(),
        slowest.as_secs_f64()
    );
    assert_eq!(cut, STALLED, "every stalled body was cut off");
    assert!(
        polls.iter().all(|(ok, _)| *ok),
        "every /healthz poll answered 200: {polls:?}"
    );
    let log = served.log();
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of file descriptors:\n{log}"
    );
    // And it serves as before.
    let body = json!({"transaction": "issue", "product": "ACME-VPN",
                      "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}});
    let (status, _, _) = served
        .call("POST", "/v1/decisions", &reseller, Some(body), &[])
        .await;
    assert_eq!(status, 200);
}

both!(past_the_in_flight_cap_api_requests_are_turned_away_and_probes_are_not);
async fn past_the_in_flight_cap_api_requests_are_turned_away_and_probes_are_not(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let mut config = app.config.clone();
    config.max_in_flight = 2;
    config.request_timeout = Duration::from_secs(2);
    let address = start(&config);
    let view = app.via(&address);
    let token = app.reseller("alpha");
    // Two requests whose bodies stall hold both places.
    let holding: Vec<TcpStream> = (0..2)
        .map(|_| stalled(&address, "/v1/decisions", &token))
        .collect();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let r = view.send("GET", "/v1/licenses", &token, None).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["code"], "overloaded");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Probes and metrics are not API requests: they answer.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let r = view.send("GET", probe, "", None).await;
        assert_eq!(r.status, 200, "{probe}");
    }
    // Once the stalled ones are cut off, their places are free again.
    for s in holding {
        let raw = answer(s, Duration::from_secs(20)).await.expect("cut off");
        assert_eq!(status_of(&raw), 408, "{raw}");
    }
    let r = view.send("GET", "/v1/licenses", &token, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

both!(failed_authentications_are_limited_per_address_before_verification);
async fn failed_authentications_are_limited_per_address_before_verification(app: TestApp) {
    app.register("alpha", "DE", false).await;
    let mut config = app.config.clone();
    config.auth_failure_limit = Some(gatekeeper::api::limits::Limit {
        rate: 0.01,
        burst: 5.0,
    });
    let address = start(&config);
    let view = app.via(&address);
    let good = app.reseller("alpha");
    // A valid token is never charged.
    for _ in 0..10 {
        assert_eq!(
            view.send("GET", "/v1/licenses", &good, None).await.status,
            200
        );
    }
    // Five bad tokens are looked at and refused; from then on the address
    // is refused before its token is verified, whatever the token.
    let bad = format!("{}x", &good[..good.len() - 1]);
    for _ in 0..5 {
        let r = view.send("GET", "/v1/licenses", &bad, None).await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    for token in [bad.as_str(), "garbage", good.as_str()] {
        let r = view.send("GET", "/v1/licenses", token, None).await;
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.body["code"], "rate_limited");
        assert!(r.header("retry-after").is_some());
        assert!(r
            .header("ratelimit-policy")
            .is_some_and(|p| p.starts_with("\"address_failures\"")));
    }
    let metrics = view.send("GET", "/metrics", "", None).await.text;
    assert_eq!(
        sample(
            &metrics,
            "gatekeeper_auth_failures_total{reason=\"invalid_token\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "gatekeeper_auth_failures_total{reason=\"address_limited\"}"
        ),
        Some(3.0)
    );
    // The limit is this server's: the first one (no limit) still answers.
    assert_eq!(app.get("/v1/licenses", &good).await.status, 200);
}

both!(a_scrape_reads_nothing_from_the_database);
async fn a_scrape_reads_nothing_from_the_database(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    let mut config = app.config.clone();
    config.metrics_refresh = Duration::from_secs(3600);
    let address = start(&config);
    let view = app.via(&address);
    let refreshes = |text: &str| sample(text, "gatekeeper_db_stats_refresh_seconds_count");
    // The refresher reads the gauges once at start-up...
    let mut text = String::new();
    for _ in 0..100 {
        text = view.send("GET", "/metrics", "", None).await.text;
        if refreshes(&text) == Some(1.0) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refreshes(&text), Some(1.0), "{text}");
    assert_eq!(sample(&text, "gatekeeper_ready"), Some(1.0));
    // ...and not again in the hour, however many scrapes come and however
    // the licences grow: a scrape runs no query.
    for i in 0..50 {
        if i % 10 == 0 {
            let key = format!("k{i}");
            let body = json!({"product": "ACME-FW-K", "seats": 1, "term_days": 30,
                              "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}});
            let r = app
                .client
                .post(format!("{address}/v1/licenses"))
                .insert_header(("authorization", format!("Bearer {}", app.reseller("alpha"))))
                .insert_header(("idempotency-key", key))
                .send_json(&body)
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        let text = view.send("GET", "/metrics", "", None).await.text;
        assert_eq!(refreshes(&text), Some(1.0), "scrape {i}");
    }
}

both!(readiness_turns_red_while_the_database_refuses_writes_and_back);
async fn readiness_turns_red_while_the_database_refuses_writes_and_back(app: TestApp) {
    app.register("alpha", "DE", false).await;
    app.add_oem_firewall().await;
    assert_eq!(app.send("GET", "/readyz", None, None).await.status, 200);
    let app = &app;
    // `want` once it has held for 1.5 s of polls: longer than an answer
    // is reused (`Readiness::FRESH`) and than a dead pooled connection goes
    // unprobed, so a 503 from a session just cut (which any cut gives) is
    // not taken for the database refusing writes. Else (at the deadline)
    // the last status, or 0 if it was `want` but had not held.
    let until = |want: u16, secs: u64| async move {
        const HOLD: Duration = Duration::from_millis(1500);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut since: Option<Instant> = None;
        loop {
            let r = app.send("GET", "/readyz", None, None).await;
            let status = r.status.as_u16();
            since = (status == want).then(|| since.unwrap_or_else(Instant::now));
            let held = since.is_some_and(|at| at.elapsed() >= HOLD);
            if held || Instant::now() > deadline {
                eprintln!("readyz: {status} (held: {held}) {}", r.text);
                return if status == want && !held { 0 } else { status };
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    };
    match (&app.backend, &app.db) {
        (
            Backend::Postgres,
            TestDb::Postgres {
                admin_url, name, ..
            },
        ) => {
            use diesel::connection::SimpleConnection;
            use diesel::Connection;
            let mut admin = diesel::PgConnection::establish(admin_url).unwrap();
            // Every new session of the service's database is read-only
            // (as when an operator or a provider protects a full disk);
            // its sessions are cut so that the pool reconnects into it.
            // The setting is committed before the cut (one query of both
            // statements would be one transaction: a session reconnecting
            // before it committed would read the old setting).
            let cut = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            );
            // A session still starting during a cut may have read the
            // setting before it changed and escaped the cut (it is then
            // rightly as it was): cut until only new sessions are left.
            let phases = [
                (
                    "SET default_transaction_read_only = on",
                    503,
                    "read-only is not ready",
                ),
                (
                    "RESET default_transaction_read_only",
                    200,
                    "writable again is ready again",
                ),
            ];
            for (setting, want, why) in phases {
                admin
                    .batch_execute(&format!("ALTER DATABASE {name} {setting}"))
                    .unwrap();
                let mut status = 0;
                for _ in 0..6 {
                    admin.batch_execute(&cut).unwrap();
                    status = until(want, 5).await;
                    if status == want {
                        break;
                    }
                }
                assert_eq!(status, want, "{why}");
            }
        }
        (Backend::Sqlite, TestDb::Sqlite(dir)) => {
            use diesel::connection::SimpleConnection;
            use diesel::Connection;
            // Another process holds the write lock: nothing can be written.
            let path = dir.path().join("gatekeeper.db");
            let mut other = diesel::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
            other.batch_execute("BEGIN IMMEDIATE").unwrap();
            assert_eq!(until(503, 30).await, 503, "unwritable is not ready");
            other.batch_execute("ROLLBACK").unwrap();
            assert_eq!(until(200, 30).await, 200, "writable again is ready again");
        }
        _ => unreachable!(),
    }
    let r = app
        .preflight(
            "alpha",
            json!({"transaction": "issue", "product": "ACME-FW-K",
                   "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A flood of bad tokens is counted, and logged a line now and then with the
/// count of those not logged; never a warning a request.
#[actix_web::test]
async fn bad_tokens_are_counted_and_logged_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gk.db").display());
    // The address limit off, so that every bad token reaches verification.
    let served = crate::served::serve(&url, &[("GATEKEEPER_AUTH_FAILURE_LIMIT", "0")]).await;
    const BAD: usize = 200;
    for i in 0..BAD {
        let (status, _, _) = served
            .call("GET", "/v1/licenses", &format!("bad.token.{i}"), None, &[])
            .await;
        assert_eq!(status, 401);
    }
    let metrics = served.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "gatekeeper_auth_failures_total{reason=\"invalid_token\"}"
        ),
        Some(BAD as f64)
    );
    let log = served.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    let sampled = warnings
        .iter()
        .filter(|l| l.contains("authentication failed"))
        .count();
    assert_eq!(sampled, 1, "one sampled line in 10 s: {warnings:#?}");
    assert!(
        warnings.len() <= 3,
        "{BAD} bad tokens must not be {BAD} warnings: {warnings:#?}"
    );
}
