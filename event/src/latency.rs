//! The end-to-end latency histogram: capture's receipt of an event (the Kafka timestamp its
//! producer gives the message) to ClickHouse's acknowledgement of the event's row. The engine
//! records it; whichever part of the process installs the Prometheus recorder gives it buckets.

/// Metric name, in seconds.
pub const EVENT_LATENCY: &str = "hogstream_event_latency_seconds";

/// Bucket bounds: from a flush interval's scale to an outage's.
pub const EVENT_LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
