//! The contract's JSON and wire formats: catalogue entry specs as the admin API reads them,
//! and reasons and verdicts as the API returns them.

use chrono::NaiveDate;
use serde_json::json;

use super::*;

#[test]
fn contract_designation_json_round_trips() {
    let spec: DesignationSpec = serde_json::from_str(KASPERSKY_JSON).unwrap();
    assert_eq!(spec.citation, "89 FR 52434");
    assert_eq!(spec.organizations, vec![org("kaspersky-lab-inc")]);
    assert!(spec.covers_affiliates);
    assert_eq!(spec.jurisdiction, cc("US"));
    assert_eq!(spec.rules.len(), 2);
    assert!(
        !spec.rules[0].ends_service,
        "ends_service defaults to false"
    );
    assert!(spec.rules[1].ends_service);
    assert_eq!(spec.rules[0].time_zone, chrono_tz::America::New_York);
    assert_eq!(
        spec.rules[1].effective_from,
        NaiveDate::from_ymd_opt(2024, 9, 29)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
    );

    let mut expected: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    // The only difference on the way back: the defaulted flag is written out.
    expected["rules"][0]["ends_service"] = json!(false);
    let back = serde_json::to_value(&spec).unwrap();
    assert_eq!(back, expected);
    assert_eq!(
        back["rules"][0]["effective_from"],
        json!("2024-07-20T00:00:00")
    );
    let again: DesignationSpec = serde_json::from_value(back).unwrap();
    assert_eq!(again, spec);
}

#[test]
fn specs_reject_unknown_fields_and_bad_values() {
    let mut with_outcome: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    with_outcome["outcome"] = json!("allow");
    assert!(serde_json::from_value::<DesignationSpec>(with_outcome).is_err());

    let mut rule_extra: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    rule_extra["rules"][0]["lifted_at"] = json!("2030-01-01T00:00:00");
    assert!(serde_json::from_value::<DesignationSpec>(rule_extra).is_err());

    let mut bad_zone: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    bad_zone["rules"][0]["time_zone"] = json!("Mars/Olympus_Mons");
    let err = serde_json::from_value::<DesignationSpec>(bad_zone).unwrap_err();
    assert!(err.to_string().contains("unknown IANA time zone"), "{err}");

    let mut bad_country: serde_json::Value = serde_json::from_str(KASPERSKY_JSON).unwrap();
    bad_country["jurisdiction"] = json!("us");
    assert!(serde_json::from_value::<DesignationSpec>(bad_country).is_err());

    assert!(serde_json::from_value::<ResellerSpec>(
        json!({"name": "Acme", "country": "US", "us_person": true, "id": "x"})
    )
    .is_err());
    assert!(serde_json::from_value::<RelationshipSpec>(json!({"kind": "owner_of"})).is_err());
    assert_eq!(
        serde_json::from_value::<RelationshipSpec>(json!({"kind": "minority_owned_by"})).unwrap(),
        RelationshipSpec {
            kind: RelKind::MinorityOwnedBy
        }
    );
}

#[test]
fn optional_spec_fields_default_and_are_omitted() {
    let p: ProductSpec = serde_json::from_value(
        json!({"name": "Firewall", "vendor": "acme", "category": "firewall"}),
    )
    .unwrap();
    assert!(p.components.is_empty());
    assert_eq!(p.white_label_of, None);
    let back = serde_json::to_value(&p).unwrap();
    assert_eq!(
        back,
        json!({"name": "Firewall", "vendor": "acme", "category": "firewall", "components": []})
    );

    let o: OrganizationSpec = serde_json::from_value(json!({"name": "Acme"})).unwrap();
    assert_eq!(o.country, None);
    assert!(o.aliases.is_empty());
    assert_eq!(
        serde_json::to_value(&o).unwrap(),
        json!({"name": "Acme", "aliases": []})
    );
}

#[test]
fn contract_example_reason_is_reproduced_exactly() {
    let catalog = build(world());
    let v = decide_at(
        &catalog,
        ISSUE,
        "ACME-FW-K",
        party("US", None),
        party("DE", Some(false)),
        LATER,
    );
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(v.not_after, None);
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(
        json,
        json!({
            "outcome": "deny",
            "reasons": [{"code": "designated_lineage", "designation": "us-icts-kaspersky-2024",
                         "rule": "full-cutoff", "citation": "89 FR 52434",
                         "effective_from": "2024-09-29T04:00:00Z", "party": "customer",
                         "path": [{"kind": "product", "id": "ACME-FW-K"},
                                  {"kind": "product", "id": "KAV-ENGINE", "via": "component"},
                                  {"kind": "organization", "id": "ao-kaspersky-lab", "via": "vendor"}]}],
            "not_after": null
        })
    );
    let again: Verdict = serde_json::from_value(json).unwrap();
    assert_eq!(again, v);
}

#[test]
fn allowed_verdict_serializes_not_after_in_utc() {
    let catalog = build(world());
    let v = decide_at(
        &catalog,
        RENEW,
        "KAV",
        party("US", None),
        party("DE", Some(false)),
        "2024-08-01T00:00:00Z",
    );
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["outcome"], json!("allow"));
    assert_eq!(json["not_after"], json!("2024-09-29T04:00:00Z"));
    assert_eq!(json["reasons"][0]["code"], json!("service_ends"));
    assert_eq!(
        json["reasons"][0]["effective_from"],
        json!("2024-09-29T04:00:00Z")
    );
}
