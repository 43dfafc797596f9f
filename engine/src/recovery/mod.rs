//! Person state that survives its disk, and a cluster that survives losing a process.
//!
//! - `startup`: the process's store is opened, restored from its newest checkpoint, or refused
//!   with one line that says why: never silently empty.
//! - `checkpointer`: checkpoints of the store to the object store on an interval, off the
//!   ingestion path (the files themselves: `hogstream_state::checkpoint`).
//! - `floors`: what a checkpoint carries from Kafka (where a restore reads again from).
//! - `rewind`: every process of the cluster reads again from a restored store's floors.
//! - `lost_peer`: a survivor of a lost process exits cleanly for its supervisor to restart.

mod checkpointer;
mod floors;
pub mod lost_peer;
mod rewind;
mod startup;

pub use checkpointer::Checkpointer;
pub use rewind::Rewind;
pub use startup::{Opened, open_store, store_dir};
