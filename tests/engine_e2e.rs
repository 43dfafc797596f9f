//! End to end with the real broker and ClickHouse: events sent through capture land in
//! ClickHouse exactly once, across SIGKILLs of the engine and a ClickHouse restart; messages the
//! engine cannot process go to the dead-letter topic with their reason, and the pipeline goes on.

mod common;

use std::{sync::RwLock, time::Duration};

use common::pipeline::{Pipeline, assert_exactly_once, send_events};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};

/// The outage test stops the shared ClickHouse: it holds this for writing, every other test of
/// this binary (they run in parallel) for reading, so none sees an outage it did not cause.
static CLICKHOUSE: RwLock<()> = RwLock::new(());

fn clickhouse_stays_up() -> std::sync::RwLockReadGuard<'static, ()> {
    CLICKHOUSE.read().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn sigkill_of_the_engine_loses_and_duplicates_nothing() {
    let _up = clickhouse_stays_up();
    const N: usize = 5000;
    let p = Pipeline::new(2, 4);
    p.start_capture();
    p.start_engine();
    send_events(&p, N, 15, |round| {
        if round <= 5 {
            // Let the engine get some way into the backlog, then kill it mid-flight.
            std::thread::sleep(Duration::from_millis(200 + 150 * round as u64));
            p.kill_engine();
            p.start_engine();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    p.kill_engine();
    p.start_engine();
    assert_exactly_once(&p, N);
    assert!(p.stop_engine(), "graceful stop after the run");
}

#[test]
fn clickhouse_outage_mid_load_loses_nothing() {
    let _outage = CLICKHOUSE.write().unwrap_or_else(|e| e.into_inner());
    const N: usize = 3000;
    let p = Pipeline::new(1, 2);
    p.start_capture();
    p.start_engine();
    let readiness = p.metrics_url.replace("/metrics", "/_readiness");
    let ready = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let r = loop {
            match reqwest::blocking::get(&readiness) {
                Ok(r) => break r,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("the engine serves /_readiness: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().unwrap())
    };
    let (status, body) = ready();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["clickhouse"], "ok");
    assert_eq!(body["kafka"], "ok");
    let mut during = None;
    send_events(&p, N, 20, |round| match round {
        1 => {
            common::services(&["stop", "clickhouse"]);
            during = Some(ready());
        }
        2 => {
            // Capture keeps accepting while ClickHouse is away; the engine holds the batches.
            std::thread::sleep(Duration::from_secs(2));
            common::services(&["start", "clickhouse"]);
        }
        _ => {}
    });
    let (status, body) = during.expect("probed during the outage");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["kafka"], "ok");
    assert!(
        body["clickhouse"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable")),
        "{body}"
    );
    assert_exactly_once(&p, N);
    assert_eq!(ready().0, 200, "ready again once ClickHouse is back");
    assert!(
        p.engine_log().contains("insert failed"),
        "the outage was seen and retried"
    );
}

#[test]
fn undecodable_messages_go_to_the_dlq_and_the_rest_goes_on() {
    let _up = clickhouse_stays_up();
    let p = Pipeline::new(1, 1);
    p.start_capture();
    p.start_engine();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &p.brokers)
        .create()
        .unwrap();
    let bad: [&[u8]; 3] = [b"not json at all", br#"{"uuid":"x"}"#, br#"{"uuid":"00000000-0000-0000-0000-000000000001","distinct_id":"d","ip":"","data":"[1,2]","now":"2026-01-01T00:00:00Z","token":"phc_test_token","event":"e","timestamp":"2026-01-01T00:00:00Z"}"#];
    for (i, payload) in bad.iter().enumerate() {
        producer
            .send(
                BaseRecord::to(&p.topic)
                    .key(&format!("bad-{i}"))
                    .payload(*payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "origin-header",
                        value: Some("kept"),
                    })),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    send_events(&p, 100, 1000, |_| {});
    assert_exactly_once(&p, 100);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &p.brokers)
        .set("group.id", common::unique("dlq_reader"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&p.dlq_topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while letters.len() < bad.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            let reason = header("dlq_reason");
            assert_eq!(
                header("origin-header"),
                "kept",
                "the original headers go along"
            );
            letters.push((m.payload().unwrap_or_default().to_vec(), reason));
        }
    }
    assert_eq!(
        letters.len(),
        bad.len(),
        "every bad message is a dead letter"
    );
    for (payload, reason) in &letters {
        assert!(
            bad.contains(&payload.as_slice()),
            "the dead letter keeps the original bytes"
        );
        assert!(!reason.is_empty(), "the dead letter says why");
    }
    assert!(letters.iter().any(|(_, r)| r.contains("undecodable")));
    assert!(letters.iter().any(|(_, r)| r.contains("not a JSON object")));

    // The engine's own /metrics show what happened (lag is published every 5 s).
    let mut metrics = String::new();
    for _ in 0..60 {
        metrics = reqwest::blocking::get(&p.metrics_url)
            .and_then(|r| r.text())
            .unwrap_or_default();
        if metrics.contains("hogstream_source_lag") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for name in [
        "hogstream_clickhouse_up 1",
        "hogstream_source_lag",
        "hogstream_events_in_total",
        "hogstream_events_out_total",
        "hogstream_dlq_total",
        "hogstream_sink_insert_seconds",
        "hogstream_flush_events",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from {}:\n{metrics}",
            p.metrics_url
        );
    }
    let dlq_line = metrics
        .lines()
        .find(|l| l.starts_with("hogstream_dlq_total"))
        .unwrap();
    assert!(
        dlq_line.ends_with(" 3"),
        "three dead letters counted: {dlq_line}"
    );
}

#[test]
fn a_two_process_timely_cluster_processes_everything_once() {
    let _up = clickhouse_stays_up();
    const N: usize = 2000;
    let p = Pipeline::new(1, 4);
    p.start_capture();
    p.start_engine_cluster(2);
    send_events(&p, N, 1000, |_| {});
    assert_exactly_once(&p, N);
    let log = p.engine_log();
    assert!(
        log.contains("peers=2"),
        "both processes joined one cluster:\n{log}"
    );
}

#[test]
fn sigterm_under_load_drains_and_loses_nothing() {
    let _up = clickhouse_stays_up();
    const N: usize = 3000;
    let p = Pipeline::new(2, 4);
    p.start_capture();
    p.start_engine();
    send_events(&p, N, 15, |round| {
        if round <= 3 {
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                p.stop_engine(),
                "the engine exits cleanly on SIGTERM under load"
            );
            p.start_engine();
        }
    });
    assert_exactly_once(&p, N);
    assert!(p.stop_engine());
    let log = p.engine_log();
    assert!(
        log.matches("drained and stored every offset").count() >= 2 * 4,
        "every worker of every stopped engine drained (2 workers x 4 stops):\n{log}"
    );
}

#[test]
fn a_deleted_and_recreated_topic_is_read_from_its_start() {
    let _up = clickhouse_stays_up();
    const BEFORE: usize = 400;
    const AFTER: usize = 60;
    let p = Pipeline::new(1, 2);
    p.start_capture();
    p.start_engine();
    send_events(&p, BEFORE, 1000, |_| {});
    assert_exactly_once(&p, BEFORE);
    assert!(p.stop_engine());
    p.stop_capture();

    // An operator deletes the input topic and creates it again: its offsets start over, below
    // the ones the engine stored for the old topic.
    common::capture::delete(&p.brokers, &[&p.topic]);
    common::capture::create_when_deleted(&p.brokers, &[(&p.topic, 2)]);
    p.start_capture();
    p.start_engine();
    send_events(&p, AFTER, 1000, |_| {});
    assert_exactly_once(&p, BEFORE + AFTER);
    assert!(
        p.engine_log().contains("past the end of the log"),
        "{}",
        p.engine_log()
    );
}
