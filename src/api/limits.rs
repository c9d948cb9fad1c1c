//! Per-tenant rate limiting: a token bucket per reseller, in this process
//! (N replicas each allow the rate: configure it per replica).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Requests a tenant may make: `rate` a second on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every tenant seen.
pub struct RateLimiter {
    limit: Limit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A refusal: when to try again, and what the limit is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    pub retry_after_secs: u64,
    pub limit: Limit,
}

impl RateLimiter {
    pub fn new(limit: Limit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `tenant`'s bucket, or says when one will be there.
    pub fn take(&self, tenant: &str) -> Result<(), Refused> {
        self.take_at(tenant, Instant::now())
    }

    fn take_at(&self, tenant: &str, now: Instant) -> Result<(), Refused> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // a poisoned lock must not refuse everyone
        };
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: self.limit.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limit.rate).min(self.limit.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.limit.rate;
            Err(Refused {
                retry_after_secs: wait.ceil().max(1.0) as u64,
                limit: self.limit,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_per_tenant() {
        let limiter = RateLimiter::new(Limit {
            rate: 2.0,
            burst: 3.0,
        });
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
}
