//! The audit trail's table: appending events to the hash chain under the
//! locked ledger head, and reading them back (pages for the listing, the
//! whole trail streamed for exports). Checking what the store holds
//! against the chain is `verify`'s, with the state beside it in
//! `reconcile`.

mod reconcile;
mod reconcile_impact;
mod reconcile_outbox;
mod reconcile_webhooks;
mod verify;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::{Map, Value};

use super::head::{EventRow, OutboxRow};
use super::schema::audit_events;
use super::{format_instant, DbConn, Head, Page, Store, StoreError};
use crate::domain::{Actor, Outcome};
pub(crate) use verify::vouch_catalog;

/// An audit event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub action: String,
    pub actor: Actor,
    pub outcome: Option<Outcome>,
    pub decision: Option<Value>,
    pub subject: Value,
    /// The tenant the event concerns, for filtering.
    pub reseller: Option<String>,
}

/// Events read per query when streaming the whole trail.
const EXPORT_PAGE: i64 = 1000;

/// Filters of the audit listing.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after: Option<i64>,
    /// Only events with `seq` up to this one.
    pub until: Option<i64>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// Only what-if decisions (`true`), or only events that are not one
    /// (`false`).
    pub what_if: Option<bool>,
    pub reseller: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only events whose stored text holds this string as a JSON string
    /// (an identifier, such as a licence's, in quotes): not indexed, a scan
    /// of what the other filters leave (the console's licence history
    /// narrows it to the licence's reseller first).
    pub mentions: Option<String>,
}

/// `text` with `LIKE`'s wildcards (and the escape, `\`) escaped.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Rows read per query.
const PAGE: i64 = 1000;

/// An event as exported (its stored JSON with `hash`), or `null` when the
/// stored text is not JSON (the verifier then calls it malformed). Every
/// read of the trail (listings, exports, verification) goes through it.
fn exported(event: &str, hash: &str) -> Value {
    let mut value = serde_json::from_str(event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("hash".into(), Value::String(hash.to_owned()));
    }
    value
}

/// The event at `seq`, as exported.
fn event_at(conn: &mut DbConn, seq: i64) -> Result<Option<Value>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::seq.eq(seq))
        .select((audit_events::event, audit_events::hash))
        .first::<(String, String)>(conn)
        .optional()?
        .map(|(event, hash)| exported(&event, &hash)))
}

/// The events at these `seq`s, as exported.
fn events_at(conn: &mut DbConn, seqs: Vec<i64>) -> Result<HashMap<i64, Value>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::seq.eq_any(seqs))
        .select((audit_events::seq, audit_events::event, audit_events::hash))
        .load::<(i64, String, String)>(conn)?
        .into_iter()
        .map(|(seq, event, hash)| (seq, exported(&event, &hash)))
        .collect())
}

/// A page of the events with one of `actions`, in `seq` order after
/// `after` (and at most `until`), as exported with their `seq`.
fn events_page(
    conn: &mut DbConn,
    actions: &[&str],
    after: i64,
    until: i64,
) -> Result<Vec<(i64, Value)>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::action.eq_any(actions))
        .filter(audit_events::seq.gt(after))
        .filter(audit_events::seq.le(until))
        .order(audit_events::seq.asc())
        .limit(PAGE)
        .select((audit_events::seq, audit_events::event, audit_events::hash))
        .load::<(i64, String, String)>(conn)?
        .into_iter()
        .map(|(seq, event, hash)| (seq, exported(&event, &hash)))
        .collect())
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

