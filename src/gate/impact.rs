//! Impact runs: what a catalogue change, or a rule's instant as it passes,
//! does to the licences already issued.
//!
//! **Triggers.** A catalogue change opens a run in its own transaction when
//! it can reach a licence: the products whose decisions can differ between
//! the catalogue before and after it, and the resellers whose facts changed
//! ([`crate::policy::reach_of_change`]), less those new in the change (no
//! licence can be of them yet); putting the same content again reaches
//! nothing and opens nothing. A rule instant opens a run when the sweep
//! passes it (every [`crate::config::Config::impact_interval`], and at
//! start-up for the instants that passed while no replica ran), reaching the
//! products the rule's designation applies to. A trigger opens at most one
//! run (its key is unique), however many replicas sweep.
//!
//! **A run** re-decides each reached licence, active or suspended and not
//! yet expired, as a renewal at the run's instant (`at`: the change's, or
//! the rule's), with the stored customer facts and the reseller as it is
//! now, and acts on each whose answer changed ([`act_on`]):
//! `ended` (a rule that ends service denies it), `renewal_blocked` (a rule
//! denies it without ending service), `capped` (a service end comes before
//! its expiry: `expires_at` moves to it, with a new token; the rule's own
//! run ends it then), or `review` (nexus cannot be decided: a review is
//! opened, due at the rule's instant or the run's, and the licence is
//! suspended if it is still open then). Each action is the decision's audit
//! event (`impact.<action>`, citing the run, with the licence recorded
//! whole), in the transaction that changes the licence and records the
//! action.
//!
//! **Exactly once.** A run advances in chunks, each one ledger write that
//! reads the run's cursor under the lock (see [`crate::store::impact`]):
//! resumable after a crash, shared safely by replicas, never acting twice.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};

use super::decide::plan_decision;
use super::lifecycle::{change_standing, full_subject, resign, StandingChange};
use super::{Gate, GateError, Question};
use crate::domain::{Actor, Customer, Outcome, ResellerId, Sku, Standing, Transaction};
use crate::policy::{reach_of_change, Catalog, Decision, ReasonCode};
use crate::signing::LicenseSigner;
use crate::store::audit::{append_event, NewEvent};
use crate::store::decisions::record_decision;
use crate::store::impact::{
    advance_run, in_impact_review, insert_run, reached_after, run_in, run_of_trigger, sweep_clock,
    ActionRow, NewRun, Reached,
};
use crate::store::licenses::LicenseRow;
use crate::store::{format_instant, DbConn, Head, StoreError};

/// Licences a chunk of a run re-decides in one write, unless configured.
pub(super) const CHUNK: i64 = 200;

/// What a run does to a licence whose answer changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    /// A rule that ends service denies it: ended now.
    Ended { designation: String, rule: String },
    /// A rule denies it without ending service: it runs to its expiry, and
    /// will not be renewed.
    RenewalBlocked { designation: String, rule: String },
    /// A service end comes before its expiry: the expiry moves to it.
    Capped { not_after: DateTime<Utc> },
    /// Nexus cannot be decided: a review, due at `due`.
    Review { due: DateTime<Utc> },
}

impl Act {
    pub fn name(&self) -> &'static str {
        match self {
            Act::Ended { .. } => "ended",
            Act::RenewalBlocked { .. } => "renewal_blocked",
            Act::Capped { .. } => "capped",
            Act::Review { .. } => "review",
        }
    }
}

/// What a run does to `license` given its new `decision` (a renewal at the
/// run's instant `at`), or `None` when its answer did not change: an allow
/// that its expiry already respects, a block or a review it already has.
/// Pure.
///
/// Tie-breaks: a denial by any rule that ends service ends the licence
/// (the first such reason names it); otherwise the first reason names the
/// block. A review is due at the latest instant among its reasons, and
/// never before `at`.
pub fn act_on(
    license: &LicenseRow,
    decision: &Decision,
    catalog: &Catalog,
    at: DateTime<Utc>,
) -> Option<Act> {
    match decision.outcome {
        Outcome::Deny => {
            let ending = decision
                .reasons
                .iter()
                .find(|r| catalog.ends_service(&r.designation, &r.rule));
            match ending {
                Some(r) => Some(Act::Ended {
                    designation: r.designation.to_string(),
                    rule: r.rule.to_string(),
                }),
                None if license.state.renewal_blocked.is_some() => None,
                None => decision.reasons.first().map(|r| Act::RenewalBlocked {
                    designation: r.designation.to_string(),
                    rule: r.rule.to_string(),
                }),
            }
        }
        Outcome::Review if license.state.impact_review.is_some() => None,
        Outcome::Review => {
            let due = decision
                .reasons
                .iter()
                .filter(|r| r.code == ReasonCode::NexusUnknown)
                .map(|r| r.effective_from)
                .max()
                .map_or(at, |t| t.max(at));
            Some(Act::Review { due })
        }
        Outcome::Allow => match decision.constraints.not_after {
            Some(not_after) if not_after < license.expires_at => Some(Act::Capped { not_after }),
            _ => None,
        },
    }
}

