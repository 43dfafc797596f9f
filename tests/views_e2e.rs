//! Views end to end with the real broker and ClickHouse: the persons history (merges, aliases,
//! personless browsing, copies sent twice) spread over days and sessions, sent in several
//! orders with a SIGKILL of the engine in one and a two-process cluster in another, leaves
//! every built-in view's table (`FINAL`), and the example crate's view that reads persons, equal
//! to the same aggregate computed in SQL from the final `events` joined through
//! `person_distinct_id_overrides` (and `person`). A restart rebuilds the views
//! from the store, not from Kafka.

mod common;

use std::time::{Duration, Instant};

use common::persons::{Sent, history, send};
use common::pipeline::{Pipeline, TEAM_ID, counts_sql};
use hogstream_state::persons::reference::Rng;
use serde_json::Value;

const VIEWS: &str = r#"
[[views]]
view = "daily_active_persons"
[[views]]
view = "weekly_active_persons"
[[views]]
view = "events_per_day"
[[views]]
view = "first_seen"
[[views]]
view = "sessions_per_day"
[[views]]
view = "active_persons_by_plan"
"#;

/// The history, its events moved over nine days and given sessions and referrers.
fn spread_history() -> Vec<Sent> {
    let mut sent = history();
    let mut rng = Rng(0x71e5);
    for s in &mut sent {
        let body = s.body.as_object_mut().unwrap();
        let ts = chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();
        let moved = ts + chrono::Duration::days(rng.below(9) as i64);
        body.insert("timestamp".into(), moved.to_rfc3339().into());
        let props = body
            .entry("properties")
            .or_insert_with(|| Value::Object(Default::default()))
            .as_object_mut()
            .unwrap();
        if rng.below(5) > 0 {
            props.insert("$session_id".into(), format!("s{}", rng.below(12)).into());
        }
        props.insert(
            "$referring_domain".into(),
            format!("r{}.com", rng.below(3)).into(),
        );
    }
    sent
}

/// Events with the person they join to through the overrides.
fn joined() -> String {
    format!(
        "(SELECT e.uuid AS uuid, e.event AS event, e.timestamp AS timestamp, e.properties AS properties,
                 if(o.person_id = toUUID('00000000-0000-0000-0000-000000000000'), e.person_id, o.person_id) AS person
          FROM events AS e FINAL
          LEFT JOIN (SELECT distinct_id, argMax(person_id, version) AS person_id
                     FROM person_distinct_id_overrides WHERE team_id = {TEAM_ID} GROUP BY distinct_id) AS o
          USING distinct_id
          WHERE e.team_id = {TEAM_ID})"
    )
}

