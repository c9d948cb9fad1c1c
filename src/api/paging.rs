//! Paging of the listings (licences, reviews, audit events, checkpoints,
//! impact runs and their licences): each reads its `limit` and its cursor the same way, and
//! answers the store's [`crate::store::Page`] `next` as the next cursor.

use super::{ApiError, Params};
use crate::domain::PlainText;

/// A listing's cursor: the query parameter that carries it, and how its
/// value reads.
pub trait Cursor: Sized {
    /// The query parameter: `cursor`, or `after` for a `seq`.
    const PARAM: &'static str;
    /// The cursor `value` gives (`None`: none), or `422` naming the
    /// parameter.
    fn parse(value: String) -> Result<Option<Self>, ApiError>;
}

impl Cursor for PlainText {
    const PARAM: &'static str = "cursor";
    fn parse(value: String) -> Result<Option<Self>, ApiError> {
        parse_cursor(value)
    }
}

/// An id cursor named `after` (the impact runs'): what `next` gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct After(pub PlainText);

impl Cursor for After {
    const PARAM: &'static str = "after";
    fn parse(value: String) -> Result<Option<Self>, ApiError> {
        if value.is_empty() {
            return Ok(None);
        }
        PlainText::try_from(value)
            .map(|t| Some(After(t)))
            .map_err(|m| ApiError::field("after", m))
    }
}

/// A `seq` cursor (`after`: the audit trail's, the checkpoints').
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq(pub i64);

impl Cursor for Seq {
    const PARAM: &'static str = "after";
    fn parse(value: String) -> Result<Option<Self>, ApiError> {
        match seq(&value) {
            Some(n) => Ok(Some(Seq(n))),
            None => Err(ApiError::field(
                "after",
                "must be a cursor returned as `next`",
            )),
        }
    }
}

/// The page a listing is asked for: at most `limit` rows, after `cursor`.
#[derive(Debug)]
pub struct Paging<C> {
    pub limit: i64,
    pub cursor: Option<C>,
    max: i64,
}

impl<C: Cursor> Paging<C> {
    /// The first page of `default` rows; `limit` may ask for 1 to `max`.
    pub fn new(default: i64, max: i64) -> Self {
        Paging {
            limit: default,
            cursor: None,
            max,
        }
    }

    /// Takes the parameter `name` if it is one of paging (`Ok(true)`), else
    /// leaves it to the listing (`Ok(false)`); a bad value is `422`.
    pub fn take(&mut self, name: &str, value: &str) -> Result<bool, ApiError> {
        if name == "limit" {
            self.limit = parse_limit(value, self.max)?;
        } else if name == C::PARAM {
            self.cursor = C::parse(value.to_owned())?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Reads a listing's parameters, failing at the first bad one: the
    /// paging ones here, each other with `other` (which refuses the names
    /// the listing does not take).
    pub fn read(
        params: Params,
        default: i64,
        max: i64,
        mut other: impl FnMut(&str, String) -> Result<(), ApiError>,
    ) -> Result<Self, ApiError> {
        let mut paging = Paging::new(default, max);
        for (name, value) in params.into_inner() {
            if !paging.take(&name, &value)? {
                other(&name, value)?;
            }
        }
        Ok(paging)
    }
}

/// What a listing tells a parameter it does not take.
pub fn not_a_parameter(name: &str) -> ApiError {
    ApiError::field(name, "is not a parameter of this listing")
}

/// A page size from a `limit` query parameter: 1 to `max`.
fn parse_limit(value: &str, max: i64) -> Result<i64, ApiError> {
    match value.parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::field("limit", format!("must be from 1 to {max}"))),
    }
}

/// A cursor from a `cursor` query parameter: what `next` gave, so text
/// without control or format characters (`422` otherwise); empty is none.
fn parse_cursor(value: String) -> Result<Option<PlainText>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    PlainText::try_from(value)
        .map(Some)
        .map_err(|m| ApiError::field("cursor", m))
}

/// A `seq` cursor: decimal digits only (no sign), as `next` gives them.
fn seq(value: &str) -> Option<i64> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<i64>().ok())
        .flatten()
}
