//! `checkpoints`: what continuous state checkpoints to the object store cost the engine, each
//! row beside the same run without them:
//!
//! - events/s and engine CPU from a pre-filled topic, checkpoints every 2 s (harsher than any
//!   real interval), in alternating rounds;
//! - `hogstream run` at a sustained 5,000 events/s with checkpoints every minute: capture's 200
//!   → queryable p50/p99, CPU per 100k events, and the object store requests it made, per hour.

use std::time::Duration;

use crate::engine::{EngineRun, run_engine};
use crate::latency::{Sustained, sustained};
use crate::support::{
    PARTITIONS, Setup, checkpoints_section, counter_sum, env_number, percentile, produce,
};

async fn engine_round(n: usize, extra: String) -> (EngineRun, f64) {
    let setup = Setup::new(2, move |_| extra.clone());
    produce(&setup.topic, n, 5_000, false).await;
    let run = run_engine(&setup, n, None).await;
    let checkpoints = counter_sum(&run.metrics, "hogstream_checkpoints_total{outcome=\"ok\"}");
    setup.clean().await;
    (run, checkpoints)
}

pub async fn bench() {
    let n = env_number("HOGSTREAM_BENCH_CHECKPOINT_EVENTS", 600_000);
    let rounds = env_number("HOGSTREAM_BENCH_CHECKPOINT_ROUNDS", 3).max(1);
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..rounds {
        without.push(engine_round(n, String::new()).await.0);
        with.push(engine_round(n, checkpoints_section("2s")).await);
    }
    println!(
        "\n## checkpoints: the engine on {n} events of ~600 B ({PARTITIONS} partitions, 2 workers), {rounds} alternating rounds without and with checkpoints every 2 s"
    );
    println!(
        "| round | events/s without | events/s with | ratio | engine CPU s per 100k without | with | checkpoints made |"
    );
    println!("|---|---|---|---|---|---|---|");
    let per = |s: f64| s / n as f64 * 100_000.0;
    let mut ratios = Vec::new();
    for (i, (a, (b, made))) in without.iter().zip(&with).enumerate() {
        let ratio = b.stored_per_second / a.stored_per_second;
        ratios.push(ratio);
        println!(
            "| {} | {:.0} | {:.0} | {ratio:.2} | {:.2} | {:.2} | {made:.0} |",
            i + 1,
            a.stored_per_second,
            b.stored_per_second,
            per(a.cpu_seconds),
            per(b.cpu_seconds)
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "with / without, median round: {:.2} of the events/s",
        ratios[ratios.len() / 2]
    );

    let rate = env_number("HOGSTREAM_BENCH_RATE", 5_000);
    let seconds = env_number("HOGSTREAM_BENCH_CHECKPOINT_SECONDS", 150);
    let mut loads: Vec<(&str, Sustained)> = Vec::new();
    for (label, extra) in [
        ("no checkpoints", String::new()),
        ("checkpoints every minute", checkpoints_section("1m")),
    ] {
        let setup = Setup::new(2, move |_| extra.clone());
        loads.push((label, sustained(&setup, rate, seconds).await));
        setup.clean().await;
    }
    println!(
        "\n## checkpoints under a sustained {rate} events/s for {seconds} s (`hogstream run`, 2 workers)"
    );
    println!(
        "| run | achieved events/s | 200 → queryable p50 | p99 | max | hogstream CPU s per 100k | checkpoints | object store requests | per hour |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, l) in &loads {
        let requests = counter_sum(&l.metrics, hogstream_objects::REQUESTS);
        let checkpoints = counter_sum(&l.metrics, "hogstream_checkpoints_total{outcome=\"ok\"}");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {label} | {:.0} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} | {checkpoints:.0} | {requests:.0} | {:.0} |",
            l.achieved,
            ms(percentile(&l.visible, 0.5)),
            ms(percentile(&l.visible, 0.99)),
            ms(l.visible.last().copied().unwrap_or_default()),
            l.used[0].1 / l.events * 100_000.0,
            requests * 3600.0 / l.seconds as f64
        );
    }
}
