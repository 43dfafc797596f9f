//! `latency`: a sustained load through `hogstream run` (capture and engine in one process), sent
//! open-loop at a fixed rate (default 5,000 events/s in 50-event batches), measuring:
//!
//! - from capture's 200 to the row being queryable, p50/p99, on a sample of events whose uuid
//!   the benchmark polls for in ClickHouse (the definition users care about);
//! - from capture's receipt (`timestamp`, which capture sets for events without one) to the
//!   insert (`inserted_at`), for every event;
//! - CPU seconds per 100,000 events of hogstream, the broker, ClickHouse and the load client,
//!   each separately.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{
    CpuSample, Setup, TOKEN, env_number, percentile, sample_event, service_pid, wait_ready,
};

const BATCH: usize = 50;
/// Every how many batches one event is followed until it is queryable.
const SAMPLE_EVERY: usize = 5;

/// Sampled uuids waiting to become visible, with the moment capture answered 200.
type Pending = Arc<Mutex<HashMap<String, Instant>>>;

/// Polls ClickHouse for the pending uuids until `done` and none are left; returns the
/// 200 → visible latencies.
async fn watch_visibility(
    setup: &Setup,
    pending: Pending,
    done: Arc<Mutex<bool>>,
) -> Vec<Duration> {
    let ch = setup.clickhouse();
    let mut seen = Vec::new();
    let deadline_after_done = Duration::from_secs(60);
    let mut done_at: Option<Instant> = None;
    loop {
        let ids: Vec<String> = pending.lock().unwrap().keys().cloned().collect();
        if ids.is_empty() {
            if *done.lock().unwrap() {
                break;
            }
        } else {
            let list = ids
                .iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(",");
            let found: Vec<String> = ch
                .query(&format!(
                    "SELECT toString(uuid) FROM events WHERE uuid IN ({list})"
                ))
                .fetch_all()
                .await
                .unwrap_or_default();
            let now = Instant::now();
            let mut pending = pending.lock().unwrap();
            for u in found {
                if let Some(acked) = pending.remove(&u) {
                    seen.push(now.duration_since(acked));
                }
            }
        }
        if *done.lock().unwrap() {
            let at = *done_at.get_or_insert_with(Instant::now);
            assert!(
                at.elapsed() < deadline_after_done,
                "sampled events never became visible"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.sort();
    seen
}

/// What a sustained load measured.
pub struct Sustained {
    pub seconds: usize,
    pub achieved: f64,
    /// Capture's 200 → row queryable, sorted.
    pub visible: Vec<Duration>,
    /// Capture's receipt → insert, p50/p99/max in ms, over every event.
    pub receipt: (f64, f64, f64),
    /// CPU seconds and cores of hogstream, the broker, ClickHouse and the load client.
    pub used: Vec<(&'static str, f64, f64)>,
    pub events: f64,
    /// hogstream's `/metrics` at the end of the load.
    pub metrics: String,
}

/// Sends `rate` events/s for `seconds` through `hogstream run` with `setup`'s configuration,
/// open loop, and measures until every event is stored.
pub async fn sustained(setup: &Setup, rate: usize, seconds: usize) -> Sustained {
    let run = setup.spawn(&["run"], "run.log");
    let url = setup.url();
    wait_ready(&url).await;
    // A few requests first, so connections, topics' leaders and ClickHouse parts are warm.
    let client = reqwest::Client::new();
    for i in 0..5 {
        let events: Vec<Value> = (0..BATCH).map(|k| sample_event(i * BATCH + k)).collect();
        let status = client
            .post(format!("{url}/batch"))
            .json(&json!({"api_key": TOKEN, "batch": events}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }
    let warmup = (5 * BATCH) as u64;
    while setup.count("SELECT count() FROM events").await < warmup {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let batches = rate * seconds / BATCH;
    let bodies: Vec<(Option<String>, Vec<u8>)> = (0..batches)
        .map(|b| {
            let events: Vec<Value> = (0..BATCH)
                .map(|k| sample_event(1_000_000 + b * BATCH + k))
                .collect();
            let sampled =
                (b % SAMPLE_EVERY == 0).then(|| events[0]["uuid"].as_str().unwrap().to_owned());
            let body = serde_json::to_vec(&json!({"api_key": TOKEN, "batch": events})).unwrap();
            (sampled, body)
        })
        .collect();
    let pending: Pending = Arc::default();
    let done = Arc::new(Mutex::new(false));
    let pids = [
        ("hogstream", Some(run.pid())),
        ("broker", service_pid("kafka")),
        ("ClickHouse", service_pid("clickhouse")),
        ("load client", Some(std::process::id())),
    ];
    let before = CpuSample::take(&pids);
    let watcher = {
        let (pending, done) = (pending.clone(), done.clone());
        let setup_ch = setup.clone();
        tokio::spawn(async move { watch_visibility(&setup_ch, pending, done).await })
    };
    let interval = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let started = Instant::now();
    let mut requests = Vec::with_capacity(batches);
    for (b, (sampled, body)) in bodies.into_iter().enumerate() {
        // Open loop: each batch leaves at its time, however long earlier ones take.
        let at = started + interval * b as u32;
        tokio::time::sleep_until(at.into()).await;
        let (client, url, pending) = (client.clone(), url.clone(), pending.clone());
        requests.push(tokio::spawn(async move {
            let status = client
                .post(format!("{url}/batch"))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            assert_eq!(status, 200, "capture refused a benchmark request");
            if let Some(uuid) = sampled {
                pending.lock().unwrap().insert(uuid, Instant::now());
            }
        }));
    }
    for r in requests {
        r.await.unwrap();
    }
    let sent_for = started.elapsed();
    let n = warmup + (batches * BATCH) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while setup.count("SELECT count() FROM events").await < n {
        assert!(Instant::now() < deadline, "the events did not all arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let used = CpuSample::take(&pids).since(&before);
    *done.lock().unwrap() = true;
    let visible = watcher.await.unwrap();
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();

    let q = |p: f64| {
        format!(
            "SELECT toUInt64(quantileExact({p})(dateDiff('microsecond', timestamp, inserted_at))) FROM events"
        )
    };
    let receipt = (
        setup.count(&q(0.5)).await as f64 / 1e3,
        setup.count(&q(0.99)).await as f64 / 1e3,
        setup.count(&q(1.0)).await as f64 / 1e3,
    );
    drop(run);
    Sustained {
        seconds,
        achieved: (batches * BATCH) as f64 / sent_for.as_secs_f64(),
        visible,
        receipt,
        used,
        events: (batches * BATCH) as f64,
        metrics,
    }
}

pub async fn bench() {
    let rate = env_number("HOGSTREAM_BENCH_RATE", 5_000);
    let seconds = env_number("HOGSTREAM_BENCH_LATENCY_SECONDS", 20);
    let setup = Setup::new(2, |_| String::new());
    let load = sustained(&setup, rate, seconds).await;
    setup.clean().await;
    let Sustained {
        achieved,
        visible,
        receipt: (r50, r99, rmax),
        used,
        events,
        ..
    } = load;
    println!(
        "\n## latency ({rate} events/s offered for {seconds} s in {BATCH}-event batches, achieved {achieved:.0}/s; `hogstream run`, 2 workers)"
    );
    println!("| what | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| capture's 200 → row queryable ({} sampled events) | {:.0} ms | {:.0} ms | {:.0} ms |",
        visible.len(),
        percentile(&visible, 0.5).as_secs_f64() * 1e3,
        percentile(&visible, 0.99).as_secs_f64() * 1e3,
        visible.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "| capture's receipt → insert (every event) | {r50:.0} ms | {r99:.0} ms | {rmax:.0} ms |"
    );
    let met = percentile(&visible, 0.99) < Duration::from_secs(1) && achieved >= 0.99 * 5_000.0;
    println!(
        "target p99 (200 → queryable) < 1 s at ≥ 5000 events/s: {}",
        if met { "met" } else { "NOT met" }
    );
    println!("\nCPU during the sustained load (until every event was stored):");
    println!("| process | CPU seconds per 100k events | cores on average |");
    println!("|---|---|---|");
    for (name, seconds, cores) in used {
        println!(
            "| {name} | {:.2} | {cores:.2} |",
            seconds / events * 100_000.0
        );
    }
}
