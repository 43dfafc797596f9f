//! The memory all requests may spend decompressing at once.
//!
//! Each request's output is capped (`max_decompressed_bytes`), but a handful of small bodies
//! that each expand to near the cap would together take gigabytes. Decoders therefore reserve
//! their output from one process-wide budget as it grows; a request that would pass it fails
//! with 503 (the SDK retries) instead of taking the memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::CaptureError;

/// Bytes of decoded output the process may hold at once.
#[derive(Debug)]
pub struct DecodeBudget {
    limit: usize,
    used: AtomicUsize,
}

impl DecodeBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// An empty reservation that grows with [`Reservation::grow_to`].
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            held: 0,
        }
    }

    /// Bytes reserved right now, by every request.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }
}

/// One request's share of the budget, returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<DecodeBudget>,
    held: usize,
}

impl Reservation {
    /// Makes the reservation at least `bytes`; fails, holding what it held, when the budget
    /// cannot give the difference.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), CaptureError> {
        if bytes <= self.held {
            return Ok(());
        }
        let more = bytes - self.held;
        if !self.budget.take(more) {
            return Err(CaptureError::DecodingCapacity(format!(
                "too many large payloads are being decompressed at once ({} of {} bytes in use); retry shortly",
                self.budget.in_use(),
                self.budget.limit
            )));
        }
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = DecodeBudget::new(100);
        let mut a = budget.reserve();
        a.grow_to(60).unwrap();
        a.grow_to(40).unwrap(); // never shrinks
        let mut b = budget.reserve();
        let err = b.grow_to(50).unwrap_err();
        assert!(matches!(err, CaptureError::DecodingCapacity(_)), "{err:?}");
        b.grow_to(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        b.grow_to(100).unwrap();
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }
}
