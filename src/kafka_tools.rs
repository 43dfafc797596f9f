//! Kafka helpers shared by the operator commands (`replay`, `dlq`): topic and partition checks,
//! watermarks and timestamp lookups, reading an exact offset range, and re-producing messages
//! with every delivery acknowledged.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::FutureExt;
use hogstream_engine::{KafkaConfig, source::client_config};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::BorrowedMessage,
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};

/// Bound on metadata, watermark and timestamp requests.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// A range read gives up when no message arrives for this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Produced messages awaiting their acknowledgement at once.
const MAX_INFLIGHT: usize = 5_000;

/// A consumer that only reads assigned partitions: no group membership, no commits.
pub fn consumer(kafka: &KafkaConfig) -> Result<StreamConsumer> {
    client_config(kafka)
        // librdkafka needs a group for `assign`; it is never joined and nothing is committed.
        .set("group.id", format!("{}-tools", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        // An offset that vanished under us (retention) is an error, never a silent jump.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "50")
        .create()
        .with_context(|| format!("creating a Kafka consumer for {}", kafka.brokers))
}

/// A producer as durable as capture's: `acks=all`, idempotent, so librdkafka's retries neither
/// duplicate nor reorder, and every send is awaited by [`Deliveries`].
pub fn producer(kafka: &KafkaConfig) -> Result<FutureProducer> {
    client_config(kafka)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .with_context(|| format!("creating a Kafka producer for {}", kafka.brokers))
}

/// The sorted partition ids of `topic`; fails when the topic does not exist. The consumer never
/// asks the broker to create a topic (`allow.auto.create.topics=false`).
pub fn partitions(consumer: &StreamConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("fetching the metadata of topic `{topic}` from Kafka"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| anyhow!("unknown topic `{topic}`: the broker does not have it"))?;
    let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// `requested` checked against the topic's partitions, sorted and deduplicated; every
/// partition when `requested` is empty.
pub fn select_partitions(topic: &str, existing: &[i32], requested: &[i32]) -> Result<Vec<i32>> {
    if requested.is_empty() {
        return Ok(existing.to_vec());
    }
    let mut selected = requested.to_vec();
    selected.sort_unstable();
    selected.dedup();
    for p in &selected {
        if !existing.contains(p) {
            bail!(
                "partition {p} is out of range: topic `{topic}` has partitions {}",
                describe_partitions(existing)
            );
        }
    }
    Ok(selected)
}

fn describe_partitions(existing: &[i32]) -> String {
    match (existing.first(), existing.last()) {
        (Some(first), Some(last)) if existing.len() == (last - first + 1) as usize => {
            format!("{first}..={last}")
        }
        _ => format!("{existing:?}"),
    }
}

/// A log `[low, high)` in words, for error messages.
pub fn describe_log(low: i64, high: i64) -> String {
    match high - low {
        0 => format!("no messages (the next one gets offset {high})"),
        1 => format!("only offset {low}"),
        _ => format!("offsets {low} to {}", high - 1),
    }
}

/// `(low, high)`: the first offset still in the log and the offset the next message gets.
pub fn watermarks(consumer: &StreamConsumer, topic: &str, partition: i32) -> Result<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, TIMEOUT)
        .with_context(|| format!("fetching the offsets of `{topic}` partition {partition}"))
}

/// For each partition, the offset of the first message whose timestamp is at or after
/// `timestamp_ms`, or `None` when there is none yet.
pub fn offsets_for_time(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    timestamp_ms: i64,
) -> Result<HashMap<i32, Option<i64>>> {
    let mut query = TopicPartitionList::new();
    for p in partitions {
        query.add_partition_offset(topic, *p, Offset::Offset(timestamp_ms))?;
    }
    let answer = consumer
        .offsets_for_times(query, TIMEOUT)
        .with_context(|| format!("looking up offsets by timestamp in `{topic}`"))?;
    let mut out = HashMap::new();
    for e in answer.elements() {
        if let Err(err) = e.error() {
            bail!(
                "looking up a timestamp in `{topic}` partition {}: {err}",
                e.partition()
            );
        }
        let offset = match e.offset() {
            Offset::Offset(o) => Some(o),
            Offset::End => None,
            other => bail!(
                "unexpected answer {other:?} for a timestamp in `{topic}` partition {}",
                e.partition()
            ),
        };
        out.insert(e.partition(), offset);
    }
    Ok(out)
}

/// Reads `[from, to)` of several partitions of one topic, each partition in offset order.
pub struct RangeReader<'a> {
    consumer: &'a StreamConsumer,
    topic: String,
    /// Partitions not finished yet, with their exclusive end.
    remaining: HashMap<i32, i64>,
}

