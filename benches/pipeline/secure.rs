//! `secure`: what TLS and SCRAM cost. Capture (50-event gzip batches) and the engine (Kafka →
//! ClickHouse) run once through the plain ports and once through the secured ones (Kafka TLS +
//! SCRAM-SHA-512, ClickHouse HTTPS with a password), in the same run, on the same services.

use crate::capture::{BATCH, load};
use crate::engine::run_engine;
use crate::support::{
    CpuSample, Hops, PARTITIONS, Setup, env_number, produce, service_pid, wait_ready,
};

struct Figures {
    capture_events_per_second: f64,
    capture_cores: f64,
    engine_events_per_second: f64,
    engine_cpu_per_100k: f64,
}

async fn measure(hops: Hops, n: usize, seconds: u64) -> Figures {
    let setup = Setup::through(hops, 2, |_| String::new());
    let capture = setup.spawn(&["capture"], "capture.log");
    wait_ready(&setup.url()).await;
    let pids = [
        ("capture", Some(capture.pid())),
        ("broker", service_pid("kafka")),
    ];
    let before = CpuSample::take(&pids);
    let load = load(setup.url(), BATCH, seconds).await;
    let capture_cores = CpuSample::take(&pids).since(&before)[0].2;
    drop(capture);
    setup.clean().await;

    // The engine reads a topic filled beforehand, so only its own hops are timed.
    let setup = Setup::through(hops, 2, |_| String::new());
    produce(&setup.topic, n, 5_000, false).await;
    let engine = run_engine(&setup, n, None).await;
    setup.clean().await;
    Figures {
        capture_events_per_second: load.events_per_second,
        capture_cores,
        engine_events_per_second: engine.stored_per_second,
        engine_cpu_per_100k: engine.cpu_seconds / n as f64 * 100_000.0,
    }
}

pub async fn bench() {
    let n = env_number("HOGSTREAM_BENCH_ENGINE_EVENTS", 200_000);
    let seconds = env_number("HOGSTREAM_BENCH_CAPTURE_SECONDS", 8) as u64;
    let plain = measure(Hops::Plain, n, seconds).await;
    let secured = measure(Hops::Secured, n, seconds).await;
    println!(
        "\n## TLS + SCRAM against plaintext (capture: {BATCH}-event gzip batches for {seconds} s; engine: {n} events, {PARTITIONS} partitions, 2 workers)"
    );
    println!(
        "| hops | capture events/s | capture CPU (cores) | events/s per capture core | engine events/s | engine CPU-s per 100k |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, f) in [
        ("plaintext (baseline)", &plain),
        ("Kafka TLS + SCRAM-SHA-512, ClickHouse HTTPS", &secured),
    ] {
        println!(
            "| {label} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            f.capture_events_per_second,
            f.capture_cores,
            f.capture_events_per_second / f.capture_cores.max(0.01),
            f.engine_events_per_second,
            f.engine_cpu_per_100k
        );
    }
    println!(
        "ratio secured / plaintext: capture events/s {:.2}, per capture core {:.2}; engine events/s {:.2}, engine CPU per event {:.2}",
        secured.capture_events_per_second / plain.capture_events_per_second,
        (secured.capture_events_per_second / secured.capture_cores.max(0.01))
            / (plain.capture_events_per_second / plain.capture_cores.max(0.01)),
        secured.engine_events_per_second / plain.engine_events_per_second,
        secured.engine_cpu_per_100k / plain.engine_cpu_per_100k
    );
}