/// The reach a run keeps: only products and resellers that were in the
/// catalogue before the change (a licence can only be of those).
fn reached(old: &Catalog, new: &Catalog) -> Reached {
    let reach = reach_of_change(old, new);
    Reached {
        products: reach
            .products
            .into_iter()
            .filter(|sku| old.product(sku).is_some())
            .map(|sku| sku.to_string())
            .collect(),
        resellers: reach
            .resellers
            .into_iter()
            .filter(|id| old.reseller(id).is_some())
            .map(|id| id.to_string())
            .collect(),
    }
}

/// Opens a run (with its audit event `impact.run`) unless its trigger has
/// one; a run that reaches nothing is complete at once. Inside a write.
fn open_run(
    conn: &mut DbConn,
    head: &mut Head,
    run: NewRun,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    head.immediate(conn)?;
    if run_of_trigger(conn, &run.trigger_key)?.is_some() {
        return Ok(None);
    }
    let empty = run.reach.products.is_empty() && run.reach.resellers.is_empty();
    let event = NewEvent {
        action: "impact.run".into(),
        actor: Actor::system(),
        outcome: None,
        decision: None,
        subject: json!({
            "kind": "impact_run", "id": run.id, "trigger": run.trigger,
            "trigger_key": run.trigger_key,
            "at": format_instant(run.at), "reach": run.reach,
            "status": if empty { "complete" } else { "running" },
        }),
        reseller: None,
    };
    let version = head.catalog_version().to_string();
    let seq = append_event(head, event, &version, now)?;
    // The event's row goes out first: the run refers to it.
    head.immediate(conn)?;
    insert_run(conn, &run, seq, empty)?;
    Ok(Some(run.id))
}

/// Opens the run of a catalogue change from `old` to `new` (committed as
/// version `new.version()`, its last event `audit_seq`), if it can reach a
/// licence. Inside the change's write.
fn open_change_run(
    conn: &mut DbConn,
    head: &mut Head,
    old: &Catalog,
    new: &Catalog,
    audit_seq: i64,
) -> Result<Option<String>, StoreError> {
    let reach = reached(old, new);
    if reach.products.is_empty() && reach.resellers.is_empty() {
        return Ok(None);
    }
    let now = Utc::now().trunc_subsecs(6);
    let version = new.version();
    let run = NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        trigger_key: format!("catalog:{version}"),
        trigger: json!({"kind": "catalog_change", "policy_version": version.to_string(),
                        "audit_seq": audit_seq}),
        at: now,
        reach,
    };
    open_run(conn, head, run, now)
}

/// Opens the run of the catalogue change `applied` records, if it can
/// reach a licence: inside the change's write (the API's, or
/// `gatekeeper catalog import`'s).
pub fn open_run_for(
    conn: &mut DbConn,
    head: &mut Head,
    applied: &crate::store::catalog::Applied,
) -> Result<Option<String>, StoreError> {
    let before = Catalog::build(applied.catalog.version() - 1, applied.before.clone())
        .map_err(StoreError::Invalid)?;
    let seq = applied.audit_seqs.last().copied().unwrap_or_default();
    open_change_run(conn, head, &before, &applied.catalog, seq)
}

