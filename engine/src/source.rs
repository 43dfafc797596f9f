//! The Kafka side of the engine: topic creation, partition assignment, resume offsets and
//! conversion of messages into [`SourceRecord`]s.
//!
//! Each worker `assign()`s a fixed share of the partitions (no consumer-group rebalancing) and
//! resumes from the offsets stored in RocksDB. Kafka commits under the group id are written after
//! the local store, for monitoring and as a fallback when a partition moves to a process that has
//! no local offset for it (after a cluster resize): they are never ahead of what is durable.

use std::{collections::HashMap, time::Duration};

use hogstream_event::headers;
use hogstream_state::{PartitionOffset, StateStore};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, DefaultConsumerContext},
    error::{KafkaError, RDKafkaErrorCode},
    message::{BorrowedMessage, Headers},
};
use xxhash_rust::xxh3::xxh3_64;

use crate::{config::KafkaConfig, error::EngineError, record::SourceRecord, teams::team_route};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine's consumer of its input topics. (Its lag is measured by `lag`, not by
/// librdkafka's statistics: those stop moving while the engine is held back and does not
/// fetch, which is exactly when the lag matters.)
pub type SourceConsumer = BaseConsumer<DefaultConsumerContext>;

/// A librdkafka configuration with the brokers, `[kafka.security]` and the user's `extra`
/// settings: every hogstream client of Kafka but capture's producer is made from it.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (k, v) in config.client_settings.iter() {
        c.set(k, v);
    }
    for (k, v) in &config.extra {
        c.set(k, v);
    }
    c
}

pub fn consumer(config: &KafkaConfig) -> Result<SourceConsumer, EngineError> {
    Ok(client_config(config)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // The broker answers a fetch as soon as any message arrives (fetch.min.bytes is 1), so
        // the wait only bounds an idle long poll: a short one costs the broker CPU for nothing
        // (20 ms kept an idle broker at 3x its own idle CPU; the latency figures did not move).
        .set("fetch.wait.max.ms", "500")
        .create()?)
}

/// Creates the input, dead-letter and processed-events topics that do not exist yet.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<Vec<String>, EngineError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let metadata = admin.inner().fetch_metadata(None, METADATA_TIMEOUT)?;
    let existing: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|t| !t.partitions().is_empty())
        .map(|t| t.name())
        .collect();
    let wanted: Vec<&String> = config
        .input_topics
        .iter()
        .chain([&config.dlq_topic, &config.processed_topic])
        .filter(|t| !existing.contains(&t.as_str()))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let new: Vec<NewTopic> = wanted
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                config.default_partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let mut created = Vec::new();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        match result {
            Ok(name) => created.push(name),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = name, "topic exists")
            }
            Err((name, code)) => return Err(EngineError::CreateTopic { topic: name, code }),
        }
    }
    Ok(created)
}

/// Every partition of `topics`, sorted.
pub fn all_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
) -> Result<Vec<(String, i32)>, EngineError> {
    let mut all = Vec::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        for t in md.topics() {
            for p in t.partitions() {
                all.push((t.name().to_owned(), p.id()));
            }
        }
    }
    all.sort();
    Ok(all)
}

/// Per partition, its log `[low, high)`: its first retained offset and its end.
pub type Logs = HashMap<(String, i32), (i64, i64)>;

/// Each partition's log `[low, high)`: its first retained offset and its end.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &[(String, i32)],
) -> Result<Logs, EngineError> {
    let mut out = HashMap::new();
    for (t, p) in partitions {
        let log = while_coordinator_starts("reading a partition's offsets", || {
            consumer.fetch_watermarks(t, *p, METADATA_TIMEOUT)
        })?;
        out.insert((t.clone(), *p), log);
    }
    Ok(out)
}

/// The partitions of `topics` this worker owns: every `peers`-th of the sorted list.
pub fn assigned_partitions(
    consumer: &SourceConsumer,
    topics: &[String],
    worker: usize,
    peers: usize,
) -> Result<Vec<(String, i32)>, EngineError> {
    Ok(all_partitions(consumer, topics)?
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % peers == worker)
        .map(|(_, tp)| tp)
        .collect())
}

/// Commits `offsets` under the consumer's group, asynchronously. The group commit is for
/// monitoring and the fallback after a partition changes process; callers store offsets locally
/// first, so it is never ahead of them, and a failed commit is only logged.
pub fn commit_to_group<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[PartitionOffset],
) -> Result<(), EngineError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next_offset))?;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "kafka group commit failed (monitoring and resize fallback only)");
    }
    Ok(())
}

