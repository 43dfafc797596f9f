//! The event model shared by every hogstream stage: what capture writes to Kafka and what the
//! engine reads back. Only serde-level dependencies live here, so plugin authors and tools can
//! depend on it without pulling in Kafka, RocksDB or timely.

pub mod captured;
pub mod headers;
pub mod ids;
pub mod latency;
pub mod processed;
pub mod raw;
pub mod security;
pub mod time;
pub mod topics;

pub use captured::CapturedEvent;
pub use headers::CapturedHeaders;
pub use processed::{ProcessedEvent, ProcessedPerson};
pub use raw::RawEvent;
