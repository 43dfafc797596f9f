//! Person state at scale. Loads N persons (default 10 million; `cargo bench --bench persons --
//! <N>`) straight into the RocksDB state through the person stage (not through HTTP), then
//! reports bytes per person on disk, resident memory, and person lookups and updates per second
//! with a cold and a warm cache. Two baselines, in the same run and on the same store: a raw
//! RocksDB point read of the same records (the floor the person logic adds to), and the person
//! stage on one state thread (what the engine's default `state_threads`, one per core, gains).
//! Both read a batch's records together (`StateStore::get_state_many`); the raw baseline reads
//! one at a time.
//!
//! A last section runs the engine's whole processing stage (decode, rules, persons, rows) on the
//! events of one team, as the worker that owns the team does, with one state thread and with the
//! default count. `cargo bench --bench persons -- stage` runs that section alone, each count
//! three times (the median is printed): the quick check after a change to the stage.
//!
//! `cargo bench --bench persons -- identified` counts the rows that identified-only traffic
//! (personless browsing, then a login) writes per user: override rows, persons, deletions.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{TimeZone, Utc};
use hogstream_engine::{
    normalize::Rules,
    process::Processor,
    record::SourceRecord,
    teams::{Team, Teams},
};
use hogstream_event::CapturedEvent;
use hogstream_sinks::OutputBatch;
use hogstream_state::{
    StateStore,
    persons::{PendingWrites, PersonEvent, PersonState, Processed, record_key, reference::Rng},
};
use serde_json::{Value, json};
use uuid::Uuid;

#[path = "persons/checkpoint.rs"]
mod checkpoint;

// The same allocator as the `hogstream` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TEAM: i64 = 1;
const BATCH: usize = 2_000;
const CACHE_BYTES: usize = 256 << 20;
const OPS: usize = 200_000;
/// Cold operations per measurement: every one is a disk read at first.
const COLD_OPS: usize = 50_000;
const HOT_SET: usize = 20_000;

/// A posthog-js style anonymous distinct id (a UUIDv7 text) for person `i`.
fn distinct_id(i: usize) -> String {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | (i as u128) << 20 | 0xabcde)
        .to_string()
}

/// What a web SDK's first pageview writes: lifted properties in `$set`, initial ones in
/// `$set_once`, plus an email and a plan.
fn first_event(i: usize, n: u64) -> PersonEvent<'static> {
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

fn event(i: usize, n: u64, name: &str, props: &Value) -> PersonEvent<'static> {
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
    .into_owned()
}

/// A personless event: the read path (find the person, no write).
fn lookup(i: usize, n: u64) -> PersonEvent<'static> {
    event(i, n, "lookup", &json!({}))
}

fn update(i: usize, n: u64) -> PersonEvent<'static> {
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

