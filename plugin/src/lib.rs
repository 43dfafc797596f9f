//! The API hogstream plugin authors depend on. Dependency-light on purpose: no Kafka, RocksDB,
//! ClickHouse or timely, so a plugin is built and unit-tested on its own (see [`testing`]).
//!
//! Three kinds of plugin, each a trait:
//! - [`Transform`], PostHog's `processEvent`: gets one event of a team that enabled it and
//!   changes it (properties, event name, distinct id; never the team) or drops it. Transforms run
//!   in the configured order, before normalization and persons. One that fails or panics leaves
//!   the event exactly as it was before it ran, and the event records the outcome in
//!   `$plugins_succeeded` / `$plugins_failed` as PostHog does.
//! - [`Destination`], PostHog's `exportEvents`: sees processed events with their person, in
//!   batches, with retries; runs off the ingestion path and keeps its place across restarts.
//! - [`Task`], PostHog's `runEvery*`: runs once per minute, hour or day.
//!
//! Each may implement `setup` (given a [`Context`] with its own key-value [`Storage`]) and
//! `teardown`. Ingestion never stops for a plugin.
//!
//! ```
//! use hogstream_plugin::{PluginError, PluginEvent, Transform, Verdict, testing};
//! use serde_json::json;
//!
//! /// Tags events of internal users.
//! struct TagInternal;
//!
//! impl Transform for TagInternal {
//!     fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
//!         let internal = event
//!             .properties
//!             .get("email")
//!             .and_then(|e| e.as_str())
//!             .is_some_and(|e| e.ends_with("@example.com"));
//!         event.properties.insert("internal".into(), json!(internal));
//!         Ok(Verdict::Keep)
//!     }
//! }
//!
//! let out = testing::run(&TagInternal, testing::event("$pageview", "u1", json!({"email": "a@example.com"})));
//! assert_eq!(out.event().unwrap().properties["internal"], json!(true));
//! ```

mod chain;
mod config;
mod destination;
mod storage;
mod task;
pub mod testing;

use serde_json::{Map, Value};
use thiserror::Error;
use uuid::Uuid;

pub use chain::{Chain, ChainOutcome};
pub use config::{
    ConfigError, DestinationPlugin, Factory, PluginConfig, Plugins, Registry, Start, TaskPlugin,
    settings,
};
pub use destination::{
    Batching, Delivery, Destination, ExportError, RetryPolicy, deliver, deliver_observed,
};
pub use hogstream_event::{ProcessedEvent, ProcessedPerson};
pub use storage::{Context, MemoryStorage, Storage};
pub use task::{Every, LAST_PERIOD_KEY, Task, TaskRun, run_if_due};

/// One event as a transform sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEvent {
    team_id: i64,
    pub uuid: Uuid,
    pub event: String,
    pub distinct_id: String,
    pub properties: Map<String, Value>,
}

impl PluginEvent {
    pub fn new(
        team_id: i64,
        uuid: Uuid,
        event: String,
        distinct_id: String,
        properties: Map<String, Value>,
    ) -> Self {
        Self {
            team_id,
            uuid,
            event,
            distinct_id,
            properties,
        }
    }

    /// The event's team: readable, never writable by a plugin.
    pub fn team_id(&self) -> i64 {
        self.team_id
    }
}

/// What a transform decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
}

#[derive(Debug, Error, PartialEq)]
pub enum PluginError {
    /// The plugin could not process this event; it is kept as it was.
    #[error("{0}")]
    Failed(String),
    /// A setting of the plugin's configuration is wrong: start-up stops.
    #[error("setting `{key}`: {reason}")]
    Setting { key: String, reason: String },
    /// The plugin's storage could not be read or written.
    #[error("storage: {0}")]
    Storage(String),
}

/// PostHog's `processEvent`.
pub trait Transform: Send + Sync {
    /// Runs once per team that enables the plugin, before its first event.
    fn setup(&mut self, _ctx: &Context) -> Result<(), PluginError> {
        Ok(())
    }
    fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError>;
    /// Runs once when the engine stops.
    fn teardown(&mut self) {}
}
