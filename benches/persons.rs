//! Person state at scale. Loads N persons (default 10 million; `cargo bench --bench persons --
//! <N>`) straight into the RocksDB state through the person stage (not through HTTP), then
//! reports bytes per person on disk, resident memory, and person lookups and updates per second
//! with a cold and a warm cache. The baseline, in the same run and on the same store, is a raw
//! RocksDB point read of the same records: the floor the person logic adds to.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use chrono::{TimeZone, Utc};
use hogstream_state::{
    StateStore,
    persons::{PersonEvent, PersonState, Processed, record_key, reference::Rng},
};
use serde_json::{Value, json};
use uuid::Uuid;

// The same allocator as the `hogstream` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TEAM: i64 = 1;
const BATCH: usize = 2_000;
const CACHE_BYTES: usize = 256 << 20;
const OPS: usize = 200_000;
const HOT_SET: usize = 20_000;

/// A posthog-js style anonymous distinct id (a UUIDv7 text) for person `i`.
fn distinct_id(i: usize) -> String {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | (i as u128) << 20 | 0xabcde)
        .to_string()
}

/// What a web SDK's first pageview writes: lifted properties in `$set`, initial ones in
/// `$set_once`, plus an email and a plan.
fn first_event(i: usize, n: u64) -> PersonEvent {
    let plan = ["free", "pro", "enterprise"][i % 3];
    let props = json!({
        "$set": {
            "email": format!("user{i}@example.com"),
            "plan": plan,
            "$browser": "Chrome",
            "$browser_version": 131,
            "$os": "Mac OS X",
            "$current_url": format!("https://app.example.com/projects/{}", i % 1000),
        },
        "$set_once": {
            "$initial_browser": "Chrome",
            "$initial_os": "Mac OS X",
            "$initial_referring_domain": "www.google.com",
            "$initial_utm_source": "newsletter",
        }
    });
    event(i, n, "$pageview", &props)
}

fn event(i: usize, n: u64, name: &str, props: &Value) -> PersonEvent {
    PersonEvent::from_event(
        TEAM,
        Uuid::from_u128(u128::from(n) << 64 | i as u128),
        Utc.timestamp_opt(1_790_000_000 + (n % 1_000_000) as i64, 0)
            .unwrap(),
        &distinct_id(i),
        name,
        props.as_object().expect("an object"),
        name != "lookup",
    )
}

/// A personless event: the read path (find the person, no write).
fn lookup(i: usize, n: u64) -> PersonEvent {
    event(i, n, "lookup", &json!({}))
}

