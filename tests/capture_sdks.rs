//! PostHog's real SDKs against a running `hogstream capture`, checked message by message on Kafka.
//!
//! Each test starts capture on its own topics, runs one SDK driver from `tests/sdk/` (the Python
//! `posthog` package, `posthog-node`, and `posthog-js` in Debian's headless Chromium), then reads
//! the topics back. The drivers record every HTTP request the SDK made, with its payload decoded,
//! so each Kafka message is compared with the event the SDK actually sent, the way PostHog's
//! capture would have written it (`docs/posthog-rules.md` §1):
//!
//! - topic: main; nothing on overflow, historical or the dead-letter topic;
//! - key `token:distinct_id`, the same partition for every message of a key, and the SDK's order
//!   kept within a request;
//! - value: exactly the `CapturedEvent` fields, `data` being the event as PostHog's `RawEvent`
//!   re-serializes it, `sent_at` from the request, `timestamp` from the clock-skew formula;
//! - headers `token`, `distinct_id`, `event`, `uuid`, `timestamp` (epoch ms), `now`.
//!
//! On top of that, each test checks the events it asked its SDK for (names, distinct ids,
//! properties), so a driver that sent nothing or something else cannot pass.
//!
//! Needs the broker (`scripts/services.sh start kafka`) and the SDKs (`scripts/install-sdks.sh`);
//! without them the tests fail, they never skip.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use common::capture::{Capture, MAIN_PARTITIONS, OTHER_PARTITIONS, Record, read_topic};
use serde_json::{Map, Value, json};
use uuid::Uuid;

const TOKEN: &str = "phc_hogstream_sdk_test";

/// Top-level fields of PostHog's `RawEvent`: `data` holds these and nothing else.
const RAW_EVENT_FIELDS: &[&str] = &[
    "token",
    "distinct_id",
    "uuid",
    "event",
    "properties",
    "timestamp",
    "offset",
    "$set",
    "$set_once",
];
/// Routes the SDKs may send events to.
const EVENT_PATHS: &[&str] = &["/e", "/i/v0/e", "/batch", "/capture", "/track", "/engage"];
/// Headers PostHog's capture puts on an ordinary event; `session_id` is optional.
const HEADERS: &[&str] = &["token", "distinct_id", "timestamp", "event", "uuid", "now"];

fn sdk_dir() -> PathBuf {
    common::repo_root().join("tests/sdk")
}

const INSTALL_HINT: &str = "install the SDKs with `scripts/install-sdks.sh`";

/// The project virtualenv's Python, with the `posthog` package importable.
fn python() -> PathBuf {
    let venv = std::env::var_os("HOGSTREAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".local/venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python virtualenv at {}: {INSTALL_HINT}",
        venv.display()
    );
    let out = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('posthog'))",
        ])
        .output()
        .expect("run the virtualenv's python");
    assert!(
        out.status.success(),
        "the `posthog` Python package is not installed in {}: {INSTALL_HINT}\n{}",
        venv.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let pinned = python_pin();
    assert_eq!(
        installed, pinned,
        "posthog {installed} is installed but tests/sdk/requirements.txt pins {pinned}: {INSTALL_HINT}"
    );
    python
}

/// `node`, and `tests/sdk/node_modules` holding the pinned npm packages.
fn node() -> PathBuf {
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`node` is not on PATH: install Node.js 20+ and then {INSTALL_HINT}"
    );
    for package in ["posthog-node", "posthog-js", "playwright-core"] {
        let manifest = sdk_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        let text = std::fs::read_to_string(&manifest).unwrap_or_else(|_| {
            panic!("{package} is not installed in tests/sdk/node_modules: {INSTALL_HINT}")
        });
        let installed = serde_json::from_str::<Value>(&text).unwrap()["version"]
            .as_str()
            .unwrap()
            .to_owned();
        let pinned = npm_pin(package);
        assert_eq!(
            installed, pinned,
            "{package} {installed} is installed but tests/sdk/package.json pins {pinned}: {INSTALL_HINT}"
        );
    }
    PathBuf::from("node")
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("HOGSTREAM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "no Chromium at {}: {INSTALL_HINT} (it installs Debian's `chromium`)",
        path.display()
    );
    path
}

fn python_pin() -> String {
    let text = std::fs::read_to_string(sdk_dir().join("requirements.txt")).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("posthog=="))
        .expect("requirements.txt pins posthog==VERSION")
        .trim()
        .to_owned()
}

