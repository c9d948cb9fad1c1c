//! The state the service acts on, as the chain records it: pure functions
//! over exported events that the store's verification and an auditor's
//! tools share.
//!
//! - [`catalog_digest`]: the digest of a whole catalogue, which the last
//!   `catalog.*` event of every catalogue commit records
//!   (`subject.catalog_digest`) for the catalogue as the commit leaves it
//!   (a commit of several changes, such as the shipped seed, records it
//!   once, on its last event). The service refuses to serve a
//!   catalogue whose digest is not the one its latest catalogue event
//!   records, so an edit of the catalogue tables behind its back is caught
//!   at start-up at the cost of one pass over the catalogue.
//! - [`apply_catalog_event`]: the replay of a `catalog.*` event, from which
//!   verification rebuilds the catalogue the chain vouches for.
//! - [`Tenant::of`]: the tenant an event concerns, which the listing's
//!   `reseller` filter reads from a column beside the event.
//! - [`is_what_if`]: whether an event records a what-if decision, which
//!   the listing's `what_if` filter (and the `outcome` filter's default)
//!   reads from a column beside the event.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::{DesignationId, OrgId, ResellerId, Sku};
use crate::policy::{
    CatalogData, DesignationSpec, OrganizationSpec, ProductSpec, RelationshipSpec, ResellerSpec,
};

/// The actions of catalogue events, each a change of one entry.
pub const CATALOG_ACTIONS: [&str; 6] = [
    "catalog.designation.put",
    "catalog.organization.put",
    "catalog.product.put",
    "catalog.relationship.delete",
    "catalog.relationship.put",
    "catalog.reseller.put",
];

/// The SHA-256 (lower-case hex) of the catalogue's canonical JSON (RFC 8785):
/// one object with the members `designations`, `organizations`, `products`,
/// `resellers` (each an object from id to the entry's request body, as the
/// admin API takes it) and `relationships` (source id to target id to
/// `{"kind"}`). Streamed into the hash entry by entry, never built whole.
pub fn catalog_digest(data: &CatalogData) -> String {
    let mut out = Hasher::default();
    out.put("{\"designations\":");
    out.object(data.designations.iter().map(|(k, v)| (k.as_str(), v)));
    out.put(",\"organizations\":");
    out.object(data.organizations.iter().map(|(k, v)| (k.as_str(), v)));
    out.put(",\"products\":");
    out.object(data.products.iter().map(|(k, v)| (k.as_str(), v)));
    out.put(",\"relationships\":{");
    // Relationships are keyed (source, target) in order, so each source's
    // targets come together.
    let mut current: Option<&OrgId> = None;
    for ((source, target), kind) in &data.relationships {
        if current != Some(source) {
            if current.is_some() {
                out.put("},");
            }
            out.key(source.as_str());
            out.put("{");
            current = Some(source);
        } else {
            out.put(",");
        }
        out.key(target.as_str());
        out.value(&RelationshipSpec { kind: *kind });
    }
    if current.is_some() {
        out.put("}");
    }
    out.put("},\"resellers\":");
    out.object(data.resellers.iter().map(|(k, v)| (k.as_str(), v)));
    out.put("}");
    hex::encode(out.sha.finalize())
}

/// Canonical JSON written straight into a SHA-256.
///
/// Each entry is serialised by serde_json from its `Value` (not from the
/// struct, whose field order is its declaration's): member names come out
/// sorted by their bytes, which for the specs' ASCII field names and the
/// validated ASCII ids is RFC 8785's UTF-16 order; serde_json escapes
/// strings exactly as RFC 8785 does (`"`, `\`, and U+0000-U+001F, with the
/// short forms `\b \t \n \f \r`, all else literal UTF-8); and specs hold
/// integers only. So no entry is re-sorted or copied on its way into the
/// hash (the test below holds this to [`crate::audit::canonical_json`]).
#[derive(Default)]
struct Hasher {
    sha: Sha256,
}

impl Hasher {
    fn put(&mut self, text: &str) {
        self.sha.update(text.as_bytes());
    }

    /// A member name and its colon.
    fn key(&mut self, key: &str) {
        // Writing into a hash cannot fail; a failure would make the digest
        // (and so the check) fail, never panic.
        let _ = serde_json::to_writer(&mut self.sha, key);
        self.put(":");
    }

    fn value<T: serde::Serialize>(&mut self, value: &T) {
        // A spec always serialises; a failure would be a bug, hashed as null
        // so that the digest (and so the check) fails rather than panics.
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        let _ = serde_json::to_writer(&mut self.sha, &value);
    }

