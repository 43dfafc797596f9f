//! RocksDB-backed state of the hogstream engine: source offsets now, persons, distinct ids and
//! groups as they land. Everything one process keeps lives in one RocksDB instance, so offsets
//! and state can be written in the same atomic `WriteBatch`.

pub mod error;
pub mod store;

pub use error::StateError;
pub use store::{PartitionOffset, StateStore};
