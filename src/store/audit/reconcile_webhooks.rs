//! Webhook endpoints, reconciled with the chain (part of a full
//! verification, see [`super::verify`]): each endpoint's vouched columns
//! (`id`, `reseller`, `url`, `event_types`, the SHA-256 of `secret` and of
//! `previous_secret`, `previous_until`, `created_at`, `disabled_at`,
//! `disabled_reason`) are the replay of its `webhook.*` events: created by
//! `webhook.create`, its secrets changed by `webhook.rotate`, disabled by
//! `webhook.disable` (the delivery, on a `410`), gone after
//! `webhook.delete`. A row without its creation, a row still there after
//! its deletion, an endpoint the chain has that the table has not, and an
//! edited column are each `state_mismatch` naming `webhook_endpoints/{id}`.
//!
//! Not vouched: the delivery's bookkeeping (`cursor`, `attempts`, the
//! last attempt, the lease): an edit of it can only make an event be sent
//! again or skipped for that endpoint, never change what is sent or where.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::text;
use crate::store::webhooks::raw_page;
use crate::store::{DbConn, StoreError};
use crate::webhook::secret::sha256_hex;

/// An endpoint's vouched columns as its events leave them (the secrets as
/// their SHA-256).
#[derive(Clone, Debug, PartialEq)]
struct Replayed {
    reseller: Option<String>,
    url: String,
    /// An array, or `null` for every type.
    event_types: Value,
    secret_sha256: String,
    previous_secret_sha256: Option<String>,
    previous_until: Option<String>,
    created_at: String,
    disabled_at: Option<String>,
    disabled_reason: Option<String>,
}

/// Where an endpoint stands after its latest event.
#[derive(Clone, Debug, PartialEq)]
enum Standing {
    Live(Box<Replayed>),
    Deleted,
    /// An event that cannot be replayed (a rotation of an endpoint never
    /// created, a creation without its URL): no row can be its replay.
    Broken,
}

/// What the chain says of webhook endpoints.
#[derive(Default)]
pub(super) struct WebhookExpected {
    /// Endpoint id -> the `seq` of its latest event, and where it stands.
    endpoints: BTreeMap<String, (i64, Standing)>,
}

impl WebhookExpected {
    pub(super) fn record(&mut self, seq: i64, event: &Value) {
        let action = text(event, "/action").unwrap_or_default();
        if !action.starts_with("webhook.") {
            return;
        }
        let subject = event.get("subject").unwrap_or(&Value::Null);
        let Some(id) = text(subject, "/id") else {
            return;
        };
        let owned = |pointer: &str| text(subject, pointer).map(str::to_owned);
        let previous = self.endpoints.remove(id).map(|(_, s)| s);
        let standing = match (action, previous) {
            ("webhook.create", None) => {
                match (owned("/url"), owned("/secret_sha256"), owned("/created_at")) {
                    (Some(url), Some(secret_sha256), Some(created_at)) => {
                        Standing::Live(Box::new(Replayed {
                            reseller: owned("/reseller"),
                            url,
                            event_types: subject.get("event_types").cloned().unwrap_or(Value::Null),
                            secret_sha256,
                            previous_secret_sha256: None,
                            previous_until: None,
                            created_at,
                            disabled_at: None,
                            disabled_reason: None,
                        }))
                    }
                    _ => Standing::Broken,
                }
            }
            ("webhook.rotate", Some(Standing::Live(mut r))) => match owned("/secret_sha256") {
                Some(secret_sha256) => {
                    r.secret_sha256 = secret_sha256;
                    r.previous_secret_sha256 = owned("/previous_secret_sha256");
                    r.previous_until = owned("/previous_until");
                    Standing::Live(r)
                }
                None => Standing::Broken,
            },
            ("webhook.disable", Some(Standing::Live(mut r))) => {
                r.disabled_at = owned("/disabled_at");
                r.disabled_reason = owned("/disabled_reason");
                Standing::Live(r)
            }
            ("webhook.delete", Some(Standing::Live(_))) => Standing::Deleted,
            // A second creation of one id, a change of an endpoint deleted
            // or never created, or an action no replay knows.
            _ => Standing::Broken,
        };
        self.endpoints.insert(id.to_owned(), (seq, standing));
    }
}

type Mismatch = (String, Option<i64>);

/// Whether two stored instants are the same instant (or the same text).
fn same_instant(stored: Option<&str>, replayed: Option<&str>) -> bool {
    let instant = |t: &str| {
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    match (stored, replayed) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || instant(a).is_some_and(|a| instant(b) == Some(a)),
        _ => false,
    }
}

