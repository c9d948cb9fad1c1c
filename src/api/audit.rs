//! The audit trail, for compliance: pages of events and a verification.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::paging::not_a_parameter;
use super::{ApiError, FieldError, Paging, Params, Seq, State};
use crate::audit::canonical_json;
use crate::auth::{Principal, Role};
use crate::store::audit::AuditFilter;
use crate::store::Store;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// The filters and page size of `GET /v1/audit` (and the console's trail).
pub(crate) fn parse_filter(
    params: &HashMap<String, String>,
) -> Result<(AuditFilter, i64), ApiError> {
    let mut errors = Vec::new();
    let mut filter = AuditFilter::default();
    let mut paging = Paging::<Seq>::new(DEFAULT_LIMIT, MAX_LIMIT);
    let instant = |name: &str, v: &str, errors: &mut Vec<FieldError>| {
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| errors.push(FieldError::new(name, "must be an RFC 3339 instant")))
            .ok()
    };
    for (name, value) in params {
        match paging.take(name, value) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(ApiError::Validation(mut e)) => {
                errors.append(&mut e);
                continue;
            }
            Err(_) => continue,
        }
        match name.as_str() {
            "action" => match crate::domain::PlainText::parse(value) {
                Ok(_) => filter.action = Some(value.clone()),
                Err(m) => errors.push(FieldError::new("action", m)),
            },
            "outcome" => match value.as_str() {
                "allow" | "deny" | "review" => filter.outcome = Some(value.clone()),
                _ => errors.push(FieldError::new("outcome", "must be allow, deny or review")),
            },
            "what_if" => match value.as_str() {
                "true" => filter.what_if = Some(true),
                "false" => filter.what_if = Some(false),
                _ => errors.push(FieldError::new("what_if", "must be true or false")),
            },
            "reseller" => match crate::domain::ResellerId::parse(value) {
                Ok(_) => filter.reseller = Some(value.clone()),
                Err(m) => errors.push(FieldError::new("reseller", m)),
            },
            "from" => filter.from = instant("from", value, &mut errors),
            "to" => filter.to = instant("to", value, &mut errors),
            other => errors.push(FieldError::new(other, "is not a filter of this listing")),
        }
    }
    filter.after = paging.cursor.map(|Seq(n)| n);
    // Counting outcomes counts transactions: a what-if question is not one,
    // so it is left out unless `what_if` is asked for.
    if filter.outcome.is_some() && filter.what_if.is_none() {
        filter.what_if = Some(false);
    }
    if errors.is_empty() {
        Ok((filter, paging.limit))
    } else {
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        Err(ApiError::Validation(errors))
    }
}

/// The export formats `GET /v1/audit` streams, by `Accept`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    Ndjson,
    Csv,
}

fn export_format(req: &HttpRequest) -> Option<Export> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if accept.contains("application/x-ndjson") {
        Some(Export::Ndjson)
    } else if accept.contains("text/csv") {
        Some(Export::Csv)
    } else {
        None
    }
}

/// `GET /v1/audit`: events in `seq` order, a page at a time; or, with
/// `Accept: application/x-ndjson` or `text/csv`, every matching event,
/// streamed.
pub async fn list(
    state: State,
    principal: Principal,
    req: HttpRequest,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let (filter, limit) = parse_filter(&query.0)?;
    if let Some(format) = export_format(&req) {
        return Ok(stream(state.store.clone(), filter, format));
    }
    let st = Arc::clone(&state);
    let page = web::block(move || st.store.audit_events(&filter, limit)).await??;
    Ok(HttpResponse::Ok().json(json!({ "events": page.rows, "next": page.next })))
}

/// Bytes buffered before they are handed to the connection.
const CHUNK: usize = 64 * 1024;

/// Streams every event matching `filter`: a blocking reader pages through
/// the table and hands chunks to the response through a small bounded
/// channel, so memory stays bounded whatever the size of the trail.
pub(crate) fn stream(store: Store, filter: AuditFilter, format: Export) -> HttpResponse {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(CHUNK);
        if format == Export::Csv {
            buf.extend_from_slice(CSV_HEADER.as_bytes());
            buf.push(b'\n');
        }
        let mut gone = false;
        let read = store.for_each_event(&filter, |event| {
            match format {
                Export::Ndjson => buf.extend_from_slice(canonical_json(event).as_bytes()),
                Export::Csv => buf.extend_from_slice(csv_row(event).as_bytes()),
            }
            buf.push(b'\n');
            if buf.len() >= CHUNK {
                let chunk =
                    web::Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK)));
                gone = sender.blocking_send(Ok(chunk)).is_err();
            }
            !gone
        });
        match read {
            Ok(()) if !gone => {
                let _ = sender.blocking_send(Ok(web::Bytes::from(buf)));
            }
            Ok(()) => {}
            Err(e) => {
                // The status is sent already: end the stream in error, so the
                // client sees a broken transfer rather than a short export.
                let _ = sender.blocking_send(Err(e.into()));
            }
        }
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    HttpResponse::Ok()
        .content_type(match format {
            Export::Ndjson => "application/x-ndjson",
            Export::Csv => "text/csv; charset=utf-8",
        })
        .streaming(body)
}

const CSV_HEADER: &str = "seq,id,at,action,actor_sub,actor_role,actor_reseller,outcome,what_if,\
subject_kind,subject_id,product,customer_id,customer_country,customer_us_person,\
decision_id,transaction,reasons,not_after,license_id,policy_version,prev_hash,hash,subject,decision";