/// Each view's table and its SQL reference, as sorted lines.
fn pairs() -> Vec<(&'static str, String, String)> {
    let ev = joined();
    let lines = |select: &str| {
        format!("SELECT arrayStringConcat(arraySort(groupArray(line)), '\\n') FROM ({select})")
    };
    vec![
        (
            "daily_active_persons",
            lines(&format!("SELECT concat(toString(day), ' ', toString(persons)) AS line FROM view_daily_active_persons FINAL WHERE team_id = {TEAM_ID}")),
            lines(&format!("SELECT concat(toString(toDate(timestamp)), ' ', toString(uniqExact(person))) AS line FROM {ev} GROUP BY toDate(timestamp)")),
        ),
        (
            "weekly_active_persons",
            lines(&format!("SELECT concat(toString(week), ' ', toString(persons)) AS line FROM view_weekly_active_persons FINAL WHERE team_id = {TEAM_ID}")),
            lines(&format!("SELECT concat(toString(toMonday(timestamp)), ' ', toString(uniqExact(person))) AS line FROM {ev} GROUP BY toMonday(timestamp)")),
        ),
        (
            "events_per_day",
            lines(&format!("SELECT concat(event, ' ', toString(day), ' ', toString(events)) AS line FROM view_events_per_day FINAL WHERE team_id = {TEAM_ID}")),
            lines(&format!("SELECT concat(event, ' ', toString(toDate(timestamp)), ' ', toString(count())) AS line FROM {ev} GROUP BY event, toDate(timestamp)")),
        ),
        (
            "first_seen",
            lines(&format!("SELECT concat(toString(person_id), ' ', toString(first_seen), ' ', first_event, ' ', initial_referring_domain) AS line FROM view_first_seen FINAL WHERE team_id = {TEAM_ID}")),
            lines(&format!(
                "SELECT concat(toString(person), ' ', toString(min(timestamp)), ' ',
                               argMin(event, (timestamp, toUInt128(uuid))), ' ',
                               argMin(JSONExtractString(properties, '$referring_domain'), (timestamp, toUInt128(uuid)))) AS line
                 FROM {ev} GROUP BY person"
            )),
        ),
        (
            "sessions_per_day",
            lines(&format!("SELECT concat(toString(day), ' ', toString(sessions), ' ', toString(duration_seconds), ' ', toString(bounces)) AS line FROM view_sessions_per_day FINAL WHERE team_id = {TEAM_ID}")),
            lines(&format!(
                "SELECT concat(toString(toDate(start)), ' ', toString(count()), ' ', toString(sum(intDiv(micros, 1000000))), ' ',
                               toString(countIf(pageviews <= 1 AND autocaptures = 0 AND micros < 10000000))) AS line
                 FROM (SELECT min(timestamp) AS start, dateDiff('microsecond', min(timestamp), max(timestamp)) AS micros,
                              countIf(event = '$pageview') AS pageviews, countIf(event = '$autocapture') AS autocaptures
                       FROM {ev} WHERE JSONExtractString(properties, '$session_id') != ''
                       GROUP BY JSONExtractString(properties, '$session_id'))
                 GROUP BY toDate(start)"
            )),
        ),
        (
            "active_persons_by_plan (example crate; reads persons)",
            lines(&format!("SELECT concat(toString(day), ' ', plan, ' ', toString(persons)) AS line FROM view_active_persons_by_plan FINAL WHERE team_id = {TEAM_ID}")),
            lines(&format!(
                "SELECT concat(toString(toDate(ev.timestamp)), ' ', p.plan, ' ', toString(uniqExact(ev.person))) AS line
                 FROM {ev} AS ev
                 INNER JOIN (SELECT id, JSONExtractString(properties, 'plan') AS plan FROM person FINAL
                             WHERE team_id = {TEAM_ID} AND is_deleted = 0 AND JSONType(properties, 'plan') = 'String') AS p
                 ON ev.person = p.id
                 GROUP BY toDate(ev.timestamp), p.plan"
            )),
        ),
    ]
}

fn query_string(p: &Pipeline, sql: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(p.clickhouse().query(sql).fetch_one::<String>())
        .unwrap_or_else(|e| panic!("{e}\n{sql}"))
}

/// Waits until every view equals its reference; fails with the first difference.
fn check_views(p: &Pipeline, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    for (view, table, reference) in pairs() {
        let want = query_string(p, &reference);
        assert!(
            want.lines().count() >= 2,
            "{label}: the reference of {view} is too small:\n{want}"
        );
        let mut got = query_string(p, &table);
        while got != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            got = query_string(p, &table);
        }
        assert_eq!(
            got,
            want,
            "{label}: view {view} (left) differs from SQL over the final tables (right)\n{}",
            p.engine_log()
        );
    }
}

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
                let deadline = Instant::now() + Duration::from_secs(60);
                while p
                    .query_u64(&format!(
                        "SELECT count() FROM events WHERE team_id = {TEAM_ID}"
                    ))
                    .unwrap_or(0)
                    == 0
                {
                    assert!(
                        Instant::now() < deadline,
                        "{label}: nothing stored before the kill"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
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

/// A counter of the running engine's `/metrics`.
fn counter(p: &Pipeline, name: &str) -> u64 {
    let text = reqwest::blocking::get(&p.metrics_url)
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
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
    let read = counter(&p, "hogstream_events_in_total");
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
    let read_before = counter(&p, "hogstream_events_in_total");
    let out = p.hogstream(&["replay"]);
    assert!(
        out.status.success(),
        "hogstream replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter(&p, "hogstream_events_in_total") < read_before + n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let read = counter(&p, "hogstream_events_in_total") - read_before;
    assert!(read >= n, "the engine read {read} replayed events of {n}");
    assert!(
        counter(&p, "hogstream_view_duplicate_events_total") > 0,
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
