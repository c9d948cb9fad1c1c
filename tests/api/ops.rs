//! Operations: metrics, health and readiness.

use serde_json::json;

use crate::both;
use crate::helpers::{sample, TestApp};
use crate::impact::{licensed, settled, vendors};

both!(metrics_count_what_happens_without_caller_values_in_labels);
async fn metrics_count_what_happens_without_caller_values_in_labels(app: TestApp) {
    app.register("alpha", "BR", false).await;
    app.add_oem_firewall().await;
    for country in ["US", "US", "BR"] {
        let body = json!({"transaction": "issue", "product": "ACME-FW-K",
                          "customer": {"id": "secret-customer-id", "name": "Zebediah Quux", "country": country}});
        assert_eq!(app.preflight("alpha", body).await.status, 200);
    }
    // The gauges read from the database are refreshed on a timer (1 s here).
    let m = metrics_when(&app, |text| {
        sample(text, "gatekeeper_review_queue_depth") == Some(1.0)
    })
    .await;
    let text = &m;
    assert_eq!(
        sample(
            text,
            "gatekeeper_decisions_total{outcome=\"deny\",transaction=\"issue\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            text,
            "gatekeeper_decisions_total{outcome=\"review\",transaction=\"issue\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(text, "gatekeeper_refusals_total{designation=\"us-icts-kaspersky-2024\",rule=\"full-cutoff\"}"),
        Some(2.0)
    );
    assert_eq!(sample(text, "gatekeeper_review_queue_depth"), Some(1.0));
    assert_eq!(sample(text, "gatekeeper_ready"), Some(1.0));
    assert_eq!(sample(text, "gatekeeper_license_audit_mismatch"), Some(0.0));
    assert_eq!(
        sample(text, "gatekeeper_checkpoint_age_seconds"),
        Some(-1.0),
        "no checkpoint yet"
    );
    assert_eq!(
        sample(text, "gatekeeper_catalog_version"),
        Some(5.0),
        "shipped + reseller + org + 2 products"
    );
    assert!(sample(text, "gatekeeper_audit_head_seq").unwrap() >= 12.0);
    assert!(sample(text, "gatekeeper_ledger_batch_size_count").unwrap() >= 1.0);
    assert!(sample(text, "gatekeeper_db_pool_wait_seconds_count").unwrap() >= 1.0);
    assert!(text.contains("gatekeeper_db_pool_connections{state=\"idle\"}"));
    assert!(text.contains("gatekeeper_build_info{version=\""));
    assert!(
        text.contains("gatekeeper_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/decisions\",status=\"200\"}"),
        "routes are labelled by their pattern"
    );
    app.get("/v1/decisions/some-id-nobody-has", &app.compliance())
        .await;
    let text = app.send("GET", "/metrics", None, None).await.text;
    assert!(text.contains("route=\"/v1/decisions/{id}\""));
    for leak in [
        "secret-customer-id",
        "Zebediah",
        "some-id-nobody-has",
        "Bearer",
        "eyJ",
    ] {
        assert!(!text.contains(leak), "{leak} must not appear in metrics");
    }

    // A checkpoint makes its age known.
    app.send(
        "POST",
        "/v1/audit/checkpoints",
        Some(&app.compliance()),
        None,
    )
    .await;
    let text = metrics_when(&app, |text| {
        sample(text, "gatekeeper_checkpoint_age_seconds").is_some_and(|age| age >= 0.0)
    })
    .await;
    let age = sample(&text, "gatekeeper_checkpoint_age_seconds").unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
}

/// `gatekeeper_impact_runs` of one trigger kind and status.
fn impact_runs(text: &str, trigger: &str, status: &str) -> Option<f64> {
    sample(
        text,
        &format!("gatekeeper_impact_runs{{status=\"{status}\",trigger=\"{trigger}\"}}"),
    )
}

both!(impact_runs_show_in_the_metrics_by_trigger_and_state);
async fn impact_runs_show_in_the_metrics_by_trigger_and_state(app: TestApp) {
    // As tests/api/impact.rs: a vendor outside every designation, and a
    // licence of its product to a U.S. customer.
    vendors(&app).await;
    licensed(
        &app,
        "SCY-AV",
        json!({"id": "c-us", "name": "Initech", "country": "US"}),
    )
    .await;
    // Before any run every kind and state is exported, at 0.
    let text = app.send("GET", "/metrics", None, None).await.text;
    for trigger in ["catalog_change", "rule_effective"] {
        for status in ["running", "complete"] {
            assert_eq!(
                impact_runs(&text, trigger, status),
                Some(0.0),
                "{trigger} {status}"
            );
        }
    }
    assert_eq!(
        sample(&text, "gatekeeper_impact_oldest_running_seconds"),
        Some(0.0)
    );

    // A ban whose full cut-off is three seconds ahead: the change caps the
    // licence (a catalog_change run), the instant ends it (a rule_effective
    // run).
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(3);
    app.admin_put(
        "/v1/designations/test-ban",
        json!({
            "title": "Test ban", "authority": "Test", "citation": "T 1",
            "organizations": ["secure-cy"], "covers_affiliates": false, "jurisdiction": "US",
            "rules": [{"id": "cutoff", "transactions": ["issue", "renew"],
                       "effective_from": cutoff.format("%Y-%m-%dT%H:%M:%S").to_string(),
                       "time_zone": "UTC", "ends_service": true}],
        }),
    )
    .await;
    let runs = settled(&app, 2).await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let text = metrics_when(&app, |text| {
        impact_runs(text, "rule_effective", "complete") == Some(1.0)
    })
    .await;
    assert_eq!(impact_runs(&text, "rule_effective", "complete"), Some(1.0));
    assert_eq!(impact_runs(&text, "catalog_change", "complete"), Some(1.0));
    assert_eq!(impact_runs(&text, "catalog_change", "running"), Some(0.0));
    assert_eq!(impact_runs(&text, "rule_effective", "running"), Some(0.0));
    assert_eq!(
        sample(&text, "gatekeeper_impact_oldest_running_seconds"),
        Some(0.0),
        "nothing is running"
    );
    assert_eq!(
        sample(&text, "gatekeeper_impact_actions_total{action=\"capped\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gatekeeper_impact_actions_total{action=\"ended\"}"),
        Some(1.0)
    );
    for trigger in ["catalog_change", "rule_effective"] {
        assert_eq!(
            sample(
                &text,
                &format!("gatekeeper_impact_runs_completed_total{{trigger=\"{trigger}\"}}")
            ),
            Some(1.0),
            "{trigger}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("gatekeeper_impact_run_lag_seconds_count{{trigger=\"{trigger}\"}}")
            ),
            Some(1.0),
            "{trigger}"
        );
    }
}

both!(a_stuck_impact_run_shows_its_age_until_it_completes);
async fn a_stuck_impact_run_shows_its_age_until_it_completes(app: TestApp) {
    // A run opened for a rule instant 20 minutes ago that cannot advance:
    // its reach does not read, so every tick fails on it ("advancing impact
    // runs") and it stays running. Written behind the service's back; it
    // sorts after every real run.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(20))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let id = "ffffffff-ffff-7fff-bfff-ffffffffffff";
    app.db
        .execute(&format!(
            "INSERT INTO impact_runs (id, trigger_key, trigger_spec, at, reach, status, audit_seq) \
             VALUES ('{id}', 'rule:test-ban/cutoff/{at}', \
             '{{\"kind\":\"rule_effective\",\"designation\":\"test-ban\",\"rule\":\"cutoff\"}}', \
             '{at}', 'not json', 'running', 0)"
        ))
        .unwrap();
    let text = metrics_when(&app, |text| {
        impact_runs(text, "rule_effective", "running") == Some(1.0)
    })
    .await;
    assert_eq!(impact_runs(&text, "rule_effective", "running"), Some(1.0));
    assert_eq!(impact_runs(&text, "rule_effective", "complete"), Some(0.0));
    let age = sample(&text, "gatekeeper_impact_oldest_running_seconds").unwrap();
    assert!(
        (1200.0..1260.0).contains(&age),
        "measured from the run's instant: {age}"
    );
    // Its age is computed at each scrape, not at the refresh.
    let later = metrics_when(&app, |text| {
        sample(text, "gatekeeper_impact_oldest_running_seconds").is_some_and(|a| a > age + 1.0)
    })
    .await;
    assert_eq!(impact_runs(&later, "rule_effective", "running"), Some(1.0));

    // Once it reads (an empty reach), the next tick completes it, and its lag
    // is counted from its instant: over 15 minutes, under an hour.
    app.db
        .execute(&format!(
            "UPDATE impact_runs SET reach = '{{\"products\":[],\"resellers\":[]}}' WHERE id = '{id}'"
        ))
        .unwrap();
    let text = metrics_when(&app, |text| {
        impact_runs(text, "rule_effective", "complete") == Some(1.0)
    })
    .await;
    assert_eq!(impact_runs(&text, "rule_effective", "complete"), Some(1.0));
    assert_eq!(impact_runs(&text, "rule_effective", "running"), Some(0.0));
    assert_eq!(
        sample(&text, "gatekeeper_impact_oldest_running_seconds"),
        Some(0.0)
    );
    let bucket = |le: &str| {
        sample(
            &text,
            &format!(
                "gatekeeper_impact_run_lag_seconds_bucket{{trigger=\"rule_effective\",le=\"{le}\"}}"
            ),
        )
    };
    assert_eq!((bucket("900"), bucket("3600")), (Some(0.0), Some(1.0)));
}

/// The metrics text once `ready` holds of it (within 10 s).
async fn metrics_when(app: &TestApp, ready: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        let m = app.send("GET", "/metrics", None, None).await;
        assert_eq!(m.status, 200);
        text = m.text;
        if ready(&text) {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    text
}

both!(health_and_readiness_answer_without_a_token);
async fn health_and_readiness_answer_without_a_token(app: TestApp) {
    let h = app.send("GET", "/healthz", None, None).await;
    assert_eq!(
        (h.status.as_u16(), h.body.clone()),
        (200, json!({"status": "ok"}))
    );
    let r = app.send("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ready");
}
