//! Kafka headers capture attaches to every message, so consumers can route and filter without
//! parsing the value.

use std::collections::BTreeMap;

pub const TOKEN: &str = "token";
pub const DISTINCT_ID: &str = "distinct_id";
pub const SESSION_ID: &str = "session_id";
pub const TIMESTAMP: &str = "timestamp";
pub const EVENT: &str = "event";
pub const UUID: &str = "uuid";
pub const NOW: &str = "now";
pub const FORCE_DISABLE_PERSON_PROCESSING: &str = "force_disable_person_processing";
pub const HISTORICAL_MIGRATION: &str = "historical_migration";
pub const DLQ_REASON: &str = "dlq_reason";
pub const DLQ_STEP: &str = "dlq_step";
pub const DLQ_TIMESTAMP: &str = "dlq_timestamp";

/// The headers of one captured message, as ordered name/value pairs of UTF-8 text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedHeaders(pub BTreeMap<String, String>);

impl CapturedHeaders {
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
