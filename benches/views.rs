//! Views: the cost per input event of the built-in views, and the memory their state holds.
//!
//! `cargo bench --bench views` runs each built-in view on one worker over 1M events of 100k
//! persons across a week, with merges (1% of the inputs re-point a distinct id to another
//! person), fed in 100 epochs of 10k, and prints microseconds per input event beside
//! differential dataflow's own published figure (about 1 µs per update on one worker) and
//! beside the cheapest view measured in the same run; and the memory each view's state holds,
//! per active person: every view runs in a process of its own, beside one that runs a view
//! keeping nothing, whose resident memory (the inputs' stand-in store, the runtime) is
//! subtracted.
//! `HOGSTREAM_BENCH_VIEW_EVENTS` and `HOGSTREAM_BENCH_VIEW_PERSONS` change the sizes.

use hogstream_engine::views::{
    Column, DailyActivePersons, EventsPerDay, FirstSeen, Input, Kind, Row, Rows, SessionsPerDay,
    TableSpec, View, ViewEvent, WeeklyActivePersons,
    testing::{Update, measure},
};
use uuid::Uuid;

const DAY: i64 = 86_400_000_000;
const EPOCH_INPUTS: usize = 10_000;

fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A stateless pseudo-random number for input `i`.
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

fn input(i: usize, persons: usize) -> Update {
    let r = mix(i as u64);
    let person = (r % persons as u64) as usize;
    if r.is_multiple_of(100) {
        // A merge: this person's distinct id now belongs to another person.
        let other = (mix(r) % persons as u64) as u128;
        return Update::Override {
            team_id: 1,
            distinct_id: format!("u{person}"),
            person: Uuid::from_u128(other),
        };
    }
    let day = (r >> 20) % 7;
    Update::Event(ViewEvent {
        team_id: 1,
        timestamp: (20_422 + day as i64) * DAY + ((r >> 30) % 86_400_000_000) as i64,
        uuid: Uuid::from_u128(i as u128),
        event: if r.is_multiple_of(7) {
            "$autocapture"
        } else {
            "$pageview"
        }
        .into(),
        distinct_id: format!("u{person}"),
        person: Uuid::from_u128(person as u128),
        properties: format!(
            r#"{{"$session_id":"s{}-{day}","$referring_domain":"r{}.com"}}"#,
            person,
            r % 5
        )
        .as_str()
        .into(),
    })
}

/// A view that keeps nothing: the baseline of time and memory.
struct Nothing;

impl View for Nothing {
    fn name(&self) -> &'static str {
        "nothing"
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![Column::new("k", Kind::Int64)],
            values: vec![],
        }
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        input.events.flat_map(|_| None::<Row>)
    }
}

const ONE: &str = "HOGSTREAM_BENCH_VIEW_ONE";

/// Runs one view here and prints `seconds output_updates resident_bytes`.
fn measure_one(name: &str, events: usize, persons: usize) {
    let epoch = move |epoch: usize| {
        let start = epoch * EPOCH_INPUTS;
        (start < events).then(|| {
            (start..(start + EPOCH_INPUTS).min(events))
                .map(|i| input(i, persons))
                .collect()
        })
    };
    let m = match name {
        "nothing" => measure(Nothing, epoch),
        "events_per_day" => measure(EventsPerDay, epoch),
        "daily_active_persons" => measure(DailyActivePersons, epoch),
        "weekly_active_persons" => measure(WeeklyActivePersons, epoch),
        "first_seen" => measure(FirstSeen, epoch),
        "sessions_per_day" => measure(SessionsPerDay, epoch),
        other => panic!("no view {other}"),
    };
    println!("{} {} {}", m.seconds, m.output_updates, m.resident_bytes);
}

/// Runs one view in a process of its own: (seconds, output updates, resident bytes).
fn in_child(name: &str) -> (f64, u64, u64) {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(ONE, name)
        .output()
        .expect("the bench runs itself");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{name} printed {text}");
    (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
    )
}

fn main() {
    let events = number("HOGSTREAM_BENCH_VIEW_EVENTS", 1_000_000);
    let persons = number("HOGSTREAM_BENCH_VIEW_PERSONS", 100_000);
    if let Ok(name) = std::env::var(ONE) {
        measure_one(&name, events, persons);
        return;
    }
    println!(
        "\n## views ({events} inputs, 1% of them merges, {persons} persons over 7 days, epochs of {EPOCH_INPUTS}, one worker)"
    );
    let (base_seconds, _, base_resident) = in_child("nothing");
    println!("| view | seconds | µs per input | output updates | state, bytes per active person |");
    println!("|---|---|---|---|---|");
    println!(
        "| baseline: a view keeping nothing | {base_seconds:.2} | {:.2} | 0 | (resident {:.0} MB) |",
        base_seconds * 1e6 / events as f64,
        base_resident as f64 / 1e6
    );
    let mut per_input = std::collections::BTreeMap::new();
    for name in [
        "events_per_day",
        "daily_active_persons",
        "weekly_active_persons",
        "first_seen",
        "sessions_per_day",
    ] {
        let (seconds, updates, resident) = in_child(name);
        let micros = seconds * 1e6 / events as f64;
        per_input.insert(name, micros);
        println!(
            "| {name} | {seconds:.2} | {micros:.2} | {updates} | {:.0} |",
            resident.saturating_sub(base_resident) as f64 / persons as f64
        );
    }
    println!(
        "\ndaily_active_persons: {:.2} µs per input event (a merge moves every event of its distinct id); differential's published figure is about 1 µs per update on one worker; events_per_day, a single count, {:.2} µs in the same run",
        per_input["daily_active_persons"], per_input["events_per_day"]
    );
}