    fn object<'a, T: serde::Serialize + 'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a str, &'a T)>,
    ) {
        self.put("{");
        for (i, (key, value)) in entries.enumerate() {
            if i > 0 {
                self.put(",");
            }
            self.key(key);
            self.value(value);
        }
        self.put("}");
    }
}

/// Applies one `catalog.*` event (as exported) to `data`; an event that is
/// not a well-formed catalogue change is an error message.
pub fn apply_catalog_event(data: &mut CatalogData, event: &Value) -> Result<(), String> {
    let action = event.get("action").and_then(Value::as_str).unwrap_or("");
    let subject = event.get("subject").unwrap_or(&Value::Null);
    let id = subject.get("id").and_then(Value::as_str).unwrap_or("");
    fn spec<T: serde::de::DeserializeOwned>(subject: &Value) -> Result<T, String> {
        serde_json::from_value(subject.get("spec").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("spec: {e}"))
    }
    match action {
        "catalog.reseller.put" => {
            let spec: ResellerSpec = spec(subject)?;
            data.resellers.insert(ResellerId::parse(id)?, spec);
        }
        "catalog.organization.put" => {
            let spec: OrganizationSpec = spec(subject)?;
            data.organizations.insert(OrgId::parse(id)?, spec);
        }
        "catalog.product.put" => {
            let spec: ProductSpec = spec(subject)?;
            data.products.insert(Sku::parse(id)?, spec);
        }
        "catalog.designation.put" => {
            let spec: DesignationSpec = spec(subject)?;
            data.designations.insert(DesignationId::parse(id)?, spec);
        }
        "catalog.relationship.put" | "catalog.relationship.delete" => {
            let (source, target) = id
                .split_once('/')
                .ok_or_else(|| format!("relationship id {id:?}"))?;
            let key = (OrgId::parse(source)?, OrgId::parse(target)?);
            if action.ends_with(".put") {
                let spec: RelationshipSpec = spec(subject)?;
                data.relationships.insert(key, spec.kind);
            } else {
                data.relationships.remove(&key);
            }
        }
        other => return Err(format!("not a catalogue action: {other:?}")),
    }
    Ok(())
}

/// Whether an action is a catalogue change.
pub fn is_catalog_action(action: &str) -> bool {
    CATALOG_ACTIONS.contains(&action)
}

/// The tenant an event concerns, as the `reseller` column beside it must
/// say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenant {
    /// Named by the event itself (`None`: no tenant).
    Named(Option<String>),
    /// That of the decision a review event resolves (`subject.id`).
    OfDecision(String),
}

impl Tenant {
    /// Decisions (impact actions among them) name their tenant
    /// (`subject.reseller.id`); a change of a licence's standing is its
    /// reseller's (`subject.license.reseller`); a reseller's registration is
    /// that tenant's (`subject.id`); a review's resolution concerns the
    /// tenant of the decision it resolves; a webhook endpoint's creation,
    /// rotation, deletion and disabling are its owner's (`subject.reseller`,
    /// `null` for compliance's); other catalogue changes, and an impact
    /// run's opening and end, concern no tenant.
    pub fn of(event: &Value) -> Tenant {
        let action = event.get("action").and_then(Value::as_str).unwrap_or("");
        let subject = event.get("subject").unwrap_or(&Value::Null);
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let decided = [
            "impact.ended",
            "impact.capped",
            "impact.renewal_blocked",
            "impact.review",
        ];
        if action.starts_with("decision.") || decided.contains(&action) {
            Tenant::Named(text(subject.get("reseller").and_then(|r| r.get("id"))))
        } else if action.starts_with("license.") {
            Tenant::Named(text(subject.pointer("/license/reseller")))
        } else if action.starts_with("webhook.") {
            Tenant::Named(text(subject.get("reseller")))
        } else if action == "catalog.reseller.put" {
            Tenant::Named(text(subject.get("id")))
        } else if action.starts_with("review.") {
            match text(subject.get("id")) {
                Some(decision) => Tenant::OfDecision(decision),
                None => Tenant::Named(None),
            }
        } else {
            Tenant::Named(None)
        }
    }
}

