//! Destinations: PostHog's `onEvent` / `exportEvents`. A destination sees processed events (with
//! their person) after they are stored, in batches flushed by size or age, and is retried with
//! exponential backoff. The engine runs each destination on its own thread and Kafka consumer,
//! so a slow or failing one only falls behind; it never holds up ingestion.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use hogstream_event::ProcessedEvent;
use thiserror::Error;

use crate::{Context, PluginError, chain::panic_message};

/// When a batch is handed to the destination: at `max_events` events, or when its oldest event
/// has waited `max_wait`. `max_events = 1` is one by one (`onEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_events: usize,
    pub max_wait: Duration,
}

impl Batching {
    pub const ONE_BY_ONE: Batching = Batching {
        max_events: 1,
        max_wait: Duration::ZERO,
    };
}

impl Default for Batching {
    /// PostHog's `exportEvents` flushes every 10 s.
    fn default() -> Self {
        Self {
            max_events: 1_000,
            max_wait: Duration::from_secs(10),
        }
    }
}

/// Why a batch was not delivered.
#[derive(Debug, Error, PartialEq)]
pub enum ExportError {
    /// Worth trying again later (a timeout, a 5xx, a full queue).
    #[error("retryable: {0}")]
    Retry(String),
    /// Trying again cannot help (the receiver refuses these events): the batch is given up at
    /// once, logged with its offsets so an operator can re-deliver it with `hogstream replay`.
    #[error("failed: {0}")]
    Fail(String),
}

/// PostHog's `exportEvents`, typed.
pub trait Destination: Send {
    /// How events are batched; the `[[plugins]]` entry may override it.
    fn batching(&self) -> Batching {
        Batching::default()
    }
    /// Runs once before the first batch.
    fn setup(&mut self, _ctx: &Context) -> Result<(), PluginError> {
        Ok(())
    }
    /// Delivers a batch. Called again with the same events after a `Retry`.
    fn export(&mut self, events: &[ProcessedEvent]) -> Result<(), ExportError>;
    /// Runs once when the engine stops.
    fn teardown(&mut self) {}
}

/// How often and how patiently a batch is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (PostHog retries an export up to 15 times).
    pub max_attempts: u32,
    /// Wait after the first failure; it doubles after each next one, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 15,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failures` failed attempts.
    pub fn wait(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What became of one batch.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    Delivered {
        attempts: u32,
    },
    /// Given up after `attempts`; `error` is the last one.
    GaveUp {
        attempts: u32,
        error: String,
    },
    /// `stop` was set while waiting to retry: the batch is neither delivered nor given up.
    Stopped,
}

/// Exports `events`, retrying as `policy` says. A panic in the destination counts as a
/// retryable failure. Waits are cut short by `stop`.
pub fn deliver(
    destination: &mut dyn Destination,
    events: &[ProcessedEvent],
    policy: &RetryPolicy,
    stop: &AtomicBool,
) -> Delivery {
    deliver_observed(destination, events, policy, stop, |_| {})
}

/// [`deliver`], telling `attempted` the outcome of every attempt as it happens (`Err` with the
/// attempt's error), so a caller can report a destination that keeps failing while it is still
/// being retried.
pub fn deliver_observed(
    destination: &mut dyn Destination,
    events: &[ProcessedEvent],
    policy: &RetryPolicy,
    stop: &AtomicBool,
    mut attempted: impl FnMut(Result<(), &str>),
) -> Delivery {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match catch_unwind(AssertUnwindSafe(|| destination.export(events))) {
            Ok(Ok(())) => {
                attempted(Ok(()));
                return Delivery::Delivered { attempts };
            }
            Ok(Err(ExportError::Fail(e))) => {
                attempted(Err(&e));
                return Delivery::GaveUp { attempts, error: e };
            }
            Ok(Err(ExportError::Retry(e))) => e,
            Err(panic) => format!("panicked: {}", panic_message(&*panic)),
        };
        attempted(Err(&error));
        if attempts >= policy.max_attempts.max(1) {
            return Delivery::GaveUp { attempts, error };
        }
        let wait = policy.wait(attempts);
        tracing::warn!(attempts, error, retry_in = ?wait, "destination failed; retrying");
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Delivery::Stopped;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    struct Flaky {
        failures_left: u32,
        panic: bool,
        seen: usize,
    }

    impl Destination for Flaky {
        fn export(&mut self, events: &[ProcessedEvent]) -> Result<(), ExportError> {
            if self.failures_left > 0 {
                self.failures_left -= 1;
                if self.panic {
                    panic!("receiver exploded");
                }
                return Err(ExportError::Retry("503".into()));
            }
            self.seen += events.len();
            Ok(())
        }
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.wait(1), Duration::from_secs(1));
        assert_eq!(p.wait(2), Duration::from_secs(2));
        assert_eq!(p.wait(5), Duration::from_secs(16));
        assert_eq!(p.wait(20), Duration::from_secs(300));
    }

    #[test]
    fn retries_until_delivered_and_survives_panics() {
        let events = vec![testing::processed("e", "u1")];
        let stop = AtomicBool::new(false);
        for panic in [false, true] {
            let mut d = Flaky {
                failures_left: 3,
                panic,
                seen: 0,
            };
            assert_eq!(
                deliver(&mut d, &events, &fast(5), &stop),
                Delivery::Delivered { attempts: 4 }
            );
            assert_eq!(d.seen, 1);
        }
    }

    #[test]
    fn gives_up_after_max_attempts_or_a_permanent_failure_and_stops_on_request() {
        let events = vec![testing::processed("e", "u1")];
        let stop = AtomicBool::new(false);
        let mut d = Flaky {
            failures_left: 10,
            panic: false,
            seen: 0,
        };
        assert!(matches!(
            deliver(&mut d, &events, &fast(3), &stop),
            Delivery::GaveUp { attempts: 3, .. }
        ));
        struct Refuses;
        impl Destination for Refuses {
            fn export(&mut self, _: &[ProcessedEvent]) -> Result<(), ExportError> {
                Err(ExportError::Fail("400 bad request".into()))
            }
        }
        assert_eq!(
            deliver(&mut Refuses, &events, &fast(9), &stop),
            Delivery::GaveUp {
                attempts: 1,
                error: "400 bad request".into()
            }
        );
        stop.store(true, Ordering::Relaxed);
        let slow = RetryPolicy {
            backoff: Duration::from_secs(60),
            ..fast(5)
        };
        assert_eq!(deliver(&mut d, &events, &slow, &stop), Delivery::Stopped);
    }
}
