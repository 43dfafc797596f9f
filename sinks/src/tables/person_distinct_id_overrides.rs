//! `person_distinct_id_overrides`: the person a distinct id's stored events must be joined to,
//! where some of them carry another one. Same columns as `person_distinct_id2`.

use xxhash_rust::xxh3::Xxh3;

use super::{
    Table,
    person_distinct_id2::{PersonDistinctIdRow, identify_distinct_id},
};

pub struct PersonDistinctIdOverrides;

impl Table for PersonDistinctIdOverrides {
    const NAME: &'static str = "person_distinct_id_overrides";
    type Row = PersonDistinctIdRow;
    fn identify(h: &mut Xxh3, row: &PersonDistinctIdRow) {
        identify_distinct_id(h, row);
    }
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.person_distinct_id_overrides (
            team_id Int64,
            distinct_id String,
            person_id UUID,
            is_deleted Int8,
            version Int64,
            _timestamp DateTime DEFAULT now()
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (team_id, distinct_id)
        SETTINGS index_granularity = 512, non_replicated_deduplication_window = {dedup}";
