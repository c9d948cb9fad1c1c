//! An impact run killed midway (kill -9) resumes on restart and acts on
//! every reached licence exactly once, with replicas sharing the work.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::served::{fresh_database, serve, Served};

const LICENCES: usize = 240;

/// The one run so far, as compliance reads it.
async fn the_run(served: &Served, compliance: &str) -> Option<Value> {
    let (status, body, _) = served
        .call("GET", "/v1/impact-runs", compliance, None, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().and_then(|r| r.first().cloned())
}

#[actix_web::test]
async fn a_run_killed_midway_resumes_and_acts_on_each_licence_once() {
    let (_db, url) = fresh_database();
    // Small chunks, so that the run is many writes long.
    let env = [
        ("GATEKEEPER_IMPACT_CHUNK", "3"),
        ("GATEKEEPER_IMPACT_INTERVAL", "1"),
    ];
    let mut first = serve(&url, &env).await;
    let (admin, reseller) = first.setup().await;
    let compliance = first.token(&["--role", "compliance"]);
    // VPN licences for U.S. customers, while Acme is nobody's subsidiary.
    for chunk in (0..LICENCES).collect::<Vec<_>>().chunks(16) {
        let calls = chunk.iter().map(|n| {
            let body = json!({"product": "ACME-VPN", "seats": 1, "term_days": 30,
                "customer": {"id": format!("c-{n}"), "name": "n", "country": "US"}});
            let key = uuid::Uuid::new_v4().to_string();
            let (first, reseller) = (&first, &reseller);
            async move {
                let (status, body, _) = first
                    .call(
                        "POST",
                        "/v1/licenses",
                        reseller,
                        Some(body),
                        &[("idempotency-key", &key)],
                    )
                    .await;
                assert_eq!(status, 201, "{body}");
            }
        });
        futures_util::future::join_all(calls).await;
    }

    // Acme turns out to be Kaspersky's: a run over every VPN licence.
    let (status, body, _) = first
        .call(
            "PUT",
            "/v1/organizations/acme/relationships/ao-kaspersky-lab",
            &admin,
            Some(json!({"kind": "subsidiary_of"})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Killed while the run is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let checked_at_kill = loop {
        if let Some(run) = the_run(&first, &compliance).await {
            let checked = run["licenses_checked"].as_i64().unwrap_or(0);
            assert_eq!(
                run["status"], "running",
                "the run ended before the kill: {run}"
            );
            if checked > 0 {
                first.kill();
                break checked;
            }
        }
        assert!(Instant::now() < deadline, "the run did not start");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    };

    // Restarted (on PostgreSQL, as two replicas sharing the work): the run
    // resumes and completes.
    let data_dir = first.data_dir().to_string_lossy().to_string();
    let env = [
        ("GATEKEEPER_IMPACT_CHUNK", "3"),
        ("GATEKEEPER_IMPACT_INTERVAL", "1"),
        ("GATEKEEPER_DATA_DIR", data_dir.as_str()),
    ];
    let again = serve(&url, &env).await;
    let replica = match url.starts_with("postgres") {
        true => Some(serve(&url, &env).await),
        false => None,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let run = the_run(&again, &compliance).await.expect("the run");
        if run["status"] == "complete" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run did not complete: {run}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(checked_at_kill < LICENCES as i64, "killed midway");
    assert_eq!(run["licenses_checked"], LICENCES, "{run}");
    assert_eq!(run["counts"]["ended"], LICENCES, "{run}");

    // Each licence was acted on once: one action, one event, ended.
    let store = crate::served::assert_durable(&url, &[]);
    let mut events: HashMap<String, usize> = HashMap::new();
    store
        .for_each_event(&Default::default(), |e| {
            if e["action"] == "impact.ended" {
                let id = e["subject"]["license"]["id"].as_str().unwrap_or_default();
                *events.entry(id.to_string()).or_default() += 1;
            }
            true
        })
        .unwrap();
    assert_eq!(events.len(), LICENCES);
    assert!(
        events.values().all(|n| *n == 1),
        "acted on twice: {events:?}"
    );
    let page = store.licenses(None, None, 1000).unwrap();
    assert_eq!(page.rows.len(), LICENCES);
    assert!(page
        .rows
        .iter()
        .all(|l| l.state.standing == gatekeeper::domain::Standing::Ended));
    drop(replica);

    // The chain, and the state it vouches for, verify.
    let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["audit", "verify"])
        .env("GATEKEEPER_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
