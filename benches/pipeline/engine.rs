//! `engine`: events/s from a pre-filled topic into ClickHouse through `hogstream engine`, beside a
//! bare passthrough (consume → insert the raw message, no processing) on the same broker and
//! ClickHouse; then the same with a JSONL destination.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use clickhouse::Row;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use serde::Serialize;
use uuid::Uuid;

use crate::support::{
    CpuSample, PARTITIONS, Setup, brokers, cpu_by_thread, cpu_seconds, env_number, peak_resident,
    produce, service_pid, unique,
};

#[derive(Row, Serialize)]
struct RawRow {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: Uuid,
    payload: String,
}

/// Bare passthrough: consume every message and insert it unprocessed; returns events/s and the
/// CPU seconds of the passthrough itself, the broker and ClickHouse.
async fn passthrough(setup: &Setup, n: usize) -> (f64, Vec<(&'static str, f64, f64)>) {
    let ch = setup.clickhouse();
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
        tpl.add_partition_offset(&setup.topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let pids = [
        ("passthrough", Some(std::process::id())),
        ("broker", service_pid("kafka")),
        ("ClickHouse", service_pid("clickhouse")),
    ];
    let before = CpuSample::take(&pids);
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
    let rate = n as f64 / started.elapsed().as_secs_f64();
    (rate, CpuSample::take(&pids).since(&before))
}

pub struct EngineRun {
    pub stored_per_second: f64,
    /// CPU seconds of the broker and ClickHouse during the run.
    services: Vec<(&'static str, f64, f64)>,
    exported_per_second: Option<f64>,
    pub cpu_seconds: f64,
    cpu_by_thread: BTreeMap<String, f64>,
    /// The engine's peak resident memory.
    peak_resident: u64,
    /// The engine's `/metrics` once every event was stored.
    pub metrics: String,
}

/// Events per second from the engine's start until every event is in `events` (and, with
/// `exported`, until a JSONL destination wrote them all), and the engine's CPU seconds.
pub async fn run_engine(setup: &Setup, n: usize, exported: Option<&Path>) -> EngineRun {
    let services = [
        ("broker", service_pid("kafka")),
        ("ClickHouse", service_pid("clickhouse")),
    ];
    let before = CpuSample::take(&services);
    let started = Instant::now();
    let engine = setup.spawn(&["engine"], "engine.log");
    let mut last = 0;
    while last < n as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = setup.count("SELECT count() FROM events").await;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "engine stalled at {last} events"
        );
    }
    let stored_per_second = n as f64 / started.elapsed().as_secs_f64();
    let services = CpuSample::take(&services).since(&before);
    let exported_per_second = match exported {
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
    // `hogstream engine` serves its metrics on the default [engine] metrics_address.
    let metrics = match reqwest::get("http://127.0.0.1:9464/metrics").await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    EngineRun {
        stored_per_second,
        services,
        exported_per_second,
        cpu_seconds: cpu_seconds(engine.pid()),
        cpu_by_thread: cpu_by_thread(engine.pid()),
        peak_resident: peak_resident(engine.pid()),
        metrics,
    }
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

pub async fn bench() {
    let n = env_number("HOGSTREAM_BENCH_ENGINE_EVENTS", 200_000);
    // Rounds of (passthrough, engine) on fresh topics: on a shared machine one pair varies by
    // ±10–15%, so the target is judged on the median round.
    let rounds = env_number("HOGSTREAM_BENCH_ENGINE_ROUNDS", 5).max(1);
    let mut pairs = Vec::new();
    for _ in 0..rounds {
        // `migrate` created the input topic with PARTITIONS partitions.
        let setup = Setup::new(2, |_| String::new());
        let produced = produce(&setup.topic, n, 5_000, false).await;
        let (base, base_cpu) = passthrough(&setup, n).await;
        let plain = run_engine(&setup, n, None).await;
        setup.clean().await;
        pairs.push((produced, base, base_cpu, plain));
    }
    let ratio =
        |p: &(f64, f64, Vec<(&'static str, f64, f64)>, EngineRun)| p.3.stored_per_second / p.1;
    pairs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let ratios: Vec<String> = pairs.iter().map(|p| format!("{:.2}", ratio(p))).collect();
    let (produced, base, base_cpu, plain) = pairs.swap_remove(pairs.len() / 2);

    // The same events again, with a JSONL destination: the engine also writes every event to
    // the processed-events topic, and the destination reads and exports them.
    let setup = Setup::new(2, |dir| {
        format!(
            "[[plugins]]\nplugin = \"jsonl-export\"\nstart = \"earliest\"\n[plugins.config]\ndirectory = \"{}\"\n",
            dir.join("export").display()
        )
    });
    produce(&setup.topic, n, 5_000, false).await;
    let exported = setup.dir().join("export");
    let with_dest = run_engine(&setup, n, Some(&exported)).await;
    setup.clean().await;

    let engine = plain.stored_per_second;
    println!(
        "\n## engine ({n} events of ~600 B, {PARTITIONS} partitions, 2 workers, one process; the median of {rounds} rounds)"
    );
    println!("| what | events/s |");
    println!("|---|---|");
    println!("| filling the topic (rdkafka produce) | {produced:.0} |");
    println!("| baseline: passthrough consume → insert, no processing | {base:.0} |");
    println!("| hogstream engine, Kafka → ClickHouse `events` | {engine:.0} |");
    println!(
        "| hogstream engine with a JSONL destination, → `events` | {:.0} |",
        with_dest.stored_per_second
    );
    println!(
        "| ... → every event exported by the destination | {:.0} |",
        with_dest.exported_per_second.unwrap_or_default()
    );
    println!(
        "engine CPU: {:.1} s for {n} events = {:.0} events per engine CPU-second; with the destination {:.1} s = {:.0}",
        plain.cpu_seconds,
        n as f64 / plain.cpu_seconds.max(0.01),
        with_dest.cpu_seconds,
        n as f64 / with_dest.cpu_seconds.max(0.01)
    );
    for (label, run) in [("engine", &plain), ("with the destination", &with_dest)] {
        let mut t: Vec<_> = run
            .cpu_by_thread
            .iter()
            .filter(|(_, s)| **s >= 0.05)
            .collect();
        t.sort_by(|a, b| b.1.total_cmp(a.1));
        let text: Vec<String> = t.iter().map(|(n, s)| format!("{n} {s:.1} s")).collect();
        println!("{label}, CPU by thread: {}", text.join(", "));
    }
    println!("\nCPU seconds per 100k events while each ran:");
    println!("| run | its own process | broker | ClickHouse |");
    println!("|---|---|---|---|");
    let per = |s: f64| s / n as f64 * 100_000.0;
    println!(
        "| passthrough | {:.2} | {:.2} | {:.2} |",
        per(base_cpu[0].1),
        per(base_cpu[1].1),
        per(base_cpu[2].1)
    );
    println!(
        "| hogstream engine | {:.2} | {:.2} | {:.2} |",
        per(plain.cpu_seconds),
        per(plain.services[0].1),
        per(plain.services[1].1)
    );
    println!(
        "ratio engine / passthrough: {:.2}, the median of {rounds} rounds ({}; engine start-up included; target ≥ 0.5: {}); with a destination / without: {:.2}",
        engine / base,
        ratios.join(", "),
        if engine / base >= 0.5 {
            "met"
        } else {
            "NOT met"
        },
        with_dest.stored_per_second / engine
    );
}

/// The built-in views, for every team.
const BUILTIN_VIEWS: &str = "[[views]]\nview = \"daily_active_persons\"\n[[views]]\nview = \"weekly_active_persons\"\n[[views]]\nview = \"events_per_day\"\n[[views]]\nview = \"first_seen\"\n[[views]]\nview = \"sessions_per_day\"\n";

/// `views`: the engine on the same events without views and with the five built-in views.
pub async fn bench_views() {
    let n = env_number("HOGSTREAM_BENCH_ENGINE_EVENTS", 200_000);
    let mut runs = Vec::new();
    for (label, extra) in [("no views", ""), ("the five built-in views", BUILTIN_VIEWS)] {
        let setup = Setup::new(2, |_| extra.to_string());
        produce(&setup.topic, n, 5_000, false).await;
        let run = run_engine(&setup, n, None).await;
        if !extra.is_empty() {
            let rows = setup
                .count("SELECT count() FROM view_daily_active_persons FINAL")
                .await;
            assert!(rows > 0, "the views wrote nothing");
        }
        setup.clean().await;
        runs.push((label, run));
    }
    println!(
        "\n## engine with views ({n} events of ~600 B from 5,000 distinct ids, each its own session, {PARTITIONS} partitions, 2 workers)"
    );
    println!(
        "| run | events/s into `events` | engine CPU s per 100k events | engine peak resident MB |"
    );
    println!("|---|---|---|---|");
    for (label, run) in &runs {
        println!(
            "| {label} | {:.0} | {:.2} | {:.0} |",
            run.stored_per_second,
            run.cpu_seconds / n as f64 * 100_000.0,
            run.peak_resident as f64 / 1e6
        );
    }
    println!(
        "with views / without: {:.2} of the events/s, {:.2}x the CPU",
        runs[1].1.stored_per_second / runs[0].1.stored_per_second,
        runs[1].1.cpu_seconds / runs[0].1.cpu_seconds
    );
}
