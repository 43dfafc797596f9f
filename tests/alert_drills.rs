//! Alerts that fire on the faults they name, drilled against the real services: a real
//! Prometheus scrapes capture and the engine every second and evaluates `monitoring/alerts.yml`
//! as shipped, but for its `for:` durations, shortened to a few seconds so the test need not wait
//! them out (except the ClickHouse outage's own alert, whose shipped `for:` must page within 3
//! minutes). Each drill makes one real fault under a steady load (ClickHouse stopped, a broker
//! killed, the engine killed, a destination's target down), waits for the alert written for it
//! to fire, checks that no alert fired that the fault does not explain, ends the fault and waits
//! for the alert to resolve. During the ClickHouse outage the dashboard's ClickHouse, readiness
//! and lag panels are read, and must show it.
//!
//! The drills stop services other tests use, so they take turns (and live in their own binary).

mod common;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::broker::FreshBroker;
use common::pipeline::{Pipeline, TEAM_ID, event};
use common::prometheus::Prometheus;
use common::webhook::{Receiver, start_receiver};
use serde_json::Value;

/// One fault at a time.
static DRILL: Mutex<()> = Mutex::new(());

/// How long an alert may take to fire or resolve once its fault starts or ends: the probes'
/// 10 s, a scrape, the shortened `for:`, and margin.
const PATIENCE: Duration = Duration::from_secs(90);