fn npm_pin(package: &str) -> String {
    let text = std::fs::read_to_string(sdk_dir().join("package.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    manifest["dependencies"][package]
        .as_str()
        .unwrap_or_else(|| panic!("package.json pins {package}"))
        .to_owned()
}

/// What a driver run produced.
struct DriverRun {
    report: Value,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
}

/// Runs `program script CAPTURE_URL TOKEN RUN REPORT extra...` in `tests/sdk` and returns its
/// report; panics with everything useful when the driver fails or times out.
fn run_driver(
    capture: &mut Capture,
    program: &Path,
    script: &str,
    run: &str,
    extra: &[&str],
    timeout: Duration,
) -> DriverRun {
    let report_path = capture.dir.join(format!("{script}.report.json"));
    let stdout_path = capture.dir.join(format!("{script}.stdout"));
    let stderr_path = capture.dir.join(format!("{script}.stderr"));
    let started = Utc::now();
    let mut child = Command::new(program)
        .arg(sdk_dir().join(script))
        .args([capture.url.as_str(), TOKEN, run])
        .arg(&report_path)
        .args(extra)
        .current_dir(sdk_dir())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} {script}: {e}", program.display()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let finished = Utc::now();
    capture.assert_running();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let describe = || {
        format!(
            "stdout:\n{}\nstderr:\n{}\nreport: {}\ncapture log:\n{}",
            read(&stdout_path),
            read(&stderr_path),
            report_path.display(),
            capture.log()
        )
    };
    match status {
        None => panic!("{script} did not finish within {timeout:?}\n{}", describe()),
        Some(s) if !s.success() => panic!("{script} failed ({s})\n{}", describe()),
        Some(_) => {}
    }
    let report: Value = serde_json::from_str(&read(&report_path))
        .unwrap_or_else(|e| panic!("{script} wrote no valid report ({e})\n{}", describe()));
    assert_eq!(report["errors"], json!([]), "{script} reported errors");
    DriverRun {
        report,
        started,
        finished,
    }
}

/// One event as the SDK sent it, with the request context capture resolves it in.
#[derive(Debug, Clone)]
struct Sent {
    request: usize,
    original: Map<String, Value>,
    token: String,
    distinct_id: String,
    uuid: String,
    event: String,
    sent_at: Option<DateTime<Utc>>,
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// The events of every request in a driver report, resolved as PostHog's capture does: token from
/// the batch body, else the event, else `properties.token`; distinct_id from the event, else
/// `properties.distinct_id`, stringified; `sent_at` from the batch body, else the `_` query
/// parameter in milliseconds when it is after 2020.
fn sent_events(report: &Value) -> Vec<Sent> {
    let requests = report["requests"].as_array().expect("report has requests");
    assert!(!requests.is_empty(), "the SDK made no request at all");
    let mut out = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let path = r["path"].as_str().unwrap();
        let route = path.trim_end_matches('/');
        assert!(
            EVENT_PATHS.contains(&route),
            "the SDK called {path}, which is not a capture route: {r}"
        );
        assert_eq!(r["method"], "POST", "request {i}: {r}");
        assert_eq!(r["status"], 200, "request {i} was not answered 200: {r}");
        let payload = &r["payload"];
        let (events, batch_token, body_sent_at) = match payload {
            Value::Array(events) => (events.clone(), None, None),
            Value::Object(o) if o.get("batch").is_some_and(Value::is_array) => (
                o["batch"].as_array().unwrap().clone(),
                o.get("api_key")
                    .or_else(|| o.get("token"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                o.get("sent_at").and_then(Value::as_str).map(parse_time),
            ),
            Value::Object(_) => (vec![payload.clone()], None, None),
            other => panic!("request {i} has no JSON payload: {other}"),
        };
        let query_sent_at = form_pairs(r["query"].as_str().unwrap_or_default())
            .into_iter()
            .find(|(k, _)| k == "_")
            .and_then(|(_, v)| v.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis)
            .filter(|t| t.year() > 2020);
        let sent_at = body_sent_at.or(query_sent_at);
        assert!(!events.is_empty(), "request {i} carried no event: {r}");
        for e in events {
            let original = e
                .as_object()
                .unwrap_or_else(|| panic!("request {i} has a non-object event: {e}"))
                .clone();
            let props = original
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let token = batch_token
                .clone()
                .or_else(|| {
                    ["token", "$token", "api_key"]
                        .iter()
                        .find_map(|k| original.get(*k))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .or_else(|| {
                    props
                        .get("token")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| panic!("request {i}: event without a token: {e}"));
            let id = ["distinct_id", "$distinct_id"]
                .iter()
                .find_map(|k| original.get(*k).filter(|v| !v.is_null()))
                .or_else(|| props.get("distinct_id").filter(|v| !v.is_null()))
                .unwrap_or_else(|| panic!("request {i}: event without a distinct_id: {e}"));
            let distinct_id = id
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| id.to_string());
            let uuid = original
                .get("uuid")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("request {i}: the SDK sent no uuid: {e}"))
                .to_owned();
            let event = original["event"].as_str().unwrap().to_owned();
            out.push(Sent {
                request: i,
                original,
                token,
                distinct_id,
                uuid,
                event,
                sent_at,
            });
        }
    }
    out
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A Kafka message of the main topic, parsed.
#[derive(Debug, Clone)]
struct Captured {
    record: Record,
    value: Map<String, Value>,
    data: Map<String, Value>,
}

impl Captured {
    fn parse(record: Record) -> Self {
        let value: Value = serde_json::from_str(&record.value)
            .unwrap_or_else(|e| panic!("message value is not JSON ({e}): {}", record.value));
        let value = value
            .as_object()
            .unwrap_or_else(|| panic!("message value is not an object: {}", record.value))
            .clone();
        let data = value
            .get("data")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("`data` is not a JSON string: {}", record.value));
        let data: Value = serde_json::from_str(data)
            .unwrap_or_else(|e| panic!("`data` does not hold JSON ({e}): {data}"));
        let data = data
            .as_object()
            .unwrap_or_else(|| panic!("`data` is not an object: {data}"))
            .clone();
        Captured {
            record,
            value,
            data,
        }
    }

    fn str(&self, field: &str) -> &str {
        self.value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "`{field}` is missing or not a string in {}",
                    self.record.value
                )
            })
    }

    fn event(&self) -> &str {
        self.str("event")
    }

    fn distinct_id(&self) -> &str {
        self.str("distinct_id")
    }

    fn props(&self) -> &Map<String, Value> {
        self.data
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or_else(|| {
                panic!(
                    "`data.properties` is not an object in {}",
                    self.record.value
                )
            })
    }
}

/// Checks one message against the event the SDK sent, field by field.
fn check_message(sent: &Sent, m: &Captured, started: DateTime<Utc>, finished: DateTime<Utc>) {
    let ctx = format!(
        "event {:?} (uuid {}) → message {}/{}@{}",
        sent.event, sent.uuid, m.record.topic, m.record.partition, m.record.offset
    );

    // Value: exactly PostHog's CapturedEvent fields; the optional flags are false here, so absent.
    let keys: BTreeSet<&str> = m.value.keys().map(String::as_str).collect();
    let mut want: BTreeSet<&str> = [
        "uuid",
        "distinct_id",
        "ip",
        "data",
        "now",
        "token",
        "event",
        "timestamp",
    ]
    .into();
    if sent.sent_at.is_some() {
        want.insert("sent_at");
    }
    assert_eq!(keys, want, "{ctx}: value fields");
    assert_eq!(m.str("token"), TOKEN, "{ctx}: token");
    assert_eq!(sent.token, TOKEN, "{ctx}: the SDK sent another token");
    assert_eq!(m.str("distinct_id"), sent.distinct_id, "{ctx}: distinct_id");
    assert_eq!(m.str("event"), sent.event, "{ctx}: event");
    assert_eq!(
        m.str("ip"),
        "127.0.0.1",
        "{ctx}: ip (the SDK connected from 127.0.0.1 without X-Forwarded-For)"
    );
    let uuid = Uuid::parse_str(m.str("uuid"))
        .unwrap_or_else(|e| panic!("{ctx}: uuid {:?}: {e}", m.str("uuid")));
    assert_eq!(
        m.str("uuid"),
        uuid.hyphenated().to_string(),
        "{ctx}: uuid is lowercase hyphenated"
    );
    assert_eq!(
        uuid,
        Uuid::parse_str(&sent.uuid).unwrap(),
        "{ctx}: capture must keep the SDK's uuid"
    );

    // Key: token:distinct_id.
    assert_eq!(
        m.record.key.as_deref(),
        Some(format!("{TOKEN}:{}", sent.distinct_id).as_str()),
        "{ctx}: key"
    );

    // now: capture's receive time, while the driver ran.
    let now = parse_time(m.str("now"));
    let slack = TimeDelta::seconds(2);
    assert!(
        now >= started - slack && now <= finished + slack,
        "{ctx}: now {now} is outside the run [{started}, {finished}]"
    );

    // sent_at: the request's, to the microsecond.
    if let Some(expected) = sent.sent_at {
        let got = parse_time(m.str("sent_at"));
        assert_eq!(got, expected, "{ctx}: sent_at");
    }

    // timestamp: offset wins; else now + (timestamp − sent_at) unless $ignore_sent_at; else as sent.
    let timestamp = parse_time(m.str("timestamp"));
    let props = sent
        .original
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let ignore_sent_at = props.get("$ignore_sent_at") == Some(&Value::Bool(true));
    let client_ts = sent
        .original
        .get("timestamp")
        .and_then(Value::as_str)
        .map(parse_time);
    let expected = match (
        sent.original.get("offset").and_then(Value::as_i64),
        client_ts,
        sent.sent_at,
    ) {
        (Some(offset), _, _) => now - TimeDelta::milliseconds(offset),
        (None, Some(ts), Some(sent_at)) if !ignore_sent_at => now + (ts - sent_at),
        (None, Some(ts), _) => ts,
        (None, None, _) => now,
    };
    let diff = (timestamp - expected).abs();
    assert!(
        diff <= TimeDelta::milliseconds(1),
        "{ctx}: timestamp {timestamp} is not {expected} (now {now}, client timestamp {client_ts:?}, sent_at {:?})",
        sent.sent_at
    );

    // data: the event as PostHog's RawEvent serializes it.
    for k in m.data.keys() {
        assert!(
            RAW_EVENT_FIELDS.contains(&k.as_str()),
            "{ctx}: data has field {k:?}, which PostHog's RawEvent does not keep"
        );
    }
    let absent_or_null = |k: &str| m.data.get(k).is_none_or(Value::is_null);
    assert_eq!(
        m.data.get("event"),
        sent.original.get("event"),
        "{ctx}: data.event"
    );
    assert_eq!(
        m.data.get("uuid").and_then(Value::as_str),
        Some(sent.uuid.as_str()),
        "{ctx}: data.uuid"
    );
    let sent_props = sent
        .original
        .get("properties")
        .cloned()
        .unwrap_or_else(|| json!({}));
    assert_eq!(
        m.data.get("properties"),
        Some(&sent_props),
        "{ctx}: data.properties must be the SDK's, unchanged"
    );
    let original_id = ["distinct_id", "$distinct_id"]
        .iter()
        .find_map(|k| sent.original.get(*k));
    match original_id {
        Some(id) => assert_eq!(
            m.data.get("distinct_id"),
            Some(id),
            "{ctx}: data.distinct_id"
        ),
        None => assert!(
            absent_or_null("distinct_id"),
            "{ctx}: data.distinct_id was not sent"
        ),
    }
    for k in ["timestamp", "offset", "$set", "$set_once"] {
        match sent.original.get(k) {
            Some(v) => assert_eq!(m.data.get(k), Some(v), "{ctx}: data.{k}"),
            None => assert!(
                absent_or_null(k),
                "{ctx}: data.{k} was not sent but is {:?}",
                m.data.get(k)
            ),
        }
    }
    match ["token", "$token", "api_key"]
        .iter()
        .find_map(|k| sent.original.get(*k))
    {
        Some(t) => assert_eq!(m.data.get("token"), Some(t), "{ctx}: data.token"),
        None => assert!(
            absent_or_null("token") || m.data.get("token") == Some(&json!(TOKEN)),
            "{ctx}: data.token {:?}",
            m.data.get("token")
        ),
    }

    // Headers.
    let headers = m.record.header_map();
    let names: BTreeSet<&str> = headers.keys().map(String::as_str).collect();
    let mut want: BTreeSet<&str> = HEADERS.iter().copied().collect();
    if names.contains("session_id") {
        want.insert("session_id");
    }
    assert_eq!(names, want, "{ctx}: header names");
    assert_eq!(
        m.record.headers.len(),
        names.len(),
        "{ctx}: a header appears twice: {:?}",
        m.record.headers
    );
    let header = |k: &str| {
        headers[k]
            .as_deref()
            .unwrap_or_else(|| panic!("{ctx}: header {k} has no value"))
    };
    assert_eq!(header("token"), TOKEN, "{ctx}: header token");
    assert_eq!(
        header("distinct_id"),
        sent.distinct_id,
        "{ctx}: header distinct_id"
    );
    assert_eq!(header("event"), sent.event, "{ctx}: header event");
    assert_eq!(header("uuid"), m.str("uuid"), "{ctx}: header uuid");
    assert_eq!(header("now"), m.str("now"), "{ctx}: header now");
    assert_eq!(
        header("timestamp"),
        timestamp.timestamp_millis().to_string(),
        "{ctx}: header timestamp (epoch ms)"
    );
    if names.contains("session_id") {
        assert_eq!(
            Some(&json!(header("session_id"))),
            props.get("$session_id"),
            "{ctx}: header session_id"
        );
    }
}

/// Reads the topics and checks every message against what the SDK sent; returns the main
/// topic's messages in the order the SDK sent their events.
fn check_topics(capture: &Capture, run: &DriverRun) -> Vec<(Sent, Captured)> {
    let sent = sent_events(&run.report);
    for (topic, partitions) in [
        (&capture.topics.overflow, OTHER_PARTITIONS),
        (&capture.topics.historical, OTHER_PARTITIONS),
        (&capture.topics.dlq, OTHER_PARTITIONS),
    ] {
        let records = read_topic(&capture.brokers, topic, partitions);
        assert!(
            records.is_empty(),
            "{} messages on {topic}, which must stay empty: {records:#?}",
            records.len()
        );
    }
    let main: Vec<Captured> = read_topic(&capture.brokers, &capture.topics.main, MAIN_PARTITIONS)
        .into_iter()
        .map(Captured::parse)
        .collect();
    let sent_uuids: BTreeSet<&str> = sent.iter().map(|s| s.uuid.as_str()).collect();
    assert_eq!(sent_uuids.len(), sent.len(), "the SDK sent a uuid twice");
    let mut by_uuid: HashMap<String, Captured> = HashMap::new();
    for m in &main {
        let uuid = m.str("uuid").to_owned();
        assert!(
            by_uuid.insert(uuid.clone(), m.clone()).is_none(),
            "uuid {uuid} is on the main topic twice"
        );
    }
    let unexpected: Vec<&Captured> = main
        .iter()
        .filter(|m| !sent_uuids.contains(m.str("uuid")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "messages for events the SDK never sent: {unexpected:#?}"
    );
    assert_eq!(main.len(), sent.len(), "one message per event sent");

    let mut out = Vec::new();
    for s in &sent {
        let m = by_uuid.get(&s.uuid).unwrap_or_else(|| {
            panic!(
                "event {:?} (uuid {}) never reached the main topic",
                s.event, s.uuid
            )
        });
        check_message(s, m, run.started, run.finished);
        out.push((s.clone(), m.clone()));
    }

    // One partition per key; within a request, the SDK's order per key.
    let mut partition_of: BTreeMap<&str, i32> = BTreeMap::new();
    for m in &main {
        let key = m.record.key.as_deref().unwrap();
        let p = *partition_of.entry(key).or_insert(m.record.partition);
        assert_eq!(
            p, m.record.partition,
            "key {key} is on partitions {p} and {}",
            m.record.partition
        );
    }
    let mut last: BTreeMap<(usize, String), i64> = BTreeMap::new();
    for (s, m) in &out {
        let slot = (s.request, m.record.key.clone().unwrap());
        if let Some(prev) = last.insert(slot.clone(), m.record.offset) {
            assert!(
                prev < m.record.offset,
                "request {} key {}: {:?} at offset {} came before an earlier event at {prev}",
                s.request,
                slot.1,
                s.event,
                m.record.offset
            );
        }
    }
    if let Some((_, m)) = out.first() {
        eprintln!(
            "first message: {}/{}@{} key={:?} headers={:?}\n  value={}",
            m.record.topic,
            m.record.partition,
            m.record.offset,
            m.record.key,
            m.record.headers,
            m.record.value
        );
    }
    out
}

/// The messages of event `name`.
fn named<'a>(messages: &'a [(Sent, Captured)], name: &str) -> Vec<&'a Captured> {
    messages
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.event() == name)
        .collect()
}

