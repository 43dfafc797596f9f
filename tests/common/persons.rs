//! A generated person history (identify, alias, merges, groups, personless events) with what the
//! sequential reference model makes of it, and the comparison of ClickHouse's tables with it.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use clickhouse::Row;
use hogstream_state::persons::{
    PersonEvent,
    reference::{FinalGroup, FinalPerson, FinalState, Rng},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::pipeline::{Pipeline, TEAM_ID, counts_sql};

/// One event as an SDK sends it to `/batch`.
pub struct Sent {
    pub body: Value,
    pub person: PersonEvent<'static>,
}

impl Sent {
    /// The event `body` with what the person stage makes of it, the properties normalization
    /// lifts into `$set`/`$set_once` included (for bodies changed after [`history`] made them).
    pub fn from_body(body: Value) -> Self {
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        let mut props: Map<String, Value> =
            body["properties"].as_object().cloned().unwrap_or_default();
        hogstream_engine::normalize::lift_person_properties(&mut props);
        let uuid = Uuid::parse_str(&text("uuid")).unwrap();
        let ts = DateTime::parse_from_rfc3339(&text("timestamp"))
            .unwrap()
            .to_utc();
        let process_person = props.get("$process_person_profile") != Some(&Value::Bool(false));
        let person = PersonEvent::from_event(
            TEAM_ID,
            uuid,
            ts,
            &text("distinct_id"),
            &text("event"),
            &props,
            process_person,
        )
        .into_owned();
        Self { body, person }
    }
}

pub fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_793_000_000 + second, 0).unwrap()
}

/// Users who browse anonymously, identify, come back on a second device, get aliased, are
/// wrongly identified into another user (refused), merged dangerously, set and unset
/// properties, belong to companies and projects; plus personless events.
pub fn history() -> Vec<Sent> {
    let mut rng = Rng(0x5eed);
    let mut out = Vec::new();
    // A second of the hour for the next event; a random one when unset.
    let second: std::cell::Cell<Option<i64>> = std::cell::Cell::new(None);
    let mut push = |rng: &mut Rng, did: String, name: &str, props: Value| {
        let mut props: Map<String, Value> = props.as_object().cloned().unwrap_or_default();
        let n = out.len();
        let ts = at(second.take().unwrap_or_else(|| rng.below(3600) as i64));
        let uuid = Uuid::from_u128(
            0x0195_0000_0000_7000_8000_0000_0000_0000
                | ((rng.next_u64() as u128 & 0xffff_ffff) << 16)
                | n as u128,
        );
        let process_person = props.get("$process_person_profile") != Some(&Value::Bool(false));
        if rng.below(3) == 0 {
            let companies = ["acme", "globex", "initech"];
            props.insert(
                "$groups".into(),
                json!({"company": companies[rng.below(3)], "project": format!("p{}", rng.below(4))}),
            );
        }
        let person = PersonEvent::from_event(TEAM_ID, uuid, ts, &did, name, &props, process_person)
            .into_owned();
        out.push(Sent {
            body: json!({
                "event": name,
                "distinct_id": did,
                "uuid": uuid.to_string(),
                "timestamp": ts.to_rfc3339(),
                "properties": props,
            }),
            person,
        });
    };
    let plans = ["free", "pro", "enterprise"];
    for u in 0..24 {
        let anon = format!("anon-{u}");
        let user = format!("user-{u}@example.com");
        for _ in 0..3 {
            let props = json!({"$set_once": {"first_seen_plan": plans[rng.below(3)]}, "$set": {"last_page": format!("/p{}", rng.below(9))}});
            push(&mut rng, anon.clone(), "$pageview", props);
        }
        let identify = json!({"$anon_distinct_id": anon, "$set": {"email": user}});
        push(&mut rng, user.clone(), "$identify", identify);
        for _ in 0..3 {
            let props = json!({"$set": {"plan": plans[rng.below(3)]}, "$unset": if rng.below(4) == 0 { json!(["last_page"]) } else { json!([]) }});
            push(&mut rng, user.clone(), "$pageview", props);
        }
        if u % 4 == 1 {
            // A visitor who never identifies.
            let props =
                json!({"$set": {"plan": plans[rng.below(3)]}, "$set_once": {"referrer": "ad"}});
            push(&mut rng, format!("visitor-{u}"), "$pageview", props);
        }
        match u % 6 {
            0 => {
                let phone = format!("phone-{u}");
                push(
                    &mut rng,
                    phone.clone(),
                    "$pageview",
                    json!({"$set": {"device": "phone"}}),
                );
                push(
                    &mut rng,
                    user.clone(),
                    "$identify",
                    json!({"$anon_distinct_id": phone}),
                );
            }
            1 => {
                let alias = format!("crm-{u}");
                push(
                    &mut rng,
                    user.clone(),
                    "$create_alias",
                    json!({"alias": alias}),
                );
                push(&mut rng, alias, "$pageview", json!({"$set": {"crm": true}}));
            }
            2 => {
                // Identifying someone else's identified anonymous id is refused (unless earlier).
                let other = format!("anon-{}", (u + 1) % 24);
                push(
                    &mut rng,
                    user.clone(),
                    "$identify",
                    json!({"$anon_distinct_id": other}),
                );
            }
            3 => {
                let other = format!("user-{}@example.com", (u + 2) % 24);
                push(
                    &mut rng,
                    user.clone(),
                    "$merge_dangerously",
                    json!({"alias": other}),
                );
            }
            4 => {
                push(
                    &mut rng,
                    anon.clone(),
                    "$pageview",
                    json!({"$process_person_profile": false}),
                );
                push(
                    &mut rng,
                    format!("ghost-{u}"),
                    "$pageview",
                    json!({"$process_person_profile": false}),
                );
                push(
                    &mut rng,
                    user.clone(),
                    "$identify",
                    json!({"$anon_distinct_id": "anonymous"}),
                );
            }
            _ => {
                let company = ["acme", "globex", "initech"][(u / 6) % 3];
                let props = json!({"$group_type": "company", "$group_key": company, "$group_set": {"size": rng.below(500), "name": company}});
                push(&mut rng, user.clone(), "$groupidentify", props);
            }
        }
    }
    // Identified-only browsing (posthog-js `person_profiles: 'identified_only'`): personless
    // pageviews, then a login, then the user's own events. Whether a personless pageview comes
    // before the `$identify` in time decides whose UUIDv5 names the person: for one user in
    // four, all of them come after it (a second tab that still browsed personless).
    for u in 0..12 {
        let anon = format!("io-anon-{u}");
        let user = format!("io-user-{u}@example.com");
        let login = 100 + 200 * u as i64;
        for k in 0..3 {
            let browsed = if u % 4 == 3 {
                login + 10 + k
            } else {
                login - 30 + 10 * k
            };
            second.set(Some(browsed));
            let props = json!({"$process_person_profile": false});
            push(&mut rng, anon.clone(), "$pageview", props);
        }
        second.set(Some(login));
        let identify = json!({"$anon_distinct_id": anon, "$set": {"email": user}});
        push(&mut rng, user.clone(), "$identify", identify);
        second.set(Some(login + 60));
        push(
            &mut rng,
            user.clone(),
            "$pageview",
            json!({"$set": {"plan": "free"}}),
        );
    }
    out
}

