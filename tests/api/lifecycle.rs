//! The process as an operator runs it: logs, graceful shutdown under load,
//! and readiness that follows the database.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::postgres_db;
use crate::served::{acknowledged, assert_durable, fresh_database, issue_load, serve, wait_exit};

#[actix_web::test]
async fn logs_carry_request_ids_and_never_tokens_or_customer_names() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gk.db").display());
    let mut served = serve(
        &url,
        &[("GATEKEEPER_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .await;
    let (_, reseller) = served.setup().await;
    let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                      "customer": {"id": "cust-secret-77", "name": "Zebediah Quux", "country": "US"}});
    let (status, decision, headers) = served
        .call(
            "POST",
            "/v1/decisions",
            &reseller,
            Some(body),
            &[("x-request-id", "req-abc-123")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("x-request-id").unwrap(),
        "req-abc-123",
        "the caller's id comes back"
    );
    let (_, _, headers) = served
        .call("GET", "/v1/designations", "not.a.token", None, &[])
        .await;
    let generated = headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 36, "an id is made when none is sent");
    let (status, _, _) = served
        .call(
            "GET",
            "/healthz",
            "x",
            None,
            &[("x-request-id", "bad id with spaces")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(served.terminate().code(), Some(0));

    let log = served.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let served_line = lines
        .iter()
        .find(|l| {
            l["span"]["request_id"] == "req-abc-123" && l["fields"]["message"] == "request served"
        })
        .unwrap_or_else(|| panic!("no line for the request: {log}"));
    assert_eq!(served_line["span"]["route"], "/v1/decisions");
    assert_eq!(served_line["span"]["method"], "POST");
    assert_eq!(served_line["span"]["tenant"], "alpha");
    assert_eq!(
        served_line["span"]["decision_id"],
        decision["decision"]["id"]
    );
    assert_eq!(served_line["fields"]["status"], 200);
    assert!(served_line["fields"]["latency_ms"].as_f64().is_some());
    assert!(lines
        .iter()
        .any(|l| l["span"]["request_id"] == generated.as_str()));
    for leak in [
        reseller.as_str(),
        "not.a.token",
        "Zebediah",
        "cust-secret-77",
        "bad id with spaces",
    ] {
        assert!(!log.contains(leak), "{leak} appears in the log");
    }
}

#[actix_web::test]
async fn sigterm_during_load_leaves_every_answered_request_durable() {
    let (_db, url) = fresh_database();
    let mut served = serve(&url, &[("GATEKEEPER_SHUTDOWN_GRACE", "20")]).await;
    let (_, reseller) = served.setup().await;
    let served_ref = &served;
    let reseller_ref = &reseller;
    // Eight clients issue licences until the server goes away.
    let clients = issue_load(served_ref, reseller_ref, 8, 400, true);
    let stopper = async {
        actix_web::rt::time::sleep(Duration::from_millis(700)).await;
        let id = served_ref.child.as_ref().unwrap().id();
        assert!(Command::new("kill")
            .args(["-TERM", &id.to_string()])
            .status()
            .unwrap()
            .success());
    };
    let (log, ()) = futures_util::future::join(clients, stopper).await;
    assert!(
        log.iter()
            .all(|(status, _, _)| matches!(status, 201 | 503 | 0)),
        "only 201, or 503 and refused connections once the server stops"
    );
    let issued = acknowledged(&log);
    let status = wait_exit(&mut served.child.take().unwrap());
    assert_eq!(
        status.code(),
        Some(0),
        "a graceful stop exits 0: {}",
        served.log()
    );
    assert!(
        issued.len() > 20,
        "the load ran before the signal ({} licences)",
        issued.len()
    );

    // Every licence a client saw acknowledged is there with its audit event,
    // the chain verifies, and a last checkpoint covers its head.
    let store = assert_durable(&url, &issued);
    let report = store.verify_chain(&[], &served.license_keys()).unwrap();
    assert!(report.ok, "{report:?}");
    let (head, _) = store.head().unwrap();
    let last = store.checkpoints(Some(head - 1), 1).unwrap();
    assert_eq!(
        last.first().map(|c| c.seq),
        Some(head),
        "the shutdown signed a checkpoint over the head"
    );
    assert!(served.log().contains("signed the last checkpoint"));
}

/// A TCP relay to PostgreSQL that can be cut and restored, to make the
/// database unreachable for one server only.
struct Relay {
    port: u16,
    target: String,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: &str, port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = target.to_string();
        let to = target.clone();
        let (cut, cut_seen) = tokio::sync::watch::channel(false);
        let mut stop_accepting = cut_seen.clone();
        actix_web::rt::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop_accepting.changed() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                let to = to.clone();
                let mut stop = cut_seen.clone();
                actix_web::rt::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = stop.changed() => {}
                        }
                    }
                });
            }
        });
        Relay { port, target, cut }
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&mut self) {
        let _ = self.cut.send(true);
    }
}

