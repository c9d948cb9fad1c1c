//! Operations: metrics, health and readiness.

use serde_json::json;

use crate::both;
use crate::helpers::{sample, TestApp};

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
