//! Outputs of the hogstream engine: ClickHouse, the dead-letter topic and the processed-events
//! topic. The ClickHouse sink writes PostHog's tables in batches that stay in memory until
//! ClickHouse acknowledges them, so a failed insert is retried with the same rows and the same
//! deterministic `insert_deduplication_token`.

pub mod batch;
pub mod clickhouse;
pub mod dead_letter;
pub mod error;
pub mod processed;
pub mod schema;
pub mod tables;

pub use batch::{OutputBatch, Outputs};
pub use clickhouse::{ClickHouseConfig, ClickHouseSink};
pub use dead_letter::{DeadLetter, DeadLetterProducer};
pub use error::SinkError;
pub use processed::ProcessedProducer;
