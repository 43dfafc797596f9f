//! `events`: one row per event, with the person as known when it was processed (PostHog's
//! "persons on events"). Deduplicated by the event's uuid.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use super::Table;
use hogstream_state::persons::{EventPerson, MAX_GROUP_TYPES, PersonMode};
use serde_json::{Map, Value};

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

pub struct Events;

impl Table for Events {
    const NAME: &'static str = "events";
    type Row = EventRow;
    fn identify(h: &mut Xxh3, row: &EventRow) {
        h.update(row.uuid.as_bytes());
    }
}

pub(crate) const CREATE: &str = r"CREATE TABLE IF NOT EXISTS {db}.events (
            uuid UUID,
            event String,
            properties String CODEC(ZSTD(3)),
            timestamp DateTime64(6, 'UTC'),
            team_id Int64,
            distinct_id String,
            elements_chain String,
            created_at DateTime64(6, 'UTC'),
            person_id UUID,
            person_created_at DateTime64(3, 'UTC'),
            person_properties String CODEC(ZSTD(3)),
            group0_properties String DEFAULT '',
            group1_properties String DEFAULT '',
            group2_properties String DEFAULT '',
            group3_properties String DEFAULT '',
            group4_properties String DEFAULT '',
            group0_created_at DateTime64(3, 'UTC') DEFAULT 0,
            group1_created_at DateTime64(3, 'UTC') DEFAULT 0,
            group2_created_at DateTime64(3, 'UTC') DEFAULT 0,
            group3_created_at DateTime64(3, 'UTC') DEFAULT 0,
            group4_created_at DateTime64(3, 'UTC') DEFAULT 0,
            person_mode Enum8('full' = 0, 'propertyless' = 1, 'force_upgrade' = 2),
            `$group_0` String MATERIALIZED JSONExtractString(properties, '$group_0'),
            `$group_1` String MATERIALIZED JSONExtractString(properties, '$group_1'),
            `$group_2` String MATERIALIZED JSONExtractString(properties, '$group_2'),
            `$group_3` String MATERIALIZED JSONExtractString(properties, '$group_3'),
            `$group_4` String MATERIALIZED JSONExtractString(properties, '$group_4'),
            `$session_id` String MATERIALIZED JSONExtractString(properties, '$session_id'),
            `$window_id` String MATERIALIZED JSONExtractString(properties, '$window_id'),
            _timestamp DateTime,
            _offset UInt64,
            _partition UInt32,
            _version UInt64,
            inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
        ) ENGINE = ReplacingMergeTree(_version)
        PARTITION BY toYYYYMM(timestamp)
        ORDER BY (team_id, toDate(timestamp), event, cityHash64(distinct_id), cityHash64(uuid))
        SETTINGS non_replicated_deduplication_window = {dedup}";

/// An event as the engine hands it over, before its row is made.
pub struct EventInput {
    pub uuid: Uuid,
    pub event: String,
    pub properties: Map<String, Value>,
    pub timestamp: DateTime<Utc>,
    pub team_id: i64,
    pub distinct_id: String,
    pub elements_chain: String,
    pub process_person: bool,
}

/// Where the captured message was read: Kafka time (ms), offset, partition.
pub struct KafkaPosition {
    pub timestamp_ms: i64,
    pub offset: i64,
    pub partition: i32,
}

/// The row of an event with its person, at `version`, made at `created_at` (one time for a
/// batch: reading the clock per row is a visible cost): `$group_N` properties come from the
/// person stage for person-processing events and are removed from personless ones.
pub fn row(
    mut e: EventInput,
    person: EventPerson,
    kafka: &KafkaPosition,
    version: u64,
    created_at: DateTime<Utc>,
) -> EventRow {
    const GROUP_PROPERTIES: [&str; MAX_GROUP_TYPES] =
        ["$group_0", "$group_1", "$group_2", "$group_3", "$group_4"];
    if e.process_person {
        for (index, key) in person.groups {
            e.properties
                .insert(format!("$group_{index}"), Value::String(key));
        }
    } else {
        for name in GROUP_PROPERTIES {
            e.properties.remove(name);
        }
    }
    EventRow {
        uuid: e.uuid,
        event: e.event,
        // `to_string` writes into a byte buffer; `Display` formats one fragment at a time.
        properties: serde_json::to_string(&e.properties).unwrap_or_default(),
        timestamp: e.timestamp,
        team_id: e.team_id,
        distinct_id: e.distinct_id,
        elements_chain: e.elements_chain,
        created_at,
        person_id: person.id,
        person_created_at: person.created_at,
        person_properties: person.properties.to_string(),
        person_mode: match person.mode {
            PersonMode::Full => person_mode::FULL,
            PersonMode::ForceUpgrade => person_mode::FORCE_UPGRADE,
            PersonMode::Propertyless => person_mode::PROPERTYLESS,
        },
        _timestamp: u32::try_from(kafka.timestamp_ms / 1000).unwrap_or_default(),
        _offset: u64::try_from(kafka.offset).unwrap_or_default(),
        _partition: u32::try_from(kafka.partition).unwrap_or_default(),
        _version: version,
    }
}
