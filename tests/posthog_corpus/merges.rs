//! `$identify`, `$create_alias` and `$merge_dangerously`.

use serde_json::json;

use crate::harness::{Engine, TEAM, at, object};
use hogstream_event::ids::person_uuid;

fn pageview(did: &str, ts: i64, set: serde_json::Value) -> serde_json::Value {
    json!({"event": "$pageview", "distinct_id": did, "timestamp": ts, "properties": {"$set": set}})
}

fn identify(did: &str, anon: &str, ts: i64) -> serde_json::Value {
    json!({"event": "$identify", "distinct_id": did, "timestamp": ts,
        "properties": {"$anon_distinct_id": anon}})
}

/// person-state-batch.test.ts "merge into distinct_id person and updates properties with
/// $set/$set_once": old-user {a:1, b:2} created first, new-user {b:3, c:4, d:5}, then
/// `$identify` with `$set` {d:6, e:7} and `$set_once` {a:8, f:9}: one person named after
/// new-user, {a:1, b:3, c:4, d:6, e:7, f:9}, identified, created at the older creation.
#[test]
fn identify_merges_the_anonymous_person_into_the_user() {
    let mut e = Engine::new();
    e.send(&[
        pageview("old-user", 1, json!({"a": 1, "b": 2})),
        pageview("new-user", 5, json!({"b": 3, "c": 4, "d": 5})),
    ]);
    let out = e.send(&[
        json!({"event": "$identify", "distinct_id": "new-user", "timestamp": 10,
        "properties": {"$anon_distinct_id": "old-user", "$set": {"d": 6, "e": 7},
            "$set_once": {"a": 8, "f": 9}}}),
    ]);
    let p = out.person();
    assert_eq!(p.id, person_uuid(TEAM, "new-user"));
    assert_eq!(p.is_identified, 1);
    assert_eq!(p.created_at, at(1), "the older of the two");
    let mut props = object(&p.properties);
    props.remove("$creator_event_uuid");
    assert_eq!(
        serde_json::Value::Object(props),
        json!({"a": 1, "b": 3, "c": 4, "d": 6, "e": 7, "f": 9})
    );
    assert_eq!(out.distinct_ids().get("old-user"), Some(&p.id));
    let gone: Vec<_> = out.0.persons.iter().filter(|r| r.is_deleted == 1).collect();
    assert_eq!(gone.len(), 1, "the merged-away person is deleted");
}

/// person-state-batch.test.ts "add distinct id and marks user is_identified when passed
/// $anon_distinct_id person does not exists and distinct_id does": the new id joins.
#[test]
fn identify_with_a_new_anonymous_id_adds_it_to_the_person() {
    let mut e = Engine::new();
    e.send(&[pageview("user", 1, json!({}))]);
    let out = e.send(&[identify("user", "fresh-anon", 2)]);
    let p = out.person();
    assert_eq!(p.id, person_uuid(TEAM, "user"));
    assert_eq!(p.is_identified, 1);
    assert_eq!(out.distinct_ids().get("fresh-anon"), Some(&p.id));
}

/// person-state-batch.test.ts "creates person with both distinct_ids and marks user as
/// is_identified when $anon_distinct_id passed": named after the event's distinct id.
#[test]
fn identify_of_two_new_ids_creates_one_identified_person() {
    let mut e = Engine::new();
    let out = e.send(&[identify("user", "anon", 1)]);
    let p = out.person();
    assert_eq!(p.id, person_uuid(TEAM, "user"));
    assert_eq!(p.is_identified, 1);
    let ids = out.distinct_ids();
    assert_eq!((ids["user"], ids["anon"]), (p.id, p.id));
}

/// person-state-batch.test.ts "does not merge people when both users are identified"
/// (person-state.test.ts "does not merge already identified users"); the warning is PostHog's
/// `cannot_merge_already_identified` (person-merge-service.ts).
#[test]
fn identify_refuses_to_merge_an_already_identified_person() {
    let mut e = Engine::new();
    e.send(&[
        identify("user-a", "anon-a", 1),
        identify("user-b", "anon-b", 2),
    ]);
    let out = e.send(&[identify("user-a", "user-b", 3)]);
    assert_eq!(out.warnings(), ["cannot_merge_already_identified"]);
    assert!(
        out.0.persons.iter().all(|r| r.is_deleted == 0),
        "nobody merged away"
    );
    assert!(
        !out.distinct_ids().contains_key("user-b"),
        "user-b did not move"
    );
}

/// person-state-batch.test.ts "merge_dangerously can merge people when alias id user is
/// identified".
#[test]
fn merge_dangerously_merges_identified_persons() {
    let mut e = Engine::new();
    e.send(&[
        identify("user-a", "anon-a", 1),
        identify("user-b", "anon-b", 2),
    ]);
    let out = e.send(&[
        json!({"event": "$merge_dangerously", "distinct_id": "user-a",
        "timestamp": 3, "properties": {"alias": "user-b"}}),
    ]);
    assert!(out.warnings().is_empty(), "{:?}", out.warnings());
    let ids = out.distinct_ids();
    assert_eq!(
        ids.get("user-b"),
        Some(&person_uuid(TEAM, "user-a")),
        "{ids:?}"
    );
}