fn one<'a>(messages: &'a [(Sent, Captured)], name: &str) -> &'a Captured {
    let found = named(messages, name);
    assert_eq!(
        found.len(),
        1,
        "exactly one {name:?} message, found {}",
        found.len()
    );
    found[0]
}

/// The properties every test sets on its "single" event, as each SDK receives them.
fn single_properties() -> Value {
    json!({
        "plan": "pro",
        "count": 3,
        "price": 9.5,
        "flag": true,
        "nothing": null,
        "nested": { "list": [1, "two", null, false], "deep": { "x": "y" } },
        "unicode": "héllo ✓ 日本 🦔",
        "quote": "a \"quoted\" \\ value",
    })
}

/// What `$groupidentify` carries for the group every test identifies.
fn group_properties(run: &str) -> Value {
    json!({
        "$group_type": "company",
        "$group_key": format!("{run}-acme"),
        "$group_set": { "name": "Acme", "employees": 42 },
    })
}

fn assert_props_include(m: &Captured, expected: &Value) {
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(m.props().get(k), Some(v), "{:?}: property {k}", m.event());
    }
}

fn assert_event_names(messages: &[(Sent, Captured)], expected: &[(&str, usize)]) {
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, m) in messages {
        *got.entry(m.event()).or_default() += 1;
    }
    let want: BTreeMap<&str, usize> = expected.iter().copied().collect();
    assert_eq!(got, want, "event names and counts on the main topic");
}

