//! Capture settings. Every field has a default, so a config file names only what it changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hogstream_event::security::ClientSettings;
use hogstream_event::topics;
use serde::{Deserialize, Serialize};

use crate::topics::Topic;

/// Settings of the capture service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Address the HTTP server listens on. Default `127.0.0.1:8010`.
    pub bind_address: SocketAddr,
    /// A private address for `/metrics` (with `/_liveness` and `/_readiness` again): when set,
    /// `/metrics` leaves `bind_address`, so capture's port can face the internet without
    /// showing its counters. Unset by default: everything on `bind_address`.
    pub metrics_address: Option<SocketAddr>,
    /// Kafka producer settings.
    pub kafka: ProducerConfig,
    /// Topic names; the defaults are PostHog's.
    pub topics: TopicConfig,
    /// Hot-key handling: the per-key limiter and the forced-overflow list.
    pub overflow: OverflowConfig,
    /// Events whose `token` or `token:distinct_id` is listed are dropped silently; the client
    /// still gets 200, as PostHog's `DROP_EVENTS_BY_TOKEN_DISTINCT_ID` does.
    pub drop_events: Vec<String>,
    /// Events whose `token` or `token:distinct_id` is listed go to the dead-letter topic, so an
    /// operator can quarantine a misbehaving client without losing its data.
    pub dlq_events: Vec<String>,
    /// Events whose `token` or `token:distinct_id` is listed carry the
    /// `force_disable_person_processing` header (and lose their key if they overflow).
    pub disable_person_processing: Vec<String>,
    /// Body and decompression size limits, and the body read timeout.
    pub limits: LimitsConfig,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::from(([127, 0, 0, 1], 8010)),
            metrics_address: None,
            kafka: ProducerConfig::default(),
            topics: TopicConfig::default(),
            overflow: OverflowConfig::default(),
            drop_events: Vec::new(),
            dlq_events: Vec::new(),
            disable_person_processing: Vec::new(),
            limits: LimitsConfig::default(),
        }
    }
}

impl CaptureConfig {
    /// Rejects settings that would make the service misbehave rather than fail loudly later.
    pub fn validate(&self) -> Result<(), String> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err("kafka.bootstrap_servers is empty".into());
        }
        if self.overflow.enabled && (self.overflow.per_second == 0 || self.overflow.burst == 0) {
            return Err("overflow.per_second and overflow.burst must be positive".into());
        }
        let limits = &self.limits;
        if limits.max_body_bytes == 0
            || limits.max_batch_body_bytes == 0
            || limits.max_decompressed_bytes == 0
        {
            return Err("size limits must be positive".into());
        }
        // One request at the cap must fit: lz-string's UTF-16 output takes two bytes a unit.
        let largest = limits.max_decompressed_bytes.saturating_mul(2);
        if limits.max_decoding_bytes < largest {
            return Err(format!(
                "limits.max_decoding_bytes ({}) must be at least twice limits.max_decompressed_bytes ({}), so that one request at the cap can be decoded",
                limits.max_decoding_bytes, limits.max_decompressed_bytes
            ));
        }
        if limits.header_read_timeout_ms == 0
            || limits.max_connections == 0
            || limits.max_concurrent_requests == 0
        {
            return Err(
                "limits.header_read_timeout_ms, max_connections and max_concurrent_requests must be positive".into(),
            );
        }
        for (what, name) in [
            ("main", &self.topics.main),
            ("overflow", &self.topics.overflow),
            ("historical", &self.topics.historical),
            ("dlq", &self.topics.dlq),
        ] {
            if name.trim().is_empty() {
                return Err(format!("topics.{what} is empty"));
            }
        }
        Ok(())
    }
}

/// Kafka producer settings. The producer always uses `acks=all` and lz4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// Comma-separated `host:port` list. Default `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// How long librdkafka may try to deliver one message before the request fails with 503.
    /// Default 10 000 ms, well under SDK request timeouts.
    pub message_timeout_ms: u64,
    /// Batching delay; small because every request waits for its acknowledgements. Default 10 ms.
    pub linger_ms: u64,
    /// Largest message librdkafka accepts; larger events are refused with 413 before anything of
    /// their request is produced. Must not exceed the broker's limit. Default 1 000 000.
    pub message_max_bytes: usize,
    /// How often readiness re-checks that the broker answers a metadata request. Default 5 000 ms.
    pub readiness_interval_ms: u64,
    /// librdkafka's `enable.idempotence`: whether a retried produce request can be stored twice
    /// (no: idempotent) at the cost of per-partition in-flight limits. Duplicates are removed
    /// downstream by event uuid either way; see README, "Capture's producer".
    pub idempotence: bool,
    /// TLS and SASL settings with their secrets: the binary copies them from
    /// `[kafka.security]`, never read from `[capture.kafka]`.
    #[serde(skip)]
    pub client_settings: ClientSettings,
    /// Further librdkafka settings, applied last.
    pub extra: BTreeMap<String, String>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            message_timeout_ms: 10_000,
            linger_ms: 10,
            message_max_bytes: 1_000_000,
            readiness_interval_ms: 5_000,
            idempotence: true,
            client_settings: ClientSettings::default(),
            extra: BTreeMap::new(),
        }
    }
}