#[actix_web::test]
async fn readiness_follows_the_database_without_a_restart() {
    let Some((db, _)) = postgres_db() else {
        return;
    };
    let url = db.url();
    let host = url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let mut relay = Relay::start(&host, 0).await;
    let via_relay = url.replace(&host, &format!("127.0.0.1:{}", relay.port));
    let served = serve(&via_relay, &[]).await;
    let client = awc::Client::default();
    let ready = |client: &awc::Client| {
        let url = format!("{}/readyz", served.base);
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(ready(&client).await, 200);

    relay.cut();
    let cut_at = Instant::now();
    let mut status = 200;
    while status != 503 && cut_at.elapsed() < Duration::from_secs(15) {
        status = ready(&client).await;
    }
    assert_eq!(status, 503, "readiness turns red when the database is gone");
    assert!(
        cut_at.elapsed() < Duration::from_secs(10),
        "within seconds: {:?}",
        cut_at.elapsed()
    );
    assert!(served.metrics().await.contains("gatekeeper_ready 0"));

    let _relay = Relay::start(&relay.target, relay.port).await;
    let back_at = Instant::now();
    while status != 200 && back_at.elapsed() < Duration::from_secs(20) {
        status = ready(&client).await;
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "and green again when it is back, without a restart"
    );
    let (_, reseller) = served.setup().await;
    let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                      "customer": {"id": "c", "name": "n", "country": "US"}});
    let (code, decision, _) = served
        .call("POST", "/v1/decisions", &reseller, Some(body), &[])
        .await;
    assert_eq!(
        (code, decision["decision"]["outcome"].clone()),
        (200, json!("deny")),
        "and it serves again"
    );
}

