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

#[derive(clickhouse::Row, serde::Deserialize)]
struct EventPersonRow {
    uuid: String,
    person_id: String,
    person_properties: String,
    person_created_ms: i64,
    person_mode: String,
}

/// Each stored event's person, as `EventView`s by event uuid.
fn stored_views(
    p: &Pipeline,
) -> std::collections::BTreeMap<Uuid, hogstream_state::persons::reference::EventView> {
    p.rows::<EventPersonRow>(&format!(
        "SELECT toString(uuid) AS uuid, toString(person_id) AS person_id, person_properties, \
         toUnixTimestamp64Milli(person_created_at) AS person_created_ms, \
         toString(person_mode) AS person_mode FROM events FINAL WHERE team_id = {TEAM_ID}"
    ))
    .into_iter()
    .map(|r| {
        let mode = match r.person_mode.as_str() {
            "full" => "full",
            "force_upgrade" => "force_upgrade",
            "propertyless" => "propertyless",
            other => panic!("unknown person_mode {other}"),
        };
        let view = hogstream_state::persons::reference::EventView {
            person_id: Uuid::parse_str(&r.person_id).unwrap(),
            properties: object(&r.person_properties),
            created_at: common::persons::millis(r.person_created_ms),
            mode,
        };
        (Uuid::parse_str(&r.uuid).unwrap(), view)
    })
    .collect()
}

/// One person's history for persons on events (docs/posthog-rules.md §2.8, §3.7): personless
/// browsing before the person exists, `$set`s that change a property, personless events inside
/// and after PostHog's one-minute upgrade grace, an `$identify`, a later `$set`.
fn point_in_time_history() -> Vec<common::persons::Sent> {
    let ev = |n: u128, s: i64, did: &str, event: &str, props: serde_json::Value| {
        common::persons::Sent::from_body(json!({
            "event": event, "distinct_id": did,
            "uuid": Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0000 | n).to_string(),
            "timestamp": at(s).to_rfc3339(), "properties": props,
        }))
    };
    let personless = json!({"$process_person_profile": false});
    vec![
        ev(0, 0, "pit-anon", "$pageview", personless.clone()),
        ev(
            1,
            10,
            "pit-anon",
            "$pageview",
            json!({"$set": {"plan": "free"}}),
        ),
        ev(2, 20, "pit-anon", "$pageview", json!({})),
        ev(
            3,
            25,
            "pit-anon",
            "$pageview",
            json!({"$set_once": {"source": "ad"}}),
        ),
        ev(4, 30, "pit-anon", "$set", json!({"$set": {"plan": "pro"}})),
        ev(5, 40, "pit-anon", "$pageview", personless.clone()),
        ev(6, 200, "pit-anon", "$pageview", personless),
        ev(
            7,
            300,
            "pit-user",
            "$identify",
            json!({"$anon_distinct_id": "pit-anon", "$set": {"email": "u@example.com"}}),
        ),
        ev(
            8,
            400,
            "pit-user",
            "$pageview",
            json!({"$set": {"plan": "enterprise"}}),
        ),
        ev(9, 350, "pit-anon", "$pageview", json!({})),
    ]
}

#[test]
fn events_carry_their_person_as_of_their_own_time_in_one_request_and_over_many() {
    use hogstream_state::persons::reference::event_views;
    let sent = point_in_time_history();
    let persons: Vec<_> = sent.iter().map(|s| s.person.clone()).collect();
    let all = event_views(&persons);
    let view = |n: usize| &all[&(TEAM_ID, sent[n].person.stamp.uuid())];
    // What the reference says, spelled out for the rules the issue names.
    assert_eq!(view(0).mode, "propertyless");
    assert_eq!(view(0).person_id, person_uuid(TEAM_ID, "pit-anon"));
    assert_eq!(view(0).created_at.timestamp(), 5, "1970-01-01 00:00:05");
    assert_eq!(
        view(2).properties["plan"],
        json!("free"),
        "before the pro write"
    );
    assert!(!view(2).properties.contains_key("source"), "set once later");
    assert_eq!(view(4).properties["plan"], json!("pro"));
    assert_eq!(view(4).properties["source"], json!("ad"));
    assert_eq!(
        (view(5).mode, view(5).properties.len()),
        ("propertyless", 0),
        "grace"
    );
    assert_eq!(view(5).created_at, at(10));
    assert_eq!(
        (view(6).mode, view(6).properties.len()),
        ("force_upgrade", 0)
    );
    assert!(!view(6).properties.contains_key("email"));
    assert_eq!(view(7).properties["email"], json!("u@example.com"));
    assert_eq!(
        view(9).properties["plan"],
        json!("pro"),
        "before enterprise"
    );
    assert_eq!(view(8).properties["plan"], json!("enterprise"));

    let mut shuffled: Vec<usize> = (0..sent.len()).collect();
    Rng(11).shuffle(&mut shuffled);
    assert_ne!(shuffled, (0..sent.len()).collect::<Vec<_>>());
    let count = format!("SELECT count() FROM events FINAL WHERE team_id = {TEAM_ID}");

    // One request, shuffled, read by the engine in one go (it starts once capture has written
    // them): each event as of its own time, whatever else came with it.
    let p = Pipeline::new(1, 1);
    p.start_capture();
    let bodies: Vec<_> = shuffled.iter().map(|&i| sent[i].body.clone()).collect();
    assert_eq!(p.send_batch(&bodies), 200);
    p.start_engine();
    let n = sent.len() as u64;
    assert_eq!(p.wait_for(&count, n, Duration::from_secs(90)), n);
    let stored = stored_views(&p);
    for (i, s) in sent.iter().enumerate() {
        let uuid = s.person.stamp.uuid();
        assert_eq!(stored.get(&uuid), Some(view(i)), "one request: event {i}");
    }
    drop(p);

    // One request per event, shuffled, each stored before the next is sent: a late event is
    // given its person as of its own time from everything that arrived before it.
    let p = Pipeline::new(1, 1);
    p.start_capture();
    p.start_engine();
    for (k, &i) in shuffled.iter().enumerate() {
        assert_eq!(p.send_batch(&[sent[i].body.clone()]), 200);
        let want = k as u64 + 1;
        assert_eq!(p.wait_for(&count, want, Duration::from_secs(60)), want);
    }
    let stored = stored_views(&p);
    for (k, &i) in shuffled.iter().enumerate() {
        let arrived: Vec<_> = shuffled[..=k].iter().map(|&j| persons[j].clone()).collect();
        let uuid = sent[i].person.stamp.uuid();
        let want = &event_views(&arrived)[&(TEAM_ID, uuid)];
        assert_eq!(
            stored.get(&uuid),
            Some(want),
            "over many requests: event {i}"
        );
    }
}
