//! What a checkpoint must carry from Kafka: the offsets a restore reads again from (its
//! *floors*), how old the oldest message at a floor is, and how long Kafka keeps messages.
//!
//! Why the floors are safe: an offset is stored (in a store, then committed to the consumer
//! group) only when the probe of the whole cluster says every output of the messages before it
//! is stored, and every batch's person state is committed before its capability is released.
//! So every store of the cluster holds every effect of the messages before any offset committed
//! anywhere so far; a snapshot taken after the floors were read holds at least that.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone, Utc};
use hogstream_state::{PartitionOffset, StateStore, lifecycle::FROM_START};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, ResourceSpecifier},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};

use crate::{EngineError, KafkaConfig, source};

/// Per input partition, the later of the consumer group's commit and this store's own offset:
/// both are offsets the cluster finished with. Read before the snapshot is taken. A store that
/// was just restored and whose cluster has not rewound yet holds nothing certain past its
/// restore floors (the group may still name where the lost store had got to): they cap these.
pub fn floors(
    consumer: &source::SourceConsumer,
    store: &StateStore,
    partitions: &[(String, i32)],
    logs: &source::Logs,
) -> Result<Vec<PartitionOffset>, EngineError> {
    // In this order: the floors are cleared only after every process lowered its offsets and
    // the group's, so no floor read here means the offsets read after it are lowered already.
    let pending = by_partition(store.restore_floors()?);
    let local = by_partition(store.offsets()?);
    let group = source::group_offsets(consumer, partitions)?;
    Ok(combine(partitions, &group, &local, &pending, logs))
}

type Offsets = HashMap<(String, i32), i64>;

fn by_partition(offsets: Vec<PartitionOffset>) -> Offsets {
    offsets
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.next_offset))
        .collect()
}

/// [`floors`] from what it read: the group's commits, the store's offsets, its pending restore
/// floors and each partition's log. A partition nobody committed yet is read again from its
/// first retained message as of now, which a restore checks against retention like any floor.
fn combine(
    partitions: &[(String, i32)],
    group: &Offsets,
    local: &Offsets,
    pending: &Offsets,
    logs: &source::Logs,
) -> Vec<PartitionOffset> {
    partitions
        .iter()
        .map(|key| {
            let low = logs.get(key).map_or(0, |log| log.0);
            let committed = group
                .get(key)
                .copied()
                .max(local.get(key).copied())
                .unwrap_or(low);
            let next_offset = match pending.get(key) {
                Some(&FROM_START) => low,
                Some(&floor) => committed.min(floor),
                None => committed,
            };
            PartitionOffset {
                topic: key.0.clone(),
                partition: key.1,
                next_offset,
            }
        })
        .collect()
}

/// When the oldest message at a floor was produced: one small fetch per partition that has a
/// message there (a partition read to its end has nothing at risk). `None` when no partition
/// has, or the broker did not answer within `patience`.
pub fn floor_time(
    kafka: &KafkaConfig,
    floors: &[PartitionOffset],
    logs: &source::Logs,
    patience: Duration,
) -> Result<Option<DateTime<Utc>>, EngineError> {
    let mut tpl = TopicPartitionList::new();
    let mut waiting = 0;
    for f in floors {
        let Some(&(low, high)) = logs.get(&(f.topic.clone(), f.partition)) else {
            continue;
        };
        if f.next_offset < high {
            tpl.add_partition_offset(
                &f.topic,
                f.partition,
                Offset::Offset(f.next_offset.max(low)),
            )?;
            waiting += 1;
        }
    }
    if waiting == 0 {
        return Ok(None);
    }
    let consumer: BaseConsumer = source::client_config(kafka)
        .set("group.id", format!("{}-checkpoint-probe", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // One message per partition is all that is read: keep each fetch small.
        .set("max.partition.fetch.bytes", "65536")
        .set("fetch.max.bytes", "1048576")
        .create()?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + patience;
    let mut seen: HashMap<(String, i32), i64> = HashMap::new();
    while seen.len() < waiting && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let ms = msg.timestamp().to_millis().unwrap_or_default();
                seen.entry((msg.topic().to_owned(), msg.partition()))
                    .or_insert(ms);
            }
            Some(Err(e)) => tracing::debug!(error = %e, "checkpoint: reading a floor's message"),
            None => {}
        }
    }
    Ok(seen
        .values()
        .min()
        .and_then(|ms| Utc.timestamp_millis_opt(*ms).single()))
}

/// The shortest `retention.ms` of `topics`, in seconds; `None` when every topic keeps its
/// messages forever.
pub async fn retention(kafka: &KafkaConfig, topics: &[String]) -> Result<Option<f64>, EngineError> {
    let admin: AdminClient<DefaultClientContext> = source::client_config(kafka).create()?;
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let described = admin
        .describe_configs(
            &specs,
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    let mut shortest: Option<f64> = None;
    for resource in described.into_iter().flatten() {
        let ms = resource
            .get("retention.ms")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<i64>().ok());
        if let Some(ms) = ms.filter(|ms| *ms >= 0) {
            let secs = ms as f64 / 1000.0;
            shortest = Some(shortest.map_or(secs, |s| s.min(secs)));
        }
    }
    Ok(shortest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_the_later_commit_capped_by_a_pending_restore() {
        let key = |p: i32| ("t".to_owned(), p);
        let partitions: Vec<_> = (0..5).map(key).collect();
        let group = HashMap::from([(key(0), 50), (key(1), 10), (key(2), 70), (key(3), 80)]);
        let local = HashMap::from([(key(0), 40), (key(1), 30)]);
        // A store just restored, its cluster not rewound yet: the group still names where the
        // lost store had got to.
        let pending = HashMap::from([(key(2), 20), (key(3), FROM_START)]);
        let logs: source::Logs = (0..5).map(|p| (key(p), (7, 100))).collect();
        let got: Vec<(i32, i64)> = combine(&partitions, &group, &local, &pending, &logs)
            .into_iter()
            .map(|f| (f.partition, f.next_offset))
            .collect();
        assert_eq!(
            got,
            vec![(0, 50), (1, 30), (2, 20), (3, 7), (4, 7)],
            "the later of group and store; capped by a pending floor; a floor at the start, or no offset yet, is the first retained message"
        );
    }
}
