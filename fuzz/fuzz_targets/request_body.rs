//! Request-body parsing, the handlers' own path (`Body::json`: serde_json,
//! serde_path_to_error, `deny_unknown_fields`) for every body the API takes,
//! then the checks the handlers run on what parsed. It never panics, and
//! every refusal is a problem response with a 4xx status, never a 5xx.
//!
//! Input: the first byte picks the body (`'0'`..`'9'`, see `KINDS`), the
//! rest is the body. What parses must survive a round trip where the service
//! writes it back (catalogue entries are stored and returned as JSON).
#![no_main]

use actix_web::body::MessageBody;
use actix_web::ResponseError;
use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use gatekeeper::api::{parse_body_for_fuzzing, ApiError, Body, FuzzBody, MAX_BODY_BYTES};
use gatekeeper::audit::canonical_json;
use gatekeeper::domain::Customer;
use gatekeeper::policy::{
    DesignationSpec, OrganizationSpec, ProductSpec, RelationshipSpec, ResellerSpec,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// By selector digit: the route whose body it is.
const KINDS: [&str; 10] = [
    "POST /v1/decisions",
    "POST /v1/licenses",
    "POST /v1/licenses/{id}/renewals",
    "POST /v1/reviews/{id}",
    "PUT /v1/resellers/{id}",
    "PUT /v1/organizations/{id}",
    "PUT /v1/products/{sku}",
    "PUT /v1/designations/{id}",
    "PUT /v1/organizations/{id}/relationships/{target}",
    "customer (in decisions, licences, renewals and reviews)",
];

fn body(bytes: &[u8]) -> Body {
    Body(bytes.to_vec().into())
}

/// A refusal must be a 4xx problem+json response naming its status.
fn assert_problem(kind: &str, e: ApiError) {
    assert!(
        matches!(e, ApiError::MalformedJson(_) | ApiError::Validation(_)),
        "{kind}: a body refused as {e:?}"
    );
    // (A field may be named "": the path of a key that is the empty string.)
    if let ApiError::Validation(errors) = &e {
        assert!(
            !errors.is_empty(),
            "{kind}: a validation error names no field"
        );
    }
    let status = e.status_code();
    assert!(status.is_client_error(), "{kind}: {e:?} answers {status}");
    let response = e.error_response();
    assert_eq!(response.status(), status, "{kind}: {e:?}");
    let content_type = response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/problem+json"), "{kind}");
    let Ok(bytes) = response.into_body().try_into_bytes() else {
        panic!("{kind}: a problem body that is not in memory");
    };
    let problem: Value = serde_json::from_slice(&bytes).expect("a problem body is JSON");
    assert_eq!(problem["status"], status.as_u16(), "{kind}: {problem}");
    assert!(problem["code"].is_string(), "{kind}: {problem}");
}

/// What the handlers check on a parsed customer, and the problems it yields.
fn check_customer(kind: &str, customer: &Customer) {
    for (field, message) in customer.problems("customer") {
        assert!(field.starts_with("customer."), "{kind}: {field}");
        assert_problem(
            kind,
            ApiError::Validation(vec![gatekeeper::api::FieldError::new(field, message)]),
        );
    }
}

/// A value that parsed must parse again, unchanged, from what the service
/// writes back for it.
fn round_trip<T>(kind: &str, bytes: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match body(bytes).json::<T>() {
        Ok(value) => {
            let written = serde_json::to_vec(&value).expect("serialising a parsed body");
            match body(&written).json::<T>() {
                Ok(again) => assert_eq!(again, value, "{kind}: changed by a round trip"),
                Err(e) => panic!("{kind}: what was written back is refused: {e:?}"),
            }
            Some(value)
        }
        Err(e) => {
            assert_problem(kind, e);
            None
        }
    }
}

/// The private request bodies: parsed by the service's own hook; what the
/// handlers then read from them, read here from the same JSON.
fn private_body(kind: &str, which: FuzzBody, bytes: &[u8]) {
    if let Err(e) = parse_body_for_fuzzing(which, bytes) {
        return assert_problem(kind, e);
    }
    let value: Value = serde_json::from_slice(bytes).expect("a parsed body is JSON");
    if let Some(c) = value.get("customer").filter(|c| !c.is_null()) {
        let written = serde_json::to_vec(c).expect("serialising a customer");
        match body(&written).json::<Customer>() {
            Ok(customer) => check_customer(kind, &customer),
            Err(e) => panic!("{kind}: the body parsed but its customer does not: {e:?}"),
        }
    }
    match which {
        FuzzBody::Preflight => {
            if let Some(as_of) = value.get("as_of").filter(|v| !v.is_null()) {
                let t: DateTime<FixedOffset> =
                    serde_json::from_value(as_of.clone()).expect("a parsed as_of");
                let _ = t.with_timezone(&Utc).trunc_subsecs(6);
            }
        }
        // The idempotency fingerprint is over the body, canonically.
        FuzzBody::LicenseIssue | FuzzBody::LicenseRenewal => {
            let _ = canonical_json(&value);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    // The extractor answers 413 before anything is parsed.
    if bytes.len() > MAX_BODY_BYTES {
        return;
    }
    let i = usize::from(selector.wrapping_sub(b'0')) % KINDS.len();
    let kind = KINDS[i];
    match i {
        0 => private_body(kind, FuzzBody::Preflight, bytes),
        1 => private_body(kind, FuzzBody::LicenseIssue, bytes),
        2 => private_body(kind, FuzzBody::LicenseRenewal, bytes),
        3 => private_body(kind, FuzzBody::ReviewResolution, bytes),
        4 => drop(round_trip::<ResellerSpec>(kind, bytes)),
        5 => drop(round_trip::<OrganizationSpec>(kind, bytes)),
        6 => drop(round_trip::<ProductSpec>(kind, bytes)),
        7 => drop(round_trip::<DesignationSpec>(kind, bytes)),
        8 => drop(round_trip::<RelationshipSpec>(kind, bytes)),
        _ => {
            if let Some(customer) = round_trip::<Customer>(kind, bytes) {
                check_customer(kind, &customer);
            }
        }
    }
});
