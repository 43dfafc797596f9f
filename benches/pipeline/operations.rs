//! What operators wait for and pay for when nothing happens:
//!
//! - `replay`: messages/s of `hogstream replay` re-producing a topic range (the whole command,
//!   start-up included), beside producing the same messages with rdkafka;
//! - `idle`: CPU of `hogstream run` and of the broker while the pipeline runs with no traffic,
//!   beside the broker (and ClickHouse) with no hogstream running, in the same run.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};

use crate::support::{
    CpuSample, PARTITIONS, Setup, brokers, create_topic, env_number, produce, service_pid,
    wait_ready,
};

fn total_messages(topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

pub async fn bench_replay() {
    let n = env_number("HOGSTREAM_BENCH_REPLAY_MESSAGES", 100_000);
    let setup = Setup::new(1, |_| String::new());
    let source = format!("{}_replay_source", setup.topic);
    create_topic(&source).await;
    let produced = produce(&source, n, 5_000, true).await;
    let into = format!("{}_replay_target", setup.topic);
    create_topic(&into).await;
    let started = Instant::now();
    setup.run(&["replay", "--topic", &source, "--into", &into]);
    let took = started.elapsed();
    let replayed = total_messages(&into);
    assert_eq!(replayed, n as i64, "every message replayed once");
    println!("\n## replay ({n} captured events, {PARTITIONS} partitions)");
    println!("| what | messages/s |");
    println!("|---|---|");
    println!("| baseline: rdkafka produce of the same messages (idempotent) | {produced:.0} |");
    println!(
        "| `hogstream replay --topic … --into …`, whole command | {:.0} ({n} in {took:.1?}) |",
        n as f64 / took.as_secs_f64()
    );
    setup.clean().await;
}

pub async fn bench_idle() {
    let seconds = env_number("HOGSTREAM_BENCH_IDLE_SECONDS", 20) as u64;
    let services = [
        ("broker", service_pid("kafka")),
        ("ClickHouse", service_pid("clickhouse")),
    ];
    let before = CpuSample::take(&services);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let without = CpuSample::take(&services).since(&before);

    let setup = Setup::new(2, |_| String::new());
    let run = setup.spawn(&["run"], "run.log");
    wait_ready(&setup.url()).await;
    // Start-up (topic metadata, consumer set-up, first flushes) is not idling.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pids = [("hogstream run", Some(run.pid())), services[0], services[1]];
    let before = CpuSample::take(&pids);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let with = CpuSample::take(&pids).since(&before);
    println!("\n## idle CPU ({seconds} s windows, no traffic)");
    println!("| process | without hogstream (cores) | with `hogstream run` idle (cores) |");
    println!("|---|---|---|");
    println!("| hogstream run | — | {:.3} |", with[0].2);
    for (i, (name, _, cores)) in without.iter().enumerate() {
        println!("| {name} | {cores:.3} | {:.3} |", with[i + 1].2);
    }
    drop(run);
    setup.clean().await;
}
