//! Persons end to end with the real broker and ClickHouse: one generated history sent through
//! capture in three orders, with different partition and worker counts and a SIGKILL of the
//! engine in the middle of one, leaves `person`, `person_distinct_id2`, the overrides and
//! `groups` exactly as the sequential reference model says.

mod common;

use std::time::Duration;

use common::persons::{PersonRow, at, check, history, object, override_ids, send};
use common::pipeline::{Pipeline, TEAM_ID};
use hogstream_event::ids::person_uuid;
use hogstream_state::persons::reference::{Rng, final_state, sequential_overrides};
use serde_json::json;
use uuid::Uuid;

#[test]
fn orders_worker_and_process_counts_and_a_sigkill_give_the_reference_state() {
    let sent = history();
    let persons: Vec<_> = sent.iter().map(|s| s.person.clone()).collect();
    let expected = final_state(&persons);
    let overrides = sequential_overrides(&persons);
    // The history must exercise what it claims to.
    assert!(
        expected.persons.len() >= 15,
        "{} persons",
        expected.persons.len()
    );
    assert!(overrides.len() >= 20, "{} overrides", overrides.len());
    // Identified-only users: those whose personless browsing came first are named after it
    // (PostHog's rule), the others after their login id.
    let named_after_browsing = (0..12)
        .filter(|u| {
            let anon = person_uuid(TEAM_ID, &format!("io-anon-{u}"));
            expected.persons.contains_key(&(TEAM_ID, anon))
        })
        .count();
    assert_eq!(
        named_after_browsing, 9,
        "identified-only users named after their browsing (the other 3 browsed only later)"
    );
    let io_overrides: std::collections::BTreeSet<String> = overrides
        .keys()
        .filter(|(_, d)| d.starts_with("io-"))
        .map(|(_, d)| d.clone())
        .collect();
    assert!(expected.persons.values().any(|p| !p.is_identified));
    assert!(expected.groups.len() >= 3);

    let mut by_time: Vec<usize> = (0..sent.len()).collect();
    by_time.sort_by_key(|&i| sent[i].person.stamp);
    let newest_first: Vec<usize> = by_time.iter().rev().copied().collect();
    let mut shuffled = by_time.clone();
    Rng(42).shuffle(&mut shuffled);
    let mut reshuffled = by_time.clone();
    Rng(7).shuffle(&mut reshuffled);

    struct Run<'a> {
        label: &'a str,
        processes: usize,
        /// Per process.
        workers: usize,
        partitions: i32,
        order: &'a [usize],
        kill_midway: bool,
    }
    let runs = [
        Run {
            label: "in time order, 1 worker, 1 partition",
            processes: 1,
            workers: 1,
            partitions: 1,
            order: &by_time,
            kill_midway: false,
        },
        Run {
            label: "newest first, 2 workers, 4 partitions",
            processes: 1,
            workers: 2,
            partitions: 4,
            order: &newest_first,
            kill_midway: false,
        },
        Run {
            label: "shuffled, 2 workers, 3 partitions, SIGKILL midway",
            processes: 1,
            workers: 2,
            partitions: 3,
            order: &shuffled,
            kill_midway: true,
        },
        Run {
            label: "shuffled otherwise, a cluster of 2 processes x 2 workers, 3 partitions",
            processes: 2,
            workers: 2,
            partitions: 3,
            order: &reshuffled,
            kill_midway: false,
        },
    ];
    for Run {
        label,
        processes,
        workers,
        partitions,
        order,
        kill_midway,
    } in runs
    {
        let p = Pipeline::new(workers, partitions);
        p.start_capture();
        p.start_engines(processes);
        send(&p, &sent, order, || {
            if kill_midway {
                std::thread::sleep(Duration::from_millis(700));
                p.kill_engine();
                p.start_engine();
            }
        });
        check(&p, &sent, &expected, label);
        if std::ptr::eq(order, by_time.as_slice()) {
            // In time order, identified-only users get the override rows a sequential
            // processor writes: none where their events already carry their person.
            assert_eq!(override_ids(&p, "io-"), io_overrides, "{label}: overrides");
        }
        let peers = format!("peers={}", processes * workers);
        assert!(p.engine_log().contains(&peers), "{label}: {peers}");
        drop(p);
    }
}

#[test]
fn late_events_do_not_overwrite_newer_person_properties() {
    // PostHog issue #37000: a historical event applied after a newer one wins there.
    let p = Pipeline::new(1, 1);
    p.start_capture();
    p.start_engine();
    let ev = |n: u128, s: i64, plan: &str| {
        json!({"event": "$pageview", "distinct_id": "late-user", "uuid": Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0000 | n).to_string(),
               "timestamp": at(s).to_rfc3339(), "properties": {"$set": {"plan": plan}}})
    };
    assert_eq!(p.send_batch(&[ev(2, 100, "new")]), 200);
    let q = format!("SELECT count() FROM events FINAL WHERE team_id = {TEAM_ID}");
    assert_eq!(p.wait_for(&q, 1, Duration::from_secs(60)), 1);
    assert_eq!(p.send_batch(&[ev(1, 50, "old")]), 200);
    assert_eq!(p.wait_for(&q, 2, Duration::from_secs(60)), 2);
    let props = p.rows::<PersonRow>(
        &format!(
            "SELECT toString(id) AS id, properties, is_identified, toUnixTimestamp64Milli(created_at) AS created_ms FROM person FINAL WHERE team_id = {TEAM_ID} AND is_deleted = 0"
        ),
    );
    assert_eq!(props.len(), 1);
    assert_eq!(object(&props[0].properties)["plan"], json!("new"));
    assert_eq!(
        props[0].created_ms,
        at(50).timestamp_millis(),
        "created_at is the earliest event"
    );
}
