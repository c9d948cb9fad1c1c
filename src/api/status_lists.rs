//! `GET /v1/status-lists/{k}`: the licences' status list `k` as a signed
//! `application/statuslist+jwt`. No token needed: products check their
//! licences offline, as with `GET /v1/keys`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::{ApiError, State};
use crate::gate::status_lists::TTL_SECONDS;

/// The media type of a status list token in JWT form.
pub const STATUS_LIST_JWT: &str = "application/statuslist+jwt";

/// `GET /v1/status-lists/{k}`: `k` as the licences' `status` claims write
/// it (a non-negative decimal integer without leading zeros); anything
/// else, or a list past the last one a licence is in, is `404`.
pub async fn get(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let k = list_number(&path.into_inner()).ok_or(ApiError::NotFound)?;
    let jwt = state.gate.status_list(k).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(STATUS_LIST_JWT)
        .insert_header((header::CACHE_CONTROL, format!("max-age={TTL_SECONDS}")))
        .body(jwt))
}

/// The list number `text` names, written as the service writes it (so each
/// list has one URI): `0`, or digits not starting with `0`, within `i64`.
fn list_number(text: &str) -> Option<i64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_named_one_way_only() {
        assert_eq!(list_number("0"), Some(0));
        assert_eq!(list_number("7"), Some(7));
        assert_eq!(list_number("9223372036854775807"), Some(i64::MAX));
        for other in [
            "",
            "-1",
            "+1",
            "01",
            "00",
            "1.0",
            "1e3",
            " 1",
            "x",
            "9223372036854775808",
            "١",
        ] {
            assert_eq!(list_number(other), None, "{other:?}");
        }
    }
}
