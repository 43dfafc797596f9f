//! Names of the engine's metrics (recorded through the `metrics` facade and served in
//! Prometheus format by the binary). Alerts and the dashboard in `monitoring/` use these names.

/// Checkpoints attempted, by `outcome` (`ok`, `failed`).
pub const CHECKPOINTS: &str = "hogstream_checkpoints_total";
/// Seconds a successful checkpoint took, snapshot and upload.
pub const CHECKPOINT_SECONDS: &str = "hogstream_checkpoint_duration_seconds";
/// Bytes of the newest checkpoint, by `kind`: the whole `store`, or what it `uploaded`.
pub const CHECKPOINT_BYTES: &str = "hogstream_checkpoint_bytes";
/// Seconds since the newest checkpoint of this process was made.
pub const CHECKPOINT_AGE: &str = "hogstream_checkpoint_age_seconds";
/// `[checkpoints] interval`, in seconds, for alerts that compare the age with it.
pub const CHECKPOINT_INTERVAL: &str = "hogstream_checkpoint_interval_seconds";
/// Seconds until Kafka's retention may delete the oldest message a restore of the newest
/// checkpoint would read again (negative: a restore would miss events).
pub const CHECKPOINT_RETENTION_MARGIN: &str = "hogstream_checkpoint_retention_margin_seconds";
/// The input topics' shortest `retention.ms`, in seconds.
pub const KAFKA_RETENTION: &str = "hogstream_kafka_retention_seconds";
/// Messages from a partition's durably stored offset to its end, by `topic` and `partition`,
/// measured every 10 s (`lag`).
pub const SOURCE_LAG: &str = "hogstream_source_lag";
/// 1 when a destination's last delivery attempt succeeded, 0 when it failed (also while it is
/// being retried), by `destination`.
pub const DESTINATION_UP: &str = "hogstream_destination_up";
/// A destination's failed delivery attempts, retries included, by `destination`.
pub const DESTINATION_FAILED_ATTEMPTS: &str = "hogstream_destination_failed_attempts_total";