/// The rule instants in `(after, until]` of `catalog`: designation, rule,
/// instant.
fn instants_between(
    catalog: &Catalog,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(String, String, DateTime<Utc>)> {
    let mut found = Vec::new();
    for (id, spec) in &catalog.data().designations {
        for rule in &spec.rules {
            if let Some(t) = catalog.rule_instant(id, &rule.id) {
                if after < t && t <= until {
                    found.push((id.to_string(), rule.id.to_string(), t));
                }
            }
        }
    }
    found.sort_by(|a, b| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
    found
}

/// What a chunk of a run did.
enum Chunk {
    /// The run was complete already (another replica finished it).
    Complete,
    /// Moved on; `done` once it checked every licence.
    Advanced { done: bool, acted: Vec<String> },
}

/// What the sweep did.
#[derive(Debug, Default)]
struct Swept {
    opened: usize,
}

impl Gate {
    /// Does what is due: opens the runs of rule instants that have passed,
    /// suspends licences whose impact review is overdue, and advances every
    /// running run to its end. One runner per process at a time (a second
    /// call returns at once); replicas share the work through the ledger.
    pub async fn impact_tick(&self) -> Result<(), GateError> {
        let Ok(_running) = self.impact_runner.try_lock() else {
            return Ok(());
        };
        let catalog = self.serving_catalog()?;
        // The ledger is taken only when there is work: the first sweep (to
        // start the clock), or a rule instant passed since the last one.
        let store = self.store.clone();
        let swept_to = super::blocking(move || store.impact_swept_to()).await?;
        let now = Utc::now();
        let due = swept_to.is_none_or(|after| !instants_between(&catalog, after, now).is_empty());
        let swept = match due {
            false => Ok(Swept::default()),
            true => {
                self.commit({
                    let catalog = Arc::clone(&catalog);
                    move |conn, head| sweep(conn, head, &catalog)
                })
                .await
            }
        };
        match swept {
            Ok(swept) if swept.opened > 0 => {
                tracing::info!(
                    opened = swept.opened,
                    "impact runs opened for rule instants"
                );
            }
            Ok(_) => {}
            Err(StoreError::Stale) => {
                self.reload().await?;
            }
            Err(e) => return Err(e.into()),
        }
        // Overdue impact reviews, a chunk of licences per write (so that a
        // run that opened many reviews does not hold the ledger in one).
        let mut after = String::new();
        let mut suspended = 0;
        let store = self.store.clone();
        let mut waiting = super::blocking(move || store.any_in_impact_review()).await?;
        while waiting {
            let (from, limit) = (after.clone(), self.impact_chunk);
            let done = self
                .commit(move |conn, head| suspend_overdue(conn, head, &from, limit))
                .await?;
            suspended += done.suspended;
            match done.last {
                Some(last) if i64::try_from(done.examined).unwrap_or(0) >= limit => after = last,
                _ => waiting = false,
            }
        }
        if suspended > 0 {
            tracing::info!(suspended, "licences suspended: their impact review lapsed");
        }
        let store = self.store.clone();
        let running = super::blocking(move || store.running_impact_runs()).await?;
        // One run that fails (its row unreadable, the database busy) is
        // logged and tried again at the next tick; the others go on.
        let mut failed = None;
        for run in running {
            if let Err(e) = self.finish_run(&run).await {
                tracing::warn!(run = %run, error = %e, "advancing an impact run");
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Advances run `id` chunk by chunk until it is complete.
    pub async fn finish_run(&self, id: &str) -> Result<(), GateError> {
        let mut catalog = self.serving_catalog()?;
        let mut stale = 0;
        loop {
            let (cat, signer, run) = (
                Arc::clone(&catalog),
                Arc::clone(&self.signer),
                id.to_string(),
            );
            let chunk = self.impact_chunk;
            match self
                .commit(move |conn, head| advance(conn, head, &cat, &signer, &run, chunk))
                .await
            {
                Ok(Chunk::Complete) => return Ok(()),
                Ok(Chunk::Advanced { done, acted }) => {
                    stale = 0;
                    for action in &acted {
                        self.metrics
                            .impact_actions_total
                            .with_label_values(&[action.as_str()])
                            .inc();
                    }
                    if done {
                        self.observe_run(id).await;
                        return Ok(());
                    }
                }
                Err(StoreError::Stale) if stale < super::RETRIES => {
                    stale += 1;
                    catalog = self.reload().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Counts a completed run in the metrics (its lag: from its trigger's
    /// instant to its end).
    async fn observe_run(&self, id: &str) {
        let store = self.store.clone();
        let id = id.to_string();
        if let Ok(Some(run)) = super::blocking(move || store.impact_run(&id)).await {
            let kind = run.trigger["kind"]
                .as_str()
                .unwrap_or("unknown")
                .to_string();
            self.metrics
                .impact_runs_completed_total
                .with_label_values(&[kind.as_str()])
                .inc();
            if let Some(end) = run.completed_at {
                let lag = (end - run.at).num_milliseconds().max(0) as f64 / 1000.0;
                self.metrics
                    .impact_run_lag_seconds
                    .with_label_values(&[kind.as_str()])
                    .observe(lag);
            }
        }
    }
}

/// Opens the runs of the rule instants passed since the last sweep. Inside
/// a write.
fn sweep(conn: &mut DbConn, head: &mut Head, catalog: &Catalog) -> Result<Swept, StoreError> {
    if head.catalog_version() != catalog.version() {
        return Err(StoreError::Stale);
    }
    head.immediate(conn)?;
    let now = Utc::now().trunc_subsecs(6);
    let mut swept = Swept::default();
    if let Some(after) = sweep_clock(conn, now)? {
        for (designation, rule, at) in instants_between(catalog, after, now) {
            let products = crate::domain::DesignationId::parse(&designation)
                .map(|d| catalog.reached_by(&d))
                .unwrap_or_default();
            let run = NewRun {
                id: uuid::Uuid::now_v7().to_string(),
                trigger_key: format!("rule:{designation}/{rule}/{}", format_instant(at)),
                trigger: json!({"kind": "rule_effective", "policy_version": catalog.version().to_string(),
                                "designation": designation, "rule": rule}),
                at,
                reach: Reached {
                    products: products.iter().map(|p| p.to_string()).collect(),
                    resellers: Vec::new(),
                },
            };
            if open_run(conn, head, run, now)?.is_some() {
                swept.opened += 1;
            }
        }
    }
    Ok(swept)
}

/// What one write of overdue suspensions did.
struct Suspended {
    /// Licences in review it looked at (fewer than asked: none left).
    examined: usize,
    /// The last of them: where the next write goes on from.
    last: Option<String>,
    suspended: usize,
}

/// Suspends the licences, after `after` in id order and at most `limit`
/// looked at, whose impact review is overdue and which it has not suspended
/// before. Inside a write.
fn suspend_overdue(
    conn: &mut DbConn,
    head: &mut Head,
    after: &str,
    limit: i64,
) -> Result<Suspended, StoreError> {
    head.immediate(conn)?;
    let now = Utc::now().trunc_subsecs(6);
    let rows = in_impact_review(conn, after, limit)?;
    let mut swept = Suspended {
        examined: rows.len(),
        last: rows.last().map(|r| r.id.clone()),
        suspended: 0,
    };
    for mut row in rows {
        let due = row
            .state
            .impact_review
            .as_ref()
            .and_then(|r| r.get("due"))
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let suspended_before = row
            .state
            .impact_review
            .as_ref()
            .is_some_and(|r| r.get("suspended_at").is_some());
        if suspended_before || due.is_none_or(|due| due > now) {
            continue;
        }
        let read = row.decision_id.clone();
        if let Some(Value::Object(review)) = row.state.impact_review.as_mut() {
            review.insert("suspended_at".into(), json!(format_instant(now)));
        }
        row.state.standing = Standing::Suspended;
        row.state.status_reason = Some(json!({
            "reason": "its impact review was not resolved by its due time",
            "by": {"sub": "gatekeeper", "role": "system", "reseller": null},
            "at": format_instant(now),
        }));
        let event = NewEvent {
            action: "license.suspend".into(),
            actor: Actor::system(),
            outcome: None,
            decision: None,
            subject: json!({"kind": "license", "id": row.id,
                            "review": row.state.impact_review}),
            reseller: Some(row.reseller.clone()),
        };
        change_standing(
            head,
            StandingChange {
                license: row,
                read_decision: read,
                event,
            },
            now,
        )?;
        swept.suspended += 1;
    }
    Ok(swept)
}

/// One chunk of run `id`: the next licences after its cursor, re-decided
/// on `catalog` and acted on, the actions recorded and the cursor moved, in
/// one write.
fn advance(
    conn: &mut DbConn,
    head: &mut Head,
    catalog: &Catalog,
    signer: &LicenseSigner,
    id: &str,
    chunk: i64,
) -> Result<Chunk, StoreError> {
    if head.catalog_version() != catalog.version() {
        return Err(StoreError::Stale);
    }
    head.immediate(conn)?;
    let Some(mut run) = run_in(conn, id)? else {
        return Err(StoreError::NotFound);
    };
    if run.status == "complete" {
        return Ok(Chunk::Complete);
    }
    let now = Utc::now().trunc_subsecs(6);
    let batch = reached_after(conn, &run.reach, &run.cursor, chunk)?;
    let done = i64::try_from(batch.len()).unwrap_or(0) < chunk;
    let mut actions = Vec::new();
    let mut acted = Vec::new();
    for row in batch {
        run.cursor = row.id.clone();
        run.licenses_checked += 1;
        if row.expires_at < run.at {
            continue; // no longer in force at the run's instant (one capped
                      // to it is, and is ended by it)
        }
        let Some(action) = act_once(conn, head, catalog, signer, &run, row, now)? else {
            continue;
        };
        run.counts.add(&action.action);
        acted.push(action.action.clone());
        actions.push(action);
    }
    // Every action's event and licence go out before the action rows.
    head.immediate(conn)?;
    let completed_at = done.then_some(now);
    advance_run(conn, &run, &actions, completed_at)?;
    if done {
        let event = NewEvent {
            action: "impact.complete".into(),
            actor: Actor::system(),
            outcome: None,
            decision: None,
            subject: json!({
                "kind": "impact_run", "id": run.id, "status": "complete",
                "licenses_checked": run.licenses_checked, "counts": run.counts,
                "completed_at": format_instant(now),
            }),
            reseller: None,
        };
        let version = head.catalog_version().to_string();
        append_event(head, event, &version, now)?;
    }
    Ok(Chunk::Advanced { done, acted })
}

/// Re-decides one licence for run `run` and acts if its answer changed:
/// the decision with its event, the licence as it leaves it, and the action
/// row to record. `None`: nothing changed (nothing is written).
fn act_once(
    conn: &mut DbConn,
    head: &mut Head,
    catalog: &Catalog,
    signer: &LicenseSigner,
    run: &crate::store::impact::RunRow,
    mut row: LicenseRow,
    now: DateTime<Utc>,
) -> Result<Option<ActionRow>, StoreError> {
    let _ = conn;
    let (Ok(tenant), Ok(product), Ok(customer)) = (
        ResellerId::parse(&row.reseller),
        Sku::parse(&row.product),
        serde_json::from_value::<Customer>(row.customer.clone()),
    ) else {
        return Err(StoreError::Corrupt(format!(
            "licence {} does not read as asked",
            row.id
        )));
    };
    let question = Question {
        transaction: Transaction::Renew,
        product,
        customer,
        as_of: None,
    };
    let mut record = match plan_decision(
        catalog,
        &Actor::system(),
        &tenant,
        &question,
        "impact",
        Some(run.at),
    ) {
        Ok(record) => record,
        // The reseller or product is gone from the catalogue: nothing to
        // re-decide it on.
        Err(GateError::UnknownReseller | GateError::UnknownProduct) => return Ok(None),
        Err(GateError::Store(e)) => return Err(e),
        Err(e) => return Err(StoreError::Corrupt(e.to_string())),
    };
    let Some(act) = act_on(&row, &record.decision, catalog, run.at) else {
        return Ok(None);
    };
    let read = row.decision_id.clone();
    let cite = |designation: &str, rule: &str| {
        json!({"designation": designation, "rule": rule, "run": run.id,
               "at": format_instant(run.at)})
    };
    let mut not_after = None;
    match &act {
        Act::Ended { designation, rule } => {
            row.state.standing = Standing::Ended;
            row.state.ended_by = Some(cite(designation, rule));
            row.state.impact_review = None;
            // Why it ends is `ended_by`; a suspension's reason no longer applies.
            row.state.status_reason = None;
        }
        Act::RenewalBlocked { designation, rule } => {
            row.state.renewal_blocked = Some(cite(designation, rule));
        }
        Act::Capped { not_after: cut } => {
            row.expires_at = *cut;
            row.decision_id = record.decision.id.clone();
            not_after = Some(format_instant(*cut));
            if row.state.status_idx.is_none() {
                row.state.status_idx = Some(head.allocate_status_idx(conn)?);
            }
            resign(signer, &mut row, now)?;
        }
        Act::Review { due } => {
            row.state.impact_review = Some(json!({
                "decision_id": record.decision.id, "due": format_instant(*due), "run": run.id,
            }));
        }
    }
    record.reviewable = matches!(act, Act::Review { .. });
    record.request = json!({"kind": "impact.review", "license_id": row.id, "run": run.id});
    if let Act::Review { due } = &act {
        record.request["due"] = json!(format_instant(*due));
    }
    record.event.action = format!("impact.{}", act.name());
    record.event.actor = Actor::system();
    record.event.subject["license"] = full_subject(&row);
    record.event.subject["impact_run"] = json!(run.id);
    let version = head.catalog_version();
    let decision = record_decision(head, version, record)?;
    head.update_license(&row, &read)?;
    Ok(Some(ActionRow {
        run_id: run.id.clone(),
        license_id: row.id.clone(),
        reseller: row.reseller.clone(),
        product: row.product.clone(),
        action: act.name().to_string(),
        not_after,
        decision_id: decision.id,
        audit_seq: decision.audit_seq.unwrap_or_default(),
    }))
}

/// What a preview reports: the run a change would make, with the licences
/// it would act on (decided on the candidate catalogue, nothing recorded).
#[derive(Clone, Debug)]
pub struct Preview {
    pub at: DateTime<Utc>,
    pub policy_version: i64,
    pub licenses_checked: i64,
    pub counts: crate::store::impact::Counts,
    /// Each licence acted on: the action row it would record, and the
    /// decision it would take.
    pub licenses: Vec<(ActionRow, Decision)>,
}

impl Gate {
    /// The impact `changes` would have on the licences issued, computed on
    /// the candidate catalogue (the current one with the changes applied)
    /// without applying anything: one audit event (`impact.preview`) says
    /// who asked what, and what it would do.
    pub async fn preview_impact(
        &self,
        actor: Actor,
        changes: Vec<crate::policy::CatalogChange>,
    ) -> Result<Preview, GateError> {
        let catalog = self.fresh_catalog().await?;
        let mut data = catalog.data().clone();
        for (i, change) in changes.iter().enumerate() {
            if change.apply(&mut data).is_err() {
                return Err(GateError::Invalid(vec![(
                    format!("changes[{i}].path"),
                    "no such relationship to delete".into(),
                )]));
            }
        }
        let candidate = Catalog::build(catalog.version() + 1, data).map_err(|issues| {
            GateError::Invalid(
                issues
                    .into_iter()
                    .map(|i| ("changes".to_string(), format!("{}: {}", i.field, i.message)))
                    .collect(),
            )
        })?;
        let reach = reached(&catalog, &candidate);
        let store = self.store.clone();
        let found = super::blocking(move || store.reached_licenses(&reach)).await?;
        let at = Utc::now().trunc_subsecs(6);
        let mut preview = Preview {
            at,
            policy_version: candidate.version(),
            licenses_checked: 0,
            counts: Default::default(),
            licenses: Vec::new(),
        };
        for row in found {
            preview.licenses_checked += 1;
            if row.expires_at < at {
                continue;
            }
            let (Ok(tenant), Ok(product), Ok(customer)) = (
                ResellerId::parse(&row.reseller),
                Sku::parse(&row.product),
                serde_json::from_value::<Customer>(row.customer.clone()),
            ) else {
                continue;
            };
            let question = Question {
                transaction: Transaction::Renew,
                product,
                customer,
                as_of: None,
            };
            let record =
                match plan_decision(&candidate, &actor, &tenant, &question, "impact", Some(at)) {
                    Ok(record) => record,
                    Err(GateError::UnknownReseller | GateError::UnknownProduct) => continue,
                    Err(e) => return Err(e),
                };
            let Some(act) = act_on(&row, &record.decision, &candidate, at) else {
                continue;
            };
            preview.counts.add(act.name());
            let not_after = match &act {
                Act::Capped { not_after } => Some(format_instant(*not_after)),
                _ => None,
            };
            preview.licenses.push((
                ActionRow {
                    run_id: String::new(),
                    license_id: row.id.clone(),
                    reseller: row.reseller.clone(),
                    product: row.product.clone(),
                    action: act.name().to_string(),
                    not_after,
                    decision_id: record.decision.id.clone(),
                    audit_seq: 0,
                },
                record.decision,
            ));
        }
        // Nothing is applied; the preview itself is recorded.
        let asked: Vec<Value> = changes
            .iter()
            .map(|c| json!({"kind": c.kind(), "id": c.id(), "spec": c.spec_json().ok().flatten()}))
            .collect();
        let event = NewEvent {
            action: "impact.preview".into(),
            actor,
            outcome: None,
            decision: None,
            subject: json!({
                "kind": "impact_preview", "changes": asked, "at": format_instant(at),
                "policy_version": catalog.version().to_string(),
                "licenses_checked": preview.licenses_checked, "counts": preview.counts,
            }),
            reseller: None,
        };
        self.commit(move |_conn, head| {
            let version = head.catalog_version().to_string();
            append_event(head, event.clone(), &version, Utc::now())
        })
        .await?;
        Ok(preview)
    }
}

/// How an impact review's resolution left the licence.
struct Resolved {
    license: Box<LicenseRow>,
    decision: Option<Decision>,
    review: Value,
}

impl Gate {
    /// Resolves the impact review of licence `request.license_id`: rejecting
    /// ends the licence; approving re-decides it (a renewal, now) on the
    /// attested facts and acts on the answer as a run would, reinstating a
    /// licence the overdue review suspended when it is allowed. The review
    /// closes in the same write, or nothing is written.
    pub(super) async fn resolve_impact_review(
        &self,
        input: &super::ReviewResolution,
        under_review: &Value,
        tenant: ResellerId,
        request: &Value,
        closes: super::reviews::ReviewClose,
        base: Value,
    ) -> Result<super::ReviewResolved, GateError> {
        let license_id = request
            .get("license_id")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Corrupt("an impact review without its licence".into()))?
            .to_string();
        let store = self.store.clone();
        let id = license_id.clone();
        let current = super::blocking(move || store.license(&id))
            .await?
            .ok_or(GateError::NotFound)?;
        let stored: Customer = serde_json::from_value(current.customer.clone())
            .map_err(|e| StoreError::Corrupt(format!("licence customer: {e}")))?;
        let customer = match &input.customer {
            Some(c) if c.id != stored.id => return Err(GateError::CustomerChanged),
            Some(c) => c.clone(),
            None => stored,
        };
        let product = Sku::parse(&current.product).map_err(StoreError::Corrupt)?;
        // The rule the review was about, which a rejection ends it by.
        let reasons = under_review.get("reasons").and_then(Value::as_array);
        let cited = reasons
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r["code"] == "nexus_unknown")
                    .or_else(|| rs.first())
            })
            .map(|r| json!({"designation": r["designation"], "rule": r["rule"]}))
            .unwrap_or(Value::Null);
        let mut catalog = self.serving_catalog()?;
        for _ in 0..super::RETRIES {
            let now = Utc::now().trunc_subsecs(6);
            let decided = match input.resolution {
                super::Resolution::Approve => {
                    let question = Question {
                        transaction: Transaction::Renew,
                        product: product.clone(),
                        customer: customer.clone(),
                        as_of: None,
                    };
                    let mut record = self.decide(
                        &catalog,
                        &input.reviewer,
                        &tenant,
                        &question,
                        "decision.impact_review",
                        Some(now),
                    )?;
                    if record.decision.outcome == Outcome::Review {
                        return Err(GateError::StillInReview);
                    }
                    record.request = json!({"kind": "impact.resolve", "license_id": license_id});
                    Some(record)
                }
                super::Resolution::Reject => None,
            };
            let (cat, signer) = (Arc::clone(&catalog), Arc::clone(&self.signer));
            let (closes, base, cited) = (closes.clone(), base.clone(), cited.clone());
            let (id, reviewer, note) = (
                license_id.clone(),
                input.reviewer.clone(),
                input.note.clone(),
            );
            let customer_json =
                serde_json::to_value(&customer).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let written = self
                .commit(move |conn, head| {
                    let now = Utc::now();
                    let mut row = head.license(conn, &id)?.ok_or(StoreError::Conflict)?;
                    let read = row.decision_id.clone();
                    let waiting = row.state.impact_review.is_some()
                        && matches!(row.state.standing, Standing::Active | Standing::Suspended);
                    let Some(mut record) = decided.clone() else {
                        // Rejected: the licence ends, by the rule reviewed.
                        let mut review = base.clone();
                        review["status"] = json!("rejected");
                        let settled = super::reviews::Settled {
                            under_review: closes.decision_id().to_string(),
                            status: "rejected",
                            event: closes.event("review.reject", &review),
                            review: review.clone(),
                        };
                        settled.write(conn, head)?;
                        if waiting {
                            let mut ended_by = cited.clone();
                            ended_by["at"] = json!(format_instant(now));
                            ended_by["review"] = json!(closes.decision_id());
                            row.state.standing = Standing::Ended;
                            row.state.ended_by = Some(ended_by);
                            row.state.impact_review = None;
                            row.state.status_reason = Some(json!({
                                "reason": note,
                                "by": {"sub": reviewer.sub, "role": reviewer.role,
                                       "reseller": reviewer.reseller},
                                "at": format_instant(now),
                            }));
                            let event = NewEvent {
                                action: "license.end".into(),
                                actor: reviewer.clone(),
                                outcome: None,
                                decision: None,
                                subject: json!({"kind": "license", "id": row.id,
                                                "review": closes.decision_id()}),
                                reseller: Some(row.reseller.clone()),
                            };
                            change_standing(
                                head,
                                StandingChange {
                                    license: row.clone(),
                                    read_decision: read,
                                    event,
                                },
                                now,
                            )?;
                        }
                        return Ok(Resolved {
                            license: Box::new(row),
                            decision: None,
                            review,
                        });
                    };
                    // Approved: act on the new answer as a run would.
                    let outcome = record.decision.outcome;
                    if waiting {
                        row.customer = customer_json.clone();
                        // Suspended by this review's lapse (the sweep marks it),
                        // not by compliance for a reason of its own.
                        let lapsed = row
                            .state
                            .impact_review
                            .as_ref()
                            .is_some_and(|r| r.get("suspended_at").is_some());
                        row.state.impact_review = None;
                        let blocked = record.decision.reasons.first().map(|r| {
                            json!({"designation": r.designation, "rule": r.rule,
                                   "review": closes.decision_id(), "at": format_instant(now)})
                        });
                        let ends = record
                            .decision
                            .reasons
                            .iter()
                            .any(|r| cat.ends_service(&r.designation, &r.rule));
                        // What the answer did to the licence, in order (its
                        // events are derived from this list).
                        let mut effects = Vec::new();
                        match outcome {
                            Outcome::Deny if ends => {
                                row.state.standing = Standing::Ended;
                                row.state.ended_by = blocked;
                                row.state.status_reason = None;
                                effects.push("ended");
                            }
                            _ => {
                                if outcome == Outcome::Deny {
                                    row.state.renewal_blocked = blocked;
                                    effects.push("renewal_blocked");
                                } else {
                                    row.decision_id = record.decision.id.clone();
                                    if let Some(cut) = record.decision.constraints.not_after {
                                        if cut < row.expires_at {
                                            row.expires_at = cut;
                                            effects.push("capped");
                                        }
                                    }
                                }
                                // Back in force, if the overdue review
                                // suspended it (and only then).
                                if row.state.standing == Standing::Suspended && lapsed {
                                    row.state.standing = Standing::Active;
                                    row.state.status_reason = None;
                                    effects.insert(0, "reinstated");
                                }
                                if row.state.status_idx.is_none() {
                                    row.state.status_idx = Some(head.allocate_status_idx(conn)?);
                                }
                                resign(&signer, &mut row, now)?;
                            }
                        }
                        record.event.subject["license"] = full_subject(&row);
                        record.event.subject["effects"] = json!(effects);
                    }
                    let version = cat.version();
                    let decision = record_decision(head, version, record)?;
                    if waiting {
                        head.update_license(&row, &read)?;
                    }
                    let settled = closes.settle(&decision.id, outcome, Some(row.id.as_str()));
                    settled.write(conn, head)?;
                    Ok(Resolved {
                        license: Box::new(row),
                        decision: Some(decision),
                        review: settled.review,
                    })
                })
                .await;
            return match written {
                Ok(Resolved {
                    license,
                    decision,
                    review,
                }) => {
                    if let Some(decision) = &decision {
                        self.observe(decision);
                    }
                    Ok(super::ReviewResolved {
                        review,
                        decision,
                        license: Some(super::License::from_row(&license, Utc::now())),
                    })
                }
                Err(StoreError::Stale) => {
                    catalog = self.reload().await?;
                    continue;
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::ReviewNotOpen) => Err(GateError::ReviewResolved),
                Err(e) => Err(e.into()),
            };
        }
        Err(StoreError::Stale.into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::policy::{
        CatalogData, DesignationSpec, OrganizationSpec, ProductSpec, ResellerSpec,
    };
    use chrono::TimeZone;

    /// The shipped designation, a product of Kaspersky's, a reseller.
    fn catalog() -> Catalog {
        #[derive(serde::Deserialize)]
        struct Seed {
            organizations: std::collections::BTreeMap<crate::domain::OrgId, OrganizationSpec>,
            designations: std::collections::BTreeMap<crate::domain::DesignationId, DesignationSpec>,
        }
        let seed: Seed = serde_json::from_str(include_str!("../store/seed.json")).unwrap();
        let mut data = CatalogData {
            organizations: seed.organizations,
            designations: seed.designations,
            ..Default::default()
        };
        data.products.insert(
            Sku::parse("KAV").unwrap(),
            serde_json::from_value::<ProductSpec>(json!({
                "name": "KAV", "vendor": "ao-kaspersky-lab", "category": "antivirus"}))
            .unwrap(),
        );
        data.resellers.insert(
            ResellerId::parse("alpha").unwrap(),
            serde_json::from_value::<ResellerSpec>(json!({
                "name": "Alpha", "country": "DE", "us_person": false}))
            .unwrap(),
        );
        Catalog::build(1, data).unwrap()
    }

    fn licence(expires: DateTime<Utc>) -> LicenseRow {
        LicenseRow {
            id: "l".into(),
            reseller: "alpha".into(),
            product: "KAV".into(),
            customer: json!({}),
            seats: 1,
            starts_at: expires,
            expires_at: expires,
            decision_id: "d".into(),
            token: String::new(),
            state: Default::default(),
            version: None,
        }
    }

    /// The decision of a renewal of KAV for a customer in `country`
    /// (`us_person` as given) at `at`.
    fn decided(
        catalog: &Catalog,
        country: &str,
        us_person: Option<bool>,
        at: DateTime<Utc>,
    ) -> Decision {
        let question = Question {
            transaction: Transaction::Renew,
            product: Sku::parse("KAV").unwrap(),
            customer: serde_json::from_value(json!({
                "id": "c", "name": "C", "country": country, "us_person": us_person}))
            .unwrap(),
            as_of: None,
        };
        plan_decision(
            catalog,
            &Actor::system(),
            &ResellerId::parse("alpha").unwrap(),
            &question,
            "impact",
            Some(at),
        )
        .unwrap()
        .decision
    }

    #[test]
    fn each_changed_answer_is_one_action_and_an_unchanged_one_none() {
        let catalog = catalog();
        let before_cutoff = Utc.with_ymd_and_hms(2024, 8, 1, 0, 0, 0).unwrap();
        let after_cutoff = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let cutoff = catalog
            .rule_instant(
                &crate::domain::DesignationId::parse("us-icts-kaspersky-2024").unwrap(),
                &crate::domain::RuleId::parse("full-cutoff").unwrap(),
            )
            .unwrap();
        let far = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();

        // Denied by the rule that ends service: ended.
        let d = decided(&catalog, "US", None, after_cutoff);
        assert_eq!(
            act_on(&licence(far), &d, &catalog, after_cutoff),
            Some(Act::Ended {
                designation: "us-icts-kaspersky-2024".into(),
                rule: "full-cutoff".into()
            })
        );
        // Before the cut-off a renewal is allowed up to it: capped to the
        // cut-off, unless it already expires by then.
        let d = decided(&catalog, "US", None, before_cutoff);
        assert_eq!(
            act_on(&licence(far), &d, &catalog, before_cutoff),
            Some(Act::Capped { not_after: cutoff })
        );
        assert_eq!(act_on(&licence(cutoff), &d, &catalog, before_cutoff), None);
        // Nexus unknown with the rule in effect: a review, due now (the rule
        // took effect before the run); none if one is open already.
        let d = decided(&catalog, "BR", None, after_cutoff);
        assert_eq!(
            act_on(&licence(far), &d, &catalog, after_cutoff),
            Some(Act::Review { due: after_cutoff })
        );
        let mut waiting = licence(far);
        waiting.state.impact_review = Some(json!({"decision_id": "x"}));
        assert_eq!(act_on(&waiting, &d, &catalog, after_cutoff), None);
        // No nexus: allowed, nothing to do.
        let d = decided(&catalog, "DE", Some(false), after_cutoff);
        assert_eq!(act_on(&licence(far), &d, &catalog, after_cutoff), None);
    }

    #[test]
    fn a_denial_without_a_service_end_blocks_renewal_once() {
        // A designation that only bans renewals, without ending service.
        let mut data = catalog().data().clone();
        let id = crate::domain::DesignationId::parse("us-icts-kaspersky-2024").unwrap();
        let spec = data.designations.get_mut(&id).unwrap();
        for rule in &mut spec.rules {
            rule.ends_service = false;
        }
        let catalog = Catalog::build(2, data).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let far = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let d = decided(&catalog, "US", None, at);
        assert_eq!(
            act_on(&licence(far), &d, &catalog, at),
            Some(Act::RenewalBlocked {
                designation: "us-icts-kaspersky-2024".into(),
                rule: "full-cutoff".into()
            })
        );
        let mut blocked = licence(far);
        blocked.state.renewal_blocked = Some(json!({"rule": "full-cutoff"}));
        assert_eq!(act_on(&blocked, &d, &catalog, at), None);
    }
}
