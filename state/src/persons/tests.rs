//! Property tests: generated histories fed to the person stage in random orders and batchings,
//! with crashes between ClickHouse and the state commit, must leave exactly the reference's
//! final state in a simulated ReplacingMergeTree.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        OnceLock,
        atomic::{AtomicI64, Ordering},
    },
};

use chrono::{TimeZone, Utc};
use hogstream_event::ids::person_uuid;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    reference::{
        EventView, FinalGroup, FinalPerson, FinalState, Overrides, Rng, event_views, final_state,
        sequential_overrides,
    },
    *,
};
use crate::StateStore;

fn store() -> &'static StateStore {
    static STORE: OnceLock<StateStore> = OnceLock::new();
    STORE.get_or_init(|| {
        // Kept for the process's life: the store lives in a static.
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        StateStore::open(&dir, 8 << 20).expect("open the test store")
    })
}

/// A fresh team id per run, so runs share one store without seeing each other.
fn fresh_team() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) * 10
}

/// ClickHouse as the guarantee sees it: the last row per key wins (rows get growing versions).
#[derive(Default)]
struct ClickHouse {
    persons: BTreeMap<(i64, Uuid), (bool, FinalPerson)>,
    distinct_ids: BTreeMap<(i64, String), Uuid>,
    overrides: BTreeMap<(i64, String), Uuid>,
    groups: BTreeMap<(i64, u8, String), FinalGroup>,
    types: BTreeMap<(i64, u8), String>,
    /// (team, event uuid) → (distinct id, person id): the events table, latest row wins.
    events: BTreeMap<(i64, Uuid), (String, Uuid)>,
}

impl ClickHouse {
    /// Stores a batch's rows: its events with the persons they were given, and the changes.
    fn store(&mut self, batch: &[PersonEvent], out: &Processed) {
        for (e, p) in batch.iter().zip(&out.events) {
            self.events
                .insert((e.team_id, e.stamp.uuid()), (e.distinct_id.clone(), p.id));
        }
        self.store_changes(&out.changes);
    }

    fn store_changes(&mut self, c: &Changes) {
        for p in &c.persons.persons {
            let row = FinalPerson {
                // What ClickHouse holds is the text; the reference compares its parsed form.
                properties: serde_json::from_str(&p.person.properties_json)
                    .expect("person properties are a JSON object"),
                is_identified: p.person.is_identified,
                created_at: p.person.created_at,
            };
            self.persons
                .insert((p.team_id, p.person.id), (p.is_deleted, row));
        }
        for d in &c.persons.distinct_ids {
            self.distinct_ids
                .insert((d.team_id, d.distinct_id.clone()), d.person_id);
        }
        for d in &c.persons.overrides {
            self.overrides
                .insert((d.team_id, d.distinct_id.clone()), d.person_id);
        }
        for g in &c.groups {
            let row = FinalGroup {
                properties: g.properties.clone(),
                created_at: g.created_at,
            };
            self.groups
                .insert((g.team_id, g.group_type_index, g.group_key.clone()), row);
        }
        for t in &c.group_types {
            self.types
                .insert((t.team_id, t.group_type_index), t.group_type.clone());
        }
    }

    fn final_state(&self) -> FinalState {
        FinalState {
            persons: self
                .persons
                .iter()
                .filter(|(_, (deleted, _))| !deleted)
                .map(|(k, (_, p))| (*k, p.clone()))
                .collect(),
            distinct_ids: self.distinct_ids.clone(),
            // What a query joining the overrides sees.
            event_persons: self
                .events
                .iter()
                .map(|((t, uuid), (did, person))| {
                    let joined = self.overrides.get(&(*t, did.clone())).unwrap_or(person);
                    ((*t, *uuid), *joined)
                })
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|((t, i, k), g)| ((*t, self.types[&(*t, *i)].clone(), k.clone()), g.clone()))
                .collect(),
        }
    }
}

/// Feeds `events` one at a time in the reference order, without crashes, and returns what
/// ClickHouse ends up holding and its override rows.
fn run_in_order(events: &[PersonEvent]) -> (FinalState, Overrides) {
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| (a.stamp, &a.distinct_id).cmp(&(b.stamp, &b.distinct_id)));
    let mut ch = ClickHouse::default();
    let mut state = PersonState::new(store().clone(), HashMap::new()).unwrap();
    for e in &sorted {
        let out = state.process(std::slice::from_ref(e)).unwrap();
        ch.store(std::slice::from_ref(e), &out);
        out.writes.commit(store()).unwrap();
    }
    (ch.final_state(), ch.overrides.clone())
}

