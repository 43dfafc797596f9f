//! Views end to end with the real broker and ClickHouse: the persons history (merges, aliases,
//! personless browsing, copies sent twice) spread over days and sessions, sent in several
//! orders with a SIGKILL of the engine in one and a two-process cluster in another, leaves
//! every built-in view's table (`FINAL`), and the example crate's view that reads persons, equal
//! to the same aggregate computed in SQL from the final `events` joined through
//! `person_distinct_id_overrides` (and `person`). A restart rebuilds the views
//! from the store, not from Kafka.

mod common;

use std::time::{Duration, Instant};

use common::persons::send;
use common::pipeline::{Pipeline, TEAM_ID, counts_sql};
use common::views::{VIEWS, check_views, joined, pairs, query_string, spread_history};
use hogstream_state::persons::reference::Rng;

#[test]
fn views_equal_sql_over_the_final_tables_in_any_order_and_after_a_sigkill() {
    let sent = spread_history();
    let n = sent.len() as u64;
    let in_order: Vec<usize> = (0..sent.len()).collect();
    let mut shuffled = in_order.clone();
    Rng(42).shuffle(&mut shuffled);
    let newest_first: Vec<usize> = in_order.iter().rev().copied().collect();
    let mut reshuffled = in_order.clone();
    Rng(7).shuffle(&mut reshuffled);
    // (label, processes, workers per process, partitions, order, SIGKILL midway)
    for (label, processes, workers, partitions, order, kill) in [
        ("as generated, 1 worker", 1, 1, 1, &in_order, false),
        (
            "shuffled, 2 workers, 3 partitions, SIGKILL midway",
            1,
            2,
            3,
            &shuffled,
            true,
        ),
        (
            "newest first, 2 workers, 4 partitions",
            1,
            2,
            4,
            &newest_first,
            false,
        ),
        (
            "shuffled otherwise, a cluster of 2 processes x 2 workers, 3 partitions",
            2,
            2,
            3,
            &reshuffled,
            false,
        ),
    ] {
        let p = Pipeline::with_config(workers, partitions, VIEWS);
        p.start_capture();
        p.start_engines(processes);
        send(&p, &sent, order, || {
            if kill {
                // Killed once it stored something, so the restart has views to rebuild.
                p.wait_until_something_is_stored(label);
                std::thread::sleep(Duration::from_millis(300));
                p.kill_engine();
                p.start_engine();
            }
        });
        let counts = p.wait_for(&counts_sql(), n * 1_000_000 + n, Duration::from_secs(180));
        assert_eq!(
            counts,
            n * 1_000_000 + n,
            "{label}: every event stored once"
        );
        check_views(&p, label);
        if kill {
            assert!(
                loaded_from_store(&p.engine_log()) > 0,
                "{label}: the restarted engine rebuilt its views from the store"
            );
        }
    }
}

