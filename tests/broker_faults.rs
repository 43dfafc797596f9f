//! Broker faults end to end on Apache Kafka, under load: a SIGKILL of the broker while events
//! are being sent, a graceful restart, and a single 5,000-event `/batch` request; and a pipeline
//! started against a broker that was formatted a moment ago, as on a fresh machine.
//!
//! During an outage capture answers 503 (never 200 for an event that is not stored), both
//! readiness endpoints turn unready and ready again, and the engine, which stays the same process
//! throughout, waits and resumes by itself. Afterwards every event capture answered 200 for is
//! in ClickHouse exactly once, and the persons of a history sent across the outage (with
//! retries, as SDKs do) equal the sequential reference model.
//!
//! These tests stop the broker every test shares, so they live in their own test binary and take
//! turns.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::broker::FreshBroker;
use common::persons::{Sent, check, history};
use common::pipeline::Pipeline;
use hogstream_state::persons::reference::{Rng, final_state};
use serde_json::{Value, json};
use uuid::Uuid;

/// The broker is shared by every test of this binary: one fault at a time.
static BROKER: Mutex<()> = Mutex::new(());

const LOAD_TEAM: i64 = 43;
const LOAD_TOKEN: &str = "phc_broker_faults_load";

/// Longer than capture's `message_timeout_ms` in the test config (60 s): every request gets
/// capture's own answer, never a client-side timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// What the load sender saw: the uuids capture acknowledged, every uuid it sent, and how often
/// each HTTP status came back.
#[derive(Default)]
struct LoadReport {
    acked: Vec<Uuid>,
    sent: HashSet<Uuid>,
    statuses: BTreeMap<u16, usize>,
}

/// Sends 50-event batches of ~1 KB events for [`LOAD_TEAM`] until stopped; a batch that is not
/// answered 200 is not sent again (its events are simply not acknowledged).
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<LoadReport>,
}

impl Load {
    fn start(p: &Pipeline) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{}/batch", p.capture_url);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let client = client();
            let mut report = LoadReport::default();
            let filler = "x".repeat(900);
            let mut i = 0usize;
            while !flag.load(Ordering::SeqCst) {
                let uuids: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
                let batch: Vec<Value> = uuids
                    .iter()
                    .map(|u| {
                        i += 1;
                        json!({"event": "load", "distinct_id": format!("load-{}", i % 97),
                               "uuid": u.to_string(), "properties": {"filler": filler}})
                    })
                    .collect();
                report.sent.extend(&uuids);
                let status = client
                    .post(&url)
                    .json(&json!({"api_key": LOAD_TOKEN, "batch": batch}))
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                *report.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    report.acked.extend(uuids);
                } else {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            report
        });
        Load { stop, thread }
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("load sender")
    }
}

/// Sends the person history in a shuffled order, in batches of 1-10 spread over `spread`, and
/// sends a batch again after any answer but 200, as PostHog's SDKs do; returns the statuses.
fn send_history(
    p: &Pipeline,
    sent: Arc<Vec<Sent>>,
    seed: u64,
    spread: Duration,
) -> JoinHandle<BTreeMap<u16, usize>> {
    let url = format!("{}/batch", p.capture_url);
    std::thread::spawn(move || {
        let client = client();
        let mut order: Vec<usize> = (0..sent.len()).collect();
        let mut rng = Rng(seed);
        rng.shuffle(&mut order);
        let mut batches = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let n = (1 + rng.below(10)).min(order.len() - i);
            batches.push(&order[i..i + n]);
            i += n;
        }
        let pause = spread / batches.len() as u32;
        let mut statuses = BTreeMap::new();
        for batch in batches {
            let events: Vec<Value> = batch.iter().map(|&k| sent[k].body.clone()).collect();
            let body = json!({"api_key": common::pipeline::TOKEN, "batch": events});
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let status = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                *statuses.entry(status).or_insert(0) += 1;
                if status == 200 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a history batch was not accepted within 5 minutes (last status {status})"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            std::thread::sleep(pause);
        }
        statuses
    })
}

