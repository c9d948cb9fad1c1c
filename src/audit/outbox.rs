//! What a reseller hears of each audit event: the outbox's events, derived
//! from the audit event that records the change, by a pure function.
//!
//! The store writes the derived events in the transaction that appends the
//! audit event (so none is lost or invented), and verification derives them
//! again from the chain and compares (so an edit of the outbox is named).
//! An event is `{id, type, created_at, reseller, data}`:
//!
//! - `id` is `evt_` and the audit event's id without hyphens (with `_1`,
//!   `_2`… for a second and third event of one audit event), so a
//!   consumer's deduplication by `webhook-id` and an auditor's check agree;
//! - `created_at` is the audit event's `at`;
//! - `reseller` is the tenant the audit event concerns (its `reseller`
//!   column, itself checked against the chain); `impact.completed` has none
//!   and is compliance's alone;
//! - `data` holds what the change did: the licence as it now stands
//!   (`license`, without its token: a consumer reads `GET /v1/licenses/{id}`
//!   for the new one), the decision behind it (`decision`), the review
//!   (`review`) or the run (`run`).

use serde_json::{json, Map, Value};

/// Every event type, as `event_types` filters and `?type=` name them.
pub const EVENT_TYPES: [&str; 11] = [
    "license.issued",
    "license.renewed",
    "license.capped",
    "license.ended",
    "license.renewal_blocked",
    "license.suspended",
    "license.reinstated",
    "license.revoked",
    "review.opened",
    "review.resolved",
    "impact.completed",
];

/// The types that concern no tenant: only compliance reads or receives them.
pub const UNTENANTED: [&str; 1] = ["impact.completed"];

/// One event derived from an audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub id: String,
    pub event_type: &'static str,
    pub reseller: Option<String>,
    pub created_at: String,
    pub data: Value,
}

