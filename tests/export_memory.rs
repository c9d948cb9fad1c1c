//! A large audit trail exports as a stream: the server's memory stays
//! bounded however many events there are, and the export verifies offline
//! line by line. Its own test binary, so that the process's peak RSS is
//! this test's alone.
//!
//! `EXPORT_EVENTS=1000000 cargo test --release --test export_memory -- --nocapture`
//! measures a million events (CI runs 200,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::Write;

use diesel::prelude::*;
use futures_util::StreamExt;
use gatekeeper::audit::{seal, GENESIS_HASH};
use gatekeeper::store::schema::{audit_events, ledger_head};
use serde_json::{json, Value};

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Writes `n` chained decision events straight into the database.
fn fill(path: &str, n: i64) {
    let mut conn = diesel::SqliteConnection::establish(path).unwrap();
    let mut prev = GENESIS_HASH.to_string();
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        let mut seq = 0;
        while seq < n {
            let mut rows = Vec::with_capacity(1000);
            for _ in 0..1000.min(n - seq) {
                seq += 1;
                let Value::Object(map) = json!({
                    "seq": seq, "id": format!("00000000-0000-7000-8000-{seq:012}"),
                    "at": "2026-11-27T12:00:00.000000Z", "action": "decision.preflight",
                    "actor": {"sub": "load", "role": "reseller", "reseller": "alpha"}, "outcome": "deny",
                    "decision": {"id": format!("d-{seq}"), "transaction": "issue", "outcome": "deny",
                                 "as_of": "2026-11-27T12:00:00Z", "policy_version": "5", "audit_seq": seq,
                                 "constraints": {"not_after": null},
                                 "reasons": [{"code": "designated_lineage", "designation": "us-icts-kaspersky-2024",
                                              "rule": "full-cutoff", "citation": "89 FR 52434",
                                              "effective_from": "2024-09-29T04:00:00Z", "party": "customer",
                                              "path": [{"kind": "product", "id": "ACME-FW-K"},
                                                       {"kind": "product", "id": "KAV-ENGINE", "via": "component"},
                                                       {"kind": "organization", "id": "ao-kaspersky-lab", "via": "vendor"}]}]},
                    "subject": {"kind": "decision", "id": format!("d-{seq}"), "product": "ACME-FW-K",
                                "customer": {"id": format!("c-{seq}"), "name": "Jane Roe", "country": "US"}},
                    "policy_version": "5", "prev_hash": prev,
                }) else {
                    unreachable!()
                };
                let (mut sealed, hash) = seal(map);
                sealed.remove("hash");
                let event = gatekeeper::audit::canonical_json(&Value::Object(sealed));
                rows.push((
                    audit_events::seq.eq(seq),
                    audit_events::id.eq(format!("e-{seq}")),
                    audit_events::at.eq("2026-11-27T12:00:00.000000Z"),
                    audit_events::action.eq("decision.preflight"),
                    audit_events::outcome.eq(Some("deny")),
                    audit_events::reseller.eq(Some("alpha")),
                    audit_events::event.eq(event),
                    audit_events::prev_hash.eq(prev.clone()),
                    audit_events::hash.eq(hash.clone()),
                ));
                prev = hash;
            }
            diesel::insert_into(audit_events::table).values(&rows).execute(conn)?;
        }
        diesel::update(ledger_head::table)
            .set((ledger_head::seq.eq(n), ledger_head::hash.eq(&prev)))
            .execute(conn)?;
        Ok(())
    })
    .unwrap();
}

#[actix_web::test]
async fn a_large_trail_streams_in_bounded_memory_and_verifies_offline() {
    let n: i64 = std::env::var("EXPORT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let app = helpers::spawn_app(helpers::Backend::Sqlite).await.unwrap();
    // Replace the shipped catalogue's events with a synthetic trail of n.
    app.db
        .execute("DROP TRIGGER audit_events_no_delete; DELETE FROM audit_events;")
        .unwrap();
    let url = app.db.url();
    fill(url.strip_prefix("sqlite://").unwrap(), n);

    // Reset the peak, then export through the API into a file, chunk by chunk.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = rss_kib("VmHWM:");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut resp = app
        .client
        .get(format!("{}/v1/audit", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.compliance())))
        .insert_header(("accept", "application/x-ndjson"))
        .timeout(std::time::Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut bytes = 0usize;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    let peak = rss_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(before) / 1024;
    let export_mib = bytes / (1024 * 1024);
    println!(
        "exported {n} events ({export_mib} MiB); peak RSS {} MiB before, {} MiB during: +{growth_mib} MiB",
        before / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 64 && (growth_mib as usize) < export_mib / 2,
        "the export must stream: +{growth_mib} MiB of peak RSS for a {export_mib} MiB export"
    );

    // The export alone verifies, offline, line by line.
    let report = gatekeeper::audit::verify_ndjson(
        std::io::BufReader::new(std::fs::File::open(&path).unwrap()),
        &[],
        &[],
    )
    .unwrap();
    assert!(report.ok, "{:?}", report);
    assert_eq!(report.events_checked, n as u64);
}
