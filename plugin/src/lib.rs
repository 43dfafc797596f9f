//! The API hogstream plugin authors depend on. Dependency-light on purpose: no Kafka, RocksDB,
//! ClickHouse or timely, so a plugin is built and unit-tested on its own (see [`testing`]).
//!
//! Today: **transforms**, PostHog's `processEvent`. A transform gets one event of a team that
//! enabled it and changes it (properties, event name, distinct id; never the team) or drops it.
//! Transforms run in the configured order, before normalization and persons. One that fails or
//! panics leaves the event exactly as it was before it ran, and the event records the outcome in
//! `$plugins_succeeded` / `$plugins_failed` as PostHog does; ingestion never stops for a plugin.
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

pub mod builtins;
mod chain;
mod config;
pub mod testing;

use serde_json::{Map, Value};
use thiserror::Error;
use uuid::Uuid;

pub use chain::{Chain, ChainOutcome};
pub use config::{PluginConfig, Registry, settings};

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
}

/// PostHog's `processEvent`.
pub trait Transform: Send + Sync {
    fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError>;
}
