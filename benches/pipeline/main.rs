//! hogstream's pipeline benchmarks, each beside a baseline measured in the same run on the same
//! broker (Apache Kafka, started by `scripts/services.sh`) and ClickHouse:
//!
//! - `capture`: capture's events/s, latency and CPU per core, idempotent producer and not,
//!   beside rdkafka producing the same messages ([`capture`]);
//! - `engine`: the engine's events/s beside a bare passthrough ([`engine`]);
//! - `views`: the engine without views and with the built-in views ([`engine::bench_views`]);
//! - `latency`: capture's 200 → row queryable at a sustained rate, and CPU per 100k events of
//!   each process ([`latency`]);
//! - `replay`: `hogstream replay` messages/s beside rdkafka ([`operations`]);
//! - `idle`: CPU of hogstream and the broker with no traffic ([`operations`]);
//! - `secure`: capture and the engine through TLS + SCRAM and HTTPS beside plaintext ([`secure`]);
//! - `checkpoints` (only when named): the engine with state checkpoints to the object store
//!   beside the same runs without ([`checkpoints`]).
//!
//! Run with `scripts/bench.sh [capture|engine|latency|replay|idle|secure]` (starts the services, builds
//! in release); no argument runs them all. Sizes: `HOGSTREAM_BENCH_ENGINE_EVENTS` (200,000),
//! `HOGSTREAM_BENCH_RATE` (5,000 events/s), `HOGSTREAM_BENCH_LATENCY_SECONDS` (20),
//! `HOGSTREAM_BENCH_CAPTURE_SECONDS` (8), `HOGSTREAM_BENCH_REPLAY_MESSAGES` (100,000),
//! `HOGSTREAM_BENCH_IDLE_SECONDS` (20).

mod capture;
mod checkpoints;
mod engine;
mod latency;
mod operations;
mod secure;
mod support;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; anything else names the benchmarks to run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if run("capture") {
        capture::bench().await;
    }
    if run("engine") {
        engine::bench().await;
    }
    if run("views") {
        engine::bench_views().await;
    }
    if run("latency") {
        latency::bench().await;
    }
    if run("replay") {
        operations::bench_replay().await;
    }
    if run("idle") {
        operations::bench_idle().await;
    }
    if run("secure") {
        secure::bench().await;
    }
    // Not in the default set: it runs for about ten minutes.
    if wanted.iter().any(|w| w == "checkpoints") {
        checkpoints::bench().await;
    }
}
