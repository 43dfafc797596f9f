//! Events with `$process_person_profile: false`.

use serde_json::json;

use crate::harness::{Engine, TEAM, at};
use hogstream_event::ids::person_uuid;
use hogstream_sinks::tables::events::person_mode;

fn personless(did: &str, ts: i64) -> serde_json::Value {
    json!({"event": "$pageview", "distinct_id": did, "timestamp": ts,
        "properties": {"$process_person_profile": false, "$set": {"ignored": true}}})
}

/// person-state.test.ts "returns an ephemeral user object when $process_person_profile=false",
/// process-personless-step.test.ts "returns fake person when no existing person found" and
/// create-event.test.ts "generates deterministic person_id from distinct_id": the UUIDv5 of
/// the distinct id, no properties, created at 1970-01-01 00:00:05, `propertyless`; no person
/// row.
#[test]
fn a_personless_event_without_a_person_gets_a_fake_propertyless_one() {
    let mut e = Engine::new();
    let out = e.send(&[personless("browser", 100)]);
    let row = out.event("browser", "$pageview");
    assert_eq!(row.person_id, person_uuid(TEAM, "browser"));
    assert_eq!(row.person_properties, "{}");
    assert_eq!(row.person_created_at.timestamp(), 5);
    assert_eq!(row.person_mode, person_mode::PROPERTYLESS);
    assert!(out.0.persons.is_empty());
}

/// process-personless-step.test.ts "sets force_upgrade=true when event timestamp >
/// person.created_at + 1 minute" and "returns existing person with empty properties when person
/// exists"; person-state.test.ts "does not attach existing person properties to
/// $process_person_profile=false events"; create-event.test.ts "sets person_mode to
/// force_upgrade when person has force_upgrade=true".
#[test]
fn a_personless_event_of_an_older_person_is_force_upgraded_without_properties() {
    let mut e = Engine::new();
    e.send(&[
        json!({"event": "$pageview", "distinct_id": "known", "timestamp": 0,
        "properties": {"$set": {"plan": "pro"}}}),
    ]);
    let out = e.send(&[personless("known", 61)]);
    let row = out.event("known", "$pageview");
    assert_eq!(row.person_mode, person_mode::FORCE_UPGRADE);
    assert_eq!(row.person_id, person_uuid(TEAM, "known"));
    assert_eq!(row.person_properties, "{}");
    assert_eq!(row.person_created_at, at(0));
}

/// process-personless-step.test.ts "does NOT set force_upgrade when within 1-minute grace
/// period": the person's id, no properties, `propertyless`.
#[test]
fn inside_the_one_minute_grace_the_event_stays_propertyless() {
    let mut e = Engine::new();
    e.send(&[
        json!({"event": "$pageview", "distinct_id": "known", "timestamp": 0,
        "properties": {}}),
    ]);
    let out = e.send(&[personless("known", 60)]);
    let row = out.event("known", "$pageview");
    assert_eq!(row.person_mode, person_mode::PROPERTYLESS);
    assert_eq!(row.person_id, person_uuid(TEAM, "known"));
    assert_eq!(row.person_properties, "{}");
}

/// process-personless-step.test.ts "returns fake person when no existing person found", for an
/// event from before its person existed that arrives after it: hogstream gives it what it would
/// have got in time order (docs/posthog-rules.md §3.7), fake person and all.
#[test]
fn a_personless_event_from_before_the_person_existed_gets_the_fake_person() {
    let mut e = Engine::new();
    e.send(&[
        json!({"event": "$pageview", "distinct_id": "known", "timestamp": 100,
        "properties": {}}),
    ]);
    let out = e.send(&[personless("known", 50)]);
    let row = out.event("known", "$pageview");
    assert_eq!(row.person_mode, person_mode::PROPERTYLESS);
    assert_eq!(row.person_created_at.timestamp(), 5);
}

/// normalize-event-step.test.ts "normalizes with processPerson=false by dropping
/// person-related properties" and "removes $process_person_profile when processPerson=true": a
/// personless event keeps `$process_person_profile: false` and loses `$set`, `$set_once` and
/// `$unset`; a person-processing event loses the flag.
#[test]
fn personless_events_lose_the_person_updates_and_others_the_flag() {
    let mut e = Engine::new();
    let out = e.send(&[personless("browser", 1)]);
    let props = out.properties("browser", "$pageview");
    assert_eq!(props["$process_person_profile"], json!(false));
    for key in ["$set", "$set_once", "$unset"] {
        assert!(!props.contains_key(key), "{key} kept: {props:?}");
    }
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "full", "timestamp": 2,
        "properties": {"$process_person_profile": true}}),
    ]);
    assert!(
        !out.properties("full", "$pageview")
            .contains_key("$process_person_profile")
    );
}

/// normalize-process-person-flag-step.test.ts "drops event %s when $process_person_profile=false"
/// for `$identify`, `$create_alias`, `$merge_dangerously` and `$groupidentify`.
#[test]
fn person_events_without_person_processing_are_dropped_with_a_warning() {
    for name in [
        "$identify",
        "$create_alias",
        "$merge_dangerously",
        "$groupidentify",
    ] {
        let mut e = Engine::new();
        let out = e.send(&[
            json!({"event": name, "distinct_id": "my_id", "timestamp": 1,
            "properties": {"$process_person_profile": false, "$anon_distinct_id": "a",
                "alias": "a", "$group_type": "company", "$group_key": "acme"}}),
        ]);
        assert!(out.0.events.is_empty(), "{name} stored");
        assert_eq!(
            out.warnings(),
            ["invalid_event_when_process_person_profile_is_false"]
        );
    }
}

/// normalize-process-person-flag-step.test.ts "adds warning for invalid $process_person_profile
/// values": warning `invalid_process_person_profile`, persons processed.
#[test]
fn a_non_boolean_process_person_profile_warns_and_processes_the_person() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$process_person_profile": "no", "$set": {"a": 1}}}),
    ]);
    assert_eq!(out.warnings(), ["invalid_process_person_profile"]);
    assert_eq!(out.event("u", "$pageview").person_mode, person_mode::FULL);
    assert_eq!(out.persons().len(), 1);
}

/// person-state-batch.test.ts "overrides are created only when distinct_id is in
/// posthog_personlessdistinctid": a person created by a merge of two ids is named after the id
/// personless events already used, so their events need no override.
#[test]
fn a_merge_names_the_person_after_the_id_used_personless() {
    let mut e = Engine::new();
    e.send(&[personless("browser", 1)]);
    let out = e.send(&[
        json!({"event": "$identify", "distinct_id": "user", "timestamp": 2,
        "properties": {"$anon_distinct_id": "browser"}}),
    ]);
    assert_eq!(out.person().id, person_uuid(TEAM, "browser"));
    assert!(out.0.overrides.is_empty(), "no override needed");
}

/// process-personless-step.test.ts "ignores force_upgrade when team.person_processing_opt_out=
/// true": a team that opted out creates no persons and never force-upgrades.
#[test]
fn a_team_opted_out_of_persons_gets_propertyless_events_only() {
    let mut e = Engine::with_team(|t| t.person_processing_opt_out = true);
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$set": {"a": 1}}}),
    ]);
    assert!(out.0.persons.is_empty());
    assert_eq!(
        out.event("u", "$pageview").person_mode,
        person_mode::PROPERTYLESS
    );
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 500,
        "properties": {}}),
    ]);
    assert_eq!(
        out.event("u", "$pageview").person_mode,
        person_mode::PROPERTYLESS
    );
}
