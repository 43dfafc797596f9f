//! Engine configuration: the `[engine]`, `[kafka]`, `[clickhouse]` and `[[teams]]` parts of
//! the hogstream TOML file.

use std::{path::PathBuf, time::Duration};

use hogstream_event::security::{ClientSettings, KafkaSecurity, SecurityError};
use hogstream_event::topics;
use hogstream_sinks::ClickHouseConfig;
use serde::Deserialize;

use crate::teams::Team;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Topics the engine reads, in priority order.
    pub input_topics: Vec<String>,
    pub dlq_topic: String,
    /// Processed events, with their person, for destinations; written only for teams that run
    /// a destination.
    pub processed_topic: String,
    /// Partitions given to topics the engine creates because they are missing.
    pub default_partitions: i32,
    /// Replication factor of topics the engine creates.
    pub replication_factor: i32,
    /// Consumer group under which offsets are also committed to Kafka, for monitoring and as a
    /// resume fallback: the engine resumes from the later of this and its own stored offsets.
    pub group_id: String,
    /// TLS and SASL for every hogstream client of Kafka (`[kafka.security]`).
    pub security: KafkaSecurity,
    /// `security` as librdkafka settings, secrets read: filled at start-up by
    /// [`KafkaConfig::resolve_security`], never from the file.
    #[serde(skip)]
    pub client_settings: ClientSettings,
    /// Further librdkafka settings for every engine client, applied last.
    pub extra: std::collections::BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Reads the secrets of `security` into `client_settings`.
    pub fn resolve_security(&mut self) -> Result<(), SecurityError> {
        self.client_settings = self.security.client_settings()?;
        Ok(())
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            input_topics: vec![
                topics::MAIN.into(),
                topics::OVERFLOW.into(),
                topics::HISTORICAL.into(),
            ],
            dlq_topic: topics::DLQ.into(),
            processed_topic: topics::PROCESSED.into(),
            default_partitions: 8,
            replication_factor: 1,
            group_id: "hogstream-engine".into(),
            security: KafkaSecurity::default(),
            client_settings: ClientSettings::default(),
            extra: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Worker threads in this process.
    pub workers: usize,
    /// Where this process keeps its RocksDB state and offsets.
    pub data_dir: PathBuf,
    /// Length of one timely epoch: the granularity of progress, never event time.
    #[serde(with = "humantime_serde")]
    pub epoch: Duration,
    /// The source stops reading while this many epochs are not yet acknowledged by the sink
    /// (backpressure when ClickHouse is slow or down).
    pub max_inflight_epochs: u64,
    /// Most Kafka messages one worker reads between two dataflow steps.
    pub max_poll_records: usize,
    /// Flushes one worker may have in flight to ClickHouse at once.
    pub max_inflight_flushes: usize,
    /// RocksDB block cache for the whole process.
    pub block_cache_bytes: usize,
    /// Person components (a person's distinct ids and property registers) each worker keeps
    /// decoded in memory, so a person active again in a later batch is neither read nor
    /// decoded; about 1–2 KB each for a typical web person.
    pub person_cache: usize,
    /// Threads, shared by the workers of this process, that do the per-event and per-person
    /// work of a batch (decoding, plugins, resolving person state, rows), so a busy team is not
    /// held to the one worker that owns it. Default: the machine's cores.
    pub state_threads: usize,
    /// How long a graceful shutdown may take to drain and flush before giving up.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Entries `token` or `token:distinct_id` whose events are dropped.
    pub drop_events: Vec<String>,
    /// Where `hogstream engine` serves Prometheus `/metrics`; process `p` of a cluster uses this
    /// port + `p`. `hogstream run` serves them on capture's `/metrics` instead.
    pub metrics_address: std::net::SocketAddr,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            data_dir: PathBuf::from(".local/data/engine"),
            epoch: Duration::from_millis(100),
            max_inflight_epochs: 100,
            max_poll_records: 5_000,
            max_inflight_flushes: 4,
            block_cache_bytes: 256 << 20,
            person_cache: hogstream_state::persons::DEFAULT_COMPONENT_CACHE,
            state_threads: std::thread::available_parallelism().map_or(2, usize::from),
            shutdown_timeout: Duration::from_secs(30),
            drop_events: Vec::new(),
            metrics_address: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[checkpoints]`: checkpoints of each process's store in an object store, and restores from
/// them (`crate::recovery`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Where checkpoints are kept (`s3://bucket/prefix`, an S3-compatible endpoint,
    /// credentials). One prefix per engine cluster.
    pub store: hogstream_objects::ObjectStoreConfig,
    /// Time from the start of one checkpoint to the start of the next.
    #[serde(
        default = "CheckpointConfig::default_interval",
        with = "humantime_serde"
    )]
    pub interval: Duration,
    /// Finished checkpoints kept per process; older ones and the files only they name are
    /// deleted.
    #[serde(default = "CheckpointConfig::default_keep")]
    pub keep: usize,
    /// Restore the newest checkpoint at start-up when the process's store is missing, empty or
    /// unreadable while the cluster had processed events, or when `hogstream state resize`
    /// made one for a new layout. Off: the engine refuses to start instead, and says why.
    #[serde(default)]
    pub restore: bool,
}

impl CheckpointConfig {
    fn default_interval() -> Duration {
        Duration::from_secs(60)
    }

    fn default_keep() -> usize {
        5
    }

    /// A configuration for `store` with every other key at its default.
    pub fn new(store: hogstream_objects::ObjectStoreConfig) -> Self {
        Self {
            store,
            interval: Self::default_interval(),
            keep: Self::default_keep(),
            restore: false,
        }
    }
}

/// Timely cluster placement of this process (`-n`, `-p`, hostfile).
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// Number of processes; 1 runs without networking.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// `host:port` of every process, in index order.
    pub addresses: Vec<String>,
}

/// Everything the engine needs to run.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    pub engine: EngineConfig,
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub teams: Vec<Team>,
    pub plugins: Vec<hogstream_plugin::PluginConfig>,
    /// The `[[views]]` entries.
    pub views: Vec<crate::views::ViewConfig>,
    pub cluster: ClusterConfig,
    /// `[checkpoints]`, when configured.
    pub checkpoints: Option<CheckpointConfig>,
}
