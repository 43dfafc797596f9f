//! The real producer: rdkafka's `FutureProducer` with durable settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{DeliveryFuture, EventProducer, ProduceError, ProduceRecord};
use crate::config::ProducerConfig;

/// Extra time on top of `message.timeout.ms` before a delivery is given up locally, so a stuck
/// librdkafka callback can never hold a request forever.
const DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// Produces with `acks=all`, so an acknowledged event is on every in-sync replica; with
/// `idempotence`, librdkafka's own retries cannot store a message twice either.
pub struct KafkaProducer {
    producer: FutureProducer<HealthContext>,
    fatal: tokio::sync::watch::Receiver<Option<String>>,
    ready: Arc<AtomicBool>,
    delivery_timeout: Duration,
    health: Option<JoinHandle<()>>,
}

impl KafkaProducer {
    /// Creates the producer. Connecting happens in the background, so this succeeds with the
    /// broker down; readiness then stays false. Inside a tokio runtime a task re-checks broker
    /// reachability every `readiness_interval_ms`.
    pub fn new(config: &ProducerConfig) -> Result<Self, KafkaError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("acks", "all")
            .set("enable.idempotence", config.idempotence.to_string())
            .set("compression.type", "lz4")
            .set("linger.ms", config.linger_ms.to_string())
            .set("message.timeout.ms", config.message_timeout_ms.to_string())
            .set("message.max.bytes", config.message_max_bytes.to_string())
            // librdkafka backs off up to 10 s between reconnects by default, so capture would go
            // on refusing events for seconds after the broker is back; 1 s bounds that.
            .set("reconnect.backoff.max.ms", "1000");
        for (key, value) in config.client_settings.iter() {
            client.set(key, value);
        }
        for (key, value) in &config.extra {
            client.set(key, value);
        }
        let (fatal, fatal_rx) = tokio::sync::watch::channel(None);
        let context = HealthContext {
            wake: Arc::new(Notify::new()),
        };
        let wake = context.wake.clone();
        let producer: FutureProducer<HealthContext> = client.create_with_context(context)?;
        let ready = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_millis(config.readiness_interval_ms.max(100));
        let health = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(watch_broker(
                producer.clone(),
                ready.clone(),
                interval,
                wake,
                fatal,
            ))
        });
        Ok(Self {
            producer,
            fatal: fatal_rx,
            ready,
            delivery_timeout: config.message_timeout() + DELIVERY_GRACE,
            health,
        })
    }

    /// Resolves with librdkafka's reason once the producer hit a fatal error; never otherwise.
    pub async fn fatal_error(&self) -> String {
        let mut fatal = self.fatal.clone();
        let reason = match fatal.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Waits (blocking) until queued messages are delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The underlying rdkafka producer, for callers that need admin-level access.
    pub fn inner(&self) -> &FutureProducer<HealthContext> {
        &self.producer
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        if let Some(task) = self.health.take() {
            task.abort();
        }
    }
}

/// librdkafka's client callbacks: every client error (a lost connection to every broker, or a
/// fatal error of an idempotent producer, which then refuses every later message) wakes the
/// readiness watcher at once, instead of at its next scheduled probe, which could miss a short
/// broker restart entirely.
pub struct HealthContext {
    wake: Arc<Notify>,
}

impl ClientContext for HealthContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.wake.notify_one();
        tracing::warn!(%error, reason, "kafka client error");
    }
}

/// How often a broker that is down is asked again: capture refuses events while it is down, so
/// it must notice the return quickly.
const DOWN_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Bound on one probe: a broker that cannot answer a metadata request this fast is not serving.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A cheap metadata request proves the broker answers; cached so readiness probes cost nothing.
/// Probes run every `interval` while the broker answers, every [`DOWN_PROBE_INTERVAL`] while it
/// does not, and at once when librdkafka reports an error. (An idle connection closed by the
/// broker also wakes it; that probe reconnects and finds it ready.) A fatal producer error makes
/// capture unready for good and is passed on through `fatal`.
async fn watch_broker(
    producer: FutureProducer<HealthContext>,
    ready: Arc<AtomicBool>,
    interval: Duration,
    wake: Arc<Notify>,
    fatal: tokio::sync::watch::Sender<Option<String>>,
) {
    let timeout = interval.min(PROBE_TIMEOUT);
    loop {
        if let Some((code, reason)) = producer.client().fatal_error() {
            ready.store(false, Ordering::SeqCst);
            tracing::error!(
                ?code,
                reason,
                "kafka producer: fatal error, refusing events"
            );
            fatal.send_replace(Some(format!("{code:?}: {reason}")));
            return;
        }
        let probe = producer.clone();
        let started = std::time::Instant::now();
        let probe = tokio::task::spawn_blocking(move || {
            probe.client().fetch_metadata(None, timeout).map(|_| ())
        });
        // A probe that does not come back in time counts as a failed one; the watcher goes on.
        let ok = match tokio::time::timeout(timeout * 2, probe).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::debug!(error = %e, "kafka readiness probe failed");
                false
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(after = ?started.elapsed(), "kafka readiness probe did not return");
                false
            }
        };
        if ready.swap(ok, Ordering::SeqCst) != ok {
            if ok {
                tracing::info!("kafka broker reachable");
            } else {
                tracing::warn!("kafka broker unreachable: refusing events with 503");
            }
        }
        let pause = if ok {
            interval
        } else {
            interval.min(DOWN_PROBE_INTERVAL)
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
        }
    }
}

