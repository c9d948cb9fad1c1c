//! A ledger batch as one statement on PostgreSQL: the head check, the head
//! update and every row of the batch, in one round trip and one commit.
//!
//! A batch run under the locked head (see [`super::ledger`]) costs six
//! round trips (`BEGIN`, the lock, an insert per table, the head update,
//! `COMMIT`), each waiting for a PostgreSQL backend to be scheduled, and
//! holds the head's row lock throughout, so that batches never overlap.
//! Here the ledger writer prepares a batch against the head it *predicts*
//! (the one its previous batch leaves), and sends it as one statement in
//! autocommit: data-modifying CTEs over arrays, one array per column, the
//! statement text the same for every batch (so it is prepared once per
//! connection).
//!
//! - **The head is checked in the commit.** The head's `UPDATE` matches
//!   only the predicted `seq` and `hash`, and every other part of the
//!   statement writes only if it did. A batch sent while its predecessor
//!   still commits waits on the head's row lock, then sees the head its
//!   predecessor left: its own if that committed, else an older one, and
//!   then it writes nothing ([`Sent::HeadMoved`]). So a batch is never
//!   committed on a wrong head, whichever replica moved it.
//! - **A licence changed since it was read** (the `UPDATE` of a renewal
//!   finds another decision behind it, or another `updated_at`: every
//!   change sets it) makes the statement fail through
//!   `ledger_refuse` (a function of the schema), so nothing of the batch is
//!   written: the ledger runs it again under the lock, where the write at
//!   fault fails alone. Any other refusal (a key stored by another replica
//!   a moment before, a constraint) is an error the same way.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};

use super::head::Pending;
use super::StoreError;

/// What sending a batch came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// Committed: the head is the one predicted after the batch.
    Committed,
    /// The head was not the one predicted: nothing was written.
    HeadMoved,
}

/// The head before and after a batch.
#[derive(Debug, Clone)]
pub(super) struct Advance {
    pub from_seq: i64,
    pub from_hash: String,
    pub to_seq: i64,
    pub to_hash: String,
    pub catalog_version: i64,
}

type Texts<'a> = Vec<&'a str>;
type MaybeTexts<'a> = Vec<Option<&'a str>>;

