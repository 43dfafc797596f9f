//! A harness to unit-test a plugin with no Kafka, RocksDB or ClickHouse: build an event, run the
//! plugin through the same code as the engine (so failures, panics and retries behave as in
//! production), look at the outcome. Storage is in memory ([`crate::Context::in_memory`]).

use std::{sync::atomic::AtomicBool, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    ChainOutcome, Delivery, Destination, PluginEvent, ProcessedEvent, ProcessedPerson, RetryPolicy,
    Transform,
};

/// The team of harness events.
pub const TEAM_ID: i64 = 1;

/// An event of [`TEAM_ID`] with `properties` (a JSON object).
pub fn event(name: &str, distinct_id: &str, properties: Value) -> PluginEvent {
    PluginEvent::new(
        TEAM_ID,
        Uuid::from_u128(1),
        name.into(),
        distinct_id.into(),
        properties.as_object().cloned().unwrap_or_default(),
    )
}

/// Runs `transform` alone, named `test`, on `event`, exactly as the engine's chain would.
pub fn run(transform: &dyn Transform, event: PluginEvent) -> ChainOutcome {
    crate::chain::run_in_order([("test", transform)], event)
}

/// A processed event of [`TEAM_ID`], as a destination receives it, with a person.
pub fn processed(name: &str, distinct_id: &str) -> ProcessedEvent {
    let at: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    ProcessedEvent {
        uuid: Uuid::now_v7(),
        team_id: TEAM_ID,
        event: name.into(),
        distinct_id: distinct_id.into(),
        timestamp: at,
        properties: Map::new(),
        elements_chain: String::new(),
        person: ProcessedPerson {
            id: Uuid::from_u128(7),
            created_at: at,
            properties: Map::new(),
            mode: "full".into(),
        },
    }
}

/// Delivers `events` to `destination` as the engine does, with up to `attempts` attempts and no
/// waiting between them.
pub fn deliver(
    destination: &mut dyn Destination,
    events: &[ProcessedEvent],
    attempts: u32,
) -> Delivery {
    let policy = RetryPolicy {
        max_attempts: attempts,
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };
    crate::deliver(destination, events, &policy, &AtomicBool::new(false))
}
