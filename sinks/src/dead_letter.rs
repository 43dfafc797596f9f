//! The dead-letter topic: messages the engine cannot process, kept with their reason so an
//! operator can inspect and redrive them.

use std::time::Duration;

use hogstream_event::headers;
use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::error::SinkError;

/// One message that could not be processed, with where it came from and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: String,
    /// The pipeline step that failed (`decode`, `normalize`, ...).
    pub step: &'static str,
    /// The original message's headers, written before the `dlq_*` ones.
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterProducer {
    /// `client` carries the brokers and any site settings; delivery settings are added here.
    pub fn new(mut client: ClientConfig, topic: &str) -> Result<Self, SinkError> {
        let producer = client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .map_err(SinkError::Kafka)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Produces every dead letter and waits until Kafka has acknowledged all of them; a
    /// failed produce is retried, so the source offset never passes an unrecorded letter.
    pub async fn send_all(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        for letter in letters {
            let now = chrono::Utc::now().timestamp_millis().to_string();
            let origin = format!(
                "{}/{}/{}",
                letter.source_topic, letter.partition, letter.offset
            );
            loop {
                let original = letter
                    .headers
                    .iter()
                    .filter(|(k, _)| !k.starts_with("dlq_"))
                    .fold(OwnedHeaders::new(), |hs, (k, v)| {
                        hs.insert(Header {
                            key: k.as_str(),
                            value: Some(v.as_slice()),
                        })
                    });
                let hdrs = original
                    .insert(Header {
                        key: headers::DLQ_REASON,
                        value: Some(letter.reason.as_str()),
                    })
                    .insert(Header {
                        key: headers::DLQ_STEP,
                        value: Some(letter.step),
                    })
                    .insert(Header {
                        key: headers::DLQ_TIMESTAMP,
                        value: Some(now.as_str()),
                    })
                    .insert(Header {
                        key: "dlq_origin",
                        value: Some(origin.as_str()),
                    });
                let mut record = FutureRecord::to(&self.topic)
                    .payload(&letter.payload)
                    .headers(hdrs);
                if let Some(k) = &letter.key {
                    record = record.key(k);
                }
                match self.producer.send(record, Duration::from_secs(30)).await {
                    Ok(_) => {
                        metrics::counter!("hogstream_dlq_total", "step" => letter.step)
                            .increment(1);
                        break;
                    }
                    Err((e, _)) => {
                        tracing::warn!(error = %e, origin, "dead letter not stored yet; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        Ok(())
    }
}
