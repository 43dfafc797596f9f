//! The Kafka message value capture produces, field for field as PostHog's capture writes it
//! (`docs/posthog-rules.md` §1.10 "Kafka message").

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One captured event as it travels on the ingestion topics.
///
/// `data` holds the client's original event re-serialized as a JSON *string*, exactly like
/// PostHog; the outer fields are the values capture resolved and win over those in `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedEvent {
    pub uuid: Uuid,
    pub distinct_id: String,
    pub ip: String,
    pub data: String,
    /// Capture's receive time, RFC 3339.
    pub now: String,
    /// The client's `sent_at`, RFC 3339; absent when the client sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    pub token: String,
    pub event: String,
    /// The timestamp capture computed with the clock-skew formula, RFC 3339.
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_cookieless_mode: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub historical_migration: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl CapturedEvent {
    /// The Kafka key PostHog uses: `token:distinct_id`, or `token:ip` in cookieless mode.
    pub fn partition_key(&self) -> String {
        if self.is_cookieless_mode {
            format!("{}:{}", self.token, self.ip)
        } else {
            format!("{}:{}", self.token, self.distinct_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CapturedEvent {
        CapturedEvent {
            uuid: Uuid::nil(),
            distinct_id: "d1".into(),
            ip: "1.2.3.4".into(),
            data: r#"{"event":"e"}"#.into(),
            now: "2026-01-01T00:00:00Z".into(),
            sent_at: None,
            token: "phc_x".into(),
            event: "e".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            is_cookieless_mode: false,
            historical_migration: false,
        }
    }

    #[test]
    fn optional_flags_are_omitted_when_false() {
        let json = serde_json::to_value(sample()).unwrap();
        let obj = json.as_object().unwrap();
        assert!(!obj.contains_key("sent_at"));
        assert!(!obj.contains_key("is_cookieless_mode"));
        assert!(!obj.contains_key("historical_migration"));
        assert_eq!(
            obj["data"],
            serde_json::Value::String(r#"{"event":"e"}"#.into())
        );
    }

    #[test]
    fn key_is_token_and_distinct_id_or_ip_when_cookieless() {
        let mut e = sample();
        assert_eq!(e.partition_key(), "phc_x:d1");
        e.is_cookieless_mode = true;
        assert_eq!(e.partition_key(), "phc_x:1.2.3.4");
    }
}
