//! Webhook endpoints: where the service sends the events of a tenant (an
//! endpoint its resellers and integrators created) or of every tenant, and
//! `impact.completed` (an endpoint of compliance's). Creating one checks its
//! URL (only `https` to public addresses, unless the configuration allows
//! private ones: [`crate::webhook::url`]) and the event types it asks for,
//! makes its signing secret and records it; rotating makes a new secret,
//! the old one still signing for [`ROTATION_OVERLAP_HOURS`]; deleting ends
//! its deliveries. Each is a ledger write with its `webhook.*` audit event,
//! which records the secrets by their SHA-256 only.
//!
//! An endpoint belongs to its owner alone: another owner's is
//! [`GateError::NotFound`], for every use case here. An owner has at most
//! [`MAX_ENDPOINTS`] (disabled ones count until deleted).

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;

use super::{blocking, Gate, GateError};
use crate::audit::outbox::{EVENT_TYPES, UNTENANTED};
use crate::domain::{Actor, ResellerId};
pub use crate::store::webhooks::ROTATION_OVERLAP_HOURS;
use crate::store::webhooks::{self as store, EndpointRow};
use crate::store::{Page, StoreError};
use crate::webhook::{secret, url};

/// The most endpoints one owner (a tenant, or compliance) may have.
pub const MAX_ENDPOINTS: i64 = 20;

/// An endpoint as its owner sees it: never with its secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    /// The event types it receives (`None`: every type).
    pub event_types: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    /// `enabled`, or `disabled` (its URL answered `410 Gone`).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl Endpoint {
    fn from_row(row: &EndpointRow) -> Endpoint {
        Endpoint {
            id: row.id.clone(),
            url: row.url.clone(),
            event_types: row.event_types.clone(),
            created_at: row.created_at,
            status: if row.disabled_at.is_some() {
                "disabled"
            } else {
                "enabled"
            },
            disabled_at: row.disabled_at,
            disabled_reason: row.disabled_reason.clone(),
        }
    }
}

/// An endpoint to create.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    pub actor: Actor,
    /// The tenant it is for (`None`: compliance's, every tenant's events).
    pub owner: Option<ResellerId>,
    pub url: String,
    /// The event types it asks for (`None`: every type).
    pub event_types: Option<Vec<String>>,
}

/// A created endpoint, with its secret (shown this once).
#[derive(Clone, Debug)]
pub struct CreatedEndpoint {
    pub endpoint: Endpoint,
    pub secret: String,
}

/// A rotated endpoint, with its new secret (shown this once) and the end
/// of the previous one's overlap.
#[derive(Clone, Debug)]
pub struct RotatedEndpoint {
    pub endpoint: Endpoint,
    pub secret: String,
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// What is wrong with the event types asked for, as `(field, message)`:
/// each must be one of [`EVENT_TYPES`], once; those of no tenant
/// ([`UNTENANTED`]) are compliance's alone; an empty list asks for nothing
/// (leave it out for every type).
pub fn event_type_errors(types: Option<&[String]>, compliance: bool) -> Vec<(String, String)> {
    let Some(types) = types else {
        return Vec::new();
    };
    if types.is_empty() {
        return vec![(
            "event_types".into(),
            "must name at least one event type; leave it out (or null) for every type".into(),
        )];
    }
    let mut errors = Vec::new();
    for (i, kind) in types.iter().enumerate() {
        let field = format!("event_types[{i}]");
        if !EVENT_TYPES.contains(&kind.as_str()) {
            errors.push((
                field,
                format!("is not an event type: one of {}", EVENT_TYPES.join(", ")),
            ));
        } else if !compliance && UNTENANTED.contains(&kind.as_str()) {
            errors.push((
                field,
                format!("{kind} concerns no tenant: only compliance receives it"),
            ));
        } else if types[..i].contains(kind) {
            errors.push((field, format!("names {kind} a second time")));
        }
    }
    errors
}

impl Gate {
    /// Allows endpoints with `http` URLs and private, loopback and
    /// link-local addresses (development and tests only).
    pub fn with_webhook_allow_private(mut self, allow: bool) -> Gate {
        self.webhook_allow_private = allow;
        self
    }

