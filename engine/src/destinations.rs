//! Runs one destination: its own thread and Kafka consumer on the processed-events topic, so a
//! slow or failing destination only falls behind and never holds up ingestion.
//!
//! Its place is kept in the process's RocksDB (per partition of the topic), together with the
//! uuids it delivered in the last [`DEDUP_DAYS`] days, in one synced write after each batch: after
//! a crash it resumes where it stopped, and events the engine wrote to the topic again (after
//! its own crash, or a replay through the pipeline) are not delivered twice. A batch that was
//! delivered but not yet recorded when the process died is delivered again: at least once.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hogstream_event::{ProcessedEvent, processed::REDELIVER_HEADER};
use hogstream_plugin::{Delivery, DestinationPlugin, Start, deliver_observed};
use hogstream_state::{PartitionOffset, StateStore};
use rdkafka::{
    ClientContext, Message, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    message::Headers,
};

use crate::{config::KafkaConfig, error::EngineError, source, telemetry};

/// How long delivered uuids are remembered: a re-processed event older than this is delivered
/// again.
pub const DEDUP_DAYS: u32 = 3;
/// Progress is stored at least this often while events are read but none is for this
/// destination (other teams' events, duplicates).
const IDLE_COMMIT: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

fn today() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp() / 86_400).unwrap_or(u32::MAX)
}

/// One event read and what to do with it.
struct Pending {
    event: ProcessedEvent,
    /// Set by `hogstream replay --destinations-only`: deliver even if delivered before.
    redeliver: bool,
    partition: i32,
    offset: i64,
}

/// One message of the topic: its place, and its event unless it is not one.
struct Read {
    partition: i32,
    offset: i64,
    event: Option<(ProcessedEvent, bool)>,
}

fn decode(m: &rdkafka::message::BorrowedMessage<'_>, id: &str) -> Read {
    let event = match serde_json::from_slice::<ProcessedEvent>(m.payload().unwrap_or_default()) {
        Ok(e) => {
            // The header names the destination to re-deliver to, or is empty for all of them.
            let redeliver = m.headers().is_some_and(|h| {
                h.iter().any(|h| {
                    h.key == REDELIVER_HEADER
                        && h.value.is_none_or(|v| v.is_empty() || v == id.as_bytes())
                })
            });
            Some((e, redeliver))
        }
        Err(e) => {
            tracing::error!(destination = id, partition = m.partition(), offset = m.offset(), error = %e, "not a processed event; skipped");
            metrics::counter!("hogstream_destination_undecodable_total", "destination" => id.to_owned()).increment(1);
            None
        }
    };
    Read {
        partition: m.partition(),
        offset: m.offset(),
        event,
    }
}

/// Publishes how far a destination trails the processed-events topic, summed over the
/// partitions this process reads: `hogstream_destination_lag{destination}`. Each partition counts
/// from the destination's committed place, or before its first commit from what it has read.
pub struct DestinationLag {
    destination: String,
}

impl ClientContext for DestinationLag {
    fn stats(&self, stats: Statistics) {
        let lag: i64 = stats
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.hi_offset >= 0)
            .filter_map(|p| {
                let place = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.app_offset
                };
                (place >= 0).then(|| (p.hi_offset - place).max(0))
            })
            .sum();
        metrics::gauge!("hogstream_destination_lag", "destination" => self.destination.clone())
            .set(lag as f64);
    }
}

impl ConsumerContext for DestinationLag {}

pub struct Runner {
    plugin: DestinationPlugin,
    store: StateStore,
    topic: String,
    consumer: BaseConsumer<DestinationLag>,
    stop: Arc<AtomicBool>,
    /// Next offset per partition, read but not yet stored.
    positions: HashMap<i32, i64>,
    buffer: Vec<Pending>,
    oldest: Option<Instant>,
    last_commit: Instant,
    forgotten_before: u32,
}

