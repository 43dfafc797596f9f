//! `capture`: events/s through capture for single events and 50-event gzip batches, with p50/p99
//! request latency and CPU per capture core (all of capture's threads, librdkafka's included),
//! with the producer idempotent and not, beside the same messages produced straight to Kafka.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use flate2::{Compression, write::GzEncoder};
use serde_json::{Value, json};

use crate::support::{
    CpuSample, Setup, TOKEN, cpu_by_thread, create_topic, env_number, percentile, produce,
    sample_event, service_pid, unique, wait_ready,
};

const CONCURRENCY: usize = 16;
/// Distinct request bodies each connection cycles through (events repeat; capture does not care).
const BODIES_PER_CONNECTION: usize = 64;

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// Events per `/batch` request in the batched rows.
pub const BATCH: usize = 50;

pub struct Load {
    pub events_per_second: f64,
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Sends requests for `seconds` from [`CONCURRENCY`] connections.
pub async fn load(url: String, batch: usize, seconds: u64) -> Load {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    // Bodies are made before the clock starts: the client shares the cores with capture.
    let bodies: Vec<Vec<Vec<u8>>> = (0..CONCURRENCY)
        .map(|t| {
            (0..BODIES_PER_CONNECTION)
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
                .collect()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    for bodies in bodies {
        let (client, url) = (client.clone(), url.clone());
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
    let rps = all.len() as f64 / secs;
    Load {
        events_per_second: rps * batch as f64,
        requests_per_second: rps,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    }
}

pub async fn bench() {
    let seconds = env_number("HOGSTREAM_BENCH_CAPTURE_SECONDS", 8) as u64;
    let raw_topic = unique("bench_raw");
    create_topic(&raw_topic).await;
    let raw_idempotent = produce(&raw_topic, 50_000, 5_000, true).await;
    let raw_plain = produce(&raw_topic, 50_000, 5_000, false).await;

    println!(
        "\n## capture ({CONCURRENCY} connections, {seconds} s per row; the client, the broker and ClickHouse share the 2 cores)"
    );
    println!(
        "| producer | what | events/s | requests/s | capture CPU (cores) | events/s per capture core | broker CPU (cores) | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| idempotent | baseline: rdkafka produce, no HTTP | {raw_idempotent:.0} | — | — | — | — | — | — |"
    );
    println!(
        "| not idempotent | baseline: rdkafka produce, no HTTP | {raw_plain:.0} | — | — | — | — | — | — |"
    );
    let mut threads = Vec::new();
    for idempotence in [true, false] {
        let setup = Setup::new(1, |_| {
            format!("[capture.kafka]\nidempotence = {idempotence}\n")
        });
        let capture = setup.spawn(&["capture"], "capture.log");
        wait_ready(&setup.url()).await;
        let label = if idempotence {
            "idempotent"
        } else {
            "not idempotent"
        };
        let pids = [
            ("capture", Some(capture.pid())),
            ("broker", service_pid("kafka")),
        ];
        for (batch, what) in [
            (1, "single events `/i/v0/e`"),
            (BATCH, "50-event gzip `/batch`"),
        ] {
            let before = CpuSample::take(&pids);
            let threads_before = cpu_by_thread(capture.pid());
            let l = load(setup.url(), batch, seconds).await;
            let used = CpuSample::take(&pids).since(&before);
            let (capture_cores, broker_cores) = (used[0].2, used[1].2);
            println!(
                "| {label} | capture, {what} | {:.0} | {:.0} | {capture_cores:.2} | {:.0} | {broker_cores:.2} | {:.1?} | {:.1?} |",
                l.events_per_second,
                l.requests_per_second,
                l.events_per_second / capture_cores.max(0.01),
                l.p50,
                l.p99
            );
            if batch == BATCH {
                let per_core = l.events_per_second / capture_cores.max(0.01);
                println!(
                    "|   | target ≥ 50000 events/s per capture core in batches: {} |",
                    if per_core >= 50_000.0 {
                        "met"
                    } else {
                        "NOT met"
                    }
                );
                let after = cpu_by_thread(capture.pid());
                let mut by_thread: Vec<(String, f64)> = after
                    .iter()
                    .map(|(name, s)| {
                        let used = s - threads_before.get(name).copied().unwrap_or(0.0);
                        (name.clone(), used / seconds as f64)
                    })
                    .filter(|(_, cores)| *cores >= 0.01)
                    .collect();
                by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
                threads.push((label, by_thread));
            }
        }
        drop(capture);
        setup.clean().await;
    }
    for (label, by_thread) in threads {
        let text: Vec<String> = by_thread
            .iter()
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        println!(
            "capture CPU by thread, 50-event batches, {label} (cores): {}",
            text.join(", ")
        );
    }
    crate::support::delete_topics(&raw_topic).await;
}
