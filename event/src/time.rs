//! Timestamp formatting shared by capture and engine, so every stage writes the same text.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 with microseconds and a `Z` suffix: what capture writes to Kafka.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses what [`rfc3339`] wrote (and any other RFC 3339 text).
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
