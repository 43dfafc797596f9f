//! `person_distinct_id2`: which person each distinct id belongs to, latest `version` wins.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use super::Table;
use hogstream_state::persons::DistinctIdChange;

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

pub struct PersonDistinctId2;

impl Table for PersonDistinctId2 {
    const NAME: &'static str = "person_distinct_id2";
    type Row = PersonDistinctIdRow;
    fn identify(h: &mut Xxh3, row: &PersonDistinctIdRow) {
        identify_distinct_id(h, row);
    }
}

/// What a distinct-id row's deduplication token is made of (shared with the overrides).
pub(super) fn identify_distinct_id(h: &mut Xxh3, row: &PersonDistinctIdRow) {
    h.update(&row.team_id.to_le_bytes());
    h.update(row.distinct_id.as_bytes());
    h.update(&row.version.to_le_bytes());
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.person_distinct_id2 (
            team_id Int64,
            distinct_id String,
            person_id UUID,
            is_deleted Int8,
            version Int64,
            _timestamp DateTime DEFAULT now()
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (team_id, distinct_id)
        SETTINGS index_granularity = 512, non_replicated_deduplication_window = {dedup}";

/// The row of a distinct id's person (also an override's), at `version`.
pub fn row(change: DistinctIdChange, version: u64) -> PersonDistinctIdRow {
    PersonDistinctIdRow {
        team_id: change.team_id,
        distinct_id: change.distinct_id,
        person_id: change.person_id,
        is_deleted: 0,
        version: i64::try_from(version).unwrap_or(i64::MAX),
    }
}
