//! Licence terms: how long a licence runs, cut at a rule's `not_after`,
//! and capped so that it never expires more than
//! [`MAX_EXPIRY_YEARS`] after the request that sets it.

use chrono::{DateTime, Duration, Utc};

/// The most seats one licence holds.
pub const MAX_SEATS: i64 = 1_000_000;
/// The longest term one request sets, in days.
pub const MAX_TERM_DAYS: i64 = 3650;

/// When a term of `term_days` from `from` ends, cut at `not_after`; to the
/// microsecond, as every stored instant (a rule may name a finer instant).
pub fn term_end(
    from: DateTime<Utc>,
    term_days: i64,
    not_after: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    let end = from + Duration::days(term_days);
    match not_after {
        Some(limit) if limit < end => limit.trunc_subsecs(6),
        _ => end.trunc_subsecs(6),
    }
}

/// How long after the request that sets it a licence may expire, at most.
pub const MAX_EXPIRY_YEARS: u32 = 10;

/// The latest a licence set by a request at `requested_at` may expire:
/// [`MAX_EXPIRY_YEARS`] calendar years later (and never past the latest
/// instant the store reads back).
pub fn latest_expiry(requested_at: DateTime<Utc>) -> DateTime<Utc> {
    let latest = crate::store::latest_storable();
    requested_at
        .checked_add_months(chrono::Months::new(12 * MAX_EXPIRY_YEARS))
        .map_or(latest, |cap| cap.min(latest))
}

/// [`term_end`], unless the licence would then expire after
/// [`latest_expiry`] of `requested_at`: then `Err` with the longest term
/// from `from` that would not (`0` when there is none).
pub fn capped_term_end(
    from: DateTime<Utc>,
    term_days: i64,
    not_after: Option<DateTime<Utc>>,
    requested_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, i64> {
    let latest = latest_expiry(requested_at);
    // Checked: `from` may be a stored expiry far in the future.
    let end = Duration::try_days(term_days)
        .and_then(|term| from.checked_add_signed(term))
        .map(|_| term_end(from, term_days, not_after));
    match end {
        Some(end) if end <= latest => Ok(end),
        _ => Err((latest - from).num_days().max(0)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_term_is_cut_at_not_after() {
        let from = at("2024-09-01T00:00:00Z");
        assert_eq!(term_end(from, 365, None), at("2025-09-01T00:00:00Z"));
        assert_eq!(
            term_end(from, 365, Some(at("2024-09-29T04:00:00Z"))),
            at("2024-09-29T04:00:00Z")
        );
        assert_eq!(
            term_end(from, 7, Some(at("2024-09-29T04:00:00Z"))),
            at("2024-09-08T00:00:00Z")
        );
    }

    #[test]
    fn a_licence_expires_at_most_ten_years_after_the_request() {
        let now = at("2025-03-01T12:00:00.123456Z");
        let cap = at("2035-03-01T12:00:00.123456Z");
        assert_eq!(latest_expiry(now), cap);
        // Ten calendar years, with two leap days: 3652 days here.
        assert_eq!(
            capped_term_end(now, 3650, None, now),
            Ok(now + Duration::days(3650))
        );
        let from = now + Duration::days(3650);
        assert_eq!(
            capped_term_end(from, 2, None, now),
            Ok(from + Duration::days(2))
        );
        assert_eq!(capped_term_end(from, 3, None, now), Err(2));
        // The cap holds to the microsecond: exactly ten years is allowed.
        let exact = cap - Duration::days(1);
        assert_eq!(capped_term_end(exact, 1, None, now), Ok(cap));
        let over = exact + Duration::microseconds(1);
        assert_eq!(capped_term_end(over, 1, None, now), Err(0));
        // A term a `not_after` cuts below the cap is fine.
        let limit = at("2030-01-01T00:00:00Z");
        assert_eq!(capped_term_end(from, 3650, Some(limit), now), Ok(limit));
        // A stored expiry already past the cap: nothing can be added.
        assert_eq!(
            capped_term_end(cap + Duration::days(9), 1, None, now),
            Err(0)
        );
        // Never past what the store reads back, even near the year 9999.
        let late = at("9995-06-01T00:00:00Z");
        assert_eq!(latest_expiry(late), crate::store::latest_storable());
        assert!(capped_term_end(late, 3650, None, late).is_err());
        let last = crate::store::latest_storable();
        assert_eq!(capped_term_end(last, 3650, None, last), Err(0));
    }
}