/// `monitoring/alerts.yml` with every `for:` shortened to 5 s but those of `as_shipped`, the
/// rest as shipped.
fn drill_rules(dir: &std::path::Path, as_shipped: &[&str]) -> PathBuf {
    let shipped =
        std::fs::read_to_string(common::repo_root().join("monitoring/alerts.yml")).unwrap();
    let mut alert = "";
    let rules: String = shipped
        .lines()
        .map(|l| {
            if let Some(name) = l.trim_start().strip_prefix("- alert: ") {
                alert = name;
            }
            match l.trim_start().strip_prefix("for: ") {
                Some(_) if !as_shipped.contains(&alert) => {
                    format!("{}for: 5s", &l[..l.len() - l.trim_start().len()])
                }
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(rules, shipped, "the drill shortens the rules' `for:`");
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("alerts.yml");
    std::fs::write(&path, rules).unwrap();
    path
}

/// A pipeline under a steady load (a batch of 10 events every 200 ms) watched by Prometheus.
struct Drill {
    p: Pipeline,
    prometheus: Prometheus,
    load: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// Every alert seen firing since the drill began.
    fired: BTreeSet<String>,
}

impl Drill {
    /// Starts `p` under load, watched by Prometheus with the drill's rules (`as_shipped`: the
    /// alerts whose `for:` stays as shipped).
    fn start(p: Pipeline, as_shipped: &[&str]) -> Self {
        p.start_capture();
        p.start_engine();
        let prometheus = Prometheus::watching(&p, &drill_rules(&p.dir.join("rules"), as_shipped));
        let stop = Arc::new(AtomicBool::new(false));
        let (url, halt) = (p.capture_url.clone(), Arc::clone(&stop));
        let load = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut i = 0;
            while !halt.load(Ordering::Relaxed) {
                let events: Vec<Value> = (0..10)
                    .map(|k| event(i + k, uuid::Uuid::now_v7()))
                    .collect();
                // Whatever capture answers (503 while the broker is down): the load goes on.
                let _ = client
                    .post(format!("{url}/batch"))
                    .json(&serde_json::json!({"api_key": common::pipeline::TOKEN, "batch": events}))
                    .timeout(Duration::from_secs(15))
                    .send();
                i += 10;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let mut drill = Drill {
            p,
            prometheus,
            load: Some((stop, load)),
            fired: BTreeSet::new(),
        };
        drill.settle();
        drill
    }

    /// Waits until events are stored, Prometheus scrapes both targets and nothing fires.
    fn settle(&mut self) {
        let stored = format!("SELECT count() FROM events WHERE team_id = {TEAM_ID}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let up = self.value("min(up)").unwrap_or(0.0);
            let rows = self.p.query_u64(&stored).unwrap_or(0);
            if up == 1.0 && rows > 0 && self.value("min(hogstream_ready)") == Some(1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the pipeline did not settle\n{}",
                self.p.engine_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // Rates need a few scrapes; then the baseline is quiet.
        std::thread::sleep(Duration::from_secs(8));
        let firing = self.firing();
        assert!(
            firing.is_empty(),
            "alerts firing before any fault: {firing:?}"
        );
    }

    /// The alerts firing now.
    fn firing(&self) -> BTreeSet<String> {
        let data = self.prometheus.get(
            "/api/v1/query",
            &[("query", "ALERTS{alertstate=\"firing\"}")],
        );
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["metric"]["alertname"].as_str().map(str::to_owned))
            .collect()
    }

    /// The single value of `query` now, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let data = self.prometheus.get("/api/v1/query", &[("query", query)]);
        data["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// Waits until `alert` is firing (`true`) or no longer firing (`false`), noting every alert
    /// seen firing meanwhile.
    fn wait(&mut self, alert: &str, firing: bool) {
        self.wait_for(alert, firing, PATIENCE);
    }

    fn wait_for(&mut self, alert: &str, firing: bool, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let now = self.firing();
            self.fired.extend(now.iter().cloned());
            if now.contains(alert) == firing {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{alert} did not {} within {patience:?}; firing: {now:?}\n{}",
                if firing { "fire" } else { "resolve" },
                self.p.engine_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every alert that fired during the drill is one the fault explains.
    fn only_explained(&self, explained: &[&str]) {
        let unexplained: Vec<&String> = self
            .fired
            .iter()
            .filter(|a| !explained.contains(&a.as_str()))
            .collect();
        assert!(
            unexplained.is_empty(),
            "alerts fired that the fault does not explain: {unexplained:?} (fired: {:?})",
            self.fired
        );
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        if let Some((stop, load)) = self.load.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = load.join();
        }
    }
}

/// Starts a stopped shared service again when dropped, also when a drill fails midway: the
/// tests after it need it.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = Command::new(common::repo_root().join("scripts/services.sh"))
            .args(["start", self.0])
            .status();
    }
}

/// The values of the dashboard panel titled `title`, one per query, now.
fn panel(d: &Drill, title: &str) -> Vec<Option<f64>> {
    let text =
        std::fs::read_to_string(common::repo_root().join("monitoring/dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let panel = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"));
    panel["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| d.value(t["expr"].as_str().unwrap()))
        .collect()
}

#[test]
fn clickhouse_down_pages_within_3_minutes_with_the_shipped_rule_and_the_dashboard_shows_it() {
    let _turn = DRILL.lock().unwrap_or_else(|e| e.into_inner());
    // This one as shipped: the page must come within 3 minutes with the real `for:`.
    let mut d = Drill::start(Pipeline::new(1, 2), &["HogstreamClickHouseDown"]);
    let health = "ClickHouse up, engine ready, backpressure";
    let lag = "Ingestion lag by topic (messages)";
    let before = (panel(&d, health), panel(&d, lag));
    assert_eq!(before.0[0], Some(1.0), "ClickHouse up before the fault");
    assert_eq!(before.0[1], Some(1.0), "engine ready before the fault");

    common::services(&["stop", "clickhouse"]);
    let _restart = Restart("clickhouse");
    let outage = Instant::now();
    d.wait_for("HogstreamClickHouseDown", true, Duration::from_secs(240));
    let paged_after = outage.elapsed();
    // The lag measured while the engine is held back: it grows with the load.
    std::thread::sleep(Duration::from_secs(12));
    let during = (panel(&d, health), panel(&d, lag));
    common::services(&["start", "clickhouse"]);
    d.wait("HogstreamClickHouseDown", false);

    assert_eq!(during.0[0], Some(0.0), "the ClickHouse panel shows it down");
    assert_eq!(during.0[1], Some(0.0), "the readiness panel shows it");
    let (lag_before, lag_during) = (before.1[0].unwrap_or(0.0), during.1[0].unwrap_or(0.0));
    assert!(
        lag_during > lag_before + 50.0,
        "the lag panel grows during the outage: {lag_before} → {lag_during}"
    );
    assert!(
        paged_after < Duration::from_secs(180),
        "a ClickHouse outage paged after {paged_after:?}, with the shipped `for:` of 2 minutes"
    );
    d.only_explained(&[
        "HogstreamClickHouseDown",
        "HogstreamEngineNotReady",
        "HogstreamClickHouseInsertErrors",
        "HogstreamBackpressure",
        "HogstreamEventsStuck",
        "HogstreamIngestionLagGrowing",
        "HogstreamLatencyHigh",
    ]);
}

#[test]
fn a_killed_broker_fires_kafka_down_and_capture_unavailable_until_it_is_back() {
    let _turn = DRILL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = FreshBroker::start();
    let mut d = Drill::start(Pipeline::on_broker(&broker.brokers, 1, 2), &[]);
    broker.services(&["kill", "kafka"]);
    d.wait("HogstreamKafkaDown", true);
    d.wait("HogstreamCaptureUnavailable", true);
    broker.services(&["start", "kafka"]);
    d.wait("HogstreamKafkaDown", false);
    d.wait("HogstreamCaptureUnavailable", false);
    d.only_explained(&[
        "HogstreamKafkaDown",
        "HogstreamCaptureUnavailable",
        "HogstreamEngineNotReady",
        "HogstreamEventsStuck",
        "HogstreamIngestionLagGrowing",
        "HogstreamLatencyHigh",
    ]);
}

#[test]
fn a_killed_engine_fires_engine_not_ready_until_it_is_back() {
    let _turn = DRILL.lock().unwrap_or_else(|e| e.into_inner());
    let mut d = Drill::start(Pipeline::new(1, 2), &[]);
    d.p.kill_engine();
    d.wait("HogstreamEngineNotReady", true);
    d.p.start_engine();
    d.wait("HogstreamEngineNotReady", false);
    d.only_explained(&["HogstreamEngineNotReady"]);
}

#[test]
fn a_destination_whose_target_is_down_fires_until_it_delivers_again() {
    let _turn = DRILL.lock().unwrap_or_else(|e| e.into_inner());
    let receiver = Receiver::default();
    let addr = start_receiver(receiver.clone());
    let p = Pipeline::with_config(
        1,
        2,
        &format!(
            r#"
[[plugins]]
plugin = "webhook"
id = "drill"
retry_backoff = "200ms"
max_attempts = 1000
batch_size = 10
flush_interval = "200ms"
[plugins.config]
url = "http://{addr}/hook"
"#
        ),
    );
    let mut d = Drill::start(p, &[]);
    receiver.down.store(true, Ordering::SeqCst);
    d.wait("HogstreamDestinationFailing", true);
    receiver.down.store(false, Ordering::SeqCst);
    d.wait("HogstreamDestinationFailing", false);
    assert!(
        receiver.refused.load(Ordering::SeqCst) > 0,
        "the target refused deliveries"
    );
    d.only_explained(&["HogstreamDestinationFailing"]);
}
