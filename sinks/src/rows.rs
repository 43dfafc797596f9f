//! Row types of PostHog's ClickHouse tables (`docs/posthog-rules.md` §4), in column order of the
//! insert. Text columns that hold JSON are JSON strings, as in PostHog.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `person_mode` values of the `events` table's Enum8 column.
pub mod person_mode {
    pub const FULL: i8 = 0;
    pub const PROPERTYLESS: i8 = 1;
    pub const FORCE_UPGRADE: i8 = 2;
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub uuid: Uuid,
    pub event: String,
    pub properties: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub timestamp: DateTime<Utc>,
    pub team_id: i64,
    pub distinct_id: String,
    pub elements_chain: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::uuid")]
    pub person_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub person_created_at: DateTime<Utc>,
    pub person_properties: String,
    pub person_mode: i8,
    /// Kafka message time of the captured event, seconds.
    pub _timestamp: u32,
    pub _offset: u64,
    pub _partition: u32,
    /// Grows with every write of the row so the latest write wins in ReplacingMergeTree.
    pub _version: u64,
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct PersonRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub created_at: DateTime<Utc>,
    pub team_id: i64,
    pub properties: String,
    pub is_identified: i8,
    pub is_deleted: i8,
    pub version: u64,
}

/// One row of `person_distinct_id2` or of `person_distinct_id_overrides` (same columns).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct PersonDistinctIdRow {
    pub team_id: i64,
    pub distinct_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub person_id: Uuid,
    pub is_deleted: i8,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct GroupRow {
    pub group_type_index: u8,
    pub group_key: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub created_at: DateTime<Utc>,
    pub team_id: i64,
    pub group_properties: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct GroupTypeMappingRow {
    pub team_id: i64,
    pub group_type: String,
    pub group_type_index: u8,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct IngestionWarningRow {
    pub team_id: i64,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub details: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub timestamp: DateTime<Utc>,
}