impl<'a> RangeReader<'a> {
    /// `ranges` holds `(partition, from, to)`; empty ranges are skipped.
    pub fn new(
        consumer: &'a StreamConsumer,
        topic: &str,
        ranges: &[(i32, i64, i64)],
    ) -> Result<Self> {
        let mut tpl = TopicPartitionList::new();
        let mut remaining = HashMap::new();
        for &(p, from, to) in ranges.iter().filter(|(_, from, to)| from < to) {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            remaining.insert(p, to);
        }
        consumer
            .assign(&tpl)
            .with_context(|| format!("assigning partitions of `{topic}`"))?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            remaining,
        })
    }

    fn finish(&mut self, partition: i32) -> Result<()> {
        if self.remaining.remove(&partition).is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, partition);
            // Stop fetching what nobody reads (a replay into its own topic appends behind us).
            self.consumer.pause(&tpl)?;
        }
        Ok(())
    }

    /// The next message inside the ranges, or `None` once every range is read.
    pub async fn next(&mut self) -> Result<Option<BorrowedMessage<'a>>> {
        while !self.remaining.is_empty() {
            let received = tokio::time::timeout(IDLE_TIMEOUT, self.consumer.recv())
                .await
                .map_err(|_| {
                    let mut waiting: Vec<_> = self.remaining.keys().collect();
                    waiting.sort();
                    anyhow!(
                        "no message from `{}` partitions {waiting:?} for {}s; is the broker up?",
                        self.topic,
                        IDLE_TIMEOUT.as_secs()
                    )
                })?;
            let message = match received {
                Ok(m) => m,
                // The end of the log: the range ends at or before the high watermark read at
                // the start, so everything in it was delivered before this.
                Err(KafkaError::PartitionEOF(p)) => {
                    self.finish(p)?;
                    continue;
                }
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => bail!(
                    "an offset of `{}` left the log while reading (retention?); pick a later range",
                    self.topic
                ),
                // librdkafka reconnects and fetches again by itself; the idle timeout bounds it.
                Err(KafkaError::MessageConsumption(code)) if transient(code) => {
                    tracing::warn!(topic = self.topic, error = %code, "kafka: retrying");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("reading `{}`", self.topic)),
            };
            let p = message.partition();
            let Some(&to) = self.remaining.get(&p) else {
                continue;
            };
            if message.offset() >= to {
                self.finish(p)?;
                continue;
            }
            if message.offset() + 1 >= to {
                self.finish(p)?;
            }
            return Ok(Some(message));
        }
        Ok(None)
    }
}

/// Consumer errors librdkafka recovers from on its own.
fn transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | OperationTimedOut
            | RequestTimedOut
            | NetworkException
            | NotLeaderForPartition
            | LeaderNotAvailable
            | Resolve
            | BrokerNotAvailable
            | NotCoordinator
            | CoordinatorNotAvailable
    )
}

/// Where a produced message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// Produced messages in flight; each is awaited, and any failure ends the command.
pub struct Deliveries<'p> {
    producer: &'p FutureProducer,
    inflight: VecDeque<(String, DeliveryFuture)>,
    delivered: u64,
}

impl<'p> Deliveries<'p> {
    pub fn new(producer: &'p FutureProducer) -> Self {
        Self {
            producer,
            inflight: VecDeque::new(),
            delivered: 0,
        }
    }

    /// Messages Kafka acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Queues `record`; `origin` names it in errors. Waits for the oldest acknowledgement when
    /// too many are outstanding.
    pub async fn send(
        &mut self,
        record: FutureRecord<'_, [u8], [u8]>,
        origin: String,
    ) -> Result<()> {
        let mut record = record;
        loop {
            match self.producer.send_result(record) {
                Ok(future) => {
                    self.inflight.push_back((origin, future));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    if self.inflight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        self.wait_oldest().await?;
                    }
                }
                Err((e, _)) => return Err(e).with_context(|| format!("producing {origin}")),
            }
        }
        while self.inflight.len() >= MAX_INFLIGHT {
            self.wait_oldest().await?;
        }
        // Count what is already acknowledged, without waiting.
        while let Some((_, future)) = self.inflight.front_mut() {
            let Some(result) = future.now_or_never() else {
                break;
            };
            let (origin, _) = self.inflight.pop_front().expect("a front entry");
            self.settle(&origin, result)?;
        }
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<Option<Landed>> {
        let Some((origin, future)) = self.inflight.pop_front() else {
            return Ok(None);
        };
        let result = future.await;
        self.settle(&origin, result).map(Some)
    }

    fn settle(
        &mut self,
        origin: &str,
        result: <DeliveryFuture as std::future::Future>::Output,
    ) -> Result<Landed> {
        match result {
            Ok(Ok(d)) => {
                self.delivered += 1;
                Ok(Landed {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Err((e, _))) => Err(anyhow!("Kafka did not acknowledge {origin}: {e}")),
            Err(_) => Err(anyhow!(
                "the producer stopped before {origin} was acknowledged"
            )),
        }
    }

    /// Waits for every outstanding acknowledgement; returns where the last one landed.
    pub async fn finish(&mut self) -> Result<Option<Landed>> {
        let mut last = None;
        while !self.inflight.is_empty() {
            last = self.wait_oldest().await?.or(last);
        }
        Ok(last)
    }
}

/// `PARTITION:OFFSET`, as `dlq show` and `dlq redrive` take it.
pub fn parse_position(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not PARTITION:OFFSET (e.g. 0:17)"))?;
    let p = p
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| format!("`{p}` in `{s}` is not a partition number"))?;
    let o = o
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|o| *o >= 0)
        .ok_or_else(|| format!("`{o}` in `{s}` is not an offset"))?;
    Ok((p, o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_bad_ones_say_why() {
        assert_eq!(parse_position("3:17"), Ok((3, 17)));
        assert!(
            parse_position("3")
                .unwrap_err()
                .contains("PARTITION:OFFSET")
        );
        assert!(parse_position("x:1").unwrap_err().contains("partition"));
        assert!(parse_position("1:-2").unwrap_err().contains("offset"));
    }

    #[test]
    fn partitions_are_checked_against_the_topic() {
        assert_eq!(select_partitions("t", &[0, 1, 2], &[]).unwrap(), [0, 1, 2]);
        assert_eq!(
            select_partitions("t", &[0, 1, 2], &[2, 0, 2]).unwrap(),
            [0, 2]
        );
        let err = select_partitions("t", &[0, 1, 2], &[5])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("partition 5 is out of range") && err.contains("0..=2"),
            "{err}"
        );
    }
}
