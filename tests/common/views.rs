//! The built-in views (and the example crate's view that reads persons) with their references
//! in SQL over the final tables, shared by the view and state-recovery tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use hogstream_state::persons::reference::Rng;
use serde_json::Value;

use super::persons::{Sent, history};
use super::pipeline::{Pipeline, TEAM_ID};

pub const VIEWS: &str = r#"
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

/// The history, its events moved over nine days and given sessions and referrers (and their
/// person events made again from the moved bodies, for the reference model).
pub fn spread_history() -> Vec<Sent> {
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
    sent.into_iter().map(|s| Sent::from_body(s.body)).collect()
}

/// Events with the person they join to through the overrides.
pub fn joined() -> String {
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
pub fn pairs() -> Vec<(&'static str, String, String)> {
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

pub fn query_string(p: &Pipeline, sql: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(p.clickhouse().query(sql).fetch_one::<String>())
        .unwrap_or_else(|e| panic!("{e}\n{sql}"))
}

/// Waits until every view equals its reference; fails with the first difference.
pub fn check_views(p: &Pipeline, label: &str) {
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
