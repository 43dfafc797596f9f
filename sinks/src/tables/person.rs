//! `person`: one row per person write; the highest `version` wins, `is_deleted` removes one.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use super::{Table, jsonb::without_nul};
use hogstream_state::persons::PersonChange;

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

pub struct Person;

impl Table for Person {
    const NAME: &'static str = "person";
    type Row = PersonRow;
    fn identify(h: &mut Xxh3, row: &PersonRow) {
        h.update(row.id.as_bytes());
        h.update(&row.version.to_le_bytes());
    }
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.person (
            id UUID,
            created_at DateTime64(3, 'UTC'),
            team_id Int64,
            properties String CODEC(ZSTD(3)),
            is_identified Int8,
            is_deleted Int8,
            version UInt64,
            _timestamp DateTime DEFAULT now()
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (team_id, id)
        SETTINGS non_replicated_deduplication_window = {dedup}";

/// The row of a person change, at `version`.
pub fn row(change: PersonChange, version: u64) -> PersonRow {
    PersonRow {
        id: change.person.id,
        created_at: change.person.created_at,
        team_id: change.team_id,
        properties: without_nul(&change.person.properties_json).into_owned(),
        is_identified: i8::from(change.person.is_identified),
        is_deleted: i8::from(change.is_deleted),
        version,
    }
}