#[derive(Row, Deserialize)]
pub struct PersonRow {
    pub id: String,
    pub properties: String,
    pub is_identified: i8,
    pub created_ms: i64,
}

#[derive(Row, Deserialize)]
struct IdRow {
    distinct_id: String,
    person_id: String,
}

#[derive(Row, Deserialize)]
struct EventRow {
    uuid: String,
    distinct_id: String,
    person_id: String,
}

#[derive(Row, Deserialize)]
struct GroupRow {
    group_type: String,
    group_key: String,
    group_properties: String,
    created_ms: i64,
}

pub fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON object: {text}: {e}"))
}

pub fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// What ClickHouse holds for the team, in the reference model's terms.
pub fn stored_state(p: &Pipeline) -> FinalState {
    let team = TEAM_ID;
    let uuid = |s: &str| Uuid::parse_str(s).unwrap();
    let persons = p.rows::<PersonRow>(
        &format!(
            "SELECT toString(id) AS id, properties, is_identified, toUnixTimestamp64Milli(created_at) AS created_ms FROM person FINAL WHERE team_id = {team} AND is_deleted = 0"
        ),
    );
    let ids = p.rows::<IdRow>(
        &format!(
            "SELECT distinct_id, toString(person_id) AS person_id FROM person_distinct_id2 FINAL WHERE team_id = {team} AND is_deleted = 0"
        ),
    );
    let overrides = p.rows::<IdRow>(
        &format!(
            "SELECT distinct_id, toString(person_id) AS person_id FROM person_distinct_id_overrides FINAL WHERE team_id = {team} AND is_deleted = 0"
        ),
    );
    let events = p.rows::<EventRow>(&format!(
        "SELECT toString(uuid) AS uuid, distinct_id, toString(person_id) AS person_id FROM events FINAL WHERE team_id = {team}"
    ));
    let overrides: std::collections::HashMap<String, Uuid> = overrides
        .into_iter()
        .map(|r| (r.distinct_id, uuid(&r.person_id)))
        .collect();
    let groups = p.rows::<GroupRow>(
        &format!(
            "SELECT m.group_type, g.group_key, g.group_properties, toUnixTimestamp64Milli(g.created_at) AS created_ms \
             FROM (SELECT * FROM groups FINAL WHERE team_id = {team}) AS g \
             JOIN (SELECT * FROM group_type_mapping FINAL WHERE team_id = {team}) AS m \
             ON g.group_type_index = m.group_type_index"
        ),
    );
    FinalState {
        persons: persons
            .into_iter()
            .map(|r| {
                let person = FinalPerson {
                    properties: object(&r.properties),
                    is_identified: r.is_identified == 1,
                    created_at: millis(r.created_ms),
                };
                ((team, uuid(&r.id)), person)
            })
            .collect(),
        distinct_ids: ids
            .into_iter()
            .map(|r| ((team, r.distinct_id), uuid(&r.person_id)))
            .collect(),
        // What a query joining the overrides sees for each event.
        event_persons: events
            .into_iter()
            .map(|r| {
                let stored = uuid(&r.person_id);
                let joined = overrides.get(&r.distinct_id).copied().unwrap_or(stored);
                ((team, uuid(&r.uuid)), joined)
            })
            .collect(),
        groups: groups
            .into_iter()
            .map(|r| {
                let group = FinalGroup {
                    properties: object(&r.group_properties),
                    created_at: millis(r.created_ms),
                };
                ((team, r.group_type, r.group_key), group)
            })
            .collect(),
    }
}

