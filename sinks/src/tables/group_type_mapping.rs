//! `group_type_mapping`: a team's group type names and their indices.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::Table;
use hogstream_state::persons::GroupTypeChange;

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct GroupTypeMappingRow {
    pub team_id: i64,
    pub group_type: String,
    pub group_type_index: u8,
    pub version: u64,
}

pub struct GroupTypeMapping;

impl Table for GroupTypeMapping {
    const NAME: &'static str = "group_type_mapping";
    type Row = GroupTypeMappingRow;
    fn identify(h: &mut Xxh3, row: &GroupTypeMappingRow) {
        h.update(&row.team_id.to_le_bytes());
        h.update(row.group_type.as_bytes());
        h.update(&row.version.to_le_bytes());
    }
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.group_type_mapping (
            team_id Int64,
            group_type String,
            group_type_index UInt8,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (team_id, group_type)";

/// The row of a group type's index, at `version`.
pub fn row(change: GroupTypeChange, version: u64) -> GroupTypeMappingRow {
    GroupTypeMappingRow {
        team_id: change.team_id,
        group_type: change.group_type,
        group_type_index: change.group_type_index,
        version,
    }
}
