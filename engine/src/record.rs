//! What the Kafka source hands to the dataflow.

use serde::{Deserialize, Serialize};

/// One Kafka message, with just what the stages need. Bytes, not parsed JSON, travel between
/// workers: parsing happens once, on the worker that owns the event's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka message time, ms since the epoch.
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    /// Hash of the team token, so every event of one team meets its person state.
    pub route: u64,
    /// Capture's `force_disable_person_processing` header.
    pub force_personless: bool,
    pub payload: Vec<u8>,
    /// The message's headers, kept so a dead letter (and its redrive) carries them on.
    pub headers: Vec<(String, Vec<u8>)>,
    /// An earlier run may have processed it before crashing ([`crate::source::ReadHorizon`]).
    pub replay: bool,
}