/// Feeds `events` in a random order and batching, with random crashes, and returns what
/// ClickHouse ends up holding.
fn run(events: &[PersonEvent], rng: &mut Rng, crashes: bool) -> FinalState {
    let mut queue: VecDeque<PersonEvent> = {
        let mut v = events.to_vec();
        rng.shuffle(&mut v);
        v.into()
    };
    let mut ch = ClickHouse::default();
    // Caches of one or three decoded components evict all the time: records are read again.
    let cache = [1, 3, super::DEFAULT_COMPONENT_CACHE][rng.below(3)];
    let open = || PersonState::with_cache(store().clone(), HashMap::new(), cache).unwrap();
    let mut state = open();
    let mut unacked: Vec<(Vec<PersonEvent>, Processed)> = Vec::new();
    // The events the state has seen (by uuid), and those it holds durably.
    let mut seen: BTreeMap<Uuid, PersonEvent> = BTreeMap::new();
    let mut durable = seen.clone();
    while !queue.is_empty() {
        let size = 1 + rng.below(6);
        let batch: Vec<PersonEvent> = queue.drain(..size.min(queue.len())).collect();
        let out = state.process(&batch).unwrap();
        assert_eq!(out.events.len(), batch.len());
        seen.extend(batch.iter().map(|e| (e.stamp.uuid(), e.clone())));
        // Each event carries its person as of its own stamp, from everything seen so far.
        let views = event_views(&seen.values().cloned().collect::<Vec<_>>());
        for (e, p) in batch.iter().zip(&out.events) {
            assert_eq!(
                view_of(p),
                views[&(e.team_id, e.stamp.uuid())],
                "event {}",
                e.stamp.uuid()
            );
        }
        unacked.push((batch, out));
        if rng.below(10) < 6 {
            // The sink acknowledges in order: rows stored, then the state committed.
            for (batch, out) in unacked.drain(..) {
                ch.store(&batch, &out);
                out.writes.commit(store()).unwrap();
            }
            durable.clone_from(&seen);
        } else if crashes && rng.below(10) == 0 {
            // A crash: any unacknowledged batch may have reached ClickHouse, none committed
            // its state; the events since the last commit are read again.
            let mut reread = Vec::new();
            for (batch, out) in unacked.drain(..) {
                if rng.below(2) == 0 {
                    ch.store(&batch, &out);
                }
                reread.extend(batch);
            }
            // Read again, below the offsets the partitions had at the restart: marked so.
            for mut e in reread.into_iter().rev() {
                e.replay = true;
                queue.push_front(e);
            }
            state = open();
            seen.clone_from(&durable);
        }
    }
    for (batch, out) in unacked {
        ch.store(&batch, &out);
        out.writes.commit(store()).unwrap();
    }
    ch.final_state()
}

