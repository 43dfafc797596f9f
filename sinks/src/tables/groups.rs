//! `groups`: group properties per (team, type index, key), latest `version` wins.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::{Table, jsonb::without_nul};
use hogstream_state::persons::GroupChange;
use serde_json::Value;

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

pub struct Groups;

impl Table for Groups {
    const NAME: &'static str = "groups";
    type Row = GroupRow;
    fn identify(h: &mut Xxh3, row: &GroupRow) {
        h.update(&row.team_id.to_le_bytes());
        h.update(&[row.group_type_index]);
        h.update(row.group_key.as_bytes());
        h.update(&row.version.to_le_bytes());
    }
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.groups (
            group_type_index UInt8,
            group_key String,
            created_at DateTime64(3, 'UTC'),
            team_id Int64,
            group_properties String,
            version UInt64,
            _timestamp DateTime DEFAULT now()
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (team_id, group_type_index, group_key)
        SETTINGS non_replicated_deduplication_window = {dedup}";

/// The row of a group change, at `version`.
pub fn row(change: GroupChange, version: u64) -> GroupRow {
    GroupRow {
        group_type_index: change.group_type_index,
        group_key: change.group_key,
        created_at: change.created_at,
        team_id: change.team_id,
        group_properties: without_nul(&Value::Object(change.properties).to_string()).into_owned(),
        version,
    }
}
