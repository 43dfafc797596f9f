//! Default topic names, the same as PostHog's so existing tooling keeps working.

pub const MAIN: &str = "events_plugin_ingestion";
pub const OVERFLOW: &str = "events_plugin_ingestion_overflow";
pub const HISTORICAL: &str = "events_plugin_ingestion_historical";
pub const DLQ: &str = "events_plugin_ingestion_dlq";
/// Processed events, with their person, for destinations (PostHog's name for that stream).
pub const PROCESSED: &str = "clickhouse_events_json";