/// Loads `n` persons (one first pageview each) into a new store at `dir` through the person
/// stage on `threads` state threads, then compacts it; returns persons per second.
fn load(dir: &Path, n: usize, seq: &mut u64, threads: usize) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    pool(threads).install(|| {
        let store = StateStore::open(dir, CACHE_BYTES).expect("open the store");
        let mut state = PersonState::new(store.clone(), HashMap::new()).expect("person state");
        let started = Instant::now();
        let mut last = Instant::now();
        for start in (0..n).step_by(BATCH) {
            let events = (start..(start + BATCH).min(n))
                .map(|i| {
                    *seq += 1;
                    first_event(i, *seq)
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
    })
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
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
    make: fn(usize, u64) -> PersonEvent<'static>,
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

const STAGE_TOKEN: &str = "phc_bench";
const STAGE_EVENTS: usize = 200_000;
const STAGE_PERSONS: usize = 20_000;
/// The engine's default `max_poll_records`: the most one worker reads per step.
const STAGE_BATCH: usize = 5_000;

/// A web SDK's pageview as capture writes it to Kafka; every tenth one sets person properties.
fn stage_record(i: usize) -> SourceRecord {
    let mut properties = json!({
        "$current_url": format!("https://app.example.com/projects/{}", i % 1000),
        "$browser": "Firefox", "$browser_version": 133, "$os": "Linux",
        "$session_id": Uuid::from_u128(i as u128 / 20).to_string(),
        "$lib": "web", "$lib_version": "1.200.0",
        "$screen_height": 1080, "$screen_width": 1920, "plan": "team", "i": i,
    });
    if i.is_multiple_of(10) {
        let plan = ["free", "pro"][i % 2];
        properties["$set"] = json!({"plan": plan, "last_seen": i});
    }
    let at = Utc.timestamp_opt(1_790_000_000 + i as i64, 0).unwrap();
    let data = json!({"event": "$pageview", "properties": properties});
    let captured = CapturedEvent {
        uuid: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | i as u128),
        distinct_id: distinct_id(i % STAGE_PERSONS),
        ip: "127.0.0.1".into(),
        data: data.to_string(),
        now: hogstream_event::time::rfc3339(at),
        sent_at: None,
        token: STAGE_TOKEN.into(),
        event: "$pageview".into(),
        timestamp: hogstream_event::time::rfc3339(at),
        is_cookieless_mode: false,
        historical_migration: false,
    };
    SourceRecord {
        topic: "events_plugin_ingestion".into(),
        partition: 0,
        offset: i as i64,
        timestamp_ms: at.timestamp_millis(),
        key: Some(captured.partition_key().into_bytes()),
        route: hogstream_engine::teams::team_route(STAGE_TOKEN),
        force_personless: false,
        payload: serde_json::to_vec(&captured).expect("encodes"),
        headers: Default::default(),
        replay: false,
    }
}

/// Events per second through the engine's processing stage for one team, on `threads` state
/// threads, over a fresh store.
fn stage_rate(dir: &Path, threads: usize, records: &[SourceRecord]) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    let store = StateStore::open(dir, CACHE_BYTES).expect("open the store");
    let teams = Teams::new(vec![Team {
        id: TEAM,
        token: STAGE_TOKEN.into(),
        ..Default::default()
    }])
    .expect("one team");
    let mut processor = Processor::new(
        Arc::new(teams),
        Arc::new(Rules::default()),
        store.clone(),
        Arc::new(pool(threads)),
        hogstream_state::persons::DEFAULT_COMPONENT_CACHE,
    )
    .expect("a processor");
    let started = Instant::now();
    let mut rows = 0;
    for batch in records.chunks(STAGE_BATCH) {
        let mut out = OutputBatch::default();
        let writes = processor.process(batch.to_vec(), &mut out);
        PendingWrites::commit_all(&writes, &store).expect("commit");
        rows += out.events.len();
    }
    let rate = records.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(rows, records.len(), "every event becomes a row");
    rate
}

fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// The engine processing stage for one team, on one state thread and on the default count,
/// each measured `runs` times; prints the median of each.
fn stage_section(dir: &Path, state_threads: usize, runs: usize) {
    let records: Vec<SourceRecord> = (0..STAGE_EVENTS).map(stage_record).collect();
    let stage_dir = dir.with_file_name("stage");
    let median = |threads: usize| {
        let mut rates: Vec<f64> = (0..runs)
            .map(|_| stage_rate(&stage_dir, threads, &records))
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let one = median(1);
    let many = median(state_threads);
    println!();
    println!(
        "engine processing stage, one team ({STAGE_EVENTS} pageviews of {STAGE_PERSONS} persons, batches of {STAGE_BATCH}, median of {runs}):"
    );
    println!("| state threads | events/s |");
    println!("|---|---|");
    println!("| 1 (baseline) | {one:.0} |");
    println!("| {state_threads} | {many:.0} ({:.1}x) |", many / one);
}

/// The events of identified-only user `i` (posthog-js `person_profiles: 'identified_only'`):
/// three personless pageviews of the browser's anonymous id, a login (`$identify`), two events
/// of the user. `late`: the pageviews arrive after the rest (a queue that flushed late).
fn identified_only(i: usize, late: bool) -> Vec<PersonEvent<'static>> {
    let anon = format!("anon-{i}");
    let user = format!("user-{i}@example.com");
    let at = |k: u64| {
        Utc.timestamp_opt(1_790_000_000 + (i as i64) * 10 + k as i64, 0)
            .unwrap()
    };
    let uuid = |k: u64| Uuid::from_u128((i as u128) << 8 | u128::from(k));
    let personless = |k: u64| {
        let props = json!({"$process_person_profile": false});
        PersonEvent::from_event(
            TEAM,
            uuid(k),
            at(k),
            &anon,
            "$pageview",
            props.as_object().unwrap(),
            false,
        )
        .into_owned()
    };
    let person = |k: u64, name: &str, props: Value| {
        PersonEvent::from_event(
            TEAM,
            uuid(k),
            at(k),
            &user,
            name,
            props.as_object().unwrap(),
            true,
        )
        .into_owned()
    };
    let mut events = vec![
        personless(0),
        personless(1),
        personless(2),
        person(
            3,
            "$identify",
            json!({"$anon_distinct_id": anon, "$set": {"email": user}}),
        ),
        person(4, "$pageview", json!({"$set": {"plan": "free"}})),
        person(5, "$pageview", json!({})),
    ];
    if late {
        // The personless pageviews come after the login and the user's events.
        events.rotate_left(3);
    }
    events
}

/// Override, person and deleted-person rows per identified user for identified-only traffic.
fn identified_section(dir: &Path, users: usize) {
    println!(
        "\n## identified-only traffic: {users} users (3 personless pageviews, a login, 2 events each)"
    );
    println!(
        "| run | override rows per user | person rows per user | deleted-person rows per user |"
    );
    println!("|---|---|---|---|");
    let runs: [(&str, bool, bool); 3] = [
        ("in time order", false, false),
        (
            "the pageviews arriving after the login, in a later batch",
            true,
            false,
        ),
        (
            "every event read again after a crash (the previous rule for every new merge)",
            false,
            true,
        ),
    ];
    for (run_no, (label, late, replay)) in runs.into_iter().enumerate() {
        // A store of its own per run: a closed store's directory is not reused.
        let dir = dir.join(format!("identified-{run_no}"));
        let _ = std::fs::remove_dir_all(&dir);
        let store = StateStore::open(&dir, CACHE_BYTES).expect("open the store");
        let mut state = PersonState::new(store.clone(), HashMap::new()).expect("person state");
        let (mut overrides, mut persons, mut deleted) = (0usize, 0usize, 0usize);
        for start in (0..users).step_by(BATCH / 6) {
            let events: Vec<PersonEvent> = (start..(start + BATCH / 6).min(users))
                .flat_map(|i| identified_only(i, late))
                .map(|e| PersonEvent { replay, ..e })
                .collect();
            // With `late`, each user's pageviews (rotated last) go in a batch of their own.
            let (now, later): (Vec<_>, Vec<_>) = events
                .into_iter()
                .enumerate()
                .partition(|(n, _)| !late || n % 6 < 3);
            for batch in [now, later] {
                let batch: Vec<PersonEvent> = batch.into_iter().map(|(_, e)| e).collect();
                if batch.is_empty() {
                    continue;
                }
                let out = run(&mut state, &store, batch);
                let rows = &out.changes.persons;
                overrides += rows.overrides.len();
                persons += rows.persons.iter().filter(|p| !p.is_deleted).count();
                deleted += rows.persons.iter().filter(|p| p.is_deleted).count();
            }
        }
        let per = |n: usize| n as f64 / users as f64;
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} |",
            per(overrides),
            per(persons),
            per(deleted)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let dir: PathBuf = std::env::var_os("HOGSTREAM_BENCH_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/bench/persons"),
        PathBuf::from,
    );
    // The engine's default `state_threads`.
    let state_threads = std::thread::available_parallelism().map_or(2, usize::from);
    if arg.as_deref() == Some("stage") {
        stage_section(&dir, state_threads, 3);
        return;
    }
    if arg.as_deref() == Some("identified") {
        identified_section(&dir, 100_000);
        return;
    }
    if arg.as_deref() == Some("checkpoint") {
        let n = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .nth(1)
            .map_or(10_000_000, |a| a.parse().expect("the number of persons"));
        checkpoint::section(&dir, n, state_threads);
        return;
    }
    let n: usize = arg.map_or(10_000_000, |a| a.parse().expect("the number of persons"));
    println!(
        "persons benchmark: {n} persons, store {}, block cache {} MiB",
        dir.display(),
        CACHE_BYTES >> 20
    );
    let mut seq = 0u64;
    let parallel = pool(state_threads);
    let load = load(&dir, n, &mut seq, state_threads);
    let disk = dir_bytes(&dir);
    println!();
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| load through the person stage ({state_threads} state threads) | {load:.0} persons/s |"
    );
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
    // Other random persons for every cold measurement, so none reads what another cached.
    let mut cold_sets = (0..5)
        .map(|_| (0..COLD_OPS).map(|_| rng.below(n)).collect::<Vec<_>>())
        .collect::<Vec<_>>()
        .into_iter();
    let mut cold_set = || cold_sets.next().expect("enough cold sets");
    let hot_set: Vec<usize> = (0..HOT_SET).map(|_| rng.below(n)).collect();
    let hot: Vec<usize> = hot_set.iter().copied().cycle().take(OPS).collect();
    let page_cache = if drop_page_cache() {
        "dropped"
    } else {
        "not droppable here: warm"
    };

    // Cold: the OS page cache dropped and a fresh block cache (the store reopened) before each.
    let raw_cold = {
        let store = StateStore::open(&dir, CACHE_BYTES).expect("reopen the store");
        raw_reads(&store, &cold_set())
    };
    println!(
        "| baseline: raw RocksDB point read, one at a time, cold (OS page cache {page_cache}) | {raw_cold:.0}/s |"
    );
    let mut rows = Vec::new();
    for threads in [1, state_threads] {
        let pool = pool(threads);
        drop_page_cache();
        let store = StateStore::open(&dir, CACHE_BYTES).expect("reopen the store");
        let mut state = PersonState::new(store.clone(), HashMap::new()).expect("person state");
        let (lookups, updates) = pool.install(|| {
            let lookups = measure(&mut state, &store, &cold_set(), &mut seq, lookup);
            let updates = measure(&mut state, &store, &cold_set(), &mut seq, update);
            (lookups, updates)
        });
        rows.push((threads, "cold", lookups, updates));
    }
    // Warm: a hot set of persons that fits the cache, read once before measuring.
    let store = StateStore::open(&dir, CACHE_BYTES).expect("reopen the store");
    let mut state = PersonState::new(store.clone(), HashMap::new()).expect("person state");
    parallel.install(|| measure(&mut state, &store, &hot[..HOT_SET], &mut seq, lookup));
    let raw_warm = raw_reads(&store, &hot);
    println!(
        "| baseline: raw RocksDB point read, one at a time, warm ({HOT_SET} hot persons) | {raw_warm:.0}/s |"
    );
    for threads in [1, state_threads] {
        let pool = pool(threads);
        let (lookups, updates) = pool.install(|| {
            let lookups = measure(&mut state, &store, &hot, &mut seq, lookup);
            let updates = measure(&mut state, &store, &hot, &mut seq, update);
            (lookups, updates)
        });
        rows.push((threads, "warm", lookups, updates));
    }
    for (threads, cache, lookups, updates) in &rows {
        let base = rows
            .iter()
            .find(|r| r.0 == 1 && r.1 == *cache)
            .expect("the one-thread baseline");
        let versus = |v: f64, b: f64| {
            if *threads == 1 {
                "baseline".to_string()
            } else {
                format!("{:.1}x", v / b)
            }
        };
        println!(
            "| person lookups, {cache}, {threads} state thread(s) | {lookups:.0}/s ({}) |",
            versus(*lookups, base.2)
        );
        println!(
            "| person updates (`$set`), {cache}, {threads} state thread(s) | {updates:.0}/s ({}) |",
            versus(*updates, base.3)
        );
    }
    println!(
        "| resident memory at the end (peak) | {:.0} MiB ({:.0} MiB) |",
        rss_mib("VmRSS:"),
        rss_mib("VmHWM:")
    );

    stage_section(&dir, state_threads, 1);
}