impl Store {
    /// Reads a page of audit events, in `seq` order, as exported; the
    /// next page starts after the last event's `seq`.
    pub fn audit_events(
        &self,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Page<Value>, StoreError> {
        let events = self
            .audit_rows(filter, limit)?
            .into_iter()
            .map(|(_, event)| event)
            .collect();
        Ok(Page::of(events, limit, |e| e["seq"].to_string()))
    }

    /// A page of events with their `seq` column (which paging follows,
    /// whatever the stored event says). A stored event that is not JSON
    /// comes out as `null`, for the verifier to call malformed.
    fn audit_rows(
        &self,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<(i64, Value)>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = audit_events::table
            .select((audit_events::seq, audit_events::event, audit_events::hash))
            .order(audit_events::seq.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = filter.after {
            query = query.filter(audit_events::seq.gt(after));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit_events::seq.le(until));
        }
        if let Some(action) = &filter.action {
            query = match action.strip_suffix(".*") {
                Some(prefix) => {
                    let escaped = like_escaped(prefix);
                    query.filter(
                        audit_events::action
                            .like(format!("{escaped}.%"))
                            .escape('\\'),
                    )
                }
                None => query.filter(audit_events::action.eq(action.clone())),
            };
        }
        if let Some(outcome) = &filter.outcome {
            query = query.filter(audit_events::outcome.eq(outcome.clone()));
        }
        if let Some(what_if) = filter.what_if {
            query = query.filter(audit_events::what_if.eq(what_if));
        }
        if let Some(reseller) = &filter.reseller {
            query = query.filter(audit_events::reseller.eq(reseller.clone()));
        }
        if let Some(text) = &filter.mentions {
            let quoted = serde_json::to_string(text).unwrap_or_default();
            query = query.filter(
                audit_events::event
                    .like(format!("%{}%", like_escaped(&quoted)))
                    .escape('\\'),
            );
        }
        if let Some(from) = filter.from {
            query = query.filter(audit_events::at.ge(format_instant(from)));
        }
        if let Some(to) = filter.to {
            query = query.filter(audit_events::at.lt(format_instant(to)));
        }
        let rows = query.load::<(i64, String, String)>(&mut *conn)?;
        Ok(rows
            .into_iter()
            .map(|(seq, event, hash)| (seq, exported(&event, &hash)))
            .collect())
    }

    /// Calls `f` with every event matching `filter`, in `seq` order, a
    /// page at a time (so memory stays bounded however many there are),
    /// until `f` returns false.
    pub fn for_each_event(
        &self,
        filter: &AuditFilter,
        mut f: impl FnMut(&Value) -> bool,
    ) -> Result<(), StoreError> {
        let mut filter = filter.clone();
        loop {
            let page = self.audit_rows(&filter, EXPORT_PAGE)?;
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            for (_, event) in &page {
                if !f(event) {
                    return Ok(());
                }
            }
            filter.after = Some(last);
        }
    }
}

/// Appends one event to the chain under the locked head; returns its `seq`.
pub fn append_event(
    head: &mut Head,
    event: NewEvent,
    policy_version: &str,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let seq = head.seq + 1;
    let id = uuid::Uuid::now_v7().to_string();
    let at_text = format_instant(at);
    let mut map = Map::new();
    map.insert("seq".into(), Value::from(seq));
    map.insert("id".into(), Value::from(id.clone()));
    map.insert("at".into(), Value::from(at_text.clone()));
    map.insert("action".into(), Value::from(event.action.clone()));
    map.insert(
        "actor".into(),
        serde_json::to_value(&event.actor).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    );
    if let Some(outcome) = event.outcome {
        map.insert("outcome".into(), Value::from(outcome.as_str()));
    }
    if let Some(decision) = event.decision {
        map.insert("decision".into(), decision);
    }
    map.insert("subject".into(), event.subject);
    map.insert("policy_version".into(), Value::from(policy_version));
    map.insert("prev_hash".into(), Value::from(head.hash.clone()));
    let event_value = Value::Object(map);
    let what_if = crate::audit::state::is_what_if(&event_value);
    // What resellers hear of it, in the same transaction (the events'
    // data is derived from this event again when they are read).
    for (n, derived) in crate::audit::outbox::derive(&event_value, event.reseller.as_deref())
        .into_iter()
        .enumerate()
    {
        head.push_outbox(OutboxRow {
            seq: crate::store::events::outbox_seq(seq, n),
            id: derived.id,
            event_type: derived.event_type,
            reseller: derived.reseller,
            created_at: derived.created_at,
            audit_seq: seq,
        });
    }
    let (text, hash) = crate::audit::canonical_and_hash(&event_value);
    head.push_event(EventRow {
        seq,
        id,
        at: at_text,
        action: event.action,
        outcome: event.outcome.map(|o| o.as_str()),
        reseller: event.reseller,
        event: text,
        prev_hash: head.hash.clone(),
        hash: hash.clone(),
        what_if,
    });
    head.seq = seq;
    head.hash = hash;
    Ok(seq)
}
