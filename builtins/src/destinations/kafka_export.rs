//! `kafka-export`: writes processed events, as JSON keyed by `team_id:distinct_id`, to a topic of
//! any Kafka cluster, with an idempotent producer; a batch is delivered when every event of it is
//! acknowledged.

use std::{collections::BTreeMap, time::Duration};

use futures_util::future::join_all;
use hogstream_event::security::KafkaSecurity;
use hogstream_plugin::{Destination, ExportError, PluginError, ProcessedEvent, settings};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    brokers: String,
    topic: String,
    /// TLS and SASL to that cluster, with secrets from the environment or a file, as in
    /// `[kafka.security]`: `[plugins.config.security]`.
    #[serde(default)]
    security: KafkaSecurity,
    /// Further librdkafka settings, applied last.
    #[serde(default)]
    extra: BTreeMap<String, String>,
}

pub struct KafkaExport {
    topic: String,
    producer: FutureProducer,
    /// Waits for acknowledgements on the destination's own thread.
    runtime: Option<tokio::runtime::Runtime>,
}

impl KafkaExport {
    pub fn from_config(config: &Value) -> Result<Box<dyn Destination>, PluginError> {
        let settings: Settings = settings(config)?;
        if settings.topic.is_empty() {
            return Err(PluginError::Setting {
                key: "topic".into(),
                reason: "is empty".into(),
            });
        }
        let secured = settings
            .security
            .client_settings()
            .map_err(|e| PluginError::Setting {
                key: "security".into(),
                reason: e.to_string(),
            })?;
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &settings.brokers);
        for (k, v) in secured.iter() {
            client.set(k, v);
        }
        for (k, v) in &settings.extra {
            client.set(k, v);
        }
        let producer = client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .map_err(|e| PluginError::Setting {
                key: "brokers / extra".into(),
                reason: e.to_string(),
            })?;
        Ok(Box::new(Self {
            topic: settings.topic,
            producer,
            runtime: None,
        }))
    }
}

impl Destination for KafkaExport {
    fn export(&mut self, events: &[ProcessedEvent]) -> Result<(), ExportError> {
        let runtime = match &self.runtime {
            Some(r) => r,
            None => self.runtime.insert(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ExportError::Retry(format!("runtime: {e}")))?,
            ),
        };
        let payloads: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                let json =
                    serde_json::to_string(e).map_err(|err| ExportError::Fail(err.to_string()))?;
                Ok((format!("{}:{}", e.team_id, e.distinct_id), json))
            })
            .collect::<Result<_, ExportError>>()?;
        let sends = payloads.iter().map(|(key, json)| {
            self.producer.send(
                FutureRecord::to(&self.topic).key(key).payload(json),
                Duration::from_secs(30),
            )
        });
        let failed = runtime
            .block_on(join_all(sends))
            .into_iter()
            .filter_map(|r| r.err())
            .map(|(e, _)| e.to_string())
            .next();
        match failed {
            // Acknowledged events are sent again with the retry: Kafka export is at least once.
            Some(e) => Err(ExportError::Retry(format!("topic {}: {e}", self.topic))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_checked() {
        let err = |c: Value| {
            KafkaExport::from_config(&c)
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(err(json!({"brokers": "127.0.0.1:9092"})).contains("topic"));
        assert!(err(json!({"brokers": "x", "topic": ""})).contains("empty"));
        assert!(
            err(json!({"brokers": "x", "topic": "t", "extra": {"no.such.setting": "1"}}))
                .contains("brokers / extra")
        );
        // Secrets are named, and a missing one is refused by name at start-up.
        let missing = err(json!({"brokers": "x", "topic": "t", "security": {
            "protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512", "username": "u",
            "password": {"env": "HOGSTREAM_TEST_NO_SUCH_VARIABLE"}
        }}));
        assert!(
            missing.contains("security") && missing.contains("HOGSTREAM_TEST_NO_SUCH_VARIABLE"),
            "{missing}"
        );
        let inline = err(json!({"brokers": "x", "topic": "t", "security": {
            "protocol": "sasl_ssl", "sasl_mechanism": "PLAIN", "username": "u", "password": "p"
        }}));
        assert!(inline.contains("never written inline"), "{inline}");
        let secured = json!({"brokers": "127.0.0.1:9094", "topic": "t", "security": {
            "protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512", "username": "u",
            "password": {"env": "PATH"}
        }});
        assert!(KafkaExport::from_config(&secured).is_ok());
    }
}