/// The statement's parameters: one array per column.
#[derive(Default)]
struct Columns<'a> {
    // audit_events
    ev_seq: Vec<i64>,
    ev_id: Texts<'a>,
    ev_at: Texts<'a>,
    ev_action: Texts<'a>,
    ev_outcome: MaybeTexts<'a>,
    ev_reseller: MaybeTexts<'a>,
    ev_event: Texts<'a>,
    ev_prev: Texts<'a>,
    ev_hash: Texts<'a>,
    ev_what_if: Vec<bool>,
    // events (the outbox)
    ob_seq: Vec<i64>,
    ob_id: Texts<'a>,
    ob_type: Texts<'a>,
    ob_reseller: MaybeTexts<'a>,
    ob_created: Texts<'a>,
    ob_audit_seq: Vec<i64>,
    // decisions
    de_id: Texts<'a>,
    de_reseller: Texts<'a>,
    de_kind: Texts<'a>,
    de_outcome: Texts<'a>,
    de_audit_seq: Vec<i64>,
    de_created: Texts<'a>,
    de_request: MaybeTexts<'a>,
    de_review: MaybeTexts<'a>,
    // licenses, new
    li_id: Texts<'a>,
    li_reseller: Texts<'a>,
    li_product: Texts<'a>,
    li_customer: Texts<'a>,
    li_seats: Vec<i64>,
    li_starts: Texts<'a>,
    li_expires: Texts<'a>,
    li_decision: Texts<'a>,
    li_token: Texts<'a>,
    li_created: Texts<'a>,
    li_updated: Texts<'a>,
    li_status: Texts<'a>,
    li_reason: MaybeTexts<'a>,
    li_ended: MaybeTexts<'a>,
    li_blocked: MaybeTexts<'a>,
    li_review: MaybeTexts<'a>,
    li_idx: Vec<Option<i64>>,
    // licenses, changed
    lu_id: Texts<'a>,
    lu_read: Texts<'a>,
    lu_version: Texts<'a>,
    lu_customer: Vec<String>,
    lu_expires: Vec<String>,
    lu_decision: Texts<'a>,
    lu_token: Texts<'a>,
    lu_updated: Texts<'a>,
    lu_status: Texts<'a>,
    lu_reason: Vec<Option<String>>,
    lu_ended: Vec<Option<String>>,
    lu_blocked: Vec<Option<String>>,
    lu_review: Vec<Option<String>>,
    lu_idx: Vec<Option<i64>>,
    // idempotency_keys
    ik_reseller: Texts<'a>,
    ik_key: Texts<'a>,
    ik_fingerprint: Texts<'a>,
    ik_status: Vec<i32>,
    ik_body: Texts<'a>,
    ik_created: Texts<'a>,
    ik_expires: Texts<'a>,
    ik_audit_seq: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a Pending) -> Columns<'a> {
        let mut c = Columns::default();
        for e in &rows.events {
            c.ev_seq.push(e.seq);
            c.ev_id.push(&e.id);
            c.ev_at.push(&e.at);
            c.ev_action.push(&e.action);
            c.ev_outcome.push(e.outcome);
            c.ev_reseller.push(e.reseller.as_deref());
            c.ev_event.push(&e.event);
            c.ev_prev.push(&e.prev_hash);
            c.ev_hash.push(&e.hash);
            c.ev_what_if.push(e.what_if);
        }
        for o in &rows.outbox {
            c.ob_seq.push(o.seq);
            c.ob_id.push(&o.id);
            c.ob_type.push(o.event_type);
            c.ob_reseller.push(o.reseller.as_deref());
            c.ob_created.push(&o.created_at);
            c.ob_audit_seq.push(o.audit_seq);
        }
        for d in &rows.decisions {
            c.de_id.push(&d.id);
            c.de_reseller.push(&d.reseller);
            c.de_kind.push(&d.transaction_kind);
            c.de_outcome.push(d.outcome);
            c.de_audit_seq.push(d.audit_seq);
            c.de_created.push(&d.created_at);
            c.de_request.push(d.request.as_deref());
            c.de_review.push(d.review_status);
        }
        for l in &rows.licenses {
            c.li_id.push(&l.id);
            c.li_reseller.push(&l.reseller);
            c.li_product.push(&l.product);
            c.li_customer.push(&l.customer);
            c.li_seats.push(l.seats);
            c.li_starts.push(&l.starts_at);
            c.li_expires.push(&l.expires_at);
            c.li_decision.push(&l.decision_id);
            c.li_token.push(&l.token);
            c.li_created.push(&l.created_at);
            c.li_updated.push(&l.updated_at);
            c.li_status.push(l.status);
            c.li_reason.push(l.status_reason.as_deref());
            c.li_ended.push(l.ended_by.as_deref());
            c.li_blocked.push(l.renewal_blocked.as_deref());
            c.li_review.push(l.impact_review.as_deref());
            c.li_idx.push(l.status_idx);
        }
        for (first, r) in rows.changed_licenses() {
            let l = &r.license;
            c.lu_id.push(&l.id);
            c.lu_read.push(&first.read_decision);
            c.lu_version.push(&first.read_version);
            c.lu_customer.push(l.customer.to_string());
            c.lu_expires.push(super::format_instant(l.expires_at));
            c.lu_decision.push(&l.decision_id);
            c.lu_token.push(&l.token);
            c.lu_updated.push(&r.at);
            c.lu_status.push(l.state.standing.as_str());
            c.lu_reason
                .push(super::head::json_text(&l.state.status_reason));
            c.lu_ended.push(super::head::json_text(&l.state.ended_by));
            c.lu_blocked
                .push(super::head::json_text(&l.state.renewal_blocked));
            c.lu_review
                .push(super::head::json_text(&l.state.impact_review));
            c.lu_idx.push(l.state.status_idx);
        }
        for k in &rows.idempotency {
            c.ik_reseller.push(&k.reseller);
            c.ik_key.push(&k.idem_key);
            c.ik_fingerprint.push(&k.fingerprint);
            c.ik_status.push(k.status);
            c.ik_body.push(&k.body);
            c.ik_created.push(&k.created_at);
            c.ik_expires.push(&k.expires_at);
            c.ik_audit_seq.push(k.audit_seq);
        }
        c
    }
}

