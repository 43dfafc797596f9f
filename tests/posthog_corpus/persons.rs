//! Creating persons and updating their properties.

use serde_json::json;

use crate::harness::{Engine, at, object};

/// person-state-batch.test.ts "creates person with properties" and "creates person if they
/// are new": `$set_once` then `$set` over it, `$creator_event_uuid`, not identified, created
/// at the event's time.
#[test]
fn a_first_event_creates_the_person_from_set_once_then_set() {
    let mut e = Engine::new();
    let uuid = "0197a000-0000-7000-8000-000000000001";
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "new-user", "uuid": uuid,
        "timestamp": 10,
        "properties": {"$set": {"a": 1, "b": "set"}, "$set_once": {"b": "once", "c": 3}}}),
    ]);
    let p = out.person();
    assert_eq!(
        object(&p.properties),
        object(&json!({"a": 1, "b": "set", "c": 3, "$creator_event_uuid": uuid}).to_string())
    );
    assert_eq!(p.is_identified, 0);
    assert_eq!(p.created_at, at(10));
    let row = out.event("new-user", "$pageview");
    assert_eq!(row.person_id, p.id);
    assert_eq!(row.person_created_at, at(10));
}

/// person-state-batch.test.ts "updates person properties": `$set` overwrites, `$set_once` of
/// a key the person has changes nothing.
#[test]
fn set_overwrites_and_set_once_fills_only_what_is_missing() {
    let mut e = Engine::new();
    e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$set": {"plan": "free", "seen": 1}}}),
    ]);
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 2,
        "properties": {"$set": {"plan": "pro"}, "$set_once": {"seen": 99, "source": "ad"}}}),
    ]);
    let props = object(&out.person().properties);
    assert_eq!(props["plan"], json!("pro"));
    assert_eq!(props["seen"], json!(1), "$set_once does not overwrite");
    assert_eq!(props["source"], json!("ad"));
}

/// process-event.test.ts "$unset person property" (an array of keys) and "$unset person
/// empty set ignored"; the object form's keys are removed (docs/posthog-rules.md §3.3).
#[test]
fn unset_removes_keys_given_as_an_array_or_an_object() {
    let mut e = Engine::new();
    e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$set": {"a": 1, "b": 2, "c": 3}}}),
    ]);
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 2,
            "properties": {"$unset": ["a"]}}),
        json!({"event": "$set", "distinct_id": "u", "timestamp": 3,
            "properties": {"$unset": {"b": null}}}),
        json!({"event": "$set", "distinct_id": "u", "timestamp": 4,
            "properties": {"$unset": {}}}),
    ]);
    let props = object(&out.person().properties);
    assert!(
        !props.contains_key("a") && !props.contains_key("b"),
        "{props:?}"
    );
    assert_eq!(props["c"], json!(3));
}

/// person-state-batch.test.ts "creates person if they are new" (a `null_byte` property):
/// Postgres `jsonb` refuses NUL, so PostHog's person rows carry U+FFFD; hogstream's do too.
/// The event keeps its own properties as sent.
#[test]
fn nul_in_person_properties_becomes_the_replacement_character() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$set": {"null_byte": "a\u{0}b"}}}),
    ]);
    assert_eq!(
        object(&out.person().properties)["null_byte"],
        json!("a\u{fffd}b")
    );
}

/// person-state-batch.test.ts "does not update person properties for %s" (`$exception`).
/// PostHog's events consumer drops `$exception` altogether (ingestion-consumer.test.ts "should
/// drop $exception events": error tracking takes them); hogstream has no error-tracking
/// pipeline, so it stores them as events, and like PostHog never lets them touch the person
/// (docs/posthog-rules.md §2.5).
#[test]
fn exception_events_never_update_the_person() {
    let mut e = Engine::new();
    e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$set": {"plan": "free"}}}),
    ]);
    let out = e.send(&[
        json!({"event": "$exception", "distinct_id": "u", "timestamp": 2,
        "properties": {"$set": {"plan": "hacked"}, "$set_once": {"new": 1}}}),
    ]);
    assert!(out.persons().is_empty(), "no person row changes");
    assert_eq!(
        out.person_properties("u", "$exception")["plan"],
        json!("free"),
        "the event carries the person as it is"
    );
}

/// process-event.test.ts "person and group properties on events": an event carries its person
/// after its own update, and later events of the batch do not leak into earlier ones.
#[test]
fn an_event_carries_its_person_after_its_own_update() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
            "properties": {"$set": {"plan": "free"}}}),
        json!({"event": "upgrade", "distinct_id": "u", "timestamp": 2,
            "properties": {"$set": {"plan": "pro"}}}),
        json!({"event": "$pageleave", "distinct_id": "u", "timestamp": 3, "properties": {}}),
    ]);
    assert_eq!(
        out.person_properties("u", "$pageview")["plan"],
        json!("free")
    );
    assert_eq!(out.person_properties("u", "upgrade")["plan"], json!("pro"));
    assert_eq!(
        out.person_properties("u", "$pageleave")["plan"],
        json!("pro")
    );
}

/// process-event.test.ts "ingestion in order": four events a minute apart whose `$set` and
/// `$set_once` overlap key by key. hogstream orders by time, so the same result comes from
/// any arrival order (PostHog's comes from arrival order: docs/posthog-rules.md §3.3).
#[test]
fn overlapping_set_and_set_once_over_four_events_give_posthogs_result_in_any_order() {
    let sets = [
        json!({"s0123o0123": "s0a", "s02o13": "s0b", "s013": "s0e"}),
        json!({"s0123o0123": "s1a", "s13o02": "s1g", "s1": "s1c", "s013": "s1e"}),
        json!({"s0123o0123": "s2a", "s02o13": "s2b"}),
        json!({"s0123o0123": "s3a", "s13o02": "s3g", "s013": "s3e"}),
    ];
    let onces = [
        json!({"s0123o0123": "o0a", "s13o02": "o0g", "o023": "o0f"}),
        json!({"s0123o0123": "o1a", "s02o13": "o1b", "o1": "o1d"}),
        json!({"s0123o0123": "o2a", "s13o02": "o2g", "o023": "o2f"}),
        json!({"s0123o0123": "o3a", "s02o13": "o3b", "o023": "o3f"}),
    ];
    let events: Vec<_> = (0..4)
        .map(|i| {
            json!({"event": "some_event", "distinct_id": "u", "timestamp": 60 * i as i64,
            "properties": {"$set": sets[i], "$set_once": onces[i]}})
        })
        .collect();
    let want = json!({"s0123o0123": "s3a", "s02o13": "s2b", "s1": "s1c", "o1": "o1d",
        "s013": "s3e", "o023": "o0f", "s13o02": "s3g"});
    for order in [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]] {
        let mut e = Engine::new();
        let mut last = None;
        for i in order {
            last = Some(e.send(&[events[i].clone()]));
        }
        let mut props = object(&last.expect("four batches").person().properties);
        props.remove("$creator_event_uuid");
        assert_eq!(serde_json::Value::Object(props), want, "order {order:?}");
    }
}