impl Runner {
    /// Assigns this process's share of the topic's partitions at the destination's stored place.
    pub fn new(
        plugin: DestinationPlugin,
        store: StateStore,
        kafka: &KafkaConfig,
        (process, processes): (usize, usize),
        stop: Arc<AtomicBool>,
    ) -> Result<Self, EngineError> {
        let topic = kafka.processed_topic.clone();
        let consumer: BaseConsumer<DestinationLag> = source::client_config(kafka)
            .set("group.id", format!("hogstream-destination-{}", plugin.id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .create_with_context(DestinationLag {
                destination: plugin.id.clone(),
            })?;
        // Counted from the start, so "gave up on nothing" is a series at 0, not no series.
        metrics::counter!("hogstream_destination_failed_events_total", "destination" => plugin.id.clone())
            .increment(0);
        let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .filter(|p| (*p as usize) % processes.max(1) == process)
            .collect();
        let state = store.destination(&plugin.id);
        // The group's commit is never ahead of a process's stored place: it is the fallback when
        // a partition moved here from another process (a cluster resize).
        let listed: Vec<(String, i32)> = partitions.iter().map(|p| (topic.clone(), *p)).collect();
        let committed = source::group_offsets(&consumer, &listed)?;
        let mut tpl = TopicPartitionList::new();
        let mut first_place = Vec::new();
        for p in &partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, *p, TIMEOUT)?;
            let group = committed.get(&(topic.clone(), *p)).copied();
            let offset = match state.offset(&topic, *p)?.max(group) {
                Some(o) => source::checked_resume(&topic, *p, o, (low, high)),
                None => {
                    let o = match plugin.start {
                        Start::Latest => high,
                        Start::Earliest => low,
                    };
                    first_place.push(PartitionOffset {
                        topic: topic.clone(),
                        partition: *p,
                        next_offset: o,
                    });
                    o
                }
            };
            tpl.add_partition_offset(&topic, *p, Offset::Offset(offset))?;
        }
        // A new destination's starting place is stored at once: a crash before its first batch
        // must not move it to a later "latest".
        state.commit(&first_place, &[], today())?;
        consumer.assign(&tpl)?;
        tracing::info!(destination = plugin.id, ?partitions, "destination assigned");
        Ok(Self {
            plugin,
            store,
            topic,
            consumer,
            stop,
            positions: HashMap::new(),
            buffer: Vec::new(),
            oldest: None,
            last_commit: Instant::now(),
            forgotten_before: 0,
        })
    }

    /// Reads, batches and delivers until `stop`, then flushes what it holds (one attempt) and
    /// tears the destination down.
    pub fn run(mut self) -> Result<(), EngineError> {
        let result = self.run_until_stopped();
        self.plugin.destination.teardown();
        result
    }

