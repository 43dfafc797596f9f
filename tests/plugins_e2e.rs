//! Plugin transforms end to end with the real broker and ClickHouse: masking applied to events
//! and persons, filtered events not stored, a plugin that fails on an event leaves it whole and
//! recorded in `$plugins_failed`, and ingestion goes on.

mod common;

use std::time::Duration;

use clickhouse::Row;
use common::pipeline::{Pipeline, TEAM_ID};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PLUGINS: &str = r#"
[[plugins]]
plugin = "event-filter"
[plugins.config]
events = ["spam"]

[[plugins]]
plugin = "property-mask"
teams = [42]
[plugins.config]
drop = ["secret"]
hash = ["email"]
salt = "pepper"
"#;

#[derive(Row, Deserialize)]
struct Stored {
    event: String,
    properties: String,
    person_properties: String,
}

#[test]
fn masking_filtering_and_a_failing_plugin_in_clickhouse() {
    let p = Pipeline::with_config(1, 2, PLUGINS);
    p.start_capture();
    p.start_engine();
    let ev = |n: u32, name: &str, props: Value| json!({"event": name, "distinct_id": format!("user-{n}"), "uuid": format!("01950000-0000-7000-8000-{n:012}"), "properties": props});
    let batch = vec![
        ev(
            1,
            "$pageview",
            json!({"email": "a@example.com", "secret": "s3", "$set": {"email": "a@example.com"}}),
        ),
        ev(2, "spam", json!({"email": "b@example.com"})),
        // `email` is an object: property-mask cannot hash it and fails on this event only.
        ev(
            3,
            "$pageview",
            json!({"email": {"not": "a string"}, "secret": "kept"}),
        ),
        ev(4, "$pageview", json!({"plain": 1})),
    ];
    assert_eq!(p.send_batch(&batch), 200);
    let q = format!("SELECT count() FROM events FINAL WHERE team_id = {TEAM_ID}");
    assert_eq!(
        p.wait_for(&q, 3, Duration::from_secs(90)),
        3,
        "{}",
        p.engine_log()
    );

    let rows: Vec<Stored> = p.rows(&format!(
        "SELECT event, properties, person_properties FROM events FINAL WHERE team_id = {TEAM_ID} ORDER BY distinct_id"
    ));
    assert!(
        rows.iter().all(|r| r.event != "spam"),
        "the filter dropped spam"
    );
    let props: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.properties).unwrap())
        .collect();
    let hashed = hex::encode(Sha256::digest("peppera@example.com"));
    assert_eq!(props[0]["email"], json!(hashed));
    assert!(props[0].get("secret").is_none());
    assert_eq!(
        props[0]["$plugins_succeeded"],
        json!(["event-filter", "property-mask"])
    );
    let person: Value = serde_json::from_str(&rows[0].person_properties).unwrap();
    assert_eq!(person["email"], json!(hashed), "masked before persons");

    assert_eq!(
        props[1]["secret"],
        json!("kept"),
        "a failed plugin changes nothing"
    );
    assert_eq!(props[1]["$plugins_failed"], json!(["property-mask"]));
    assert_eq!(props[1]["$plugins_succeeded"], json!(["event-filter"]));
    assert_eq!(props[2]["plain"], json!(1));
}

#[test]
fn an_unknown_plugin_or_a_bad_setting_stops_start_up_with_a_clear_message() {
    let p = Pipeline::new(1, 1);
    let valid = std::fs::read_to_string(&p.config).unwrap();
    let run_with = |extra: &str, args: &[&str]| {
        std::fs::write(&p.config, format!("{valid}\n{extra}")).unwrap();
        let out = p.hogstream(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run_with("[[plugins]]\nplugin = \"geo\"\n", &["config", "check"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "[[plugins]] entry 1 (`geo`): unknown plugin; known: chaos, event-counter, event-filter, geoip, heartbeat, jsonl-export, kafka-export, property-mask, tag-internal, webhook"
        ),
        "{stderr}"
    );
    let bad =
        "[[plugins]]\nplugin = \"property-mask\"\n[plugins.config]\nhash = [\"email\"]\ntypo = 1\n";
    let (ok, stderr) = run_with(bad, &["engine"]);
    assert!(!ok);
    assert!(
        stderr.contains("property-mask") && stderr.contains("typo"),
        "{stderr}"
    );
}
