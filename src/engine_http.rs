//! `hogstream engine`'s HTTP endpoints on `[engine] metrics_address`: `/metrics` (Prometheus),
//! `/_liveness`, and `/_readiness`, which asks the broker and ClickHouse at request time and
//! answers 503 naming the one that does not answer; and the same probe every 10 s for the
//! `hogstream_ready` gauge (also in `hogstream run`, whose metrics capture serves). (Capture's `/_readiness` reflects Kafka
//! only, on purpose: README, Observability.)

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use hogstream_engine::{KafkaConfig, source};
use hogstream_sinks::ClickHouseConfig;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

struct Probes {
    metrics: Option<PrometheusHandle>,
    kafka: Arc<BaseConsumer>,
    clickhouse: clickhouse::Client,
}

async fn render_metrics(State(p): State<Arc<Probes>>) -> Response {
    hogstream_capture::metrics::render(p.metrics.as_ref())
}

async fn kafka_status(p: &Probes) -> Result<(), String> {
    let consumer = Arc::clone(&p.kafka);
    let probe = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(None, PROBE_TIMEOUT)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    probe.await.map_err(|e| e.to_string())?
}

async fn clickhouse_status(p: &Probes) -> Result<(), String> {
    let query = p.clickhouse.query("SELECT 1").fetch_one::<u8>();
    match tokio::time::timeout(PROBE_TIMEOUT, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Asks Kafka and ClickHouse together, and records the answer in the readiness gauges (and in
/// `hogstream_clickhouse_up`, which the sink's inserts also set: while the engine is held back
/// and inserts nothing, the probe still measures it).
async fn probe(p: &Probes) -> (Result<(), String>, Result<(), String>) {
    let (kafka, clickhouse) = tokio::join!(kafka_status(p), clickhouse_status(p));
    let up = |r: &Result<(), String>| if r.is_ok() { 1.0 } else { 0.0 };
    metrics::gauge!("hogstream_kafka_up").set(up(&kafka));
    metrics::gauge!(hogstream_sinks::clickhouse::CLICKHOUSE_UP).set(up(&clickhouse));
    let ready = kafka.is_ok() && clickhouse.is_ok();
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    (kafka, clickhouse)
}

/// `hogstream_ready`: 1 while the engine's last probe reached both Kafka and ClickHouse.
const READY: &str = "hogstream_ready";
/// How often the readiness gauges are refreshed without a request.
const PROBE_INTERVAL: Duration = Duration::from_secs(10);

async fn readiness(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    let (kafka, clickhouse) = probe(&p).await;
    let ready = kafka.is_ok() && clickhouse.is_ok();
    let show =
        |r: Result<(), String>| r.map_or_else(|e| format!("unavailable: {e}"), |()| "ok".into());
    let body = json!({
        "status": if ready { "ok" } else { "unavailable" },
        "kafka": show(kafka),
        "clickhouse": show(clickhouse),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

fn probes(
    metrics: Option<PrometheusHandle>,
    kafka: &KafkaConfig,
    clickhouse: &ClickHouseConfig,
) -> Result<Arc<Probes>> {
    Ok(Arc::new(Probes {
        metrics,
        kafka: Arc::new(
            source::client_config(kafka)
                .create()
                .context("kafka client for /_readiness")?,
        ),
        clickhouse: clickhouse.client().with_database(&clickhouse.database),
    }))
}

/// Refreshes the readiness gauges (`hogstream_ready`, `hogstream_kafka_up`) every
/// [`PROBE_INTERVAL`] until the process ends, so alerts see an engine that stopped reaching
/// Kafka or ClickHouse while nobody asks `/_readiness`.
pub fn watch_readiness(kafka: &KafkaConfig, clickhouse: &ClickHouseConfig) -> Result<()> {
    spawn_watch(probes(None, kafka, clickhouse)?);
    Ok(())
}

fn spawn_watch(probes: Arc<Probes>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        let mut was_ready = true;
        loop {
            tick.tick().await;
            let (kafka, clickhouse) = probe(&probes).await;
            let ready = kafka.is_ok() && clickhouse.is_ok();
            if ready != was_ready {
                match (kafka, clickhouse) {
                    (Ok(()), Ok(())) => tracing::info!("engine ready again"),
                    (kafka, clickhouse) => tracing::warn!(
                        kafka = kafka.err().unwrap_or_else(|| "ok".into()),
                        clickhouse = clickhouse.err().unwrap_or_else(|| "ok".into()),
                        "engine not ready"
                    ),
                }
            }
            was_ready = ready;
        }
    });
}

/// Binds `address` and serves until the process ends; keeps the readiness gauges fresh.
pub async fn serve(
    address: SocketAddr,
    kafka: &KafkaConfig,
    clickhouse: &ClickHouseConfig,
) -> Result<()> {
    let metrics = hogstream_capture::metrics::install_prometheus();
    if let Some(handle) = metrics.clone() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let probes = probes(metrics, kafka, clickhouse)?;
    spawn_watch(Arc::clone(&probes));
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/_liveness", get(|| async { "ok" }))
        .route("/_readiness", get(readiness))
        .with_state(probes);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("serving metrics on {address}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "engine HTTP endpoints stopped");
        }
    });
    Ok(())
}
