//! Ingestion lag, measured: every [`INTERVAL`], each partition this process reads is asked for
//! its end (its high watermark), and the lag is how far the durably stored offset trails it:
//! what a crash would read again, and how late the rows are. Measured from the broker rather
//! than from what the consumer last fetched, it keeps moving while the engine is held back (a
//! ClickHouse outage), when the consumer fetches nothing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use hogstream_state::StateStore;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{EngineError, KafkaConfig, source, telemetry};

/// How often the lag is measured.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How long one partition's end may take to answer; a broker that does not answer ends the
/// round (the gauges keep their last value, and the broker's own alert speaks).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Measures the lag of `partitions` (this process's) until `stop` is set.
pub fn start(
    kafka: &KafkaConfig,
    store: StateStore,
    partitions: Vec<(String, i32)>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, EngineError> {
    let consumer: BaseConsumer = source::client_config(kafka).create()?;
    Ok(std::thread::Builder::new()
        .name("hs-lag".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    measure(&consumer, &store, &partitions);
                    next = Instant::now() + INTERVAL;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })?)
}

fn measure(consumer: &BaseConsumer, store: &StateStore, partitions: &[(String, i32)]) {
    for (topic, partition) in partitions {
        let (low, high) = match consumer.fetch_watermarks(topic, *partition, ASK_TIMEOUT) {
            Ok(log) => log,
            Err(e) => {
                tracing::debug!(topic, partition, error = %e, "lag: the partition's end did not answer");
                return;
            }
        };
        let stored = match store.offset(topic, *partition) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "lag: cannot read the stored offset");
                continue;
            }
        };
        metrics::gauge!(telemetry::SOURCE_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
            .set(lag(stored, low, high) as f64);
    }
}

/// Messages from the stored offset (or the first retained one, when none is stored) to the end.
fn lag(stored: Option<i64>, low: i64, high: i64) -> i64 {
    (high - stored.unwrap_or(low).max(low)).max(0)
}

#[cfg(test)]
mod tests {
    use super::lag;

    #[test]
    fn lag_is_what_the_stored_offset_trails_the_end_by() {
        assert_eq!(lag(Some(40), 0, 100), 60);
        assert_eq!(
            lag(None, 10, 100),
            90,
            "nothing stored: all that is retained"
        );
        assert_eq!(lag(Some(5), 10, 100), 90, "retention took what was stored");
        assert_eq!(lag(Some(120), 0, 100), 0, "a recreated topic");
    }
}