/// The batch items carry i = 0..5 in the SDK's order, on one key, at increasing offsets.
fn assert_batch_in_order(messages: &[(Sent, Captured)], name: &str, distinct_id: &str) {
    let items = named(messages, name);
    let is: Vec<Value> = items.iter().map(|m| m.props()["i"].clone()).collect();
    assert_eq!(
        is,
        (0..5).map(|i| json!(i)).collect::<Vec<_>>(),
        "{name}: one message per item, in order"
    );
    for w in items.windows(2) {
        assert_eq!(
            w[0].record.partition, w[1].record.partition,
            "{name}: one partition"
        );
        assert!(
            w[0].record.offset < w[1].record.offset,
            "{name}: offsets follow the SDK's order"
        );
    }
    for m in items {
        assert_eq!(m.distinct_id(), distinct_id, "{name}: distinct_id");
    }
}

fn assert_lib(messages: &[(Sent, Captured)], lib: &str, version: &str) {
    for (_, m) in messages {
        assert_eq!(
            m.props().get("$lib"),
            Some(&json!(lib)),
            "{:?}: $lib",
            m.event()
        );
        assert_eq!(
            m.props().get("$lib_version"),
            Some(&json!(version)),
            "{:?}: $lib_version",
            m.event()
        );
    }
}

