//! hogstream capture: PostHog's HTTP capture API in front of Kafka.
//!
//! Compatible with PostHog SDKs (`docs/posthog-rules.md` §1): the same routes, payload decodings,
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
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod payload;
pub mod producer;
pub mod state;
pub mod timestamp;
pub mod token;
pub mod topics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::CaptureConfig;
pub use error::{CaptureError, ServeError};
pub use http::router;
pub use producer::{EventProducer, KafkaProducer, MemoryProducer, ProduceError, ProduceRecord};
pub use state::AppState;

/// How often idle limiter keys are forgotten and Prometheus histograms drained.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// How long shutdown waits for librdkafka to drain. Requests already waited for their own acks,
/// so this only matters for deliveries abandoned by clients that disconnected.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// How long shutdown waits for open requests (each waits at most for its Kafka acknowledgements,
/// `message_timeout_ms`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

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
    let private = match config.metrics_address {
        Some(address) => Some(serve_private(address, state.clone()).await?),
        None => None,
    };
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
    if let Some(private) = private {
        private.abort();
    }
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

/// Serves `/metrics` and health on the private `address` until aborted. Scrapers and probes are
/// trusted, so axum's plain server is enough here.
async fn serve_private(
    address: std::net::SocketAddr,
    state: AppState,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let listener = TcpListener::bind(address).await.map_err(ServeError::Bind)?;
    tracing::info!(%address, "capture metrics listening");
    let app = http::private_router(state);
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "capture metrics listener failed");
        }
    }))
}

/// Serves `state` on an already bound listener until `shutdown` resolves, then lets in-flight
/// requests finish (up to [`SHUTDOWN_GRACE`]).
///
/// What a client can hold is bounded (`[capture.limits]`): its headers must arrive within
/// `header_read_timeout_ms`, which also ends idle keep-alive connections; at most
/// `max_connections` are open at once (more wait in the kernel's accept queue).
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "capture listening");
    }
    let limits = state.shared.limits.clone();
    let upkeep_state = state.clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            tick.tick().await;
            upkeep_state.housekeeping();
        }
    });
    let app = router(state);
    // HTTP/1.1 only, which is what SDKs speak to capture (HTTP/2 ends at a load balancer):
    // detecting the version first would wait for a silent client's first bytes with no timeout.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not spin or stop serving.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)))
            .map_request(|req: hyper::Request<hyper::body::Incoming>| {
                req.map(axum::body::Body::new)
            });
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    housekeeping.abort();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a memory-producer capture with `limits` on a free port; returns its address.
    async fn serve_with(limits: config::LimitsConfig) -> std::net::SocketAddr {
        let config = CaptureConfig {
            limits,
            ..CaptureConfig::default()
        };
        let state = AppState::new(&config, Arc::new(MemoryProducer::new())).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_on(listener, state, std::future::pending()));
        addr
    }

    /// Reads until the server closes the connection; returns what it sent and when it closed.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> (String, std::time::Instant) {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut got)).await;
        (
            String::from_utf8_lossy(&got).into_owned(),
            std::time::Instant::now(),
        )
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_or_a_byte_at_a_time_is_cut_off() {
        let addr = serve_with(config::LimitsConfig {
            header_read_timeout_ms: 500,
            ..Default::default()
        })
        .await;
        let started = std::time::Instant::now();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let dribble = tokio::spawn(async move {
            for b in b"POST /i/v0/e HTTP/1.1\r\nHost: x\r\n" {
                if trickle.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until_closed(&mut trickle).await
        });
        let (_, silent_closed) = until_closed(&mut silent).await;
        let (_, trickle_closed) = dribble.await.unwrap();
        for closed in [silent_closed, trickle_closed] {
            let held = closed - started;
            assert!(
                held < Duration::from_secs(5),
                "the connection was held {held:?}, the header timeout is 500 ms"
            );
        }
        // An idle keep-alive connection is closed the same way after its last answer.
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /_liveness HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = until_closed(&mut kept).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_closes() {
        let addr = serve_with(config::LimitsConfig {
            max_connections: 2,
            ..Default::default()
        })
        .await;
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET /_liveness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "the third connection is not served while two are open"
        );
        drop(first);
        let (answer, _) = until_closed(&mut third).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "served once a slot is free: {answer}"
        );
    }

    #[tokio::test]
    async fn serve_refuses_invalid_config() {
        let mut config = CaptureConfig::default();
        config.kafka.bootstrap_servers = String::new();
        let err = serve(config, async {}).await.unwrap_err();
        assert!(matches!(err, ServeError::Config(_)));
    }
}
