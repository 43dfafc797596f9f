//! The seam between request handling and Kafka: a trait so routing and responses can be tested
//! without a broker, the real rdkafka producer, and an in-memory one for tests.

mod kafka;
mod memory;

use std::future::Future;
use std::pin::Pin;

use hogstream_event::CapturedHeaders;

pub use kafka::KafkaProducer;
pub use memory::MemoryProducer;

/// One message to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceRecord {
    pub topic: String,
    /// `None` produces without a key (round-robin partitioning).
    pub key: Option<String>,
    /// The JSON of a [`hogstream_event::CapturedEvent`].
    pub payload: String,
    pub headers: CapturedHeaders,
}

impl ProduceRecord {
    /// Bytes the broker will count against its message size limit, roughly: payload, key and
    /// headers.
    pub fn approximate_size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.payload.len() + self.key.as_ref().map_or(0, String::len) + headers
    }
}

/// Why a message was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// The message can never be stored as it is (413).
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// The broker is unreachable, slow or refusing for now; the client should retry (503).
    #[error("{0}")]
    Retryable(String),
}

/// Resolves when the broker acknowledged (or refused) one message.
pub type DeliveryFuture = Pin<Box<dyn Future<Output = Result<(), ProduceError>> + Send + 'static>>;

/// A sink for captured events.
///
/// `send` must enqueue synchronously, before it returns, so that messages of one request keep
/// their order per partition; the returned future only waits for the acknowledgement.
pub trait EventProducer: Send + Sync + 'static {
    fn send(&self, record: ProduceRecord) -> DeliveryFuture;

    /// Whether the broker answered recently; drives `/_readiness`.
    fn is_ready(&self) -> bool;
}