/// One event as a CSV row: the fields a reviewer filters on, flattened,
/// then the whole subject and decision as JSON for completeness.
fn csv_row(e: &Value) -> String {
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let reasons = e["decision"]["reasons"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    format!(
                        "{}:{}:{}:{}",
                        text(&r["code"]),
                        text(&r["designation"]),
                        text(&r["rule"]),
                        text(&r["party"])
                    )
                })
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default();
    let fields = [
        text(&e["seq"]),
        text(&e["id"]),
        text(&e["at"]),
        text(&e["action"]),
        text(&e["actor"]["sub"]),
        text(&e["actor"]["role"]),
        text(&e["actor"]["reseller"]),
        text(&e["outcome"]),
        // `true` for a what-if decision, `false` for another, empty for an
        // event that records no decision.
        match e.get("decision") {
            Some(_) => crate::audit::state::is_what_if(e).to_string(),
            None => String::new(),
        },
        text(&e["subject"]["kind"]),
        text(&e["subject"]["id"]),
        text(&e["subject"]["product"]),
        text(&e["subject"]["customer"]["id"]),
        text(&e["subject"]["customer"]["country"]),
        text(&e["subject"]["customer"]["us_person"]),
        text(&e["decision"]["id"]),
        text(&e["decision"]["transaction"]),
        reasons,
        text(&e["decision"]["constraints"]["not_after"]),
        text(&e["subject"]["license"]["id"]),
        text(&e["policy_version"]),
        text(&e["prev_hash"]),
        text(&e["hash"]),
        text(&e["subject"]),
        text(&e["decision"]),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 4180: quote a field holding a comma, quote or line break. A field
/// that a spreadsheet could run as a formula is prefixed with `'`.
fn csv_field(field: &str) -> String {
    let field = if formula_like(field) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// Whether a spreadsheet might read `field` as a formula (OWASP's CSV
/// injection list, and more): it begins with `=`, `+`, `-`, `@`, their
/// full-width forms (`＝ ＋ － ＠`), TAB, CR or LF, or with other white space
/// before one of those. A plain decimal number (`-1`, `+2.5`) is data.
fn formula_like(field: &str) -> bool {
    const TRIGGERS: [char; 11] = [
        '=', '+', '-', '@', '\t', '\r', '\n', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
    ];
    let Some(first) = field.chars().next() else {
        return false;
    };
    if first.is_whitespace() || TRIGGERS.contains(&first) {
        let rest = field.trim_start_matches(char::is_whitespace);
        let triggered = field.starts_with(['\t', '\r', '\n']) || rest.starts_with(TRIGGERS);
        triggered && !plain_number(field)
    } else {
        false
    }
}

/// An optional sign, digits and an optional fraction: nothing a
/// spreadsheet runs.
fn plain_number(field: &str) -> bool {
    let unsigned = field.strip_prefix(['-', '+']).unwrap_or(field);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// `GET /v1/audit/verify`: checks the whole chain against the recorded head
/// and the signed checkpoints, which must be signed by a configured key.
pub async fn verify(state: State, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let st = Arc::clone(&state);
    let report = web::block(move || st.store.verify_chain(&[], st.gate.keys())).await??;
    Ok(HttpResponse::Ok().json(report.to_json()))
}

/// `GET /v1/audit/checkpoints`: every signed checkpoint (after `after`, at
/// most `limit`), with the configured public keys (as `GET /v1/keys`): a
/// file an auditor can keep elsewhere and verify an export against (with
/// keys obtained apart from it: the offline verifier does not trust these).
pub async fn checkpoints(
    state: State,
    principal: Principal,
    query: Params,
) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    let paging = Paging::<Seq>::read(query, MAX_LIMIT, MAX_LIMIT, |name, _| {
        Err(not_a_parameter(name))
    })?;
    let st = Arc::clone(&state);
    let page = web::block(move || {
        st.store
            .checkpoint_page(paging.cursor.map(|Seq(n)| n), paging.limit)
    })
    .await??;
    let keys = state.gate.keys();
    Ok(HttpResponse::Ok()
        .json(json!({ "checkpoints": page.rows, "keys": keys, "next": page.next })))
}

/// `POST /v1/audit/checkpoints`: signs a checkpoint over the chain's head
/// now (or returns the one that already covers it).
pub async fn sign_checkpoint(state: State, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(&[Role::Compliance])?;
    match state.gate.checkpoint().await? {
        Some(checkpoint) => Ok(HttpResponse::Created().json(json!({ "checkpoint": checkpoint }))),
        None => Err(ApiError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_a_spreadsheet_could_run_is_neutralised() {
        let formulas = [
            "=1+1",
            "+1+1",
            "-1+1",
            "@SUM(A1)",
            "\t=cmd",
            "\t",
            "\r@x",
            "\n=1",
            " =1+1",
            "  +1",
            "\u{a0}-1+1",
            "\u{3000}@x",
            " \t=1",
            "＝1+1",
            "＋1",
            "－1",
            "＠x",
            " ＝1",
            "=",
            "-",
            " -1",
            "-1.",
            "-inf",
            "+NaN",
        ];
        for cell in formulas {
            assert!(formula_like(cell), "{cell:?}");
            let out = csv_field(cell);
            let inner = out
                .strip_prefix('"')
                .and_then(|o| o.strip_suffix('"'))
                .unwrap_or(&out);
            assert!(inner.starts_with('\''), "{cell:?} -> {out:?}");
        }
        for cell in [
            "", "plain", " plain", "a=b", "a-b", "x@y", "1", "-1", "+2.5", "-0.25", "'=x",
        ] {
            assert!(!formula_like(cell), "{cell:?}");
        }
        assert_eq!(csv_field("\r@x"), "\"'\r@x\"", "quoted too");
        assert_eq!(csv_field("-1"), "-1");
    }
}