impl ProducerConfig {
    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }
}

/// Topic names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    pub main: String,
    pub overflow: String,
    pub historical: String,
    pub dlq: String,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            main: topics::MAIN.into(),
            overflow: topics::OVERFLOW.into(),
            historical: topics::HISTORICAL.into(),
            dlq: topics::DLQ.into(),
        }
    }
}

impl TopicConfig {
    pub fn name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Main => &self.main,
            Topic::Overflow => &self.overflow,
            Topic::Historical => &self.historical,
            Topic::Dlq => &self.dlq,
        }
    }
}

/// Hot-key handling: a GCRA limiter per partition key sends bursts to the overflow topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverflowConfig {
    /// Whether the per-key limiter runs at all. The forced list applies either way.
    pub enabled: bool,
    /// Sustained events per second per key. Default 100, PostHog's production value.
    pub per_second: u32,
    /// Events a key may send at once before overflowing. Default 1000, PostHog's value.
    pub burst: u32,
    /// `token` or `token:distinct_id` entries whose events always go to overflow, unkeyed.
    pub force_overflow: Vec<String>,
}

impl Default for OverflowConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 100,
            burst: 1000,
            force_overflow: Vec::new(),
        }
    }
}

/// What one client, and all clients together, may hold of the server: sizes, time and
/// concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Raw (possibly compressed) body limit on the analytics routes. Default 2 MB.
    pub max_body_bytes: usize,
    /// Raw body limit on `/batch`. Default 20 MB.
    pub max_batch_body_bytes: usize,
    /// Cap on one request's decoded payload, enforced while decompressing. Default 100 MB
    /// (5 × 20 MB).
    pub max_decompressed_bytes: usize,
    /// Cap on the memory of all requests' decompression output at once; a request that would
    /// pass it gets 503 and is retried by the SDK. At least twice `max_decompressed_bytes`.
    /// Default 256 MiB.
    pub max_decoding_bytes: usize,
    /// Time allowed to receive the whole body before answering 408. Default 30 000 ms.
    pub body_read_timeout_ms: u64,
    /// Time allowed to send a request's headers, and the most an idle keep-alive connection is
    /// kept; then the connection is closed. Default 10 000 ms.
    pub header_read_timeout_ms: u64,
    /// Open connections at most; more wait in the kernel's accept queue. Default 10 000.
    pub max_connections: usize,
    /// Capture requests being handled at once; more get 503 at once (health and metrics are
    /// not counted). Default 1 024.
    pub max_concurrent_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_batch_body_bytes: 20 * 1024 * 1024,
            max_decompressed_bytes: 100 * 1024 * 1024,
            max_decoding_bytes: 256 * 1024 * 1024,
            body_read_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            max_connections: 10_000,
            max_concurrent_requests: 1_024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = CaptureConfig::default();
        assert_eq!(c.bind_address.to_string(), "127.0.0.1:8010");
        assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(c.topics.main, "events_plugin_ingestion");
        assert_eq!(
            c.topics.name(Topic::Overflow),
            "events_plugin_ingestion_overflow"
        );
        assert_eq!(
            c.topics.name(Topic::Historical),
            "events_plugin_ingestion_historical"
        );
        assert_eq!(c.topics.name(Topic::Dlq), "events_plugin_ingestion_dlq");
        assert_eq!((c.overflow.per_second, c.overflow.burst), (100, 1000));
        assert_eq!(c.limits.max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(c.limits.max_batch_body_bytes, 20 * 1024 * 1024);
        assert_eq!(c.limits.max_decompressed_bytes, 100 * 1024 * 1024);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn partial_json_keeps_other_defaults() {
        let c: CaptureConfig = serde_json::from_str(
            r#"{"bind_address":"0.0.0.0:9000","overflow":{"burst":5},"drop_events":["phc_a"]}"#,
        )
        .unwrap();
        assert_eq!(c.bind_address.port(), 9000);
        assert_eq!(c.overflow.burst, 5);
        assert_eq!(c.overflow.per_second, 100);
        assert_eq!(c.drop_events, vec!["phc_a".to_string()]);
        assert_eq!(c.kafka.message_timeout_ms, 10_000);
    }

    #[test]
    fn validation_rejects_unusable_settings() {
        let mut c = CaptureConfig::default();
        c.overflow.per_second = 0;
        assert!(c.validate().is_err());
        c.overflow.enabled = false;
        assert!(c.validate().is_ok());

        let mut c = CaptureConfig::default();
        c.topics.dlq = " ".into();
        assert!(c.validate().unwrap_err().contains("dlq"));

        let mut c = CaptureConfig::default();
        c.limits.max_decompressed_bytes = 0;
        assert!(c.validate().is_err());
    }
}