/// What the stage gave an event, in the reference's terms.
fn view_of(p: &EventPerson) -> EventView {
    EventView {
        person_id: p.id,
        properties: serde_json::from_str(&p.properties).expect("a JSON object"),
        created_at: p.created_at,
        mode: match p.mode {
            PersonMode::Full => "full",
            PersonMode::ForceUpgrade => "force_upgrade",
            PersonMode::Propertyless => "propertyless",
        },
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Plain,
    Personless,
    Identify(usize),
    Alias(usize),
    Dangerous(usize),
    GroupIdentify(usize, usize),
}

#[derive(Debug, Clone)]
struct Spec {
    team: usize,
    did: usize,
    ts: i64,
    kind: Kind,
    set: Vec<(usize, u8)>,
    set_once: Vec<(usize, u8)>,
    unset: Vec<usize>,
    groups: Vec<(usize, usize)>,
}

const DIDS: &[&str] = &["a", "b", "c", "d", "e", "f", "user@x", "anonymous"];
const KEYS: &[&str] = &["k1", "k2", "k3", "$browser"];
const TYPES: &[&str] = &["company", "project", "org"];
const GROUP_KEYS: &[&str] = &["g1", "g2"];

fn kind() -> impl Strategy<Value = Kind> {
    let did = 0..DIDS.len();
    prop_oneof![
        10 => Just(Kind::Plain),
        5 => Just(Kind::Personless),
        3 => did.clone().prop_map(Kind::Identify),
        2 => did.clone().prop_map(Kind::Alias),
        1 => did.prop_map(Kind::Dangerous),
        1 => (0..TYPES.len(), 0..GROUP_KEYS.len()).prop_map(|(t, k)| Kind::GroupIdentify(t, k)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let pair = (0..KEYS.len(), 0u8..4);
    (
        0..2usize,
        0..DIDS.len(),
        0..12i64,
        kind(),
        prop::collection::vec(pair.clone(), 0..3),
        prop::collection::vec(pair, 0..2),
        prop::collection::vec(0..KEYS.len(), 0..2),
        prop::collection::vec((0..TYPES.len(), 0..GROUP_KEYS.len()), 0..2),
    )
        .prop_map(|(team, did, ts, kind, set, set_once, unset, groups)| Spec {
            team,
            did,
            ts,
            kind,
            set,
            set_once,
            unset,
            groups,
        })
}

fn event(team_base: i64, n: usize, s: &Spec) -> PersonEvent<'static> {
    let obj = |pairs: &[(usize, u8)]| -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (KEYS[*k].to_owned(), json!(v)))
            .collect()
    };
    // Every `$set` value is its own: the one case the kept history cannot know (a late value
    // between two writes of one value, `registers::Earlier`) is tested on its own there.
    let own = |pairs: &[(usize, u8)]| -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (KEYS[*k].to_owned(), json!(format!("{v}:{n}"))))
            .collect()
    };
    let (name, mut props) = match &s.kind {
        Kind::Plain | Kind::Personless => ("$pageview", Map::new()),
        Kind::Identify(o) => ("$identify", obj_of(json!({"$anon_distinct_id": DIDS[*o]}))),
        Kind::Alias(o) => ("$create_alias", obj_of(json!({"alias": DIDS[*o]}))),
        Kind::Dangerous(o) => ("$merge_dangerously", obj_of(json!({"alias": DIDS[*o]}))),
        Kind::GroupIdentify(t, k) => (
            "$groupidentify",
            obj_of(json!({
                "$group_type": TYPES[*t],
                "$group_key": GROUP_KEYS[*k],
                "$group_set": obj(&s.set),
            })),
        ),
    };
    if !matches!(s.kind, Kind::GroupIdentify(..)) {
        props.insert("$set".into(), Value::Object(own(&s.set)));
        props.insert("$set_once".into(), Value::Object(obj(&s.set_once)));
        let unset: Vec<Value> = s.unset.iter().map(|k| json!(KEYS[*k])).collect();
        props.insert("$unset".into(), Value::Array(unset));
    }
    let groups: Map<String, Value> = s
        .groups
        .iter()
        .map(|(t, k)| (TYPES[*t].to_owned(), json!(GROUP_KEYS[*k])))
        .collect();
    props.insert("$groups".into(), Value::Object(groups));
    PersonEvent::from_event(
        team_base + s.team as i64,
        // Distinct uuids; their order among equal timestamps is shuffled by the multiplier.
        Uuid::from_u128((n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        Utc.timestamp_opt(1_700_000_000 + s.ts, 0).unwrap(),
        DIDS[s.did],
        name,
        &props,
        !matches!(s.kind, Kind::Personless),
    )
    .into_owned()
}

fn obj_of(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The same history under another team id, so each run has state of its own.
fn rebase(events: &[PersonEvent<'static>], base: i64) -> Vec<PersonEvent<'static>> {
    events
        .iter()
        .map(|e| PersonEvent {
            team_id: base + e.team_id % 10,
            ..e.clone()
        })
        .collect()
}

/// The stage's state threads for the three runs of a history: one (everything in order) and
/// more than this machine has cores (reads, resolution and encoding interleave freely).
fn pools() -> &'static [rayon::ThreadPool; 3] {
    static POOLS: OnceLock<[rayon::ThreadPool; 3]> = OnceLock::new();
    POOLS.get_or_init(|| {
        [1, 4, 8].map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("a thread pool")
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn any_order_batching_and_crash_gives_the_reference(
        specs in prop::collection::vec(spec(), 1..40),
        seed in any::<u64>(),
    ) {
        let base = fresh_team();
        let events: Vec<PersonEvent> =
            specs.iter().enumerate().map(|(n, s)| event(base, n, s)).collect();
        let mut rng = Rng(seed);
        for (run_no, pool) in pools().iter().enumerate() {
            let team = fresh_team();
            let events = rebase(&events, team);
            let expected = final_state(&events);
            let got = pool.install(|| run(&events, &mut rng, run_no > 0));
            prop_assert_eq!(got, expected, "run {}", run_no);
        }
        // In order, the override rows are exactly a sequential processor's: none for an id
        // whose events all carry its final person.
        let events = rebase(&events, fresh_team());
        let (got, overrides) = run_in_order(&events);
        prop_assert_eq!(got, final_state(&events), "in order");
        prop_assert_eq!(overrides, sequential_overrides(&events), "in order");
    }
}

fn at(second: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap()
}

/// A person-processing event of `team` at `second`, with uuid `n`.
fn at_event(
    team: i64,
    n: u128,
    second: i64,
    did: &str,
    name: &str,
    props: Value,
) -> PersonEvent<'static> {
    PersonEvent::from_event(
        team,
        Uuid::from_u128(n),
        at(second),
        did,
        name,
        &obj_of(props),
        true,
    )
    .into_owned()
}

#[test]
fn an_identified_user_keeps_the_anonymous_history_and_the_newest_value() {
    let team = fresh_team();
    let e = |n: u128, s: i64, did: &str, name: &str, props: Value| {
        at_event(team, n, s, did, name, props)
    };
    let history = vec![
        e(
            1,
            1,
            "anon",
            "$pageview",
            json!({"$set": {"plan": "free"}, "$set_once": {"first": "anon"}}),
        ),
        e(
            2,
            2,
            "user",
            "$identify",
            json!({"$anon_distinct_id": "anon", "$set": {"email": "u@x"}}),
        ),
        e(3, 3, "user", "$pageview", json!({"$set": {"plan": "paid"}})),
    ];
    // Newest first: PostHog would end with plan=free; the reference order gives paid.
    let mut state = PersonState::new(store().clone(), HashMap::new()).unwrap();
    let mut ch = ClickHouse::default();
    for ev in history.iter().rev() {
        let out = state.process(std::slice::from_ref(ev)).unwrap();
        ch.store(std::slice::from_ref(ev), &out);
        out.writes.commit(store()).unwrap();
    }
    let got = ch.final_state();
    assert_eq!(got, final_state(&history));
    let anon = person_uuid(team, "anon");
    let person = &got.persons[&(team, anon)];
    assert_eq!(person.properties["plan"], json!("paid"));
    assert_eq!(person.properties["first"], json!("anon"));
    assert_eq!(person.properties["email"], json!("u@x"));
    assert_eq!(
        person.properties["$creator_event_uuid"],
        json!(Uuid::from_u128(1).to_string())
    );
    assert!(person.is_identified);
    assert_eq!(person.created_at, at(1));
    assert_eq!(ch.overrides.get(&(team, "user".into())), Some(&anon));
    assert_eq!(got.persons.len(), 1);
}

#[test]
fn refused_and_illegal_merges_raise_posthogs_warnings() {
    let team = fresh_team();
    let e = |n: u128, s: i64, did: &str, name: &str, props: Value| {
        at_event(team, n, s, did, name, props)
    };
    let mut state = PersonState::new(store().clone(), HashMap::new()).unwrap();
    let out = state
        .process(&[
            e(1, 1, "anon", "$pageview", json!({})),
            e(
                2,
                2,
                "u1",
                "$identify",
                json!({"$anon_distinct_id": "anon"}),
            ),
            e(3, 3, "u2", "$pageview", json!({})),
            e(
                4,
                4,
                "u2",
                "$identify",
                json!({"$anon_distinct_id": "anon"}),
            ),
            e(
                5,
                5,
                "u3",
                "$identify",
                json!({"$anon_distinct_id": "null"}),
            ),
        ])
        .unwrap();
    let kinds: Vec<(&str, Value)> = out
        .warnings
        .iter()
        .map(|w| (w.kind, w.details["eventUuid"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "cannot_merge_already_identified",
                json!(Uuid::from_u128(4).to_string())
            ),
            (
                "cannot_merge_with_illegal_distinct_id",
                json!(Uuid::from_u128(5).to_string())
            ),
        ]
    );
    assert_eq!(
        out.warnings[0].at,
        at(4),
        "the event's time, the same on a replay"
    );
}

#[test]
fn personless_browsing_that_arrives_after_the_login_renames_the_person() {
    let team = fresh_team();
    let personless = |n: u128, s: i64| {
        PersonEvent::from_event(
            team,
            Uuid::from_u128(n),
            at(s),
            "anon",
            "$pageview",
            &obj_of(json!({})),
            false,
        )
        .into_owned()
    };
    let login = at_event(
        team,
        3,
        3,
        "user",
        "$identify",
        json!({"$anon_distinct_id": "anon"}),
    );
    let later = at_event(team, 4, 4, "user", "$pageview", json!({}));
    let mut state = PersonState::new(store().clone(), HashMap::new()).unwrap();
    let mut ch = ClickHouse::default();
    let first = vec![login.clone(), later.clone()];
    let out = state.process(&first).unwrap();
    ch.store(&first, &out);
    out.writes.commit(store()).unwrap();
    let user = person_uuid(team, "user");
    assert_eq!(out.events[0].id, user, "no personless use known yet");
    let late = vec![personless(1, 1), personless(2, 2)];
    let out = state.process(&late).unwrap();
    ch.store(&late, &out);
    out.writes.commit(store()).unwrap();
    let anon = person_uuid(team, "anon");
    let all = [first, late].concat();
    assert_eq!(ch.final_state(), final_state(&all));
    assert!(ch.persons[&(team, user)].0, "the first person is deleted");
    assert!(!ch.persons[&(team, anon)].0);
    // The user's events carry the first person: they need the override; anon's carry the final.
    assert_eq!(ch.overrides.get(&(team, "user".into())), Some(&anon));
    assert_eq!(ch.overrides.get(&(team, "anon".into())), None);
    // Read again from the store, in a new lifetime: the record decodes.
    let mut state = PersonState::new(store().clone(), HashMap::new()).unwrap();
    let again = state.process(&[personless(5, 5)]).unwrap();
    assert_eq!(again.events[0].id, anon);
}

/// PostHog's processPersonlessStep.test.ts ("force_upgrade", "team opted out",
/// "forceDisablePersonProcessing"): a personless event of an id with a person carries that
/// person without properties, and is upgraded only after a minute's grace and not for teams
/// that opted out; capture's force-disable header never looks the person up.
#[test]
fn personless_events_of_a_known_person_follow_posthogs_upgrade_rules() {
    let team = fresh_team();
    let mut state = PersonState::new(store().clone(), HashMap::new()).unwrap();
    let created = at_event(
        team,
        1,
        0,
        "u",
        "$pageview",
        json!({"$set": {"plan": "pro"}}),
    );
    state
        .process(&[created])
        .unwrap()
        .writes
        .commit(store())
        .unwrap();
    let personless = |n: u128, second: i64, kind: Personless| PersonEvent {
        personless: kind,
        ..PersonEvent::from_event(
            team,
            Uuid::from_u128(n),
            at(second),
            "u",
            "$pageview",
            &obj_of(json!({})),
            false,
        )
        .into_owned()
    };
    let out = state
        .process(&[
            personless(2, 30, Personless::Upgradable),
            personless(3, 60, Personless::Upgradable),
            personless(4, 61, Personless::Upgradable),
            personless(5, 3600, Personless::NeverUpgraded),
            personless(6, 3600, Personless::Unlinked),
        ])
        .unwrap();
    let person = person_uuid(team, "u");
    let got: Vec<(Uuid, &str, PersonMode, chrono::DateTime<Utc>)> = out
        .events
        .iter()
        .map(|p| (p.id, &*p.properties, p.mode, p.created_at))
        .collect();
    assert_eq!(
        got,
        vec![
            (person, "{}", PersonMode::Propertyless, at(0)),
            (person, "{}", PersonMode::Propertyless, at(0)),
            (person, "{}", PersonMode::ForceUpgrade, at(0)),
            (person, "{}", PersonMode::Propertyless, at(0)),
            (
                person,
                "{}",
                PersonMode::Propertyless,
                personless_created_at()
            ),
        ]
    );
}