/// person-state-batch.test.ts "calls merge on $create_alias as expected" and process-event.test.ts
/// "alias": `alias` names the other id, merged into the event's.
#[test]
fn create_alias_adds_the_alias_to_the_person() {
    let mut e = Engine::new();
    e.send(&[pageview("user", 1, json!({}))]);
    let out = e.send(&[
        json!({"event": "$create_alias", "distinct_id": "user", "timestamp": 2,
        "properties": {"alias": "second-device"}}),
    ]);
    assert_eq!(
        out.distinct_ids().get("second-device"),
        Some(&person_uuid(TEAM, "user"))
    );
}

/// person-state-batch.test.ts "stops $identify if $anon_distinct_id is illegal: `%s`" and
/// process-event.test.ts "identify with illegal (generic) id" ("Nan" is legal), for the ids
/// of docs/posthog-rules.md §3.5: warning `cannot_merge_with_illegal_distinct_id`, no merge.
#[test]
fn merges_with_illegal_distinct_ids_do_not_happen() {
    for illegal in [
        "anonymous",
        "GUEST",
        "distinct_id",
        "not_authenticated",
        "undefined",
        "[object Object]",
        "NaN",
        "None",
        "null",
        "0",
        "\"anonymous\"",
        "'guest'",
        " ",
        "distinctId",
    ] {
        let mut e = Engine::new();
        e.send(&[pageview("user", 1, json!({}))]);
        let out = e.send(&[identify("user", illegal, 2)]);
        assert_eq!(
            out.warnings(),
            ["cannot_merge_with_illegal_distinct_id"],
            "{illegal:?}"
        );
        assert!(
            !out.distinct_ids().contains_key(illegal),
            "{illegal:?} linked"
        );
    }
}

/// process-event.test.ts "identify with the same distinct_id as anon_distinct_id": one id,
/// not identified.
#[test]
fn identify_with_the_same_id_on_both_sides_links_nothing() {
    let mut e = Engine::new();
    let out = e.send(&[identify("user", "user", 1)]);
    assert!(out.warnings().is_empty());
    assert_eq!(out.distinct_ids().len(), 1);
    assert_eq!(out.person().id, person_uuid(TEAM, "user"));
    assert_eq!(out.person().is_identified, 0);
}

/// process-event.test.ts "Nan" in "identify with illegal (generic) id": only the exact
/// spellings are illegal, so "Nan" merges.
#[test]
fn nan_spelt_otherwise_is_a_legal_id() {
    let mut e = Engine::new();
    e.send(&[pageview("Nan", 1, json!({}))]);
    let out = e.send(&[identify("user", "Nan", 2)]);
    assert!(out.warnings().is_empty());
    assert_eq!(
        out.distinct_ids().get("user"),
        Some(&person_uuid(TEAM, "Nan"))
    );
}

/// process-event.test.ts "we can alias two non-existent persons" and "we can alias an
/// anonymous person to an anonymous person": one person, identified.
#[test]
fn alias_of_two_new_ids_makes_one_identified_person() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$create_alias", "distinct_id": "first", "timestamp": 1,
        "properties": {"alias": "second"}}),
    ]);
    assert_eq!(out.person().is_identified, 1);
    let ids = out.distinct_ids();
    assert_eq!(ids.get("first"), ids.get("second"));
}

/// process-event.test.ts "alias merge properties": a key both persons hold keeps the merge
/// target's value in PostHog. hogstream keeps the later write instead, which gives PostHog's
/// answer whenever the target's write is the later one (as here) and differs otherwise: a
/// deliberate deviation (docs/persons-design.md "Deviations from PostHog, on purpose").
#[test]
fn alias_merges_properties_keeping_the_later_value_of_a_shared_key() {
    for (target_first, want) in [(false, "new value both"), (true, "old value both")] {
        let (t_new, t_old) = if target_first { (1, 2) } else { (2, 1) };
        let mut e = Engine::new();
        e.send(&[
            pageview(
                "new_distinct_id",
                t_new,
                json!({"key_on_both": "new value both", "key_on_new": "new value"}),
            ),
            pageview(
                "old_distinct_id",
                t_old,
                json!({"key_on_both": "old value both", "key_on_old": "old value"}),
            ),
        ]);
        let out = e.send(&[
            json!({"event": "$create_alias", "distinct_id": "new_distinct_id",
            "timestamp": 3, "properties": {"alias": "old_distinct_id"}}),
        ]);
        let props = object(&out.person().properties);
        assert_eq!(
            props["key_on_both"],
            json!(want),
            "target written first: {target_first}"
        );
        assert_eq!(props["key_on_new"], json!("new value"));
        assert_eq!(props["key_on_old"], json!("old value"));
    }
}