/// Commits `offsets` under the consumer's group and waits for the broker's answer: for a rewind,
/// which must be durable before anything is read (an asynchronous commit that failed would leave
/// the group ahead of what a restored store holds).
pub fn commit_to_group_now<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[PartitionOffset],
) -> Result<(), EngineError> {
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next_offset))?;
    }
    while_coordinator_starts("committing rewound offsets", || {
        consumer.commit(&tpl, CommitMode::Sync)
    })?;
    Ok(())
}

/// The offsets the consumer's group committed for `partitions` (those it committed at all).
pub fn group_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &[(String, i32)],
) -> Result<HashMap<(String, i32), i64>, EngineError> {
    if partitions.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query = TopicPartitionList::new();
    for (t, p) in partitions {
        query.add_partition(t, *p);
    }
    let committed = while_coordinator_starts("reading the group's committed offsets", || {
        consumer.committed_offsets(query.clone(), METADATA_TIMEOUT)
    })?;
    Ok(partitions
        .iter()
        .filter_map(|(t, p)| match committed.find_partition(t, *p)?.offset() {
            Offset::Offset(o) => Some(((t.clone(), *p), o)),
            _ => None,
        })
        .collect())
}

/// How long start-up waits for a broker's group coordinator (or a partition leader) to become
/// available before it gives up.
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `request` again while the broker answers that it is still starting a coordinator or
/// electing a leader: a fresh broker creates `__consumer_offsets` on the first group request,
/// and a restarted one loads it and elects leaders before it can answer. Other errors, and these
/// after [`COORDINATOR_PATIENCE`], are returned.
pub fn while_coordinator_starts<T>(
    what: &str,
    mut request: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match request() {
            Err(e) if is_starting(&e) && started.elapsed() < COORDINATOR_PATIENCE => {
                tracing::info!(error = %e, retry_in = ?pause, "{what}: the broker is still starting");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
}

fn is_starting(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

/// Where a worker's partitions resume, and which of them a restore rewound.
#[derive(Debug, Default)]
pub struct Assigned {
    pub resume: HashMap<(String, i32), i64>,
    /// Partitions resumed before their stored offsets because a restored store of the cluster
    /// needs them read again: stored and committed before anything is read
    /// (`recovery::rewind`).
    pub rewound: Vec<PartitionOffset>,
    /// Each assigned partition's log when it was assigned.
    pub logs: Logs,
}

/// Assigns `partitions` at their resume offsets: the later of the local store and the group's
/// Kafka commit, else the beginning of the partition. Both are safe lower bounds: the group is
/// only ever committed after the owning process stored the same offset durably, so the later one
/// is the newest offset known to be fully processed, even after the partition moved between
/// processes and back. A restore floor of the cluster (`floors`, offsets may be
/// [`hogstream_state::lifecycle::FROM_START`]) lowers the resume offset to it: the restored store
/// holds nothing certain after it.
pub fn assign(
    consumer: &SourceConsumer,
    store: &StateStore,
    partitions: &[(String, i32)],
    floors: &HashMap<(String, i32), i64>,
) -> Result<Assigned, EngineError> {
    let committed = group_offsets(consumer, partitions)?;
    let logs = watermarks(consumer, partitions)?;
    let mut tpl = TopicPartitionList::new();
    let mut assigned = Assigned::default();
    for (t, p) in partitions {
        let key = (t.clone(), *p);
        let log = logs[&key];
        let group = committed.get(&key).copied();
        let stored = store
            .offset(t, *p)?
            .max(group)
            .map(|o| checked_resume(t, *p, o, log));
        let resume = match (stored, floors.get(&key)) {
            (Some(o), Some(&floor)) => {
                let floor = if floor == hogstream_state::lifecycle::FROM_START {
                    log.0
                } else {
                    checked_resume(t, *p, floor, log)
                };
                if floor < o {
                    tracing::info!(
                        topic = t,
                        partition = p,
                        from = o,
                        to = floor,
                        "rewound for a restored store of the cluster"
                    );
                    assigned.rewound.push(PartitionOffset {
                        topic: t.clone(),
                        partition: *p,
                        next_offset: floor,
                    });
                }
                Some(floor.min(o))
            }
            (stored, _) => stored,
        };
        let offset = match resume {
            Some(o) => {
                assigned.resume.insert(key, o);
                Offset::Offset(o)
            }
            None => Offset::Beginning,
        };
        tpl.add_partition_offset(t, *p, offset)?;
    }
    consumer.assign(&tpl)?;
    assigned.logs = logs;
    Ok(assigned)
}

/// A stored resume offset checked against the partition's log `[low, high)`. Past the end, the
/// topic was recreated or truncated: resuming there would skip every new message until the log
/// grows past it, so the whole log is read again (harmless: the pipeline is idempotent). Before
/// the start, retention deleted messages the engine never read: they are lost to it, which is
/// said loudly, and reading goes on from the start of what is left.
pub fn checked_resume(topic: &str, partition: i32, stored: i64, (low, high): (i64, i64)) -> i64 {
    if stored > high {
        tracing::error!(
            topic,
            partition,
            stored,
            low,
            high,
            "the stored offset is past the end of the log: the topic was recreated or truncated; reading the partition from its start again"
        );
        metrics::counter!("hogstream_source_offset_resets_total", "reason" => "past_end")
            .increment(1);
        return low;
    }
    if stored < low {
        tracing::error!(
            topic,
            partition,
            stored,
            low,
            lost = low - stored,
            "messages were deleted by retention before the engine read them; they are lost to the pipeline (raise the topic's retention above the longest outage)"
        );
        metrics::counter!("hogstream_source_offset_resets_total", "reason" => "before_start")
            .increment(1);
        return low;
    }
    stored
}

fn header<'a>(msg: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

/// The route of a message: its team's ([`team_route`]) by the token header capture sets, else
/// by the token in its payload, else its place (an undecodable message: the worker that gets
/// it only dead-letters it). A payload normalization can decode always routes by its token, so
/// only a header can route an event away from its team. Person state is decided per team on
/// one worker, because a merge may join any two distinct ids of a team; spreading one team over
/// several workers needs routing by component, which is future work (docs/persons-design.md).
/// The worker checks
/// that the route is its event's team's (`Processor`): a header naming another team than the
/// payload does must not let a worker apply another worker's person state.
fn route(msg: &BorrowedMessage<'_>) -> u64 {
    route_of(
        header(msg, headers::TOKEN),
        msg.payload().unwrap_or_default(),
        || format!("{}:{}:{}", msg.topic(), msg.partition(), msg.offset()),
    )
}

fn route_of(token_header: Option<&[u8]>, payload: &[u8], place: impl FnOnce() -> String) -> u64 {
    /// Only the token of a captured event: the rest is skipped unparsed.
    #[derive(serde::Deserialize)]
    struct Token<'a> {
        #[serde(borrow)]
        token: std::borrow::Cow<'a, str>,
    }
    if let Some(token) = token_header.and_then(|t| std::str::from_utf8(t).ok()) {
        return team_route(token);
    }
    if let Ok(t) = serde_json::from_slice::<Token<'_>>(payload) {
        return team_route(&t.token);
    }
    // The envelope in a form the small reader refuses (a JSON array, as serde also reads
    // structs): decode it whole, as normalization will.
    match serde_json::from_slice::<hogstream_event::CapturedEvent>(payload) {
        Ok(e) => team_route(&e.token),
        Err(_) => xxh3_64(place().as_bytes()),
    }
}

/// How far each partition may have been read, by earlier runs and by this one. A message below
/// the earlier runs' horizon may have been processed by a process that crashed before
/// committing its offset, so rows of that attempt may exist: the person stage rewrites what
/// such a message touches whole. The horizon is moved durably [`HORIZON_STEP`] ahead before
/// any message past it is processed, so it always covers what a run read; after a clean stop,
/// at most that many messages per partition are treated as possible replays.
#[derive(Debug, Default)]
pub struct ReadHorizon {
    /// Topic → partition → horizon; keyed by topic first so the read path borrows the name.
    earlier: HashMap<String, HashMap<i32, i64>>,
    current: HashMap<String, HashMap<i32, i64>>,
}

/// How far ahead of the messages being read the horizon is stored.
pub const HORIZON_STEP: i64 = 100_000;

impl ReadHorizon {
    pub fn load(store: &StateStore, partitions: &[(String, i32)]) -> Result<Self, EngineError> {
        let mut earlier: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        for (t, p) in partitions {
            if let Some(h) = store.read_horizon(t, *p)? {
                earlier.entry(t.clone()).or_default().insert(*p, h);
            }
        }
        Ok(Self {
            current: earlier.clone(),
            earlier,
        })
    }

    /// Notes that the message at `offset` is about to be processed; `true` when an earlier
    /// run may have processed it.
    pub fn read(
        &mut self,
        store: &StateStore,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<bool, EngineError> {
        let current = self.current.get(topic).and_then(|h| h.get(&partition));
        if current.is_none_or(|h| offset >= *h) {
            let horizon = offset + HORIZON_STEP;
            store.store_read_horizon(topic, partition, horizon)?;
            self.current
                .entry(topic.to_owned())
                .or_default()
                .insert(partition, horizon);
        }
        Ok(self
            .earlier
            .get(topic)
            .and_then(|h| h.get(&partition))
            .is_some_and(|h| offset < *h))
    }
}

/// The record of `msg`; `replay`: an earlier run may have processed it ([`ReadHorizon`]).
pub fn to_record(msg: &BorrowedMessage<'_>, replay: bool) -> SourceRecord {
    SourceRecord {
        replay,
        topic: msg.topic().to_owned(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp_ms: msg.timestamp().to_millis().unwrap_or_default(),
        key: msg.key().map(<[u8]>::to_vec),
        route: route(msg),
        force_personless: header(msg, headers::FORCE_DISABLE_PERSON_PROCESSING) == Some(b"true"),
        payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers: msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key, h.value.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_message_is_routed_by_its_token_header_else_by_its_payload_token_else_by_its_place() {
        use super::{route_of, team_route};
        let payload = br#"{"uuid":"x","token":"ph\u0063_a","data":"{}"}"#;
        let place = || "t:0:7".to_owned();
        assert_eq!(
            route_of(Some(b"phc_b"), payload, place),
            team_route("phc_b")
        );
        assert_eq!(route_of(None, payload, place), team_route("phc_a"));
        assert_eq!(
            route_of(None, b"{broken", place),
            xxhash_rust::xxh3::xxh3_64(b"t:0:7")
        );
        // serde reads a struct from a JSON array too: normalization would, so routing does.
        let array = br#"["00000000-0000-0000-0000-000000000001","d","","{}","2026-01-01T00:00:00Z",null,"phc_a","e","2026-01-01T00:00:00Z"]"#;
        serde_json::from_slice::<hogstream_event::CapturedEvent>(array).expect("decodes");
        assert_eq!(route_of(None, array, place), team_route("phc_a"));
    }

    #[test]
    fn the_read_horizon_marks_what_an_earlier_run_may_have_processed() {
        use super::{HORIZON_STEP, ReadHorizon, StateStore};
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 1 << 20).unwrap();
        let parts = [("t".to_owned(), 0)];
        let mut first = ReadHorizon::load(&store, &parts).unwrap();
        assert!(
            !first.read(&store, "t", 0, 0).unwrap(),
            "a fresh store replays nothing"
        );
        assert!(!first.read(&store, "t", 0, 7).unwrap());
        // A crash: the next run treats everything the first may have read as a replay.
        let mut second = ReadHorizon::load(&store, &parts).unwrap();
        assert!(second.read(&store, "t", 0, 7).unwrap());
        assert!(second.read(&store, "t", 0, HORIZON_STEP - 1).unwrap());
        assert!(!second.read(&store, "t", 0, HORIZON_STEP).unwrap());
        let mut third = ReadHorizon::load(&store, &parts).unwrap();
        assert!(third.read(&store, "t", 0, HORIZON_STEP + 5).unwrap());
        assert!(!third.read(&store, "t", 0, 2 * HORIZON_STEP).unwrap());
        drop(store);
    }
    use super::{KafkaError, RDKafkaErrorCode, checked_resume, while_coordinator_starts};

    /// A fresh broker answers "not coordinator" for a moment after it creates
    /// `__consumer_offsets`; the window is too short to hit on demand (a cold quickstart did),
    /// so the broker's answers are played here.
    #[test]
    fn start_up_waits_out_a_starting_coordinator_but_not_other_errors() {
        let mut answers = vec![
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator)),
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::CoordinatorLoadInProgress,
            )),
            Ok(7),
        ]
        .into_iter();
        assert_eq!(
            while_coordinator_starts("test", || answers.next().unwrap()).unwrap(),
            7
        );
        let mut calls = 0;
        let err = while_coordinator_starts("test", || {
            calls += 1;
            Err::<(), _>(KafkaError::MetadataFetch(
                RDKafkaErrorCode::TopicAuthorizationFailed,
            ))
        })
        .unwrap_err();
        assert_eq!(
            calls, 1,
            "an error that waiting cannot fix is returned at once"
        );
        assert_eq!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        );
    }

    #[test]
    fn a_resume_offset_outside_the_log_restarts_at_its_start() {
        assert_eq!(checked_resume("t", 0, 15, (10, 20)), 15);
        assert_eq!(checked_resume("t", 0, 20, (10, 20)), 20, "the end is valid");
        assert_eq!(checked_resume("t", 0, 10, (10, 20)), 10);
        assert_eq!(checked_resume("t", 0, 1_000, (0, 20)), 0, "recreated topic");
        assert_eq!(checked_resume("t", 0, 3, (10, 20)), 10, "retention gap");
    }
}
