//! Metric names and the Prometheus exporter.
//!
//! Metrics go through the `metrics` facade, so they cost nothing when no recorder is installed
//! (unit tests) and the binary may install its own recorder instead.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route` and `status`.
pub const REQUESTS: &str = "capture_requests_total";
/// Request latency in seconds, by `route`.
pub const REQUEST_DURATION: &str = "capture_request_duration_seconds";
/// Events per request after decoding.
pub const BATCH_SIZE: &str = "capture_batch_size";
/// Events acknowledged by Kafka, by `topic` (main, overflow, historical, dlq).
pub const EVENTS: &str = "capture_events_total";
/// Events deliberately not stored, by `reason`.
pub const DROPPED: &str = "capture_events_dropped_total";
/// Events that left the main topic, by `destination` and `reason`.
pub const REROUTED: &str = "capture_events_rerouted_total";
/// Events whose request failed, by `cause` (a [`crate::CaptureError::code`]).
pub const REJECTED: &str = "capture_events_rejected_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle. `None` when another
/// global recorder was installed first; `/metrics` then answers 503.
pub fn install_prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            use hogstream_event::latency::{EVENT_LATENCY, EVENT_LATENCY_BUCKETS};
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(EVENT_LATENCY.into()),
                        EVENT_LATENCY_BUCKETS,
                    )
                });
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(%err, "prometheus recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// The process's own CPU, memory, threads and file descriptors under Prometheus' standard names
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …), read at each scrape.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    })
}

/// `GET /metrics`: the Prometheus text of `handle`, or 503 when no recorder is installed.
pub fn render(handle: Option<&PrometheusHandle>) -> axum::response::Response {
    use axum::{
        http::{StatusCode, header},
        response::IntoResponse,
    };
    match handle {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
            process_collector().collect();
            handle.render()
        })
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

pub(crate) fn request(route: &'static str, status: u16, elapsed: Duration) {
    metrics::counter!(REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    metrics::histogram!(REQUEST_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

pub(crate) fn batch_size(events: usize) {
    metrics::histogram!(BATCH_SIZE).record(events as f64);
}

pub(crate) fn stored(destination: &'static str, count: u64) {
    metrics::counter!(EVENTS, "topic" => destination).increment(count);
}

pub(crate) fn dropped(reason: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!(DROPPED, "reason" => reason).increment(count);
    }
}

pub(crate) fn rerouted(destination: &'static str, reason: &'static str) {
    metrics::counter!(REROUTED, "destination" => destination, "reason" => reason).increment(1);
}

pub(crate) fn rejected(cause: &'static str, count: u64) {
    metrics::counter!(REJECTED, "cause" => cause).increment(count);
}