/// The statement. Its text never changes (only the arrays' lengths do), so
/// diesel prepares it once per connection and keeps it.
const STATEMENT: &str = "\
WITH h AS (
    UPDATE ledger_head SET seq = $1, hash = $2, catalog_version = $3
    WHERE id = 1 AND seq = $4 AND hash = $5
    RETURNING 1
), ev AS (
    INSERT INTO audit_events (seq, id, at, action, outcome, reseller, event, prev_hash, hash, what_if)
    SELECT * FROM unnest($6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[],
        $11::text[], $12::text[], $13::text[], $14::text[], $15::boolean[])
    WHERE EXISTS (SELECT 1 FROM h)
), ob AS (
    INSERT INTO events (seq, id, event_type, reseller, created_at, audit_seq)
    SELECT * FROM unnest($16::bigint[], $17::text[], $18::text[], $19::text[], $20::text[],
        $21::bigint[])
    WHERE EXISTS (SELECT 1 FROM h)
), de AS (
    INSERT INTO decisions (id, reseller, transaction_kind, outcome, audit_seq, created_at,
        request, review_status)
    SELECT * FROM unnest($22::text[], $23::text[], $24::text[], $25::text[],
        $26::bigint[], $27::text[], $28::text[], $29::text[])
    WHERE EXISTS (SELECT 1 FROM h)
), li AS (
    INSERT INTO licenses (id, reseller, product, customer, seats, starts_at, expires_at,
        decision_id, token, created_at, updated_at, status, status_reason, ended_by,
        renewal_blocked, impact_review, status_idx)
    SELECT * FROM unnest($30::text[], $31::text[], $32::text[], $33::text[], $34::bigint[],
        $35::text[], $36::text[], $37::text[], $38::text[], $39::text[], $40::text[],
        $41::text[], $42::text[], $43::text[], $44::text[], $45::text[], $46::bigint[])
    WHERE EXISTS (SELECT 1 FROM h)
), lu AS (
    UPDATE licenses AS l SET customer = r.customer, expires_at = r.expires_at,
        decision_id = r.decision_id, token = r.token, updated_at = r.updated_at,
        status = r.status, status_reason = r.status_reason, ended_by = r.ended_by,
        renewal_blocked = r.renewal_blocked, impact_review = r.impact_review,
        status_idx = r.status_idx
    FROM unnest($47::text[], $48::text[], $49::text[], $50::text[], $51::text[], $52::text[], $53::text[],
        $54::text[], $55::text[], $56::text[], $57::text[], $58::text[], $59::text[],
        $60::bigint[])
        AS r (id, read_decision, read_version, customer, expires_at, decision_id, token, updated_at, status,
              status_reason, ended_by, renewal_blocked, impact_review, status_idx)
    WHERE l.id = r.id AND l.decision_id = r.read_decision
        AND l.updated_at = r.read_version AND EXISTS (SELECT 1 FROM h)
    RETURNING 1
), ik AS (
    INSERT INTO idempotency_keys (reseller, idem_key, fingerprint, status, body, created_at,
        expires_at, audit_seq)
    SELECT * FROM unnest($61::text[], $62::text[], $63::text[], $64::integer[], $65::text[],
        $66::text[], $67::text[], $68::bigint[])
    WHERE EXISTS (SELECT 1 FROM h)
)
SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM h) THEN FALSE
    WHEN (SELECT count(*) FROM lu) = $69 THEN TRUE
    ELSE ledger_refuse('a licence changed since the batch read it')
END";

/// The batch's statement with its parameters.
struct Statement<'a> {
    advance: &'a Advance,
    c: Columns<'a>,
    changed: i64,
}

impl QueryId for Statement<'_> {
    type QueryId = ();
    // The text is constant: prepared once, cached by it.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement<'_> {
    type SqlType = Bool;
}

impl RunQueryDsl<PgConnection> for Statement<'_> {}

