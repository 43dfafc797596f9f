//! What the engine writes to the processed-events topic after an event is stored in ClickHouse,
//! and what destinations read: PostHog's `clickhouse_events_json` stream, the event with its
//! person as ingestion resolved it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Header a replay sets on re-produced messages: destinations deliver them even if they
/// delivered the same event before.
pub const REDELIVER_HEADER: &str = "hogstream_redeliver";

/// One processed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedEvent {
    pub uuid: Uuid,
    pub team_id: i64,
    pub event: String,
    pub distinct_id: String,
    pub timestamp: DateTime<Utc>,
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub elements_chain: String,
    pub person: ProcessedPerson,
}

/// The person of a processed event. Personless events carry their deterministic person id and
/// no properties, as in ClickHouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedPerson {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub properties: Map<String, Value>,
    /// `full`, `propertyless` or `force_upgrade`, as the `events.person_mode` column.
    pub mode: String,
}