/// Whether `event` records a what-if decision (a preflight evaluated at
/// another instant, `as_of`): its decision says `"what_if": true`, or, for
/// events written before decisions carried the mark, its subject does.
pub fn is_what_if(event: &Value) -> bool {
    let marked = |pointer: &str| event.pointer(pointer) == Some(&Value::Bool(true));
    marked("/decision/what_if") || marked("/subject/what_if")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::audit::canonical_json;
    use crate::domain::RelKind;
    use serde_json::json;

    fn data() -> CatalogData {
        let mut data = CatalogData::default();
        for (id, name) in [("a-co", "A \"Co\" é\\\u{1}\t"), ("a", "A"), ("b", "B 🦀")] {
            data.organizations.insert(
                OrgId::parse(id).unwrap(),
                serde_json::from_value(json!({"name": name})).unwrap(),
            );
        }
        for (s, t) in [("a", "b"), ("a-co", "b"), ("a", "a-co")] {
            data.relationships.insert(
                (OrgId::parse(s).unwrap(), OrgId::parse(t).unwrap()),
                RelKind::SubsidiaryOf,
            );
        }
        data
    }

    #[test]
    fn the_digest_is_sha256_of_the_catalogues_canonical_json() {
        let data = data();
        let whole = json!({
            "designations": {}, "products": {}, "resellers": {},
            "organizations": {
                "a": {"name": "A", "aliases": []},
                "a-co": {"name": "A \"Co\" é\\\u{1}\t", "aliases": []},
                "b": {"name": "B 🦀", "aliases": []},
            },
            "relationships": {
                "a": {"a-co": {"kind": "subsidiary_of"}, "b": {"kind": "subsidiary_of"}},
                "a-co": {"b": {"kind": "subsidiary_of"}},
            },
        });
        let expected = hex::encode(Sha256::digest(canonical_json(&whole).as_bytes()));
        assert_eq!(catalog_digest(&data), expected);
        assert_eq!(
            catalog_digest(&CatalogData::default()),
            hex::encode(Sha256::digest(
                br#"{"designations":{},"organizations":{},"products":{},"relationships":{},"resellers":{}}"#
            ))
        );
    }

    #[test]
    fn any_change_changes_the_digest() {
        let base = catalog_digest(&data());
        let mut renamed = data();
        renamed
            .organizations
            .get_mut(&OrgId::parse("b").unwrap())
            .unwrap()
            .name = "B".into();
        let mut unrelated = data();
        unrelated.relationships.clear();
        let mut kind = data();
        for k in kind.relationships.values_mut() {
            *k = RelKind::AffiliateOf;
        }
        for other in [renamed, unrelated, kind] {
            assert_ne!(catalog_digest(&other), base);
        }
    }

    #[test]
    fn catalogue_events_replay_into_the_catalogue() {
        let mut replayed = CatalogData::default();
        for (id, name) in [("a", "A"), ("b", "B 🦀"), ("a-co", "A \"Co\" é\\\u{1}\t")] {
            let event = json!({"action": "catalog.organization.put",
                               "subject": {"kind": "organization", "id": id, "spec": {"name": name}}});
            apply_catalog_event(&mut replayed, &event).unwrap();
        }
        for (s, t) in [("a", "b"), ("a-co", "b"), ("a", "a-co"), ("b", "a")] {
            let event = json!({"action": "catalog.relationship.put",
                               "subject": {"id": format!("{s}/{t}"), "spec": {"kind": "subsidiary_of"}}});
            apply_catalog_event(&mut replayed, &event).unwrap();
        }
        let delete = json!({"action": "catalog.relationship.delete", "subject": {"id": "b/a"}});
        apply_catalog_event(&mut replayed, &delete).unwrap();
        assert_eq!(replayed, data());
        let bad = json!({"action": "catalog.product.put", "subject": {"id": "X", "spec": {}}});
        assert!(apply_catalog_event(&mut replayed, &bad).is_err());
    }

    #[test]
    fn events_name_their_tenant() {
        let decision = json!({"action": "decision.issue", "subject": {"reseller": {"id": "acme"}}});
        assert_eq!(Tenant::of(&decision), Tenant::Named(Some("acme".into())));
        let reseller = json!({"action": "catalog.reseller.put", "subject": {"id": "acme"}});
        assert_eq!(Tenant::of(&reseller), Tenant::Named(Some("acme".into())));
        let product = json!({"action": "catalog.product.put", "subject": {"id": "X"}});
        assert_eq!(Tenant::of(&product), Tenant::Named(None));
        let review = json!({"action": "review.reject", "subject": {"id": "d-1"}});
        assert_eq!(Tenant::of(&review), Tenant::OfDecision("d-1".into()));
        let hook = json!({"action": "webhook.rotate", "subject": {"id": "w", "reseller": "acme"}});
        assert_eq!(Tenant::of(&hook), Tenant::Named(Some("acme".into())));
        let compliance =
            json!({"action": "webhook.create", "subject": {"id": "w", "reseller": null}});
        assert_eq!(Tenant::of(&compliance), Tenant::Named(None));
    }
}