    fn run_until_stopped(&mut self) -> Result<(), EngineError> {
        let batching = self.plugin.batching;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(msg) = self.consumer.poll(Duration::from_millis(100)) {
                match msg {
                    Ok(m) => {
                        let read = decode(&m, &self.plugin.id);
                        self.accept(read);
                    }
                    Err(e) => {
                        tracing::warn!(destination = self.plugin.id, error = %e, "kafka consumer error")
                    }
                }
            }
            let full = self.buffer.len() >= batching.max_events.max(1);
            let old = self
                .oldest
                .is_some_and(|t| t.elapsed() >= batching.max_wait);
            let idle = self.buffer.is_empty()
                && !self.positions.is_empty()
                && self.last_commit.elapsed() >= IDLE_COMMIT;
            if (full || old || idle) && !self.flush()? {
                return Ok(());
            }
        }
        if !self.buffer.is_empty() || !self.positions.is_empty() {
            self.flush()?;
        }
        Ok(())
    }

    fn accept(&mut self, read: Read) {
        self.positions.insert(read.partition, read.offset + 1);
        let Some((event, redeliver)) = read.event else {
            return;
        };
        if !self.plugin.teams.contains(&event.team_id) {
            return;
        }
        self.oldest.get_or_insert_with(Instant::now);
        self.buffer.push(Pending {
            event,
            redeliver,
            partition: read.partition,
            offset: read.offset,
        });
    }

    /// Delivers the buffer (minus what was delivered before) and stores the place reached.
    /// `false` when stopped while retrying: nothing is stored, the batch is read again later.
    fn flush(&mut self) -> Result<bool, EngineError> {
        let id = self.plugin.id.clone();
        let state = self.store.destination(&id);
        let day = today();
        let days: Vec<u32> = (0..DEDUP_DAYS).map(|d| day.saturating_sub(d)).collect();
        let pending = std::mem::take(&mut self.buffer);
        self.oldest = None;
        let uuids: Vec<_> = pending.iter().map(|p| p.event.uuid).collect();
        let delivered_before = state.delivered(&uuids, &days)?;
        let mut seen = HashSet::new();
        let mut events = Vec::with_capacity(pending.len());
        let mut range: HashMap<i32, (i64, i64)> = HashMap::new();
        for (p, before) in pending.into_iter().zip(delivered_before) {
            if !seen.insert(p.event.uuid) || (before && !p.redeliver) {
                metrics::counter!("hogstream_destination_duplicates_total", "destination" => id.clone()).increment(1);
                continue;
            }
            let r = range.entry(p.partition).or_insert((p.offset, p.offset));
            r.1 = p.offset;
            events.push(p.event);
        }
        let mut recorded = Vec::new();
        if !events.is_empty() {
            let started = Instant::now();
            let (up, failed) = (
                metrics::gauge!(telemetry::DESTINATION_UP, "destination" => id.clone()),
                metrics::counter!(telemetry::DESTINATION_FAILED_ATTEMPTS, "destination" => id.clone()),
            );
            match deliver_observed(
                self.plugin.destination.as_mut(),
                &events,
                &self.plugin.retry,
                &self.stop,
                |attempt| match attempt {
                    Ok(()) => up.set(1.0),
                    Err(_) => {
                        up.set(0.0);
                        failed.increment(1);
                    }
                },
            ) {
                Delivery::Delivered { attempts } => {
                    metrics::counter!("hogstream_destination_events_total", "destination" => id.clone()).increment(events.len() as u64);
                    metrics::histogram!("hogstream_destination_batch_seconds", "destination" => id.clone()).record(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        destination = id,
                        events = events.len(),
                        attempts,
                        "delivered"
                    );
                    recorded = events.iter().map(|e| e.uuid).collect();
                }
                Delivery::GaveUp { attempts, error } => {
                    metrics::counter!("hogstream_destination_failed_events_total", "destination" => id.clone()).increment(events.len() as u64);
                    tracing::error!(destination = id, events = events.len(), attempts, error, topic = self.topic, offsets = ?range,
                        "batch given up; re-deliver it with `hogstream replay --destinations-only --destination {id}` over these offsets");
                }
                Delivery::Stopped => return Ok(false),
            }
        }
        let offsets: Vec<PartitionOffset> = self
            .positions
            .drain()
            .map(|(partition, next_offset)| PartitionOffset {
                topic: self.topic.clone(),
                partition,
                next_offset,
            })
            .collect();
        state.commit(&offsets, &recorded, day)?;
        // For lag monitoring, and the fallback when a partition moves to another process.
        if let Err(e) = source::commit_to_group(&self.consumer, &offsets) {
            tracing::debug!(destination = id, error = %e, "cannot build the group commit");
        }
        self.last_commit = Instant::now();
        let keep_from = day.saturating_sub(DEDUP_DAYS - 1);
        if self.forgotten_before < keep_from {
            state.forget_before(keep_from)?;
            self.forgotten_before = keep_from;
        }
        Ok(true)
    }
}