fn update(i: usize, n: u64) -> PersonEvent {
    let plan = ["free", "pro"][(n % 2) as usize];
    event(
        i,
        n,
        "$pageview",
        &json!({"$set": {"plan": plan, "last_seen": n}}),
    )
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn run(state: &mut PersonState, store: &StateStore, events: Vec<PersonEvent>) -> Processed {
    let out = state.process(&events).expect("person state");
    out.writes.commit(store).expect("commit");
    out
}

/// Operations per second of `ops` events made by `make`, in batches.
fn measure(
    state: &mut PersonState,
    store: &StateStore,
    ids: &[usize],
    seq: &mut u64,
    make: fn(usize, u64) -> PersonEvent,
) -> f64 {
    let started = Instant::now();
    for chunk in ids.chunks(BATCH) {
        let events = chunk
            .iter()
            .map(|&i| {
                *seq += 1;
                make(i, *seq)
            })
            .collect();
        run(state, store, events);
    }
    ids.len() as f64 / started.elapsed().as_secs_f64()
}

fn raw_reads(store: &StateStore, ids: &[usize]) -> f64 {
    let started = Instant::now();
    let mut found = 0usize;
    for &i in ids {
        found += usize::from(
            store
                .get_state(&record_key(TEAM, &distinct_id(i)))
                .expect("read")
                .is_some(),
        );
    }
    assert_eq!(found, ids.len(), "every loaded person has a record");
    ids.len() as f64 / started.elapsed().as_secs_f64()
}

fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(10_000_000, |a| a.parse().expect("the number of persons"));
    let dir: PathBuf = std::env::var_os("HOGSTREAM_BENCH_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/bench/persons"),
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "persons benchmark: {n} persons, store {}, block cache {} MiB",
        dir.display(),
        CACHE_BYTES >> 20
    );

    let mut seq = 0u64;
    let load = {
        let store = StateStore::open(&dir, CACHE_BYTES).expect("open the store");
        let mut state = PersonState::new(store.clone(), HashMap::new()).expect("person state");
        let started = Instant::now();
        let mut last = Instant::now();
        for start in (0..n).step_by(BATCH) {
            let events = (start..(start + BATCH).min(n))
                .map(|i| {
                    seq += 1;
                    first_event(i, seq)
                })
                .collect();
            let out = run(&mut state, &store, events);
            assert!(
                out.changes.persons.persons.len() >= BATCH.min(n - start),
                "every first event creates a person"
            );
            if last.elapsed() > Duration::from_secs(15) {
                last = Instant::now();
                eprintln!(
                    "  loaded {} persons ({:.0}/s)",
                    start + BATCH,
                    (start + BATCH) as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        store.compact().expect("compact");
        rate
    };
    let disk = dir_bytes(&dir);
    println!();
    println!("| what | figure |");
    println!("|---|---|");
    println!("| load through the person stage | {load:.0} persons/s |");
    println!(
        "| disk after compaction | {:.2} GiB, {:.0} bytes/person |",
        disk as f64 / f64::from(1 << 30),
        disk as f64 / n as f64
    );
    println!(
        "| resident memory after load (peak) | {:.0} MiB ({:.0} MiB) |",
        rss_mib("VmRSS:"),
        rss_mib("VmHWM:")
    );

    let mut rng = Rng(7);
    let random: Vec<usize> = (0..OPS).map(|_| rng.below(n)).collect();
    let hot: Vec<usize> = (0..OPS).map(|k| random[k % HOT_SET.min(OPS)]).collect();
    let page_cache = if drop_page_cache() {
        "dropped"
    } else {
        "not droppable here: warm"
    };

    // Cold: a fresh process-level cache (RocksDB block cache); random persons out of all n.
    let store = StateStore::open(&dir, CACHE_BYTES).expect("reopen the store");
    let raw_cold = raw_reads(&store, &random[..OPS / 2]);
    let mut state = PersonState::new(store.clone(), HashMap::new()).expect("person state");
    let lookups_cold = measure(&mut state, &store, &random[OPS / 2..], &mut seq, lookup);
    let updates_cold = measure(&mut state, &store, &random, &mut seq, update);
    // Warm: a hot set of persons that fits the cache, read once before measuring.
    measure(
        &mut state,
        &store,
        &hot[..HOT_SET.min(OPS)],
        &mut seq,
        lookup,
    );
    let raw_warm = raw_reads(&store, &hot);
    let lookups_warm = measure(&mut state, &store, &hot, &mut seq, lookup);
    let updates_warm = measure(&mut state, &store, &hot, &mut seq, update);
    println!(
        "| baseline: raw RocksDB point read, cold (OS page cache {page_cache}) | {raw_cold:.0}/s |"
    );
    println!("| person lookups, cold | {lookups_cold:.0}/s |");
    println!("| person updates (`$set`), cold | {updates_cold:.0}/s |");
    println!(
        "| baseline: raw RocksDB point read, warm ({HOT_SET} hot persons) | {raw_warm:.0}/s |"
    );
    println!("| person lookups, warm | {lookups_warm:.0}/s |");
    println!("| person updates (`$set`), warm | {updates_warm:.0}/s |");
    println!(
        "| resident memory at the end (peak) | {:.0} MiB ({:.0} MiB) |",
        rss_mib("VmRSS:"),
        rss_mib("VmHWM:")
    );
}
