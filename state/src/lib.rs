//! RocksDB-backed state of the hogstream engine: source offsets; person, distinct-id and group
//! state; plugin storage and destination progress; view inputs. Everything one process keeps lives in one RocksDB instance.

pub mod checkpoint;
pub mod error;
pub mod lifecycle;
pub mod persons;
pub mod plugins;
pub mod store;
pub mod views;

pub use error::StateError;
pub use lifecycle::Found;
pub use plugins::DestinationState;
pub use store::{Layout, MoveError, PartitionOffset, StateStore};
