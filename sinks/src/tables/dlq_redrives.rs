//! `dlq_redrives`: the ledger of `hogstream dlq redrive`, one row per dead letter re-produced
//! (written by the tool, `src/dlq.rs`, after Kafka acknowledged it).

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

pub const NAME: &str = "dlq_redrives";

/// One redrive: the dead letter's place, when and where it went, whether its payload was
/// replaced. Its key is the dead letter's place, so recording it again changes nothing.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct RedriveRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub redriven_at: DateTime<Utc>,
    pub into_topic: String,
    pub payload_replaced: u8,
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.dlq_redrives (
            topic String,
            `partition` Int32,
            `offset` Int64,
            redriven_at DateTime64(6, 'UTC'),
            into_topic String,
            payload_replaced UInt8
        ) ENGINE = ReplacingMergeTree
        ORDER BY (topic, `partition`, `offset`)";
