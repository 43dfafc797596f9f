//! The monitoring that operators install: the alert rules parse and pass their unit tests
//! (promtool), every alert names a runbook section that exists and names it back, and a real
//! Prometheus scraping a pipeline under load answers every query of the dashboard with data, so
//! a renamed or missing metric fails here.

mod common;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::pipeline::{Pipeline, TOKEN, event};
use common::prometheus::Prometheus;
use rdkafka::{
    ClientConfig,
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};
use serde_json::{Value, json};

fn monitoring() -> PathBuf {
    common::repo_root().join("monitoring")
}

/// Runs `promtool` (Debian's `prometheus` package, installed by `scripts/install.sh`).
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool is installed by scripts/install.sh (Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_parse_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// `(alert name, runbook anchor)` of every alert in `alerts.yml`.
fn alerts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            current = Some(name.to_owned());
        } else if let Some(link) = line.strip_prefix("runbook: ") {
            let link = link.trim_matches('"');
            let anchor = link
                .strip_prefix("docs/runbook.md#")
                .unwrap_or_else(|| panic!("runbook link {link} is not docs/runbook.md#…"));
            out.push((
                current.take().expect("a runbook line belongs to an alert"),
                anchor.to_owned(),
            ));
        }
    }
    out
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_names_a_runbook_section_that_names_it_back() {
    let runbook = std::fs::read_to_string(common::repo_root().join("docs/runbook.md")).unwrap();
    let mut sections = std::collections::BTreeMap::new();
    let mut current = String::new();
    let mut in_code = false;
    for line in runbook.lines() {
        // A `#` in a fenced block is a shell comment or a printed line, not a heading.
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if line.starts_with('#') && !in_code {
            current = anchor(line);
            sections.insert(current.clone(), String::new());
        } else if let Some(body) = sections.get_mut(&current) {
            body.push_str(line);
            body.push('\n');
        }
    }
    let alerts = alerts();
    assert!(alerts.len() >= 14, "{alerts:?}");
    for (alert, anchor) in &alerts {
        let body = sections
            .get(anchor)
            .unwrap_or_else(|| panic!("{alert}: docs/runbook.md has no section #{anchor}"));
        assert!(
            body.contains(&format!("**{alert}**")),
            "{alert}: section #{anchor} does not name it"
        );
    }
}

/// Every `expr` of the dashboard's panels, with the panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring().join("dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// Messages the engine cannot decode, written straight into the input topic: dead letters.
fn produce_garbage(p: &Pipeline, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &p.brokers)
        .create()
        .unwrap();
    for i in 0..n {
        let payload = format!("not an event {i}");
        producer
            .send(BaseRecord::<(), str>::to(&p.topic).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_real_prometheus_answers_every_dashboard_query_for_a_pipeline_under_load() {
    let export = std::env::temp_dir().join(common::unique("monitoring_export"));
    let p = Pipeline::with_config(
        2,
        2,
        &format!(
            r#"
[capture.overflow]
force_overflow = ["{TOKEN}:hot-user"]
{checkpoints}
[[plugins]]
plugin = "jsonl-export"
id = "export"
start = "earliest"
flush_interval = "1s"
[plugins.config]
directory = "{}"
"#,
            export.display(),
            checkpoints = common::objects::checkpoints_section(
                &common::unique("monitoring-checkpoints"),
                "3s",
                false
            ),
        ),
    );
    p.start_capture();
    p.start_engine();
    let prometheus = Prometheus::watching(&p, &monitoring().join("alerts.yml"));

    // Load for 25 s: ordinary events, a hot user sent to overflow, an unknown token, dead letters.
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(25) {
        let mut batch: Vec<Value> = (0..40)
            .map(|k| event(i + k, uuid::Uuid::now_v7()))
            .collect();
        batch.push(json!({"event": "hot", "distinct_id": "hot-user", "properties": {}}));
        assert_eq!(p.send_batch(&batch), 200);
        assert_eq!(
            p.send_batch_with_token("phc_nobody_has_this", &[event(i, uuid::Uuid::now_v7())]),
            200
        );
        if i % 400 == 0 {
            produce_garbage(&p, 3);
        }
        i += 40;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Rates over [5m] windows need two scrapes of each series after its first sample.
    std::thread::sleep(Duration::from_secs(3));

    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        let data = prometheus.get("/api/v1/query", &[("query", expr.as_str())]);
        let result = data["result"].as_array().cloned().unwrap_or_default();
        if result.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}\nengine log:\n{}",
        empty.join("\n"),
        p.engine_log()
    );

    // The rules are loaded and evaluate without errors on real series.
    let rules = prometheus.get("/api/v1/rules", &[]);
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            names.insert(rule["name"].as_str().unwrap().to_owned());
        }
    }
    let expected: BTreeSet<String> = alerts().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, expected, "every alert of alerts.yml is loaded");
    let _ = std::fs::remove_dir_all(&export);
}
