//! `$groupidentify` and the groups events name.

use serde_json::json;

use crate::harness::{Engine, object};

fn group_identify(key: &str, group_type: &str, set: serde_json::Value) -> serde_json::Value {
    json!({"event": "$groupidentify", "distinct_id": "u", "timestamp": 1,
        "properties": {"$group_type": group_type, "$group_key": key, "$group_set": set}})
}

/// process-event.test.ts "$groupidentify updating properties": a later `$group_set` overwrites
/// the keys it names and keeps the others; the first type seen gets index 0.
#[test]
fn groupidentify_creates_and_updates_a_group() {
    let mut e = Engine::new();
    let out = e.send(&[group_identify(
        "acme",
        "company",
        json!({"plan": "free", "size": 5}),
    )]);
    let g = out.groups();
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0].group_type_index, g[0].group_key.as_str()),
        (0, "acme")
    );
    assert_eq!(object(&g[0].group_properties)["plan"], json!("free"));
    let mut later = group_identify("acme", "company", json!({"plan": "pro"}));
    later["timestamp"] = json!(2);
    let out = e.send(&[later]);
    let props = object(&out.groups()[0].group_properties);
    assert_eq!(
        (props["plan"].clone(), props["size"].clone()),
        (json!("pro"), json!(5))
    );
}

/// groups.test.ts (`addGroupProperties`) and process-event.test.ts "person and group properties
/// on events": `$groups` become `$group_N` properties by the type's index; `$groups` is kept.
#[test]
fn groups_of_an_event_become_group_n_properties() {
    let mut e = Engine::new();
    e.send(&[
        group_identify("acme", "company", json!({})),
        group_identify("p1", "project", json!({})),
    ]);
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 3,
        "properties": {"$groups": {"project": "p1", "company": "acme"}}}),
    ]);
    let props = out.properties("u", "$pageview");
    assert_eq!(props["$group_0"], json!("acme"));
    assert_eq!(props["$group_1"], json!("p1"));
    assert!(props.contains_key("$groups"));
}

/// ingestion-consumer.test.ts "should capture ingestion warning for $groupidentify with too long
/// $group_key": over 400 characters the event is dropped with warning `group_key_too_long`;
/// 400 are accepted.
#[test]
fn a_group_key_over_400_characters_is_dropped_with_a_warning() {
    let mut e = Engine::new();
    let out = e.send(&[group_identify(&"k".repeat(401), "company", json!({"a": 1}))]);
    assert!(out.0.events.is_empty() && out.groups().is_empty());
    assert_eq!(out.warnings(), ["group_key_too_long"]);
    let out = e.send(&[group_identify(&"é".repeat(400), "company", json!({"a": 1}))]);
    assert_eq!(out.groups().len(), 1, "400 characters are accepted");
}

/// group-type-manager.test.ts "returns null once limit is met" and process-groups-step.test.ts
/// "does not call upsertGroup when group type index is null": a sixth type has no index.
#[test]
fn a_sixth_group_type_is_ignored() {
    let mut e = Engine::new();
    let types = ["t0", "t1", "t2", "t3", "t4", "t5"];
    let events: Vec<_> = types
        .iter()
        .map(|t| group_identify("k", t, json!({"x": 1})))
        .collect();
    let out = e.send(&events);
    assert_eq!(out.groups().len(), 5, "five types, five groups");
    assert!(
        out.0
            .group_type_mappings
            .iter()
            .all(|m| m.group_type != "t5")
    );
}

/// normalize-event-step.test.ts "handles $groupidentify event with processPerson=true by removing
/// person properties": a `$groupidentify` updates no person.
#[test]
fn groupidentify_never_updates_the_person() {
    let mut e = Engine::new();
    let mut event = group_identify("acme", "company", json!({}));
    event["properties"]["$set"] = json!({"plan": "sneaky"});
    let out = e.send(&[event]);
    assert!(
        out.persons()
            .values()
            .all(|p| !object(&p.properties).contains_key("plan"))
    );
}

/// process-event.test.ts "groupidentify without group_type ingests event" and
/// process-groups-step.test.ts "does not call upsertGroup for $groupidentify when %s": the
/// event is stored, no group is written.
#[test]
fn groupidentify_without_a_type_or_key_is_stored_without_a_group() {
    for missing in ["$group_type", "$group_key"] {
        let mut e = Engine::new();
        let mut event = group_identify("acme", "company", json!({"a": 1}));
        event["properties"].as_object_mut().unwrap().remove(missing);
        let out = e.send(&[event]);
        assert_eq!(out.names(), ["$groupidentify"], "without {missing}");
        assert!(out.groups().is_empty(), "without {missing}");
    }
}
