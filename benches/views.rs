//! Views: the cost per input event of the built-in views, and the memory their state holds.
//!
//! `cargo bench --bench views` runs each built-in view on one worker over 1M events of 100k
//! persons across a week, with merges (1% of the inputs re-point a distinct id to another
//! person), fed in 100 epochs of 10k, and prints microseconds per input event beside
//! differential dataflow's own published figure (about 1 µs per update on one worker) and
//! beside the cheapest view measured in the same run; and each view's state per active person:
//! the updates its arrangements hold (differential's own accounting), and the resident memory
//! of a process of its own less that of one running a view that keeps nothing (the inputs'
//! stand-in store, the runtime; an allocator keeps freed pages, so this reads high after
//! retractions). Then the same inputs arriving over 28 days, without and with a 7-day window.
//! `HOGSTREAM_BENCH_VIEW_EVENTS` and `HOGSTREAM_BENCH_VIEW_PERSONS` change the sizes.

use hogstream_engine::views::{
    Column, DailyActivePersons, DatedBy, EventsPerDay, FirstSeen, Input, Kind, Row, Rows,
    SessionsPerDay, TableSpec, View, ViewEvent, WeeklyActivePersons,
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
            key: vec![Column::new("day", Kind::Date)],
            values: vec![],
        }
    }

    // Dated, so that it can run with a window: the baseline of windowed views.
    fn dated_by(&self) -> Option<DatedBy> {
        Some(DatedBy {
            column: "day",
            reach_days: 0,
        })
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        input.events.flat_map(|_| None::<Row>)
    }
}

const ONE: &str = "HOGSTREAM_BENCH_VIEW_ONE";

/// Runs one view here and prints `seconds output_updates resident_bytes`.
/// Days of the long run, in which inputs arrive in day order (a few a day or two late).
const LONG_DAYS: usize = 28;

/// Input `i` of the long run, and the day it arrives on.
fn long_input(i: usize, events: usize, persons: usize) -> (i32, Update) {
    let today = 20_422 + (i * LONG_DAYS / events) as i32;
    let mut update = input(i, persons);
    if let Update::Event(e) = &mut update {
        let r = mix(i as u64 ^ 0x5eed);
        let late = if r.is_multiple_of(20) {
            1 + (r >> 8) % 2
        } else {
            0
        } as i32;
        let within = e.timestamp.rem_euclid(DAY);
        e.timestamp = i64::from(today - late) * DAY + within;
    }
    (today, update)
}

fn measure_one(name: &str, events: usize, persons: usize) {
    let epoch = move |epoch: usize| {
        let start = epoch * EPOCH_INPUTS;
        (start < events).then(|| {
            let batch = (start..(start + EPOCH_INPUTS).min(events))
                .map(|i| input(i, persons))
                .collect();
            (20_430, batch)
        })
    };
    let long = move |epoch: usize| {
        let start = epoch * EPOCH_INPUTS;
        (start < events).then(|| {
            let today = long_input(start, events, persons).0;
            let batch = (start..(start + EPOCH_INPUTS).min(events))
                .map(|i| long_input(i, events, persons).1)
                .collect();
            (today, batch)
        })
    };
    let m = match name {
        "nothing" => measure(Nothing, None, epoch),
        "events_per_day" => measure(EventsPerDay, None, epoch),
        "daily_active_persons" => measure(DailyActivePersons, None, epoch),
        "weekly_active_persons" => measure(WeeklyActivePersons, None, epoch),
        "first_seen" => measure(FirstSeen, None, epoch),
        "sessions_per_day" => measure(SessionsPerDay, None, epoch),
        "long-nothing" => measure(Nothing, None, long),
        "long-nothing-window" => measure(Nothing, Some(7), long),
        "long-daily_active_persons" => measure(DailyActivePersons, None, long),
        "long-daily_active_persons-window" => measure(DailyActivePersons, Some(7), long),
        "long-sessions_per_day" => measure(SessionsPerDay, None, long),
        "long-sessions_per_day-window" => measure(SessionsPerDay, Some(7), long),
        other => panic!("no view {other}"),
    };
    println!(
        "{} {} {} {}",
        m.seconds, m.output_updates, m.resident_bytes, m.arranged_updates
    );
}

/// Runs one view in a process of its own: (seconds, output updates, resident bytes, updates
/// held in its arrangements).
fn in_child(name: &str) -> (f64, u64, u64, u64) {
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
    assert_eq!(f.len(), 4, "{name} printed {text}");
    (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
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
    let (base_seconds, _, base_resident, _) = in_child("nothing");
    println!(
        "| view | seconds | µs per input | output updates | updates held per active person | resident bytes per active person |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| baseline: a view keeping nothing | {base_seconds:.2} | {:.2} | 0 | 0 | (resident {:.0} MB) |",
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
        let (seconds, updates, resident, held) = in_child(name);
        let micros = seconds * 1e6 / events as f64;
        per_input.insert(name, micros);
        println!(
            "| {name} | {seconds:.2} | {micros:.2} | {updates} | {:.1} | {:.0} |",
            held as f64 / persons as f64,
            resident.saturating_sub(base_resident) as f64 / persons as f64
        );
    }
    println!(
        "\ndaily_active_persons: {:.2} µs per input event (a merge moves every event of its distinct id); differential's published figure is about 1 µs per update on one worker; events_per_day, a single count, {:.2} µs in the same run",
        per_input["daily_active_persons"], per_input["events_per_day"]
    );

    println!(
        "\n## the same inputs arriving over {LONG_DAYS} days (5% of events a day or two late), without and with a 7-day window"
    );
    let (_, _, long_base, _) = in_child("long-nothing");
    let (_, _, long_window_base, _) = in_child("long-nothing-window");
    println!(
        "| view | seconds | µs per input | output updates | updates held per active person at the end | resident bytes per active person |"
    );
    println!("|---|---|---|---|---|---|");
    for name in [
        "long-daily_active_persons",
        "long-daily_active_persons-window",
        "long-sessions_per_day",
        "long-sessions_per_day-window",
    ] {
        let (seconds, updates, resident, held) = in_child(name);
        // Each beside a baseline that keeps the same inputs in the stand-in store.
        let base = if name.ends_with("-window") {
            long_window_base
        } else {
            long_base
        };
        println!(
            "| {} | {seconds:.2} | {:.2} | {updates} | {:.1} | {:.0} |",
            name.trim_start_matches("long-")
                .replace("-window", ", window_days = 7"),
            seconds * 1e6 / events as f64,
            held as f64 / persons as f64,
            resident.saturating_sub(base) as f64 / persons as f64
        );
    }
}