/// The first endpoint that is not the replay of its events.
pub(super) fn webhook_mismatch(
    conn: &mut DbConn,
    expected: &mut WebhookExpected,
) -> Result<Option<Mismatch>, StoreError> {
    let mut after = String::new();
    loop {
        let page = raw_page(conn, &after, super::PAGE)?;
        let Some(last) = page.last().map(|r| r.0.clone()) else {
            break;
        };
        for row in page {
            let (id, reseller, url, types, secret, previous, until, created, disabled, reason) =
                row;
            let name = format!("webhook_endpoints/{id}");
            let (seq, replayed) = match expected.endpoints.remove(&id) {
                None => return Ok(Some((name, None))),
                Some((seq, Standing::Live(r))) => (seq, r),
                Some((seq, Standing::Deleted | Standing::Broken)) => {
                    return Ok(Some((name, Some(seq))))
                }
            };
            let types = match types.as_deref().map(serde_json::from_str::<Value>) {
                None => Some(Value::Null),
                Some(Ok(Value::Null)) => None,
                Some(parsed) => parsed.ok(),
            };
            let same = reseller == replayed.reseller
                && url == replayed.url
                && types.as_ref() == Some(&replayed.event_types)
                && sha256_hex(&secret) == replayed.secret_sha256
                && previous.as_deref().map(sha256_hex) == replayed.previous_secret_sha256
                && same_instant(until.as_deref(), replayed.previous_until.as_deref())
                && same_instant(Some(&created), Some(&replayed.created_at))
                && same_instant(disabled.as_deref(), replayed.disabled_at.as_deref())
                && reason == replayed.disabled_reason;
            if !same {
                return Ok(Some((name, Some(seq))));
            }
        }
        after = last;
    }
    // Endpoints the chain has that the table has not.
    Ok(expected
        .endpoints
        .iter()
        .filter(|(_, (_, standing))| *standing != Standing::Deleted)
        .min_by_key(|(_, (seq, _))| *seq)
        .map(|(id, (seq, _))| (format!("webhook_endpoints/{id}"), Some(*seq))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn event(action: &str, subject: Value) -> Value {
        json!({"action": action, "subject": subject})
    }

    #[test]
    fn the_replay_follows_create_rotate_disable_and_delete() {
        let mut expected = WebhookExpected::default();
        expected.record(
            1,
            &event(
                "webhook.create",
                json!({"kind": "webhook_endpoint", "id": "w1", "reseller": "alpha",
                       "url": "https://a.example/", "event_types": ["license.issued"],
                       "secret_sha256": "s1", "created_at": "2026-01-01T00:00:00.000000Z"}),
            ),
        );
        expected.record(
            2,
            &event(
                "webhook.rotate",
                json!({"id": "w1", "reseller": "alpha", "secret_sha256": "s2",
                       "previous_secret_sha256": "s1", "previous_until": "2026-01-02T00:00:00.000000Z"}),
            ),
        );
        expected.record(
            3,
            &event(
                "webhook.disable",
                json!({"id": "w1", "reseller": "alpha", "disabled_at": "2026-01-01T01:00:00Z",
                       "disabled_reason": "410 Gone"}),
            ),
        );
        let (seq, Standing::Live(r)) = expected.endpoints["w1"].clone() else {
            panic!("w1 is live");
        };
        assert_eq!(seq, 3);
        assert_eq!(
            (
                r.secret_sha256.as_str(),
                r.previous_secret_sha256.as_deref()
            ),
            ("s2", Some("s1"))
        );
        assert_eq!(r.disabled_reason.as_deref(), Some("410 Gone"));
        assert_eq!(r.event_types, json!(["license.issued"]));
        expected.record(4, &event("webhook.delete", json!({"id": "w1"})));
        assert_eq!(expected.endpoints["w1"], (4, Standing::Deleted));
        // Nothing is replayed onto a deleted or unknown endpoint.
        expected.record(
            5,
            &event("webhook.rotate", json!({"id": "w1", "secret_sha256": "x"})),
        );
        assert_eq!(expected.endpoints["w1"], (5, Standing::Broken));
        expected.record(6, &event("webhook.disable", json!({"id": "w2"})));
        assert_eq!(expected.endpoints["w2"], (6, Standing::Broken));
        expected.record(7, &event("license.revoke", json!({"id": "w3"})));
        assert!(!expected.endpoints.contains_key("w3"));
    }

    #[test]
    fn instants_compare_as_instants() {
        assert!(same_instant(
            Some("2026-01-01T00:00:00Z"),
            Some("2026-01-01T00:00:00.000000Z")
        ));
        assert!(!same_instant(Some("2026-01-01T00:00:00Z"), None));
        assert!(!same_instant(
            Some("2026-01-01T00:00:01Z"),
            Some("2026-01-01T00:00:00Z")
        ));
        assert!(same_instant(None, None));
    }
}