/// The distinct ids with an override row whose names start with `prefix`.
pub fn override_ids(p: &Pipeline, prefix: &str) -> std::collections::BTreeSet<String> {
    p.rows::<IdRow>(&format!(
        "SELECT distinct_id, toString(person_id) AS person_id FROM person_distinct_id_overrides FINAL WHERE team_id = {TEAM_ID} AND is_deleted = 0 AND startsWith(distinct_id, '{prefix}')"
    ))
    .into_iter()
    .map(|r| r.distinct_id)
    .collect()
}

/// Sends `order` in batches of 1 to 25 events; `midway` runs once half of them are sent.
pub fn send(p: &Pipeline, sent: &[Sent], order: &[usize], mut midway: impl FnMut()) {
    let mut rng = Rng(order.len() as u64 ^ order[0] as u64);
    let mut i = 0;
    let mut halfway_done = false;
    while i < order.len() {
        let n = (1 + rng.below(25)).min(order.len() - i);
        let batch: Vec<Value> = order[i..i + n]
            .iter()
            .map(|&k| sent[k].body.clone())
            .collect();
        assert_eq!(p.send_batch(&batch), 200, "capture accepts the batch");
        i += n;
        if !halfway_done && i >= order.len() / 2 {
            halfway_done = true;
            midway();
        }
    }
}

pub fn check(p: &Pipeline, sent: &[Sent], expected: &FinalState, label: &str) {
    let n = sent.len() as u64;
    let counts = p.wait_for(&counts_sql(), n * 1_000_000 + n, Duration::from_secs(180));
    assert_eq!(
        counts,
        n * 1_000_000 + n,
        "{label}: every event stored once\n{}",
        p.engine_log()
    );
    let got = stored_state(p);
    let diff = |name: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        format!("{label}: {name} differ\nstored:    {a:?}\nreference: {b:?}")
    };
    assert_eq!(
        got.persons.len(),
        expected.persons.len(),
        "{}",
        diff(
            "person counts",
            &got.persons.keys().collect::<Vec<_>>(),
            &expected.persons.keys().collect::<Vec<_>>()
        )
    );
    for (k, want) in &expected.persons {
        assert_eq!(got.persons.get(k), Some(want), "{label}: person {k:?}");
    }
    assert_eq!(
        got.distinct_ids,
        expected.distinct_ids,
        "{}",
        diff("distinct ids", &got.distinct_ids, &expected.distinct_ids)
    );
    let wrong: Vec<_> = expected
        .event_persons
        .iter()
        .filter(|(k, want)| got.event_persons.get(k) != Some(want))
        .map(|(k, want)| (k.1, got.event_persons.get(k), *want))
        .collect();
    assert!(
        wrong.is_empty() && got.event_persons.len() == expected.event_persons.len(),
        "{label}: events joined through the overrides to the wrong person (event, stored, reference): {wrong:?}"
    );
    assert_eq!(
        got.groups,
        expected.groups,
        "{}",
        diff("groups", &got.groups, &expected.groups)
    );
}
