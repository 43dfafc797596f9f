//! A harness to unit-test a plugin with no Kafka, RocksDB or ClickHouse: build an event, run the
//! plugin through the same code as the engine's [`crate::Chain`] (so failures and panics behave as in
//! production), look at the outcome.

use serde_json::Value;
use uuid::Uuid;

use crate::{ChainOutcome, PluginEvent, Transform};

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
