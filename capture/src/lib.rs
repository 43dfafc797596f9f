//! hogstream capture: PostHog's HTTP capture API in front of Kafka.
//!
//! Compatible with PostHog SDKs (`posthog-compat.md` §1): the same routes, payload decodings,
//! validation rules, Kafka message shape, partition key and topics. A request is answered 200
//! only after Kafka acknowledged every one of its events.
//!
//! - [`serve`] runs the service with a real Kafka producer;
//! - [`serve_on`] runs it on a listener and state you built, e.g. port 0 in tests;
//! - [`router`] with [`AppState::new`] and a [`MemoryProducer`] runs it in-process.

pub mod config;
pub mod distinct_id;
pub mod error;
pub mod event;
/// The `cargo fuzz` entry point (`capture/fuzz`, `scripts/fuzz.sh`); not part of the API.
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod limiter;
pub mod metrics;
pub mod payload;
pub mod producer;
pub mod router;
pub mod routing;
pub mod state;
pub mod timestamp;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::CaptureConfig;
pub use error::{CaptureError, ServeError};
pub use producer::{EventProducer, KafkaProducer, MemoryProducer, ProduceError, ProduceRecord};
pub use router::router;
pub use state::AppState;

/// How often idle limiter keys are forgotten and Prometheus histograms drained.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// How long shutdown waits for librdkafka to drain. Requests already waited for their own acks,
/// so this only matters for deliveries abandoned by clients that disconnected.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// Runs capture with a Kafka producer until `shutdown` resolves, then drains in-flight requests
/// and flushes the producer.
pub async fn serve(
    config: CaptureConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let producer = Arc::new(KafkaProducer::new(&config.kafka)?);
    let state =
        AppState::new(&config, producer.clone())?.with_metrics(metrics::install_prometheus());
    let listener = TcpListener::bind(config.bind_address)
        .await
        .map_err(ServeError::Bind)?;
    // A producer that hit a fatal error refuses every later event: stop like at SIGTERM, but
    // fail, so that a supervisor starts capture again with a new producer.
    let fatal = Arc::new(tokio::sync::OnceCell::new());
    let watching = (producer.clone(), fatal.clone());
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            reason = watching.0.fatal_error() => { let _ = watching.1.set(reason); }
        }
    };
    let result = serve_on(listener, state, stop).await;
    let flushing = producer.clone();
    match tokio::task::spawn_blocking(move || flushing.flush(SHUTDOWN_FLUSH)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "kafka flush at shutdown failed"),
        Err(err) => tracing::warn!(%err, "kafka flush task failed"),
    }
    match fatal.get() {
        Some(reason) => Err(ServeError::ProducerFatal(reason.clone())),
        None => result,
    }
}

/// Serves `state` on an already bound listener until `shutdown` resolves.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "capture listening");
    }
    let upkeep_state = state.clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            tick.tick().await;
            upkeep_state.housekeeping();
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve);
    housekeeping.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serve_on_answers_over_tcp_and_shuts_down() {
        let producer = Arc::new(MemoryProducer::new());
        let state = AppState::new(&CaptureConfig::default(), producer.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, state, async {
            let _ = stopped.await;
        }));

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = r#"{"event":"e","distinct_id":"d","token":"phc_tcp"}"#;
        let request = format!(
            "POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(r#"{"status":"Ok"}"#), "{response}");
        let records = producer.records();
        assert_eq!(records.len(), 1);
        let value: serde_json::Value = serde_json::from_str(&records[0].payload).unwrap();
        // The peer address comes from ConnectInfo when there is no X-Forwarded-For.
        assert_eq!(value["ip"], "127.0.0.1");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops after shutdown")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn serve_refuses_invalid_config() {
        let mut config = CaptureConfig::default();
        config.kafka.bootstrap_servers = String::new();
        let err = serve(config, async {}).await.unwrap_err();
        assert!(matches!(err, ServeError::Config(_)));
    }
}
