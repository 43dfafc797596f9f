//! An in-memory producer for tests and local experiments: it stores records and can be told to
//! fail like a broker would.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{DeliveryFuture, EventProducer, ProduceError, ProduceRecord};

#[derive(Debug)]
pub struct MemoryProducer {
    records: Mutex<Vec<ProduceRecord>>,
    failure: Mutex<Option<ProduceError>>,
    ready: AtomicBool,
}

impl Default for MemoryProducer {
    fn default() -> Self {
        Self {
            records: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
            ready: AtomicBool::new(true),
        }
    }
}

impl MemoryProducer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every later `send` fails with `error` (and stores nothing) until cleared with `None`.
    pub fn fail_with(&self, error: Option<ProduceError>) {
        *lock(&self.failure) = error;
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The records acknowledged so far, in send order.
    pub fn records(&self) -> Vec<ProduceRecord> {
        lock(&self.records).clone()
    }

    pub fn clear(&self) {
        lock(&self.records).clear();
    }
}

// A panic while holding these locks cannot leave the data half-updated, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EventProducer for MemoryProducer {
    fn send(&self, record: ProduceRecord) -> DeliveryFuture {
        let result = match lock(&self.failure).clone() {
            Some(err) => Err(err),
            None => {
                lock(&self.records).push(record);
                Ok(())
            }
        };
        Box::pin(async move { result })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_event::CapturedHeaders;

    fn record(topic: &str) -> ProduceRecord {
        ProduceRecord {
            topic: topic.into(),
            key: Some("k".into()),
            payload: "{}".into(),
            headers: CapturedHeaders::default(),
        }
    }

    #[tokio::test]
    async fn stores_in_order_and_fails_on_demand() {
        let p = MemoryProducer::new();
        p.send(record("a")).await.unwrap();
        p.fail_with(Some(ProduceError::Retryable("down".into())));
        assert_eq!(
            p.send(record("b")).await,
            Err(ProduceError::Retryable("down".into()))
        );
        p.fail_with(None);
        p.send(record("c")).await.unwrap();
        let topics: Vec<_> = p.records().into_iter().map(|r| r.topic).collect();
        assert_eq!(topics, ["a", "c"]);
        assert!(p.is_ready());
        p.set_ready(false);
        assert!(!p.is_ready());
    }

    #[test]
    fn approximate_size_counts_payload_key_and_headers() {
        let mut r = record("t");
        r.headers.set("ab", "cde");
        assert_eq!(r.approximate_size(), 2 + 1 + 5);
    }
}