/// How the requests were encoded, for the failure messages and the test log.
fn describe_requests(report: &Value) -> String {
    report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let n = match &r["payload"] {
                Value::Array(a) => format!("array of {}", a.len()),
                Value::Object(o) if o.contains_key("batch") => format!(
                    "batch object of {}",
                    o["batch"].as_array().map_or(0, Vec::len)
                ),
                _ => "single event".into(),
            };
            format!(
                "{} {}?{} content-type={} content-encoding={} decoded={} → {}",
                r["method"].as_str().unwrap_or_default(),
                r["path"].as_str().unwrap_or_default(),
                r["query"].as_str().unwrap_or_default(),
                r["headers"]["content-type"].as_str().unwrap_or("-"),
                r["headers"]["content-encoding"].as_str().unwrap_or("-"),
                r["encoding"].as_str().unwrap_or("-"),
                n
            )
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn posthog_python_events_reach_kafka_as_posthog_writes_them() {
    let python = python();
    let mut capture = Capture::start("sdk_python");
    let run = common::unique("py");
    let timed_uuid = Uuid::new_v4().to_string();
    let driver = run_driver(
        &mut capture,
        &python,
        "posthog_python.py",
        &run,
        &[&timed_uuid],
        Duration::from_secs(90),
    );
    eprintln!(
        "posthog-python requests:\n  {}",
        describe_requests(&driver.report)
    );
    let messages = check_topics(&capture, &driver);

    let user = format!("{run}-py-user");
    assert_event_names(
        &messages,
        &[
            ("sdk py single", 1),
            ("$set", 1),
            ("$groupidentify", 1),
            ("$create_alias", 1),
            ("sdk py timed", 1),
            ("sdk py batch item", 5),
            ("sdk py gzip", 1),
        ],
    );
    assert_lib(&messages, "posthog-python", &python_pin());

    let sent = &driver.report["sent"];
    let single = one(&messages, "sdk py single");
    assert_eq!(single.distinct_id(), user);
    assert_eq!(
        single.str("uuid"),
        sent["single"].as_str().unwrap(),
        "the uuid capture() returned"
    );
    assert_props_include(single, &single_properties());

    let set = one(&messages, "$set");
    assert_eq!(set.distinct_id(), user);
    assert_eq!(
        set.data.get("$set"),
        Some(&json!({ "email": format!("{run}@example.com"), "name": "Py Hog" }))
    );

    let group = one(&messages, "$groupidentify");
    assert_eq!(group.distinct_id(), user);
    assert_props_include(group, &group_properties(&run));

    let alias = one(&messages, "$create_alias");
    assert_eq!(alias.distinct_id(), format!("{run}-py-anon"));
    assert_eq!(alias.props().get("alias"), Some(&json!(user)));

    let timed = one(&messages, "sdk py timed");
    assert_eq!(timed.str("uuid"), timed_uuid, "the uuid given to capture()");
    assert_eq!(
        timed.props().get("$groups"),
        Some(&json!({ "company": format!("{run}-acme") }))
    );
    let age = parse_time(timed.str("now")) - parse_time(timed.str("timestamp"));
    assert!(
        (age - TimeDelta::seconds(90)).abs() < TimeDelta::seconds(5),
        "timestamp 90 s before now, got {age}"
    );

    assert_batch_in_order(&messages, "sdk py batch item", &user);
    let batch_uuids: Vec<&str> = named(&messages, "sdk py batch item")
        .iter()
        .map(|m| m.str("uuid"))
        .collect();
    let returned: Vec<&str> = sent["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        batch_uuids, returned,
        "the uuids capture() returned, in order"
    );

    let gz = one(&messages, "sdk py gzip");
    assert_eq!(gz.distinct_id(), format!("{run}-py-gzip"));
    assert_props_include(gz, &json!({ "compressed": true, "n": 1 }));

    // The SDK's transport, as recorded: plain JSON /batch/ and gzip /batch/, both with sent_at.
    let requests = driver.report["requests"].as_array().unwrap();
    let encodings: BTreeSet<&str> = requests
        .iter()
        .map(|r| r["encoding"].as_str().unwrap())
        .collect();
    assert_eq!(
        encodings,
        ["gzip", "none"].into(),
        "posthog-python sent plain and gzip bodies"
    );
    for (s, m) in &messages {
        assert!(
            s.sent_at.is_some(),
            "{:?}: /batch/ carries sent_at",
            s.event
        );
        assert!(m.value.contains_key("sent_at"));
    }
}

#[test]
fn posthog_node_events_reach_kafka_as_posthog_writes_them() {
    let node = node();
    let mut capture = Capture::start("sdk_node");
    let run = common::unique("node");
    let timed_uuid = Uuid::now_v7().to_string();
    let driver = run_driver(
        &mut capture,
        &node,
        "posthog_node.mjs",
        &run,
        &[&timed_uuid],
        Duration::from_secs(90),
    );
    eprintln!(
        "posthog-node requests:\n  {}",
        describe_requests(&driver.report)
    );
    let messages = check_topics(&capture, &driver);

    let user = format!("{run}-node-user");
    assert_event_names(
        &messages,
        &[
            ("sdk node single", 1),
            ("$identify", 1),
            ("$create_alias", 1),
            ("$groupidentify", 1),
            ("sdk node timed", 1),
            ("sdk node batch item", 5),
            ("sdk node immediate", 1),
            ("sdk node plain", 1),
        ],
    );
    assert_lib(&messages, "posthog-node", &npm_pin("posthog-node"));

    let single = one(&messages, "sdk node single");
    assert_eq!(single.distinct_id(), user);
    assert_props_include(single, &single_properties());

    let identify = one(&messages, "$identify");
    assert_eq!(identify.distinct_id(), user);
    assert_props_include(
        identify,
        &json!({ "$set": { "email": format!("{run}@example.com") }, "$set_once": { "first_seen_via": "sdk-test" } }),
    );

    let alias = one(&messages, "$create_alias");
    assert_eq!(alias.distinct_id(), user);
    assert_eq!(
        alias.props().get("alias"),
        Some(&json!(format!("{run}-node-alias")))
    );

    let group = one(&messages, "$groupidentify");
    assert_eq!(group.distinct_id(), user);
    assert_props_include(group, &group_properties(&run));

    let timed = one(&messages, "sdk node timed");
    assert_eq!(timed.str("uuid"), timed_uuid, "the uuid given to capture()");
    assert_eq!(
        timed.props().get("$groups"),
        Some(&json!({ "company": format!("{run}-acme") }))
    );
    let age = parse_time(timed.str("now")) - parse_time(timed.str("timestamp"));
    assert!(
        (age - TimeDelta::seconds(90)).abs() < TimeDelta::seconds(5),
        "timestamp 90 s before now, got {age}"
    );

    assert_batch_in_order(&messages, "sdk node batch item", &user);
    assert_props_include(
        one(&messages, "sdk node immediate"),
        &json!({ "immediate": true }),
    );
    let plain = one(&messages, "sdk node plain");
    assert_eq!(plain.distinct_id(), format!("{run}-node-plain"));
    assert_props_include(plain, &json!({ "compressed": false, "n": 1 }));

    let requests = driver.report["requests"].as_array().unwrap();
    let encodings: BTreeSet<&str> = requests
        .iter()
        .map(|r| r["encoding"].as_str().unwrap())
        .collect();
    assert_eq!(
        encodings,
        ["gzip", "none"].into(),
        "posthog-node sent gzip (default) and plain (disableCompression) bodies"
    );
}

#[test]
fn posthog_js_in_chromium_events_reach_kafka_as_posthog_writes_them() {
    let node = node();
    chromium();
    let mut capture = Capture::start("sdk_js");
    let run = common::unique("js");
    let driver = run_driver(
        &mut capture,
        &node,
        "posthog_js.mjs",
        &run,
        &[],
        Duration::from_secs(180),
    );
    eprintln!(
        "posthog-js requests:\n  {}",
        describe_requests(&driver.report)
    );
    let messages = check_topics(&capture, &driver);

    let anon = format!("{run}-js-anon");
    let user = format!("{run}-js-user");
    assert_event_names(
        &messages,
        &[
            ("$pageview", 1),
            ("sdk js single", 1),
            ("$identify", 1),
            ("$groupidentify", 1),
            ("$create_alias", 1),
            ("$set", 1),
            ("sdk js batch item", 5),
            ("sdk js instant", 1),
            ("sdk js plain", 1),
        ],
    );
    assert_lib(&messages, "web", &npm_pin("posthog-js"));
    let sent = &driver.report["sent"];
    for (_, m) in &messages {
        assert_eq!(
            m.props().get("token"),
            Some(&json!(TOKEN)),
            "{:?}: posthog-js puts the token in properties",
            m.event()
        );
        let session = if m.event() == "sdk js plain" {
            &sent["plain_session_id"]
        } else {
            &sent["session_id"]
        };
        assert!(session.is_string(), "the driver reports the session id");
        assert_eq!(
            m.props().get("$session_id"),
            Some(session),
            "{:?}: $session_id",
            m.event()
        );
    }

    // The page view happens on init, before or after identify depending on timing.
    let pageview = one(&messages, "$pageview");
    assert!(
        [anon.as_str(), user.as_str()].contains(&pageview.distinct_id()),
        "$pageview distinct_id {}",
        pageview.distinct_id()
    );
    assert!(
        pageview.props()["$current_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:") && u.contains(&run)),
        "$current_url {}",
        pageview.props()["$current_url"]
    );

    let single = one(&messages, "sdk js single");
    assert_eq!(single.distinct_id(), anon, "captured before identify");
    assert_eq!(
        single.str("uuid"),
        sent["single"].as_str().unwrap(),
        "the uuid posthog.capture returned"
    );
    assert_props_include(single, &single_properties());

    let identify = one(&messages, "$identify");
    assert_eq!(identify.distinct_id(), user);
    assert_eq!(
        identify.props().get("$anon_distinct_id"),
        Some(&json!(anon))
    );
    assert_eq!(
        identify.data.get("$set"),
        Some(&json!({ "email": format!("{run}@example.com") }))
    );
    assert_eq!(
        identify.data["$set_once"].get("first_seen_via"),
        Some(&json!("sdk-test"))
    );

    let group = one(&messages, "$groupidentify");
    assert_eq!(group.distinct_id(), user);
    assert_props_include(group, &group_properties(&run));

    let alias = one(&messages, "$create_alias");
    assert_eq!(alias.distinct_id(), user);
    assert_eq!(
        alias.props().get("alias"),
        Some(&json!(format!("{run}-js-alias")))
    );

    // setPersonProperties puts $set inside properties (identify puts it at the top level).
    let set = one(&messages, "$set");
    assert_eq!(set.distinct_id(), user);
    assert_props_include(set, &json!({ "$set": { "plan": "enterprise" } }));

    assert_batch_in_order(&messages, "sdk js batch item", &user);
    let batch_uuids: Vec<&str> = named(&messages, "sdk js batch item")
        .iter()
        .map(|m| m.str("uuid"))
        .collect();
    let returned: Vec<&str> = sent["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        batch_uuids, returned,
        "the uuids posthog.capture returned, in order"
    );

    let instant = one(&messages, "sdk js instant");
    assert_eq!(instant.str("uuid"), sent["instant"].as_str().unwrap());
    assert_props_include(instant, &json!({ "instant": true }));

    let plain = one(&messages, "sdk js plain");
    assert_eq!(plain.distinct_id(), format!("{run}-js-plain"));
    assert_eq!(plain.str("uuid"), sent["plain"].as_str().unwrap());
    assert_props_include(plain, &json!({ "compressed": false, "n": 1 }));

    // posthog-js's transport, as recorded: batch objects with sent_at on /e/, gzip (text/plain)
    // by default and plain JSON with compression disabled.
    let requests = driver.report["requests"].as_array().unwrap();
    let encodings: BTreeSet<&str> = requests
        .iter()
        .map(|r| r["encoding"].as_str().unwrap())
        .collect();
    assert_eq!(
        encodings,
        ["gzip", "none"].into(),
        "posthog-js sent gzip and plain bodies"
    );
    for (s, _) in &messages {
        assert!(
            s.sent_at.is_some(),
            "{:?}: posthog-js sends sent_at",
            s.event
        );
    }
}
