//! hogstream's benchmarks, each beside a baseline measured in the same run on the same broker
//! and ClickHouse (the broker here, tansu on SQLite, caps any end-to-end figure):
//!
//! - `capture`: events/s and requests/s through capture, single events and 50-event gzip
//!   batches, with p50/p99 request latency; baseline: the same messages produced straight to
//!   Kafka with rdkafka (`acks=all`, idempotent), i.e. what capture adds on top of the broker;
//! - `engine`: events/s from a pre-filled topic into ClickHouse through `hogstream engine`;
//!   baseline: a bare passthrough (consume → insert the raw message, no processing);
//! - `latency`: p50/p99 from capture receiving an event to its row being in ClickHouse, at a
//!   moderate steady load.
//!
//! Run with `scripts/bench.sh [capture|engine|latency]` (starts the services, builds release).

use std::{
    collections::BTreeMap,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clickhouse::{Client, Row};
use flate2::{Compression, write::GzEncoder};
use hogstream_event::CapturedEvent;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "phc_bench";
const CAPTURE_SECONDS: u64 = 8;
const CONCURRENCY: usize = 16;
/// Distinct request bodies each connection cycles through (events repeat; capture does not care).
const BODIES_PER_CONNECTION: usize = 64;
/// Events of the engine benchmark: `HOGSTREAM_BENCH_ENGINE_EVENTS`, default 200,000. tansu's
/// SQLite fetch slows down as its store grows, so on it use tens of thousands.
fn engine_events() -> usize {
    std::env::var("HOGSTREAM_BENCH_ENGINE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}
const PARTITIONS: i32 = 4;

fn brokers() -> String {
    std::env::var("HOGSTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn clickhouse_url() -> String {
    std::env::var("HOGSTREAM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_nanos()
    )
}

fn rand_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds per thread group of a process (thread names with their numbers stripped, e.g.
/// `tokio-runtime-w`, `rdk:broker`), to see where capture's CPU goes.
fn cpu_by_thread(pid: u32) -> BTreeMap<String, f64> {
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
        *out.entry(group.to_owned()).or_insert(0.0) +=
            stat_cpu_seconds(&dir.join("stat").display().to_string());
    }
    out
}

fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let per_second: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks / per_second
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn create_topic(topic: &str) {
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

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .set("compression.type", "lz4")
        .create()
        .unwrap()
}

fn sample_event(i: usize) -> Value {
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

fn captured(i: usize) -> (String, Vec<u8>) {
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

/// Produces `n` captured events with `parallel` deliveries in flight; returns events/s.
async fn produce(topic: &str, n: usize, parallel: usize) -> f64 {
    let p = producer();
    let started = Instant::now();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt;
    for i in 0..n {
        let (key, value) = captured(i);
        let p = p.clone();
        let topic = topic.to_owned();
        pending.push(async move {
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
        });
        if pending.len() >= parallel {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}
    n as f64 / started.elapsed().as_secs_f64()
}

/// A `hogstream` process that is killed when the benchmark is done with it.
struct Hogstream(Child);

impl Drop for Hogstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A configuration for one benchmark; `extra` is appended (e.g. `[[plugins]]`).
fn write_config(
    dir: &Path,
    topic: &str,
    database: &str,
    (port, workers): (u16, usize),
    extra: &str,
) -> PathBuf {
    let path = dir.join("hogstream.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[kafka]
brokers = "{b}"
input_topics = ["{topic}"]
dlq_topic = "{topic}_dlq"
processed_topic = "{topic}_processed"
default_partitions = {PARTITIONS}
group_id = "{database}"
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
[clickhouse]
url = "{ch}"
database = "{database}"
[[teams]]
id = 1
token = "{TOKEN}"
{extra}
"#,
            b = brokers(),
            ch = clickhouse_url(),
            data = dir.join("engine").display()
        ),
    )
    .unwrap();
    path
}

fn hogstream(config: &Path, args: &[&str], log: &str) -> Child {
    let out = std::fs::File::create(config.parent().unwrap().join(log)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hogstream"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("HOGSTREAM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap()
}

fn setup(workers: usize) -> (PathBuf, String, String, u16) {
    setup_with(workers, |_| String::new())
}

/// [`setup`] with configuration `extra(dir)` appended.
fn setup_with(workers: usize, extra: impl Fn(&Path) -> String) -> (PathBuf, String, String, u16) {
    let name = unique("bench");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = write_config(
        &dir,
        &format!("{name}_events"),
        &name,
        (port, workers),
        &extra(&dir),
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_hogstream"))
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "migrate failed: are the services up? (scripts/services.sh start)"
    );
    (config, format!("{name}_events"), name, port)
}

async fn wait_ready(url: &str) {
    for _ in 0..300 {
        if reqwest::get(format!("{url}/_readiness"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("capture at {url} did not become ready");
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// Sends requests for `CAPTURE_SECONDS` from `CONCURRENCY` tasks; returns (events/s, req/s, p50, p99).
async fn load(url: String, batch: usize) -> (f64, f64, Duration, Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(CAPTURE_SECONDS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let (client, url) = (client.clone(), url.clone());
        // Bodies are made before the clock starts: the client shares the cores with capture.
        let bodies: Vec<Vec<u8>> = (0..BODIES_PER_CONNECTION)
            .map(|n| {
                let i = t * 1_000_000 + n * batch;
                if batch == 1 {
                    let mut e = sample_event(i);
                    e["api_key"] = json!(TOKEN);
                    e.to_string().into_bytes()
                } else {
                    let events: Vec<Value> = (0..batch).map(|k| sample_event(i + k)).collect();
                    gzip(
                        json!({"api_key": TOKEN, "batch": events})
                            .to_string()
                            .as_bytes(),
                    )
                }
            })
            .collect();
        let (path, encoding) = if batch == 1 {
            ("/i/v0/e", None)
        } else {
            ("/batch", Some("gzip"))
        };
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for body in bodies.iter().cycle() {
                if Instant::now() >= deadline {
                    break;
                }
                let mut req = client
                    .post(format!("{url}{path}"))
                    .header("Content-Type", "application/json")
                    .body(body.clone());
                if let Some(enc) = encoding {
                    req = req.header("Content-Encoding", enc);
                }
                let t0 = Instant::now();
                let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                assert_eq!(status, 200, "capture refused a benchmark request");
                latencies.push(t0.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let reqs = all.len() as f64 / secs;
    (
        reqs * batch as f64,
        reqs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

async fn bench_capture() {
    let (config, topic, _, port) = setup(1);
    let capture = Hogstream(hogstream(&config, &["capture"], "capture.log"));
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;

    let baseline_topic = format!("{topic}_baseline");
    create_topic(&baseline_topic).await;
    let raw = produce(&baseline_topic, 50_000, 5_000).await;
    let pid = capture.0.id();
    let cpu0 = cpu_seconds(pid);
    let single_started = Instant::now();
    let (single_eps, single_rps, s50, s99) = load(url.clone(), 1).await;
    let cpu1 = cpu_seconds(pid);
    let threads1 = cpu_by_thread(pid);
    let t1 = Instant::now();
    let (batch_eps, batch_rps, b50, b99) = load(url, 50).await;
    let batch_secs = t1.elapsed().as_secs_f64();
    let cpu2 = cpu_seconds(pid);
    let threads2 = cpu_by_thread(pid);
    let single_secs = t1.duration_since(single_started).as_secs_f64();
    let (single_core, batch_core) = ((cpu1 - cpu0) / single_secs, (cpu2 - cpu1) / batch_secs);
    println!(
        "\n## capture ({CONCURRENCY} connections, {CAPTURE_SECONDS} s each, 2 cores shared with the broker)"
    );
    println!(
        "| what | events/s | requests/s | capture CPU (cores) | events/s per capture core | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!("| baseline: rdkafka produce, no HTTP | {raw:.0} | — | — | — | — | — |");
    println!(
        "| capture, single events `/i/v0/e` | {single_eps:.0} | {single_rps:.0} | {single_core:.2} | {:.0} | {s50:.1?} | {s99:.1?} |",
        single_eps / single_core.max(0.01)
    );
    println!(
        "| capture, 50-event gzip `/batch` | {batch_eps:.0} | {batch_rps:.0} | {batch_core:.2} | {:.0} | {b50:.1?} | {b99:.1?} |",
        batch_eps / batch_core.max(0.01)
    );
    println!("ratio batch capture / raw produce: {:.2}", batch_eps / raw);
    println!("capture CPU by thread during the batch run (cores):");
    for (name, after) in &threads2 {
        let used = (after - threads1.get(name).copied().unwrap_or(0.0)) / batch_secs;
        if used >= 0.01 {
            println!("  {name}: {used:.2}");
        }
    }
}

#[derive(Row, Serialize)]
struct RawRow {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: Uuid,
    payload: String,
}

/// Bare passthrough: consume every message and insert it unprocessed; returns events/s.
async fn passthrough(topic: &str, database: &str, n: usize) -> f64 {
    let ch = Client::default()
        .with_url(clickhouse_url())
        .with_database(database);
    ch.query(
        "CREATE TABLE passthrough (uuid UUID, payload String) ENGINE = MergeTree ORDER BY uuid",
    )
    .execute()
    .await
    .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("passthrough"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let (mut seen, mut batch, mut since) = (0, Vec::new(), Instant::now());
    while seen < n {
        if let Some(m) = consumer.poll(Duration::from_millis(5)) {
            let m = m.unwrap();
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            batch.push(RawRow {
                uuid: Uuid::now_v7(),
                payload,
            });
            seen += 1;
        }
        if !batch.is_empty()
            && (batch.len() >= 100_000
                || since.elapsed() >= Duration::from_millis(250)
                || seen == n)
        {
            let mut insert = ch.insert::<RawRow>("passthrough").await.unwrap();
            for r in batch.drain(..) {
                insert.write(&r).await.unwrap();
            }
            insert.end().await.unwrap();
            since = Instant::now();
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn count(database: &str, sql: &str) -> u64 {
    Client::default()
        .with_url(clickhouse_url())
        .with_database(database)
        .query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

/// Events per second from the engine's start until every event is in `events` (and, with
/// `exported`, until a JSONL destination wrote them all), and the engine's CPU seconds.
async fn run_engine(
    config: &Path,
    database: &str,
    n: usize,
    exported: Option<&Path>,
) -> (f64, Option<f64>, f64, BTreeMap<String, f64>) {
    let started = Instant::now();
    let engine_process = Hogstream(hogstream(config, &["engine"], "engine.log"));
    let mut last = 0;
    while last < n as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = count(database, "SELECT count() FROM events").await;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "engine stalled at {last} events"
        );
    }
    let stored = n as f64 / started.elapsed().as_secs_f64();
    let delivered = match exported {
        Some(dir) => {
            while jsonl_lines(dir) < n {
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "destination stalled at {} events",
                    jsonl_lines(dir)
                );
            }
            Some(n as f64 / started.elapsed().as_secs_f64())
        }
        None => None,
    };
    let pid = engine_process.0.id();
    (stored, delivered, cpu_seconds(pid), cpu_by_thread(pid))
}

/// Lines in the `.jsonl` files of `dir`.
fn jsonl_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .map(|t| t.lines().count())
                .sum()
        })
        .unwrap_or(0)
}

async fn bench_engine() {
    let n = engine_events();
    // `migrate` in `setup` created the input topic with PARTITIONS partitions.
    let (config, topic, database, _) = setup(2);
    let produced = produce(&topic, n, 5_000).await;
    let base = passthrough(&topic, &database, n).await;
    let (engine, _, engine_cpu, _) = run_engine(&config, &database, n, None).await;

    // The same events again, with a JSONL destination: the engine also writes every event to
    // the processed-events topic, and the destination reads and exports them.
    let export_dir = |dir: &Path| dir.join("export");
    let (config, topic, database, _) = setup_with(2, |dir| {
        format!(
            "[[plugins]]\nplugin = \"jsonl-export\"\nstart = \"earliest\"\n[plugins.config]\ndirectory = \"{}\"\n",
            export_dir(dir).display()
        )
    });
    produce(&topic, n, 5_000).await;
    let exported = export_dir(config.parent().unwrap());
    let (with_dest, delivered, dest_cpu, dest_threads) =
        run_engine(&config, &database, n, Some(&exported)).await;
    let delivered = delivered.unwrap_or_default();

    println!("\n## engine ({n} events of ~600 B, {PARTITIONS} partitions, 2 workers, one process)");
    println!("| what | events/s |");
    println!("|---|---|");
    println!("| filling the topic (rdkafka produce) | {produced:.0} |");
    println!("| baseline: passthrough consume → insert, no processing | {base:.0} |");
    println!("| hogstream engine, Kafka → ClickHouse `events` | {engine:.0} |");
    println!("| hogstream engine with a JSONL destination, → `events` | {with_dest:.0} |");
    println!("| ... → every event exported by the destination | {delivered:.0} |");
    println!(
        "engine CPU: {engine_cpu:.1} s for {n} events = {:.0} events per engine CPU-second; with the destination {dest_cpu:.1} s = {:.0}",
        n as f64 / engine_cpu.max(0.01),
        n as f64 / dest_cpu.max(0.01)
    );
    let busiest: Vec<String> = {
        let mut t: Vec<_> = dest_threads
            .into_iter()
            .filter(|(_, s)| *s >= 0.05)
            .collect();
        t.sort_by(|a, b| b.1.total_cmp(&a.1));
        t.iter().map(|(n, s)| format!("{n} {s:.1} s")).collect()
    };
    println!(
        "with the destination, CPU by thread: {}",
        busiest.join(", ")
    );
    println!(
        "ratio engine / passthrough: {:.2} (engine start-up included); with a destination / without: {:.2}",
        engine / base,
        with_dest / engine
    );
}

async fn bench_latency() {
    let (config, _topic, database, port) = setup(2);
    let _run = Hogstream(hogstream(&config, &["run"], "run.log"));
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;
    let client = reqwest::Client::new();
    // Moderate load: 10 requests of 20 events per second for 10 s (200 events/s).
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for tick in 0..100 {
        let events: Vec<Value> = (0..20).map(|k| sample_event(tick * 20 + k)).collect();
        let status = client
            .post(format!("{url}/batch"))
            .json(&json!({"api_key": TOKEN, "batch": events}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
        total.fetch_add(20, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = total.load(std::sync::atomic::Ordering::Relaxed) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&database, "SELECT count() FROM events").await < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `timestamp` is capture's receive time (the events carry none of their own), `inserted_at`
    // is when ClickHouse wrote the row: the row is queryable from then on.
    let q = |p: f64| {
        format!(
            "SELECT toUInt64(quantileExact({p})(dateDiff('microsecond', timestamp, inserted_at))) FROM events"
        )
    };
    let (p50, p99, max) = (
        count(&database, &q(0.5)).await,
        count(&database, &q(0.99)).await,
        count(&database, &q(1.0)).await,
    );
    println!(
        "\n## latency (200 events/s through capture for 10 s; capture receipt → row in ClickHouse)"
    );
    println!("| p50 | p99 | max |");
    println!("|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms |",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; anything else names the benchmarks to run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if run("capture") {
        bench_capture().await;
    }
    if run("engine") {
        bench_engine().await;
    }
    if run("latency") {
        bench_latency().await;
    }
}