#[actix_web::test]
async fn kill_9_under_load_loses_nothing_that_was_acknowledged() {
    let (_db, url) = fresh_database();
    // The checkpoint signer runs every second, and may be killed mid-way too.
    let mut served = serve(&url, &[("GATEKEEPER_CHECKPOINT_INTERVAL", "1")]).await;
    let (_, reseller) = served.setup().await;
    let served_ref = &served;
    let reseller_ref = &reseller;
    let clients = issue_load(served_ref, reseller_ref, 8, 400, true);
    let killer = async {
        actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
        let id = served_ref.child.as_ref().unwrap().id();
        assert!(Command::new("kill")
            .args(["-KILL", &id.to_string()])
            .status()
            .unwrap()
            .success());
    };
    let (log, ()) = futures_util::future::join(clients, killer).await;
    let issued = acknowledged(&log);
    let status = served.child.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    assert!(
        issued.len() > 20,
        "the load ran before the kill ({} licences)",
        issued.len()
    );

    // Restarted on the same database and keys, it serves again.
    let data_dir = served.data_dir().to_string_lossy().to_string();
    let restarted = serve(&url, &[("GATEKEEPER_DATA_DIR", &data_dir)]).await;
    let (code, _, _) = restarted.call("GET", "/readyz", "", None, &[]).await;
    assert_eq!(code, 200);

    // Every acknowledged licence is there with its decision; every allowing
    // event has its licence; the chain verifies.
    let store = assert_durable(&url, &issued);
    let mut allowed = Vec::new();
    store
        .for_each_event(&Default::default(), |e| {
            if e["action"] == "decision.issue" && e["outcome"] == "allow" {
                allowed.push(
                    e["subject"]["license"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            true
        })
        .unwrap();
    assert!(allowed.len() >= issued.len());
    for id in &allowed {
        assert!(
            store.license(id).unwrap().is_some(),
            "event for licence {id} without the licence"
        );
    }
    let report = store.verify_chain(&[], &served.license_keys()).unwrap();
    assert!(report.ok, "{report:?}");
    assert!(
        report.checkpoints_checked > 0,
        "the checkpoints signed before the kill verify: {report:?}"
    );
    eprintln!(
        "kill -9 under load: {} licences acknowledged, {} allowing events, each with its licence; chain and {} checkpoints verified",
        issued.len(),
        allowed.len(),
        report.checkpoints_checked
    );
}

#[actix_web::test]
async fn a_flooding_tenant_is_limited_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gk.db").display());
    let served = serve(
        &url,
        &[
            ("GATEKEEPER_RATE_LIMIT", "5"),
            ("GATEKEEPER_RATE_BURST", "10"),
        ],
    )
    .await;
    let (admin, flooder) = served.setup().await;
    let (status, _, _) = served
        .call(
            "PUT",
            "/v1/resellers/quiet",
            &admin,
            Some(json!({"name": "Q", "country": "DE", "us_person": false})),
            &[],
        )
        .await;
    assert_eq!(status, 201);
    let quiet = served.token(&["--role", "reseller", "--reseller", "quiet"]);
    let ask = json!({"transaction": "issue", "product": "ACME-VPN",
                     "customer": {"id": "c", "name": "n", "country": "DE", "us_person": false}});
    let mut limited = None;
    for _ in 0..40 {
        let (status, body, headers) = served
            .call("POST", "/v1/decisions", &flooder, Some(ask.clone()), &[])
            .await;
        if status == 429 {
            limited = Some((body, headers));
            break;
        }
        assert_eq!(status, 200);
    }
    let (body, headers) = limited.expect("the flood is limited");
    assert_eq!(body["code"], "rate_limited");
    let retry: u64 = headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    assert!(headers
        .get("ratelimit-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("q=10"));
    assert!(headers.get("ratelimit").is_some());
    // The other tenant is not affected.
    let (status, _, _) = served
        .call("POST", "/v1/decisions", &quiet, Some(ask.clone()), &[])
        .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn terminated_database_connections_never_yield_a_2xx_without_its_rows() {
    let Some((db, _)) = postgres_db() else {
        return;
    };
    let url = db.url();
    let served = serve(&url, &[]).await;
    let (_, reseller) = served.setup().await;
    let database = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let served_ref = &served;
    let reseller_ref = &reseller;
    // Six clients issue licences, keeping the log of every answer.
    let clients = issue_load(served_ref, reseller_ref, 6, 150, false);
    // Meanwhile, the service's connections are killed, again and again.
    let killer = async {
        for _ in 0..15 {
            actix_web::rt::time::sleep(Duration::from_millis(60)).await;
            db.execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            ))
            .unwrap();
        }
    };
    let (log, ()) = futures_util::future::join(clients, killer).await;
    assert!(
        log.iter()
            .all(|(status, _, retry)| *status != 503 || *retry),
        "503 carries Retry-After"
    );
    assert!(
        log.iter().all(|(s, _, _)| *s == 201 || *s == 503),
        "only 201 or 503: {:?}",
        log.iter()
            .map(|(s, _, _)| *s)
            .filter(|s| *s != 201)
            .collect::<Vec<_>>()
    );
    let created = acknowledged(&log);
    assert!(
        created.len() > 100,
        "the service kept working between kills ({})",
        created.len()
    );

    let store = assert_durable(&url, &created);
    let mut allowed = 0usize;
    store
        .for_each_event(&Default::default(), |e| {
            if e["action"] == "decision.issue" && e["outcome"] == "allow" {
                allowed += 1;
            }
            true
        })
        .unwrap();
    let licences = store.licenses(None, None, 10_000).unwrap().rows.len();
    assert_eq!(
        allowed, licences,
        "one allowing event per licence, no more, no less"
    );
    assert!(licences >= created.len());
    assert!(store.verify_chain(&[], &served.license_keys()).unwrap().ok);
    eprintln!(
        "15 rounds of pg_terminate_backend under load: {} answers, {} 201 and {} 503; {} licences, each with one allowing event; chain verified",
        log.len(),
        created.len(),
        log.len() - created.len(),
        licences
    );
    // And it still serves.
    let (code, _, _) = served.call("GET", "/readyz", "", None, &[]).await;
    assert_eq!(code, 200);
}

/// The pool does not test a connection at every check-out (a round trip
/// per request), only once it has gone untested for 100 ms: pooled
/// connections killed a moment ago are found dead and replaced, and no
/// read after that moment is refused.
#[actix_web::test]
async fn pooled_connections_killed_are_replaced_before_they_are_handed_out() {
    let Some((db, _)) = postgres_db() else {
        return;
    };
    let url = db.url();
    let served = serve(&url, &[("GATEKEEPER_DB_POOL_SIZE", "4")]).await;
    let (_, reseller) = served.setup().await;
    let (status, id, _) = served.issue_one(&reseller).await;
    assert_eq!(status, 201);
    let path = format!("/v1/licenses/{}", id.unwrap());
    // Reads from several clients at once: every pooled connection in use.
    let reads = |rounds: usize| {
        let (served, path, reseller) = (&served, &path, &reseller);
        futures_util::future::join_all((0..8).map(move |_| async move {
            let mut statuses = Vec::new();
            for _ in 0..rounds {
                statuses.push(served.call("GET", path, reseller, None, &[]).await.0);
            }
            statuses
        }))
    };
    let before: Vec<u16> = reads(10).await.into_iter().flatten().collect();
    assert!(before.iter().all(|s| *s == 200), "{before:?}");
    let pooled = |db: &crate::helpers::TestDb| {
        db.count(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
    };
    let live_before = pooled(&db);
    assert!(
        live_before >= 4,
        "the pool and the writer's connections: {live_before}"
    );
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<u16> = reads(10).await.into_iter().flatten().collect();
    assert!(
        after.iter().all(|s| *s == 200),
        "a killed connection was handed out: {after:?}"
    );
    assert!(pooled(&db) >= 1, "new connections were opened");
}

#[actix_web::test]
async fn slow_clients_are_cut_off_and_do_not_hold_the_service() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gk.db").display());
    let served = serve(&url, &[("GATEKEEPER_REQUEST_TIMEOUT", "1")]).await;
    let address = served.base.trim_start_matches("http://").to_string();
    // 300 clients that start a request and never finish its head.
    let mut slow: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&address).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // The service still answers others.
    let (status, body, _) = served.call("GET", "/healthz", "", None, &[]).await;
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    // And it closes the slow ones once their time is up (408, then EOF).
    let cut = std::thread::spawn(move || {
        slow.iter_mut()
            .map(|s| {
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).is_ok()
                    && (answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"))
            })
            .filter(|cut| *cut)
            .count()
    })
    .join()
    .unwrap();
    assert_eq!(cut, 300, "every slow client was cut off");
    let (status, _, _) = served.call("GET", "/readyz", "", None, &[]).await;
    assert_eq!(status, 200);
}
