//! RocksDB-backed state of the hogstream engine: source offsets, and person, distinct-id and
//! group state. Everything one process keeps lives in one RocksDB instance.

pub mod error;
pub mod persons;
pub mod store;

pub use error::StateError;
pub use store::{PartitionOffset, StateStore};
