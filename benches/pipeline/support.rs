//! What every benchmark section shares: endpoints, topics, configurations, `hogstream`
//! processes, sample events, CPU accounting from `/proc`, and ClickHouse counts.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use clickhouse::Client;
use hogstream_event::CapturedEvent;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Value, json};
use uuid::Uuid;

pub const TOKEN: &str = "phc_bench";
pub const PARTITIONS: i32 = 4;

pub fn brokers() -> String {
    std::env::var("HOGSTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("HOGSTREAM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// `name` from the environment as a number, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `scripts/services.sh` keeps the services' data, pid files and certificates.
fn services_data() -> PathBuf {
    std::env::var("HOGSTREAM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".local/data"))
}

/// A `[checkpoints]` section for the local object store of `scripts/services.sh` (SeaweedFS),
/// under a prefix of the benchmark's own.
pub fn checkpoints_section(interval: &str) -> String {
    let port = std::env::var("HOGSTREAM_S3_PORT").unwrap_or_else(|_| "8333".into());
    format!(
        "[checkpoints]\ninterval = \"{interval}\"\nkeep = 3\n[checkpoints.store]\nurl = \"s3://hogstream/{}\"\nendpoint = \"http://127.0.0.1:{port}\"\naccess_key_id = \"hogstream\"\nsecret_access_key = {{ file = \"{}\" }}\n",
        unique("bench-checkpoints"),
        services_data().join("s3/secret-key").display()
    )
}

/// The sum of every series of the counter `name` in a Prometheus text exposition.
pub fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

/// The pid of a service started by `scripts/services.sh` (`kafka`, `clickhouse`), from its pid
/// file, so the benchmarks can account for its CPU.
pub fn service_pid(service: &str) -> Option<u32> {
    std::fs::read_to_string(services_data().join("run").join(format!("{service}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn stat_cpu_seconds(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))
}

/// CPU seconds per thread group of a process (thread names with their numbers stripped, e.g.
/// `tokio-runtime-w`, `rdk:broker`), to see where the CPU goes.
/// The most resident memory process `pid` has held (Linux's VmHWM), in bytes; 0 if unknown.
pub fn peak_resident(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn cpu_by_thread(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let group = name
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '#' || c == '-' || c == '/');
        *out.entry(group.to_owned()).or_insert(0.0) += stat_cpu_seconds(&dir.join("stat"));
    }
    out
}

/// CPU seconds of several processes, read together at one moment.
#[derive(Clone)]
pub struct CpuSample {
    pids: Vec<(&'static str, Option<u32>)>,
    seconds: Vec<f64>,
    at: Instant,
}

impl CpuSample {
    pub fn take(pids: &[(&'static str, Option<u32>)]) -> Self {
        CpuSample {
            pids: pids.to_vec(),
            seconds: pids
                .iter()
                .map(|(_, pid)| pid.map_or(f64::NAN, cpu_seconds))
                .collect(),
            at: Instant::now(),
        }
    }

    /// `(name, CPU seconds used, cores on average)` per process since `earlier`.
    pub fn since(&self, earlier: &CpuSample) -> Vec<(&'static str, f64, f64)> {
        let wall = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        self.pids
            .iter()
            .zip(self.seconds.iter().zip(&earlier.seconds))
            .map(|((name, _), (now, then))| (*name, now - then, (now - then) / wall))
            .collect()
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
}

/// Deletes the benchmark's topics, so repeated runs do not fill the local broker's disk.
pub async fn delete_topics(prefix: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) else {
        return;
    };
    let names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if !names.is_empty() {
        let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
    }
}

/// A producer like capture's: `acks=all`, lz4, 10 ms linger, idempotent or not.
pub fn producer(idempotent: bool) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", idempotent.to_string())
        .set("acks", "all")
        .set("linger.ms", "10")
        .set("compression.type", "lz4")
        .create()
        .unwrap()
}

pub fn sample_event(i: usize) -> Value {
    json!({
        "event": "$pageview",
        "distinct_id": format!("user-{}", i % 5000),
        "uuid": Uuid::now_v7().to_string(),
        "properties": {
            "$current_url": "https://example.com/pricing?plan=team",
            "$browser": "Firefox", "$browser_version": 133, "$os": "Linux",
            "$session_id": Uuid::now_v7().to_string(), "$lib": "web", "$lib_version": "1.200.0",
            "$screen_height": 1080, "$screen_width": 1920, "plan": "team", "i": i
        }
    })
}

/// A message as capture writes it to Kafka: `(key, value)`.
pub fn captured(i: usize) -> (String, Vec<u8>) {
    let raw = sample_event(i);
    let now = hogstream_event::time::rfc3339(chrono::Utc::now());
    let c = CapturedEvent {
        uuid: raw["uuid"].as_str().unwrap().parse().unwrap(),
        distinct_id: raw["distinct_id"].as_str().unwrap().to_owned(),
        ip: "127.0.0.1".into(),
        data: raw.to_string(),
        now: now.clone(),
        sent_at: None,
        token: TOKEN.into(),
        event: "$pageview".into(),
        timestamp: now,
        is_cookieless_mode: false,
        historical_migration: false,
    };
    (c.partition_key(), serde_json::to_vec(&c).unwrap())
}

/// Produces `n` captured events with up to `parallel` deliveries in flight; returns events/s.
pub async fn produce(topic: &str, n: usize, parallel: usize, idempotent: bool) -> f64 {
    use futures_util::StreamExt;
    let p = producer(idempotent);
    let messages: Vec<(String, Vec<u8>)> = (0..n).map(captured).collect();
    let started = Instant::now();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for (key, value) in &messages {
        pending.push(p.send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        ));
        if pending.len() >= parallel {
            pending.next().await.unwrap().expect("produce");
        }
    }
    while let Some(r) = pending.next().await {
        r.expect("produce");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A `hogstream` process that is killed when the benchmark is done with it.
pub struct Hogstream(pub Child);

impl Drop for Hogstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Hogstream {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// `hogstream --config <config>`, which reaches the services the file names: the environment's
/// overrides (`scripts/env.sh` exports the plain ports) are removed.
fn hogstream(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hogstream"));
    c.arg("--config")
        .arg(config)
        .env_remove("HOGSTREAM_KAFKA_BROKERS")
        .env_remove("HOGSTREAM_CLICKHOUSE_URL");
    c
}

/// How hogstream reaches the broker and ClickHouse: the plain ports, or the local services'
/// secured ones (Kafka TLS + SCRAM-SHA-512, ClickHouse HTTPS with a password). The benchmarks'
/// own clients (filling topics, counting rows) always use the plain ports.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hops {
    Plain,
    Secured,
}

impl Hops {
    /// `[kafka]` brokers and `[clickhouse]` url, and what goes into `[kafka.security]` and
    /// `[clickhouse]` besides.
    fn config(self) -> (String, String, String, String) {
        match self {
            Hops::Plain => (brokers(), clickhouse_url(), String::new(), String::new()),
            Hops::Secured => {
                // The certificates and passwords made by `scripts/tls.py`.
                let tls = services_data().join("tls");
                let port = |var: &str, default: &str| {
                    std::env::var(var).unwrap_or_else(|_| default.to_owned())
                };
                (
                    format!("127.0.0.1:{}", port("HOGSTREAM_KAFKA_TLS_PORT", "9094")),
                    format!(
                        "https://127.0.0.1:{}",
                        port("HOGSTREAM_CLICKHOUSE_HTTPS_PORT", "8443")
                    ),
                    format!(
                        "[kafka.security]\nprotocol = \"sasl_ssl\"\nca_file = \"{ca}\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"hogstream\"\npassword = {{ file = \"{pw}\" }}\n",
                        ca = tls.join("ca.pem").display(),
                        pw = tls.join("kafka-password").display(),
                    ),
                    format!(
                        "user = \"hogstream\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
                        tls.join("clickhouse-password").display(),
                        tls.join("ca.pem").display(),
                    ),
                )
            }
        }
    }
}

/// One benchmark's configuration, topics and ClickHouse database.
#[derive(Clone)]
pub struct Setup {
    pub config: PathBuf,
    pub topic: String,
    pub database: String,
    pub port: u16,
}

impl Setup {
    /// Writes a configuration (with `extra(dir)` appended, e.g. `[[plugins]]`) and migrates it.
    pub fn new(workers: usize, extra: impl Fn(&Path) -> String) -> Self {
        Self::through(Hops::Plain, workers, extra)
    }

    /// [`Setup::new`] with hogstream reaching the services through `hops`.
    pub fn through(hops: Hops, workers: usize, extra: impl Fn(&Path) -> String) -> Self {
        let (hop_brokers, hop_clickhouse, kafka_security, clickhouse_security) = hops.config();
        let name = unique("bench");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let topic = format!("{name}_events");
        let config = dir.join("hogstream.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{b}"
input_topics = ["{topic}"]
dlq_topic = "{topic}_dlq"
processed_topic = "{topic}_processed"
default_partitions = {PARTITIONS}
group_id = "{name}"
[capture]
bind_address = "127.0.0.1:{port}"
[capture.overflow]
enabled = false
[capture.topics]
main = "{topic}"
overflow = "{topic}_overflow"
historical = "{topic}_historical"
dlq = "{topic}_dlq"
[engine]
workers = {workers}
data_dir = "{data}"
{state_threads}
[clickhouse]
url = "{ch}"
database = "{name}"
{clickhouse_security}
[[teams]]
id = 1
token = "{TOKEN}"
{kafka_security}
{extra}
"#,
                b = hop_brokers,
                ch = hop_clickhouse,
                data = dir.join("engine").display(),
                extra = extra(&dir),
                // The engine's default is one per core; HOGSTREAM_BENCH_STATE_THREADS compares.
                state_threads = std::env::var("HOGSTREAM_BENCH_STATE_THREADS")
                    .map(|n| format!("state_threads = {n}"))
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        let ok = hogstream(&config)
            .arg("migrate")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "migrate failed: are the services up? (scripts/services.sh start)"
        );
        Setup {
            config,
            topic,
            database: name,
            port,
        }
    }

    pub fn dir(&self) -> &Path {
        self.config.parent().unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `hogstream <args>` with this configuration; its log goes to `<log>` beside it.
    pub fn spawn(&self, args: &[&str], log: &str) -> Hogstream {
        let out = std::fs::File::create(self.dir().join(log)).unwrap();
        Hogstream(
            hogstream(&self.config)
                .args(args)
                // HOGSTREAM_BENCH_LOG (e.g. `info`) keeps more of the log in `log`.
                .env(
                    "HOGSTREAM_LOG",
                    std::env::var("HOGSTREAM_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .unwrap(),
        )
    }

    /// Runs `hogstream <args>` to completion; panics unless it succeeds.
    pub fn run(&self, args: &[&str]) {
        let out = hogstream(&self.config)
            .args(args)
            .env("HOGSTREAM_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hogstream {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn clickhouse(&self) -> Client {
        Client::default()
            .with_url(clickhouse_url())
            .with_database(&self.database)
    }

    /// One UInt64 from `sql`, 0 when the query fails.
    pub async fn count(&self, sql: &str) -> u64 {
        self.clickhouse()
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or(0)
    }

    /// Drops the benchmark's database and topics, and its directory.
    pub async fn clean(self) {
        let _ = Client::default()
            .with_url(clickhouse_url())
            .query(&format!("DROP DATABASE IF EXISTS `{}`", self.database))
            .execute()
            .await;
        delete_topics(&self.topic).await;
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

pub async fn wait_ready(url: &str) {
    for _ in 0..600 {
        if reqwest::get(format!("{url}/_readiness"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become ready");
}