    /// Creates an endpoint, after checking its URL and event types
    /// ([`GateError::Invalid`] naming `url`, `event_types` or one of them).
    pub async fn create_webhook_endpoint(
        &self,
        request: NewEndpoint,
    ) -> Result<CreatedEndpoint, GateError> {
        let NewEndpoint {
            actor,
            owner,
            url: asked,
            event_types,
        } = request;
        let mut errors = event_type_errors(event_types.as_deref(), owner.is_none());
        let checked = match url::check(&asked, self.webhook_allow_private).await {
            Ok(url) => Some(url.to_string()),
            Err(why) => {
                errors.insert(0, ("url".into(), why.to_string()));
                None
            }
        };
        let Some(url) = checked.filter(|_| errors.is_empty()) else {
            return Err(GateError::Invalid(errors));
        };
        let new_secret = secret::generate();
        let mut row = EndpointRow {
            id: uuid::Uuid::now_v7().to_string(),
            reseller: owner.map(|t| t.to_string()),
            url,
            event_types,
            secret: new_secret.clone(),
            previous_secret: None,
            previous_until: None,
            created_at: Utc::now(),
            disabled_at: None,
            disabled_reason: None,
        };
        let written = self
            .commit(move |conn, head| {
                row.created_at = Utc::now().trunc_subsecs(6);
                let seq = store::create(conn, head, &row, actor.clone(), MAX_ENDPOINTS)?;
                Ok(seq.map(|seq| (seq, row.clone())))
            })
            .await?;
        let Some((_, row)) = written else {
            return Err(GateError::EndpointLimit { max: MAX_ENDPOINTS });
        };
        Ok(CreatedEndpoint {
            endpoint: Endpoint::from_row(&row),
            secret: new_secret,
        })
    }

    /// `owner`'s endpoint `id`.
    pub async fn webhook_endpoint(
        &self,
        owner: Option<ResellerId>,
        id: String,
    ) -> Result<Endpoint, GateError> {
        let store = self.store.clone();
        let row = blocking(move || store.webhook_endpoint(&id, owner.as_ref().map(|t| t.as_str())))
            .await?
            .ok_or(GateError::NotFound)?;
        Ok(Endpoint::from_row(&row))
    }

    /// A page of `owner`'s endpoints, by id, after `after`.
    pub async fn webhook_endpoints(
        &self,
        owner: Option<ResellerId>,
        after: Option<String>,
        limit: i64,
    ) -> Result<Page<Endpoint>, GateError> {
        let store = self.store.clone();
        let page = blocking(move || {
            store.webhook_endpoints(owner.as_ref().map(|t| t.as_str()), after.as_deref(), limit)
        })
        .await?;
        Ok(Page {
            rows: page.rows.iter().map(Endpoint::from_row).collect(),
            next: page.next,
            unreadable: page.unreadable,
        })
    }

    /// Gives `owner`'s endpoint `id` a new secret; the one it replaces
    /// still signs for [`ROTATION_OVERLAP_HOURS`].
    pub async fn rotate_webhook_secret(
        &self,
        actor: Actor,
        owner: Option<ResellerId>,
        id: String,
    ) -> Result<RotatedEndpoint, GateError> {
        let new_secret = secret::generate();
        let given = new_secret.clone();
        let rotated = self
            .commit(move |conn, head| {
                let now = Utc::now().trunc_subsecs(6);
                let owner = owner.as_ref().map(|t| t.as_str());
                store::rotate(conn, head, &id, owner, &given, actor.clone(), now)
            })
            .await?
            .ok_or(GateError::NotFound)?;
        let previous_secret_expires_at = rotated
            .previous_until
            .ok_or_else(|| StoreError::Corrupt("a rotation without its overlap".into()))?;
        Ok(RotatedEndpoint {
            endpoint: Endpoint::from_row(&rotated),
            secret: new_secret,
            previous_secret_expires_at,
        })
    }

    /// Deletes `owner`'s endpoint `id`: nothing more is delivered to it.
    pub async fn delete_webhook_endpoint(
        &self,
        actor: Actor,
        owner: Option<ResellerId>,
        id: String,
    ) -> Result<(), GateError> {
        let deleted = self
            .commit(move |conn, head| {
                let owner = owner.as_ref().map(|t| t.as_str());
                store::delete(conn, head, &id, owner, actor.clone(), Utc::now())
            })
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(GateError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn types(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn event_types_are_known_once_each_and_impact_completed_is_compliances() {
        assert!(event_type_errors(None, false).is_empty());
        let every = types(&EVENT_TYPES);
        assert!(event_type_errors(Some(&every), true).is_empty());
        let fields = |list: &[&str], compliance| -> Vec<String> {
            event_type_errors(Some(&types(list)), compliance)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(fields(&[], false), ["event_types"]);
        assert_eq!(fields(&[], true), ["event_types"]);
        assert_eq!(
            fields(&["license.issued", "impact.completed"], false),
            ["event_types[1]"]
        );
        assert!(fields(&["impact.completed"], true).is_empty());
        assert_eq!(
            fields(&["license.issued", "nope", "license.issued"], false),
            ["event_types[1]", "event_types[2]"]
        );
        assert_eq!(fields(&["License.Issued", "license.*"], true).len(), 2);
    }
}