/// The events an audit event (as exported) makes, in order; `tenant` is the
/// tenant it concerns (the store's `reseller` column of the event).
pub fn derive(event: &Value, tenant: Option<&str>) -> Vec<Derived> {
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    let action = text("/action").unwrap_or("");
    let outcome = text("/outcome").unwrap_or("");
    let subject = event.get("subject").unwrap_or(&Value::Null);
    let decision = event.get("decision").cloned().unwrap_or(Value::Null);
    let with_decision = |mut data: Value| {
        if !decision.is_null() {
            data["decision"] = decision.clone();
        }
        if let Some(run) = subject.get("impact_run") {
            data["impact_run"] = run.clone();
        }
        data
    };
    let licence = || with_decision(json!({"license": license(subject)}));
    let mut made: Vec<(&'static str, Value)> = Vec::new();
    // A decision wrote a licence when its subject carries the licence's term.
    let wrote = subject.pointer("/license/starts_at").is_some();
    match (action, outcome) {
        ("decision.issue" | "decision.renew", "review") => {
            let kind = if action == "decision.issue" {
                "issue"
            } else {
                "renew"
            };
            let mut review = json!({"decision_id": subject.get("id"), "kind": kind});
            if kind == "renew" {
                review["license_id"] = subject.pointer("/license/id").cloned().into();
            }
            made.push(("review.opened", with_decision(json!({"review": review}))));
        }
        ("decision.issue", "allow") if wrote => made.push(("license.issued", licence())),
        ("decision.renew", "allow") if wrote => made.push(("license.renewed", licence())),
        ("decision.reinstate", "allow") if wrote => {
            made.push(("license.reinstated", licence()));
        }
        ("decision.impact_review", _) if wrote => {
            // The approval of an impact review says what it did to the
            // licence (`effects`), in the order it did it.
            let effects = subject.get("effects").and_then(Value::as_array);
            for effect in effects.into_iter().flatten().filter_map(Value::as_str) {
                let kind = match effect {
                    "ended" => "license.ended",
                    "capped" => "license.capped",
                    "renewal_blocked" => "license.renewal_blocked",
                    "reinstated" => "license.reinstated",
                    _ => continue,
                };
                made.push((kind, licence()));
            }
        }
        ("impact.ended", _) => made.push(("license.ended", licence())),
        ("impact.capped", _) => made.push(("license.capped", licence())),
        ("impact.renewal_blocked", _) => made.push(("license.renewal_blocked", licence())),
        ("impact.review", _) => {
            let review = json!({
                "decision_id": subject.get("id"),
                "kind": "impact",
                "license_id": subject.pointer("/license/id"),
                "due": subject.pointer("/license/impact_review/due"),
            });
            made.push((
                "review.opened",
                with_decision(json!({"review": review, "license": license(subject)})),
            ));
        }
        ("license.suspend", _) => made.push(("license.suspended", licence())),
        ("license.revoke", _) => made.push(("license.revoked", licence())),
        ("license.end", _) => made.push(("license.ended", licence())),
        ("review.approve" | "review.reject", _) => {
            let mut review = Map::new();
            review.insert("decision_id".into(), subject.get("id").cloned().into());
            for (from, to) in [
                ("status", "status"),
                ("resolution", "resolution"),
                ("outcome", "outcome"),
                ("decision_id", "new_decision_id"),
                ("license_id", "license_id"),
                ("resolved_at", "resolved_at"),
            ] {
                if let Some(value) = subject.get(from).filter(|v| !v.is_null()) {
                    review.insert(to.into(), value.clone());
                }
            }
            made.push(("review.resolved", json!({"review": review})));
        }
        ("impact.complete", _) => {
            let mut run = Map::new();
            for key in ["id", "counts", "licenses_checked", "completed_at"] {
                if let Some(value) = subject.get(key) {
                    run.insert(key.into(), value.clone());
                }
            }
            made.push(("impact.completed", json!({"run": run})));
        }
        _ => {}
    }
    let id = text("/id").unwrap_or("").replace('-', "");
    let created_at = text("/at").unwrap_or("").to_string();
    made.into_iter()
        .enumerate()
        .map(|(i, (event_type, data))| Derived {
            id: match i {
                0 => format!("evt_{id}"),
                n => format!("evt_{id}_{n}"),
            },
            event_type,
            reseller: if UNTENANTED.contains(&event_type) {
                None
            } else {
                tenant.map(str::to_owned)
            },
            created_at: created_at.clone(),
            data,
        })
        .collect()
}

/// The licence as an event shows it, from an audit subject: a change of
/// standing records the licence whole (`subject.license`); a decision
/// records its term there and the rest beside it.
fn license(subject: &Value) -> Value {
    let l = subject.get("license").unwrap_or(&Value::Null);
    let field = |key: &str, beside: Option<&Value>| {
        l.get(key)
            .filter(|v| !v.is_null())
            .or(beside)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut out = Map::new();
    out.insert("id".into(), field("id", None));
    out.insert("product".into(), field("product", subject.get("product")));
    out.insert(
        "reseller".into(),
        field("reseller", subject.pointer("/reseller/id")),
    );
    out.insert(
        "customer".into(),
        field("customer", subject.get("customer")),
    );
    for key in ["seats", "starts_at", "expires_at", "status"] {
        out.insert(key.into(), field(key, None));
    }
    out.insert(
        "decision_id".into(),
        field("decision_id", subject.get("id")),
    );
    for key in ["status_reason", "ended_by", "renewal_blocked"] {
        if let Some(value) = l.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn audit(action: &str, outcome: Option<&str>, subject: Value) -> Value {
        let mut e = json!({"seq": 7, "id": "0192-ab", "at": "2026-12-02T10:00:00.000000Z",
                           "action": action, "subject": subject,
                           "decision": {"id": "d-1", "outcome": outcome}});
        if let Some(o) = outcome {
            e["outcome"] = json!(o);
        }
        e
    }

    fn issued_subject() -> Value {
        json!({"kind": "decision", "id": "d-1", "product": "SCY-AV",
               "customer": {"id": "c-1", "name": "Initech", "country": "US"},
               "reseller": {"id": "alpha", "country": "DE"},
               "license": {"id": "l-1", "seats": 5, "starts_at": "s", "expires_at": "e",
                           "status": "active", "status_idx": 3, "token_sha256": "ab",
                           "ended_by": null}})
    }

    #[test]
    fn an_issue_makes_license_issued_with_the_licence_whole_and_no_token() {
        let made = derive(
            &audit("decision.issue", Some("allow"), issued_subject()),
            Some("alpha"),
        );
        assert_eq!(made.len(), 1);
        let e = &made[0];
        assert_eq!(
            (e.id.as_str(), e.event_type),
            ("evt_0192ab", "license.issued")
        );
        assert_eq!(e.reseller.as_deref(), Some("alpha"));
        assert_eq!(e.created_at, "2026-12-02T10:00:00.000000Z");
        assert_eq!(
            e.data["license"],
            json!({"id": "l-1", "product": "SCY-AV", "reseller": "alpha",
                   "customer": {"id": "c-1", "name": "Initech", "country": "US"},
                   "seats": 5, "starts_at": "s", "expires_at": "e", "status": "active",
                   "decision_id": "d-1"})
        );
        assert_eq!(e.data["decision"]["id"], "d-1");
    }

    #[test]
    fn a_denial_or_a_preflight_makes_nothing() {
        assert!(derive(
            &audit("decision.issue", Some("deny"), issued_subject()),
            Some("a")
        )
        .is_empty());
        assert!(derive(
            &audit("decision.preflight", Some("allow"), issued_subject()),
            Some("a")
        )
        .is_empty());
        assert!(derive(&audit("catalog.product.put", None, json!({})), None).is_empty());
    }

    #[test]
    fn a_decision_in_review_opens_a_review() {
        let subject = json!({"kind": "decision", "id": "d-2", "license": {"id": "l-9"}});
        let made = derive(
            &audit("decision.renew", Some("review"), subject),
            Some("alpha"),
        );
        assert_eq!(made[0].event_type, "review.opened");
        assert_eq!(
            made[0].data["review"],
            json!({"decision_id": "d-2", "kind": "renew", "license_id": "l-9"})
        );
    }

    #[test]
    fn an_approved_impact_review_reports_each_effect_with_its_own_id() {
        let mut subject = issued_subject();
        subject["effects"] = json!(["reinstated", "capped"]);
        let made = derive(
            &audit("decision.impact_review", Some("allow"), subject),
            Some("alpha"),
        );
        let kinds: Vec<_> = made.iter().map(|e| (e.id.as_str(), e.event_type)).collect();
        assert_eq!(
            kinds,
            vec![
                ("evt_0192ab", "license.reinstated"),
                ("evt_0192ab_1", "license.capped")
            ]
        );
    }

    #[test]
    fn a_completed_run_concerns_no_tenant() {
        let subject = json!({"kind": "impact_run", "id": "r-1", "counts": {"ended": 1},
                             "licenses_checked": 3, "completed_at": "t", "status": "complete"});
        let made = derive(&audit("impact.complete", None, subject), Some("alpha"));
        assert_eq!(made[0].event_type, "impact.completed");
        assert_eq!(made[0].reseller, None);
        assert_eq!(
            made[0].data,
            json!({"run": {"id": "r-1", "counts": {"ended": 1}, "licenses_checked": 3,
                           "completed_at": "t"}})
        );
    }

    #[test]
    fn a_resolution_names_the_review_and_what_it_came_to_but_not_the_note() {
        let subject = json!({"kind": "review", "id": "d-1", "status": "approved",
                             "resolution": "approve", "outcome": "allow", "decision_id": "d-2",
                             "license_id": "l-1", "note": "internal", "resolved_at": "t",
                             "reviewer": {"sub": "someone"}});
        let made = derive(&audit("review.approve", None, subject), Some("alpha"));
        assert_eq!(
            made[0].data,
            json!({"review": {"decision_id": "d-1", "status": "approved",
                              "resolution": "approve", "outcome": "allow",
                              "new_decision_id": "d-2", "license_id": "l-1",
                              "resolved_at": "t"}})
        );
    }
}
