//! `ingestion_warnings`: PostHog's warnings about events; a replayed warning has the same key and
//! collapses (migration 3 made the table a `ReplacingMergeTree`).

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::Table;
use serde_json::Value;

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

pub struct IngestionWarnings;

impl Table for IngestionWarnings {
    const NAME: &'static str = "ingestion_warnings";
    type Row = IngestionWarningRow;
    fn identify(h: &mut Xxh3, row: &IngestionWarningRow) {
        h.update(&row.team_id.to_le_bytes());
        h.update(row.kind.as_bytes());
        h.update(row.details.as_bytes());
        h.update(&row.timestamp.timestamp_micros().to_le_bytes());
    }
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.ingestion_warnings (
            team_id Int64,
            source LowCardinality(String),
            type LowCardinality(String),
            details String CODEC(ZSTD(3)),
            timestamp DateTime64(6, 'UTC'),
            inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
        ) ENGINE = MergeTree
        PARTITION BY toYYYYMM(timestamp)
        ORDER BY (team_id, toHour(timestamp), type, source, timestamp)
        SETTINGS non_replicated_deduplication_window = {dedup}";

/// Migration 3: the table again as a `ReplacingMergeTree`, its rows copied over.
pub(crate) const DEDUPLICATE: [&str; 4] = [
    r"CREATE TABLE IF NOT EXISTS {db}.ingestion_warnings_v2 (
            team_id Int64,
            source LowCardinality(String),
            type LowCardinality(String),
            details String CODEC(ZSTD(3)),
            timestamp DateTime64(6, 'UTC'),
            inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(timestamp)
        ORDER BY (team_id, toHour(timestamp), type, source, timestamp, cityHash64(details))
        SETTINGS non_replicated_deduplication_window = {dedup}",
    r"INSERT INTO {db}.ingestion_warnings_v2 SELECT * FROM {db}.ingestion_warnings",
    r"RENAME TABLE {db}.ingestion_warnings TO {db}.ingestion_warnings_v1, {db}.ingestion_warnings_v2 TO {db}.ingestion_warnings",
    r"DROP TABLE {db}.ingestion_warnings_v1",
];

/// The row of a warning hogstream raised about an event received `at`.
pub fn row(team_id: i64, kind: &str, details: &Value, at: DateTime<Utc>) -> IngestionWarningRow {
    IngestionWarningRow {
        team_id,
        source: "hogstream".into(),
        kind: kind.into(),
        details: details.to_string(),
        timestamp: at,
    }
}