/// The most view inputs an engine start read from its store, from the engine's log.
fn loaded_from_store(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("view input read from the store"))
        .filter_map(|l| {
            l.split("updates=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn a_restart_rebuilds_the_views_from_the_store_and_a_replay_of_the_topic_changes_nothing() {
    let sent = spread_history();
    let n = sent.len() as u64;
    let p = Pipeline::with_config(1, 2, VIEWS);
    p.start_capture();
    p.start_engine();
    let half = sent.len() / 2;
    let first: Vec<usize> = (0..half).collect();
    send(&p, &sent, &first, || {});
    let h = half as u64;
    assert_eq!(
        p.wait_for(&counts_sql(), h * 1_000_000 + h, Duration::from_secs(120)),
        h * 1_000_000 + h
    );
    check_views(&p, "first half");
    assert!(p.stop_engine(), "graceful stop");
    p.start_engine();
    let rest: Vec<usize> = (half..sent.len()).collect();
    send(&p, &sent, &rest, || {});
    assert_eq!(
        p.wait_for(&counts_sql(), n * 1_000_000 + n, Duration::from_secs(120)),
        n * 1_000_000 + n
    );
    check_views(&p, "after the restart");
    // The first half came back from the store: the restarted engine read only the second half
    // from Kafka (capture may have sent a retried batch twice, never the first half again).
    let read = p.counter("hogstream_events_in_total");
    assert!(
        read > 0 && read < n - h / 2,
        "the restarted engine read {read} events from Kafka; {} were sent after the restart",
        n - h
    );
    let log = p.engine_log();
    let loaded = loaded_from_store(&log);
    assert!(
        loaded >= h / 2,
        "the restart read {loaded} view inputs from the store for {h} events\n{log}"
    );

    // An operator replays the whole topic (runbook 8.3): every event arrives a second time,
    // and each view stays exactly as it was.
    let before: Vec<String> = pairs()
        .iter()
        .map(|(_, table, _)| query_string(&p, table))
        .collect();
    let read_before = p.counter("hogstream_events_in_total");
    let out = p.hogstream(&["replay"]);
    assert!(
        out.status.success(),
        "hogstream replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.counter("hogstream_events_in_total") < read_before + n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let read = p.counter("hogstream_events_in_total") - read_before;
    assert!(read >= n, "the engine read {read} replayed events of {n}");
    assert!(
        p.counter("hogstream_view_duplicate_events_total") > 0,
        "replayed events were recognised as counted"
    );
    // One more flush interval for the last epoch's rows, had any changed.
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<String> = pairs()
        .iter()
        .map(|(_, table, _)| query_string(&p, table))
        .collect();
    assert_eq!(after, before, "a replay changed a view");
    check_views(&p, "after a replay of the topic");
}

#[test]
fn a_window_counts_the_days_it_holds_exactly_and_events_older_than_it_not_at_all() {
    let p = Pipeline::with_config(
        2,
        2,
        "[[views]]\nview = \"daily_active_persons\"\nwindow_days = 3\n[[views]]\nview = \"events_per_day\"\nwindow_days = 3\n",
    );
    p.start_capture();
    p.start_engine();
    let now = chrono::Utc::now();
    // Persons active on several days, some of them long ago; one login merges two of them.
    let mut events = Vec::new();
    for (n, days_ago) in [0i64, 1, 2, 5, 10, 0, 1, 10, 2, 0].into_iter().enumerate() {
        events.push(serde_json::json!({
            "event": "$pageview",
            "distinct_id": format!("win-{}", n % 4),
            "uuid": uuid::Uuid::new_v4().to_string(),
            "timestamp": (now - chrono::Duration::days(days_ago)).to_rfc3339(),
        }));
    }
    events.push(serde_json::json!({
        "event": "$identify",
        "distinct_id": "win-0",
        "uuid": uuid::Uuid::new_v4().to_string(),
        "timestamp": now.to_rfc3339(),
        "properties": {"$anon_distinct_id": "win-1"},
    }));
    let n = events.len() as u64;
    assert_eq!(p.send_batch(&events), 200);
    assert_eq!(
        p.wait_for(&counts_sql(), n * 1_000_000 + n, Duration::from_secs(120)),
        n * 1_000_000 + n
    );
    let first_open = (now - chrono::Duration::days(2)).date_naive().to_string();
    let ev = joined();
    let lines = |select: String| {
        format!("SELECT arrayStringConcat(arraySort(groupArray(line)), '\\n') FROM ({select})")
    };
    let pairs = [
        (
            lines(format!(
                "SELECT concat(toString(day), ' ', toString(persons)) AS line FROM view_daily_active_persons FINAL WHERE team_id = {TEAM_ID}"
            )),
            lines(format!(
                "SELECT concat(toString(toDate(timestamp)), ' ', toString(uniqExact(person))) AS line FROM {ev} WHERE toDate(timestamp) >= toDate('{first_open}') GROUP BY toDate(timestamp)"
            )),
        ),
        (
            lines(format!(
                "SELECT concat(event, ' ', toString(day), ' ', toString(events)) AS line FROM view_events_per_day FINAL WHERE team_id = {TEAM_ID}"
            )),
            lines(format!(
                "SELECT concat(event, ' ', toString(toDate(timestamp)), ' ', toString(count())) AS line FROM {ev} WHERE toDate(timestamp) >= toDate('{first_open}') GROUP BY event, toDate(timestamp)"
            )),
        ),
    ];
    for label in ["running", "after a restart"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (table, reference) in &pairs {
            let want = query_string(&p, reference);
            assert!(
                want.lines().count() >= 3,
                "{label}: three days in the window:\n{want}"
            );
            let mut got = query_string(&p, table);
            while got != want && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(250));
                got = query_string(&p, table);
            }
            assert_eq!(
                got,
                want,
                "{label}: the window's days equal SQL, and older days have no row\n{}",
                p.engine_log()
            );
        }
        assert!(p.stop_engine(), "graceful stop");
        p.start_engine();
    }
}