fn status_of(url: &str) -> u16 {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(url)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls `url` until it answers `want`; returns how long that took, or panics after `limit`.
fn wait_status(url: &str, want: u16, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = status_of(url);
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: {url} still answers {got} after {limit:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pipeline() -> Pipeline {
    let p = Pipeline::with_teams(2, 4, &[(LOAD_TEAM, LOAD_TOKEN)]);
    p.start_capture();
    p.start_engine();
    wait_status(
        &p.engine_readiness_url(),
        200,
        Duration::from_secs(60),
        "engine ready",
    );
    p
}

/// Every acknowledged load event is stored once, and nothing was stored that was not sent.
fn assert_load_stored_once(p: &Pipeline, report: &LoadReport) {
    let acked: HashSet<String> = report.acked.iter().map(Uuid::to_string).collect();
    let sql = format!("SELECT toString(uuid) FROM events FINAL WHERE team_id = {LOAD_TEAM}");
    let deadline = Instant::now() + Duration::from_secs(180);
    let stored = loop {
        let stored: Vec<String> = p.rows(&sql);
        let have: HashSet<&String> = stored.iter().collect();
        if acked.iter().all(|u| have.contains(u)) || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let unique: HashSet<&String> = stored.iter().collect();
    let missing = acked.iter().filter(|u| !unique.contains(u)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} events answered 200 are not in ClickHouse; engine log:\n{}",
        acked.len(),
        p.engine_log()
    );
    assert_eq!(unique.len(), stored.len(), "an event is stored twice");
    let sent: HashSet<String> = report.sent.iter().map(Uuid::to_string).collect();
    assert!(
        stored.iter().all(|u| sent.contains(u)),
        "ClickHouse holds a load event nobody sent"
    );
    let dup_sql = format!(
        "SELECT toUInt64(count() - uniqExact(uuid)) FROM events FINAL WHERE team_id = {LOAD_TEAM}"
    );
    assert_eq!(p.query_u64(&dup_sql).unwrap(), 0, "duplicates after FINAL");
}

fn only_200_and_503(what: &str, statuses: &BTreeMap<u16, usize>) {
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "{what}: capture answers 200 or 503 through a broker outage, got {statuses:?}"
    );
}

/// A pipeline under load while a person history is being sent: the stage for one broker fault.
struct UnderLoad {
    p: Pipeline,
    sent: Arc<Vec<Sent>>,
    load: Load,
    history: JoinHandle<BTreeMap<u16, usize>>,
}

impl UnderLoad {
    fn start(history_seed: u64) -> Self {
        let sent = Arc::new(history());
        let p = pipeline();
        let load = Load::start(&p);
        let history = send_history(&p, sent.clone(), history_seed, Duration::from_secs(20));
        std::thread::sleep(Duration::from_secs(4));
        UnderLoad {
            p,
            sent,
            load,
            history,
        }
    }

    fn capture_readiness_url(&self) -> String {
        format!("{}/_readiness", self.p.capture_url)
    }

    /// Waits until capture and the engine are ready again after the broker came back.
    fn wait_ready_again(&self) {
        let back = wait_status(
            &self.capture_readiness_url(),
            200,
            Duration::from_secs(60),
            "capture ready again",
        );
        eprintln!("capture ready {back:?} after the broker answered");
        wait_status(
            &self.p.engine_readiness_url(),
            200,
            Duration::from_secs(60),
            "engine ready again",
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    /// Stops the senders and checks everything the fault must not have broken.
    fn finish(self, label: &str) {
        let history_statuses = self.history.join().expect("history sender");
        let report = self.load.finish();
        eprintln!("load: {:?}; history: {history_statuses:?}", report.statuses);
        only_200_and_503("load", &report.statuses);
        only_200_and_503("history", &history_statuses);
        assert_load_stored_once(&self.p, &report);
        let people: Vec<_> = self.sent.iter().map(|s| s.person.clone()).collect();
        check(&self.p, &self.sent, &final_state(&people), label);
        assert!(
            self.p.engine_running(),
            "the engine waited and resumed by itself"
        );
        assert!(self.p.stop_engine(), "graceful stop after the fault");
    }
}

#[test]
fn sigkill_of_the_broker_under_load_loses_and_doubles_nothing() {
    let _broker = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    let run = UnderLoad::start(11);
    common::services(&["kill", "kafka"]);
    let noticed = wait_status(
        &run.capture_readiness_url(),
        503,
        Duration::from_secs(30),
        "capture unready",
    );
    eprintln!("capture noticed the dead broker after {noticed:?}");
    // An event sent while the broker is down is refused at once, not held and not acknowledged.
    let started = Instant::now();
    let probe = client()
        .post(format!("{}/i/v0/e", run.p.capture_url))
        .json(
            &json!({"api_key": common::pipeline::TOKEN, "event": "probe", "distinct_id": "probe"}),
        )
        .send()
        .unwrap();
    assert_eq!(probe.status().as_u16(), 503, "capture during the outage");
    let body: Value = probe.json().unwrap();
    assert_eq!(body["code"], "service_unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after the delivery timeout"
    );
    wait_status(
        &run.p.engine_readiness_url(),
        503,
        Duration::from_secs(30),
        "engine unready",
    );
    std::thread::sleep(Duration::from_secs(3));
    common::services(&["start", "kafka"]);
    run.wait_ready_again();
    run.finish("broker SIGKILL mid-history");
}

#[test]
fn graceful_broker_restart_under_load_loses_and_doubles_nothing() {
    let _broker = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    let run = UnderLoad::start(23);
    // Readiness is watched while the restart runs: it must go unready and come back.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, capture_ready, engine_ready) = (
            watching.clone(),
            run.capture_readiness_url(),
            run.p.engine_readiness_url(),
        );
        std::thread::spawn(move || {
            let mut seen = (Vec::new(), Vec::new());
            while watching.load(Ordering::SeqCst) {
                for (url, seen) in [(&capture_ready, &mut seen.0), (&engine_ready, &mut seen.1)] {
                    let status = status_of(url);
                    if seen.last() != Some(&status) {
                        seen.push(status);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    common::services(&["restart", "kafka"]);
    run.wait_ready_again();
    watching.store(false, Ordering::SeqCst);
    let (capture_seen, engine_seen) = watcher.join().unwrap();
    for (what, seen) in [("capture", &capture_seen), ("engine", &engine_seen)] {
        assert!(
            seen.first() == Some(&200) && seen.contains(&503) && seen.last() == Some(&200),
            "{what} readiness went ready -> unready -> ready across the restart: {seen:?}"
        );
    }
    run.finish("graceful broker restart mid-history");
}

#[test]
fn a_5000_event_batch_under_load_is_stored_whole() {
    let _broker = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 5000;
    let p = pipeline();
    let load = Load::start(&p);
    std::thread::sleep(Duration::from_secs(2));
    let filler = "y".repeat(950);
    let events: Vec<Value> = (0..N)
        .map(|i| {
            json!({"event": "big-batch", "distinct_id": format!("big-{}", i % 500),
                   "uuid": Uuid::now_v7().to_string(), "properties": {"i": i, "filler": filler}})
        })
        .collect();
    let body =
        serde_json::to_vec(&json!({"api_key": common::pipeline::TOKEN, "batch": events})).unwrap();
    assert!(body.len() > 5_000_000, "{} bytes", body.len());
    let started = Instant::now();
    let status = client()
        .post(format!("{}/batch", p.capture_url))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap()
        .status()
        .as_u16();
    eprintln!("5,000 events answered {status} in {:?}", started.elapsed());
    assert_eq!(status, 200, "the whole batch is accepted");
    let report = load.finish();
    only_200_and_503("load", &report.statuses);
    assert_eq!(
        report.statuses.get(&503),
        None,
        "no outage here: every load batch is accepted"
    );
    common::pipeline::assert_exactly_once(&p, N);
    assert_load_stored_once(&p, &report);
}

#[test]
fn a_pipeline_on_a_broker_formatted_a_moment_ago_waits_for_its_coordinator() {
    // Its own broker: the shared one is not touched, but this test still takes its turn.
    let _broker = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 500;
    let fresh = FreshBroker::start();
    // The engine's first group request makes the broker create `__consumer_offsets`; it answers
    // "not coordinator" until that is done, and start-up must wait rather than fail.
    let p = Pipeline::on_broker(&fresh.brokers, 2, 4);
    p.start_engine();
    p.start_capture();
    common::pipeline::send_events(&p, N, 1000, |_| {});
    common::pipeline::assert_exactly_once(&p, N);
    assert!(p.engine_running(), "the engine started and stayed up");
    assert!(p.stop_engine());
}
