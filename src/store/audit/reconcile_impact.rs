//! The impact tables, reconciled with the chain (part of a full
//! verification, see [`super::verify`]): each run is what its opening event
//! (`impact.run`) says, and a complete run what its closing event
//! (`impact.complete`) says; each action row is the one its event
//! (`impact.<action>`) records, and every such event has its row.
//!
//! Not vouched: a running run's cursor and partial counts (they change with
//! every chunk; its closing event vouches the final ones), and the sweep's
//! clock (`impact_clock`): an edit of either can only make work be done
//! again (acting on nothing twice) or skipped; a skipped rule instant shows
//! as a run missing from the report.

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;
use serde_json::Value;

use super::{events_at, text};
use crate::store::impact::{all_runs, ActionRow, Counts, Reached};
use crate::store::schema::impact_actions;
use crate::store::{DbConn, StoreError};

/// What the chain says of impact runs and their actions.
#[derive(Default)]
pub(super) struct ImpactExpected {
    /// Run id -> the `seq` of its opening event, its subject, and its
    /// closing event's subject if it has one.
    runs: BTreeMap<String, (i64, Value, Option<Value>)>,
    /// (run id, licence id) -> the `seq` of the action's event.
    actions: HashMap<(String, String), i64>,
}

impl ImpactExpected {
    pub(super) fn record(&mut self, seq: i64, event: &Value) {
        let action = text(event, "/action").unwrap_or_default();
        match action {
            "impact.run" => {
                if let (Some(id), Some(subject)) =
                    (text(event, "/subject/id"), event.get("subject"))
                {
                    let closed =
                        (text(subject, "/status") == Some("complete")).then(|| subject.clone());
                    self.runs
                        .insert(id.to_owned(), (seq, subject.clone(), closed));
                }
            }
            "impact.complete" => {
                if let Some(run) = text(event, "/subject/id").and_then(|id| self.runs.get_mut(id)) {
                    run.2 = event.get("subject").cloned();
                }
            }
            "impact.ended" | "impact.capped" | "impact.renewal_blocked" | "impact.review" => {
                if let (Some(run), Some(license)) = (
                    text(event, "/subject/impact_run"),
                    text(event, "/subject/license/id"),
                ) {
                    self.actions
                        .insert((run.to_owned(), license.to_owned()), seq);
                }
            }
            _ => {}
        }
    }
}

type Mismatch = (String, Option<i64>);

/// The first run or action row that is not what the chain records.
pub(super) fn impact_mismatch(
    conn: &mut DbConn,
    expected: &mut ImpactExpected,
) -> Result<Option<Mismatch>, StoreError> {
    let instant = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    for (id, seq, run) in all_runs(conn)? {
        let mismatch = || Ok(Some((format!("impact_runs/{id}"), Some(seq))));
        let (Some((open_seq, opened, closed)), Ok(run)) = (expected.runs.remove(&id), run) else {
            return mismatch();
        };
        let wanted_reach: Option<Reached> = opened
            .get("reach")
            .and_then(|r| serde_json::from_value(r.clone()).ok());
        let same = open_seq == run.audit_seq
            && opened.get("trigger") == Some(&run.trigger)
            && text(&opened, "/at").and_then(instant) == Some(run.at)
            && wanted_reach.as_ref() == Some(&run.reach)
            && text(&opened, "/trigger_key") == Some(run.trigger_key.as_str());
        if !same {
            return mismatch();
        }
        match (run.status.as_str(), closed) {
            ("running", None) => {}
            ("complete", Some(closed)) => {
                let counts: Option<Counts> = closed
                    .get("counts")
                    .and_then(|c| serde_json::from_value(c.clone()).ok());
                let checked = closed.get("licenses_checked").and_then(Value::as_i64);
                let done = text(&closed, "/completed_at")
                    .or_else(|| text(&closed, "/at"))
                    .and_then(instant);
                let same = checked == Some(run.licenses_checked)
                    && counts == Some(run.counts)
                    && done == run.completed_at;
                if !same {
                    return mismatch();
                }
            }
            _ => return mismatch(),
        }
    }
    if let Some((id, (seq, ..))) = expected.runs.iter().next() {
        return Ok(Some((format!("impact_runs/{id}"), Some(*seq))));
    }
    // Actions, a page at a time, each with its event.
    let mut after = (String::new(), String::new());
    loop {
        let page: Vec<ActionRow> = impact_actions::table
            .filter(
                impact_actions::run_id
                    .gt(&after.0)
                    .or(impact_actions::run_id
                        .eq(&after.0)
                        .and(impact_actions::license_id.gt(&after.1))),
            )
            .order((
                impact_actions::run_id.asc(),
                impact_actions::license_id.asc(),
            ))
            .limit(super::PAGE)
            .load(conn)?;
        let Some(last) = page.last() else {
            break;
        };
        after = (last.run_id.clone(), last.license_id.clone());
        let events = events_at(conn, page.iter().map(|a| a.audit_seq).collect())?;
        for a in &page {
            let name = format!("impact_actions/{}/{}", a.run_id, a.license_id);
            let wanted = expected
                .actions
                .remove(&(a.run_id.clone(), a.license_id.clone()));
            let Some(event) = events
                .get(&a.audit_seq)
                .filter(|_| wanted == Some(a.audit_seq))
            else {
                return Ok(Some((name, wanted)));
            };
            let not_after = match a.action.as_str() {
                "capped" => text(event, "/subject/license/expires_at").and_then(instant),
                _ => None,
            };
            let same = text(event, "/action") == Some(format!("impact.{}", a.action).as_str())
                && text(event, "/decision/id") == Some(a.decision_id.as_str())
                && text(event, "/subject/reseller/id") == Some(a.reseller.as_str())
                && text(event, "/subject/product") == Some(a.product.as_str())
                && not_after == a.not_after.as_deref().and_then(instant);
            if !same {
                return Ok(Some((name, Some(a.audit_seq))));
            }
        }
    }
    Ok(expected
        .actions
        .iter()
        .min_by_key(|(_, seq)| **seq)
        .map(|((run, license), seq)| (format!("impact_actions/{run}/{license}"), Some(*seq))))
}