impl QueryFragment<Pg> for Statement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // The text with `$n` placeholders as written above; diesel numbers
        // the binds in the order they are pushed, so the placeholders are
        // numbered in the order they appear (a test checks), and each push
        // below matches its `$n`.
        let mut parts = STATEMENT.split('$');
        out.push_sql(parts.next().unwrap_or_default());
        let c = &self.c;
        let a = self.advance;
        macro_rules! binds {
            ($(($ty:ty, $value:expr)),* $(,)?) => {
                $(
                    out.push_bind_param::<$ty, _>($value)?;
                    let rest = parts.next().unwrap_or_default();
                    out.push_sql(rest.trim_start_matches(|ch: char| ch.is_ascii_digit()));
                )*
            };
        }
        binds!(
            (BigInt, &a.to_seq),
            (Text, &a.to_hash),
            (BigInt, &a.catalog_version),
            (BigInt, &a.from_seq),
            (Text, &a.from_hash),
            (Array<BigInt>, &c.ev_seq),
            (Array<Text>, &c.ev_id),
            (Array<Text>, &c.ev_at),
            (Array<Text>, &c.ev_action),
            (Array<Nullable<Text>>, &c.ev_outcome),
            (Array<Nullable<Text>>, &c.ev_reseller),
            (Array<Text>, &c.ev_event),
            (Array<Text>, &c.ev_prev),
            (Array<Text>, &c.ev_hash),
            (Array<Bool>, &c.ev_what_if),
            (Array<BigInt>, &c.ob_seq),
            (Array<Text>, &c.ob_id),
            (Array<Text>, &c.ob_type),
            (Array<Nullable<Text>>, &c.ob_reseller),
            (Array<Text>, &c.ob_created),
            (Array<BigInt>, &c.ob_audit_seq),
            (Array<Text>, &c.de_id),
            (Array<Text>, &c.de_reseller),
            (Array<Text>, &c.de_kind),
            (Array<Text>, &c.de_outcome),
            (Array<BigInt>, &c.de_audit_seq),
            (Array<Text>, &c.de_created),
            (Array<Nullable<Text>>, &c.de_request),
            (Array<Nullable<Text>>, &c.de_review),
            (Array<Text>, &c.li_id),
            (Array<Text>, &c.li_reseller),
            (Array<Text>, &c.li_product),
            (Array<Text>, &c.li_customer),
            (Array<BigInt>, &c.li_seats),
            (Array<Text>, &c.li_starts),
            (Array<Text>, &c.li_expires),
            (Array<Text>, &c.li_decision),
            (Array<Text>, &c.li_token),
            (Array<Text>, &c.li_created),
            (Array<Text>, &c.li_updated),
            (Array<Text>, &c.li_status),
            (Array<Nullable<Text>>, &c.li_reason),
            (Array<Nullable<Text>>, &c.li_ended),
            (Array<Nullable<Text>>, &c.li_blocked),
            (Array<Nullable<Text>>, &c.li_review),
            (Array<Nullable<BigInt>>, &c.li_idx),
            (Array<Text>, &c.lu_id),
            (Array<Text>, &c.lu_read),
            (Array<Text>, &c.lu_version),
            (Array<Text>, &c.lu_customer),
            (Array<Text>, &c.lu_expires),
            (Array<Text>, &c.lu_decision),
            (Array<Text>, &c.lu_token),
            (Array<Text>, &c.lu_updated),
            (Array<Text>, &c.lu_status),
            (Array<Nullable<Text>>, &c.lu_reason),
            (Array<Nullable<Text>>, &c.lu_ended),
            (Array<Nullable<Text>>, &c.lu_blocked),
            (Array<Nullable<Text>>, &c.lu_review),
            (Array<Nullable<BigInt>>, &c.lu_idx),
            (Array<Text>, &c.ik_reseller),
            (Array<Text>, &c.ik_key),
            (Array<Text>, &c.ik_fingerprint),
            (Array<Integer>, &c.ik_status),
            (Array<Text>, &c.ik_body),
            (Array<Text>, &c.ik_created),
            (Array<Text>, &c.ik_expires),
            (Array<Nullable<BigInt>>, &c.ik_audit_seq),
            (BigInt, &self.changed),
        );
        debug_assert!(parts.next().is_none(), "a placeholder without a bind");
        Ok(())
    }
}

/// Sends a batch's rows with the head check and update, as one statement
/// in autocommit: committed when this returns [`Sent::Committed`].
pub(super) fn send(
    pg: &mut PgConnection,
    advance: &Advance,
    rows: &Pending,
) -> Result<Sent, StoreError> {
    let c = Columns::of(rows);
    let changed = i64::try_from(c.lu_id.len()).unwrap_or(i64::MAX);
    let statement = Statement {
        advance,
        c,
        changed,
    };
    let committed: bool = statement.get_result(pg)?;
    Ok(if committed {
        Sent::Committed
    } else {
        Sent::HeadMoved
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::STATEMENT;

    #[test]
    fn the_statement_numbers_its_placeholders_in_order() {
        let numbers: Vec<usize> = STATEMENT
            .split('$')
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().expect("a number after each $")
            })
            .collect();
        assert_eq!(numbers, (1..=69).collect::<Vec<_>>());
    }
}
