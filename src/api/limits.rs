//! Limits on what callers can make the service do, in this process (N
//! replicas each allow the rate: configure it per replica):
//!
//! - a token bucket per tenant (its requests) and per client address (its
//!   failed authentications), [`RateLimiter`];
//! - a cap on the `/v1` requests handled at once, [`InFlight`].
//!
//! The connection cap is the server's own (`HttpServer::max_connections`,
//! set in `startup`).
//!
//! Why the bucket is written here rather than taken from `governor` (checked
//! against governor 0.10.4): the address limiter must say whether a key is
//! over its limit *without* spending from it ([`RateLimiter::refused`]), so
//! that a request is refused before its token is verified while only
//! failures are charged and a valid token never is. Governor has no such
//! look: every check that passes spends a cell (its "peek" request, issue 15,
//! is still open), and one bucket type serves both limiters. Governor's keyed
//! limiter is faster per check (about 115-340 ns against 200-675 ns here, 64
//! to 10,000 keys, 1-2 threads, release build, on a loaded 2-core machine),
//! but either is under a microsecond, against a request p50 of milliseconds; the
//! bucket also takes fractional bursts, which governor's whole cells do not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The limits are configuration's words: read there, enforced here.
pub use crate::config::Limit;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before full ones (callers quiet long enough to have
/// refilled) are dropped, so that many addresses cannot grow the map
/// without bound.
const PRUNE_ABOVE: usize = 65_536;

/// The buckets of every key (tenant, or client address) seen.
pub struct RateLimiter {
    /// What the limit is on, as the `RateLimit-Policy` header names it.
    policy: &'static str,
    limit: Limit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A refusal: when to try again, and what the limit is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    pub retry_after_secs: u64,
    pub limit: Limit,
    /// The limiter's policy: [`TENANT`] or [`ADDRESS_FAILURES`].
    pub policy: &'static str,
}

/// The policy of the per-tenant request limit.
pub const TENANT: &str = "tenant";
/// The policy of the per-address limit on failed authentications.
pub const ADDRESS_FAILURES: &str = "address_failures";

impl RateLimiter {
    pub fn new(policy: &'static str, limit: Limit) -> Self {
        RateLimiter {
            policy,
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `tenant`'s bucket, or says when one will be there.
    pub fn take(&self, tenant: &str) -> Result<(), Refused> {
        self.take_at(tenant, Instant::now())
    }

    /// Whether `key`'s bucket is empty now, without taking from it: how a
    /// request is refused before the work it would be charged for.
    pub fn refused(&self, key: &str) -> Option<Refused> {
        self.refused_at(key, Instant::now())
    }

    fn refused_at(&self, key: &str, now: Instant) -> Option<Refused> {
        let buckets = self.buckets.lock().ok()?;
        let bucket = buckets.get(key)?;
        let tokens = self.refilled(bucket, now);
        (tokens < 1.0).then(|| self.refusal(tokens))
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.rate).min(self.limit.burst)
    }

    fn refusal(&self, tokens: f64) -> Refused {
        let wait = (1.0 - tokens) / self.limit.rate;
        Refused {
            retry_after_secs: wait.ceil().max(1.0) as u64,
            limit: self.limit,
            policy: self.policy,
        }
    }

    fn take_at(&self, tenant: &str, now: Instant) -> Result<(), Refused> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // a poisoned lock must not refuse everyone
        };
        if buckets.len() >= PRUNE_ABOVE && !buckets.contains_key(tenant) {
            buckets.retain(|_, b| self.refilled(b, now) < self.limit.burst);
        }
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: self.limit.burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refusal(bucket.tokens))
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or_default()
    }
}

/// How many `/v1` requests are being handled, and how many may be.
#[derive(Clone)]
pub struct InFlight {
    max: usize,
    now: Arc<AtomicUsize>,
}

/// One request's place among those in flight, given back when dropped
/// (when its response is ready, or when the client goes away first).
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            max,
            now: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place, or `None` when `max` requests are in flight already.
    pub fn enter(&self) -> Option<Permit> {
        self.now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(&self.now)))
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.now.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_per_tenant() {
        let limiter = RateLimiter::new(
            TENANT,
            Limit {
                rate: 2.0,
                burst: 3.0,
            },
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at("a", t0).is_ok());
        }
        let refused = limiter.take_at("a", t0).unwrap_err();
        assert_eq!(refused.retry_after_secs, 1);
        assert!(
            limiter.take_at("b", t0).is_ok(),
            "another tenant has its own bucket"
        );
        assert!(
            limiter
                .take_at("a", t0 + Duration::from_millis(500))
                .is_ok(),
            "2/s refills one in 0.5 s"
        );
        assert!(limiter
            .take_at("a", t0 + Duration::from_millis(500))
            .is_err());
        assert!(limiter.take_at("a", t0 + Duration::from_secs(60)).is_ok());
        for _ in 0..2 {
            assert!(limiter.take_at("a", t0 + Duration::from_secs(60)).is_ok());
        }
        assert!(
            limiter.take_at("a", t0 + Duration::from_secs(60)).is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn refused_looks_without_taking() {
        let limiter = RateLimiter::new(
            TENANT,
            Limit {
                rate: 1.0,
                burst: 2.0,
            },
        );
        let t0 = Instant::now();
        assert_eq!(limiter.refused_at("x", t0), None, "an unseen key");
        limiter.take_at("x", t0).unwrap();
        assert_eq!(limiter.refused_at("x", t0), None);
        assert_eq!(limiter.refused_at("x", t0), None, "looking took nothing");
        limiter.take_at("x", t0).unwrap();
        assert_eq!(
            limiter.refused_at("x", t0).map(|r| r.retry_after_secs),
            Some(1)
        );
        assert_eq!(limiter.refused_at("x", t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn full_buckets_are_dropped_when_there_are_many() {
        let limiter = RateLimiter::new(
            TENANT,
            Limit {
                rate: 10.0,
                burst: 2.0,
            },
        );
        let t0 = Instant::now();
        for i in 0..PRUNE_ABOVE {
            limiter.take_at(&format!("a{i}"), t0).unwrap();
        }
        assert_eq!(limiter.len(), PRUNE_ABOVE);
        // A second later every bucket has refilled: a new key drops them.
        limiter.take_at("new", t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn in_flight_admits_up_to_its_max_and_frees_on_drop() {
        let in_flight = InFlight::new(2);
        let a = in_flight.enter().unwrap();
        let b = in_flight.enter().unwrap();
        assert!(in_flight.enter().is_none());
        drop(a);
        assert_eq!(in_flight.current(), 1);
        let _c = in_flight.enter().unwrap();
        assert!(in_flight.enter().is_none());
        drop(b);
        assert_eq!(in_flight.current(), 1);
    }
}
