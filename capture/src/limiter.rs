//! The per-key burst limiter that moves hot keys to the overflow topic.
//!
//! GCRA (via `governor`) keyed by partition key, like PostHog's `OverflowLimiter`: a key may
//! send `burst` events at once and `per_second` sustained before its events overflow.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct OverflowLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl OverflowLimiter {
    /// `None` when either figure is zero, which cannot describe a usable quota.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let quota =
            Quota::per_second(NonZeroU32::new(per_second)?).allow_burst(NonZeroU32::new(burst)?);
        Some(Self {
            limiter: RateLimiter::keyed(quota),
        })
    }

    /// Takes one cell for `key`; true when the key is over its quota.
    // governor's keyed store looks keys up by `&K`; taking `&String` spares an allocation.
    #[allow(clippy::ptr_arg)]
    pub fn is_limited(&self, key: &String) -> bool {
        self.limiter.check_key(key).is_err()
    }

    /// Forgets keys whose state is back to full, so the map only holds recently hot keys.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.limiter.len()
    }
}

impl std::fmt::Debug for OverflowLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverflowLimiter")
            .field("tracked_keys", &self.tracked_keys())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_quota_is_refused() {
        assert!(OverflowLimiter::new(0, 10).is_none());
        assert!(OverflowLimiter::new(10, 0).is_none());
        assert!(OverflowLimiter::new(1, 1).is_some());
    }

    #[test]
    fn burst_then_limited_per_key() {
        // One cell per second: nothing refills during the test.
        let limiter = OverflowLimiter::new(1, 3).unwrap();
        let hot = "phc:hot".to_string();
        let cold = "phc:cold".to_string();
        assert!(!limiter.is_limited(&hot));
        assert!(!limiter.is_limited(&hot));
        assert!(!limiter.is_limited(&hot));
        assert!(limiter.is_limited(&hot));
        assert!(limiter.is_limited(&hot));
        // Another key has its own budget.
        assert!(!limiter.is_limited(&cold));
        assert_eq!(limiter.tracked_keys(), 2);
    }

    #[test]
    fn housekeeping_keeps_limited_keys() {
        let limiter = OverflowLimiter::new(1, 1).unwrap();
        let hot = "k".to_string();
        assert!(!limiter.is_limited(&hot));
        assert!(limiter.is_limited(&hot));
        limiter.housekeeping();
        assert!(
            limiter.is_limited(&hot),
            "a hot key must not be forgotten while limited"
        );
    }
}