/// PostHog's mapping: a message that is too large can never succeed (413); every other Kafka
/// failure may pass on retry (503).
pub(crate) fn classify(err: &KafkaError) -> ProduceError {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            ProduceError::MessageTooLarge(err.to_string())
        }
        _ => ProduceError::Retryable(err.to_string()),
    }
}

impl EventProducer for KafkaProducer {
    fn send(&self, record: ProduceRecord) -> DeliveryFuture {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.0.len());
        for (key, value) in record.headers.iter() {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut message = FutureRecord::<str, str>::to(&record.topic)
            .payload(&record.payload)
            .headers(headers);
        if let Some(key) = &record.key {
            message = message.key(key.as_str());
        }
        match self.producer.send_result(message) {
            Ok(delivery) => {
                let timeout = self.delivery_timeout;
                Box::pin(async move {
                    match tokio::time::timeout(timeout, delivery).await {
                        Ok(Ok(Ok(_))) => Ok(()),
                        Ok(Ok(Err((err, _)))) => Err(classify(&err)),
                        Ok(Err(_canceled)) => {
                            Err(ProduceError::Retryable("delivery was canceled".into()))
                        }
                        Err(_elapsed) => Err(ProduceError::Retryable(
                            "timed out waiting for the broker".into(),
                        )),
                    }
                })
            }
            Err((err, _)) => {
                let err = classify(&err);
                Box::pin(async move { Err(err) })
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_event::CapturedHeaders;

    #[test]
    fn size_errors_are_413_everything_else_retryable() {
        let too_big = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(
            classify(&too_big),
            ProduceError::MessageTooLarge(_)
        ));
        for code in [
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            let err = KafkaError::MessageProduction(code);
            assert!(
                matches!(classify(&err), ProduceError::Retryable(_)),
                "{code:?}"
            );
        }
    }

    fn unreachable_config() -> ProducerConfig {
        ProducerConfig {
            // Port 1 on loopback: nothing listens, connections are refused at once.
            bootstrap_servers: "127.0.0.1:1".into(),
            message_timeout_ms: 300,
            message_max_bytes: 1000,
            readiness_interval_ms: 100,
            ..ProducerConfig::default()
        }
    }

    fn record(payload: String) -> ProduceRecord {
        let mut headers = CapturedHeaders::default();
        headers.set("token", "phc");
        ProduceRecord {
            topic: "hogstream_capture_unit".into(),
            key: Some("phc:d".into()),
            payload,
            headers,
        }
    }

    #[tokio::test]
    async fn broker_down_fails_delivery_as_retryable_and_is_not_ready() {
        let producer = KafkaProducer::new(&unreachable_config()).unwrap();
        let err = producer.send(record("{}".into())).await.unwrap_err();
        assert!(matches!(err, ProduceError::Retryable(_)), "{err:?}");
        assert!(!producer.is_ready());
    }

    /// A fatal producer error cannot be caused on demand with a real broker (it takes lost
    /// acknowledged data); librdkafka's own test hook raises one, as the broker would.
    #[tokio::test]
    async fn a_fatal_error_is_reported_and_leaves_capture_unready() {
        let producer = KafkaProducer::new(&unreachable_config()).unwrap();
        let raised = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.inner().client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"injected by the test".as_ptr(),
            )
        };
        assert_eq!(
            raised,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        let reason = tokio::time::timeout(Duration::from_secs(10), producer.fatal_error())
            .await
            .expect("the fatal error is reported");
        assert!(reason.contains("injected by the test"), "{reason}");
        assert!(
            !producer.is_ready(),
            "a producer that cannot produce is not ready"
        );
    }

    #[tokio::test]
    async fn oversized_message_is_refused_locally() {
        let producer = KafkaProducer::new(&unreachable_config()).unwrap();
        let err = producer.send(record("x".repeat(5000))).await.unwrap_err();
        assert!(matches!(err, ProduceError::MessageTooLarge(_)), "{err:?}");
    }
}
