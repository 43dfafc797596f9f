//! The reference of `docs/guarantees.md`, written as plainly as possible and used only by
//! tests: every event of a team, sorted by stamp, applied one by one to persons whose
//! properties are per-key registers. It shares nothing with the production path but the
//! input parsing (`PersonEvent`, `effective_merge`) and the UUIDv5 rule.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use hogstream_event::ids::person_uuid;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::input::{MergeKind, PersonEvent, Personless, Stamp};

/// A person of the final state.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalPerson {
    pub properties: Map<String, Value>,
    pub is_identified: bool,
    pub created_at: DateTime<Utc>,
}

/// A group of the final state.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalGroup {
    pub properties: Map<String, Value>,
    pub created_at: DateTime<Utc>,
}

/// The state the guarantee compares: persons, distinct id → person, the person each event
/// joins to (its stored person id, or its distinct id's override when there is one), and
/// groups by (type name, key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinalState {
    pub persons: BTreeMap<(i64, Uuid), FinalPerson>,
    pub distinct_ids: BTreeMap<(i64, String), Uuid>,
    /// (team, event uuid) → the person the event joins to.
    pub event_persons: BTreeMap<(i64, Uuid), Uuid>,
    pub groups: BTreeMap<(i64, String, String), FinalGroup>,
}

/// What one event carries: its distinct id's person as of the event ("persons on events").
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub person_id: Uuid,
    pub properties: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    /// PostHog's `person_mode`: `full`, `force_upgrade` or `propertyless`.
    pub mode: &'static str,
}

/// The override rows of a sequential processor: distinct ids some of whose events were stored
/// with a person other than the id's final one (PostHog writes none where every event already
/// carries it). Events processed out of order may need more; never fewer.
pub type Overrides = BTreeMap<(i64, String), Uuid>;

#[derive(Debug, Clone)]
struct Person {
    uuid: Uuid,
    created: Stamp,
    is_identified: bool,
    /// Latest write per key; `None` is an `$unset`.
    set: HashMap<String, (Stamp, Option<Value>)>,
    /// Earliest write per key.
    set_once: HashMap<String, (Stamp, Value)>,
}

impl Person {
    fn new(team_id: i64, did: &str, e: &PersonEvent) -> Self {
        let mut p = Self {
            uuid: person_uuid(team_id, did),
            created: e.stamp,
            is_identified: false,
            set: HashMap::new(),
            set_once: HashMap::new(),
        };
        p.set_once.insert(
            "$creator_event_uuid".into(),
            (e.stamp, Value::String(e.stamp.uuid().to_string())),
        );
        p
    }

    /// Events arrive in stamp order, so a `$set` simply overwrites and a `$set_once` fills
    /// only what is empty.
    fn apply(&mut self, e: &PersonEvent) {
        for (k, v) in e.set.iter() {
            if !e.unset.contains(k) {
                self.set.insert(k.clone(), (e.stamp, Some(v.clone())));
            }
        }
        for k in &e.unset {
            self.set.insert(k.clone(), (e.stamp, None));
        }
        for (k, v) in e.set_once.iter() {
            self.set_once
                .entry(k.clone())
                .or_insert((e.stamp, v.clone()));
        }
    }

    /// A merge joins registers: the later `$set` and the earlier `$set_once` win.
    fn absorb(&mut self, other: Person) {
        for (k, (s, v)) in other.set {
            if self.set.get(&k).is_none_or(|(mine, _)| *mine < s) {
                self.set.insert(k, (s, v));
            }
        }
        for (k, (s, v)) in other.set_once {
            if self.set_once.get(&k).is_none_or(|(mine, _)| *mine > s) {
                self.set_once.insert(k, (s, v));
            }
        }
        self.created = self.created.min(other.created);
    }

    fn properties(&self) -> Map<String, Value> {
        let mut keys: Vec<&String> = self.set.keys().chain(self.set_once.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| match self.set.get(k) {
                Some((_, Some(v))) => Some((k.clone(), v.clone())),
                Some((_, None)) => None,
                None => Some((k.clone(), self.set_once[k].1.clone())),
            })
            .collect()
    }
}

/// A group's `created` stamp and latest write per key.
type GroupRegisters = (Stamp, HashMap<String, (Stamp, Value)>);

#[derive(Default)]
struct Team {
    persons: Vec<Option<Person>>,
    person_of: HashMap<String, usize>,
    /// Distinct ids used by a personless event while they had no person.
    personless: HashSet<String>,
    /// Per distinct id, the person ids its events were stored with, and its events.
    stored: HashMap<String, (HashSet<Uuid>, Vec<Uuid>)>,
    /// Group type name, key → (created, latest write per key).
    groups: BTreeMap<(String, String), GroupRegisters>,
}

impl Team {
    fn create(&mut self, team_id: i64, dids: &[&str], e: &PersonEvent) -> usize {
        self.persons.push(Some(Person::new(team_id, dids[0], e)));
        let idx = self.persons.len() - 1;
        for d in dids {
            self.person_of.insert((*d).to_owned(), idx);
        }
        idx
    }

    fn live(&mut self, idx: usize) -> &mut Person {
        self.persons[idx].as_mut().expect("live")
    }

    /// Applies one event; returns what it is stored with.
    fn event(&mut self, e: &PersonEvent) -> EventView {
        let me = e.distinct_id.as_str();
        if !e.process_person {
            return match self.person_of.get(me).copied() {
                // PostHog upgrades only a minute after the person's creation: events sent
                // before it may be processed after it.
                Some(p) if e.personless != Personless::Unlinked => {
                    let p = self.live(p);
                    let created = p.created.timestamp();
                    let upgrade = e.personless == Personless::Upgradable
                        && e.stamp.timestamp() > created + chrono::TimeDelta::seconds(60);
                    EventView {
                        person_id: p.uuid,
                        properties: Map::new(),
                        created_at: created,
                        mode: if upgrade {
                            "force_upgrade"
                        } else {
                            "propertyless"
                        },
                    }
                }
                found => {
                    if found.is_none() {
                        self.personless.insert(me.to_owned());
                    }
                    EventView {
                        person_id: person_uuid(e.team_id, me),
                        properties: Map::new(),
                        created_at: DateTime::from_timestamp(5, 0).expect("in range"),
                        mode: "propertyless",
                    }
                }
            };
        }
        let target = match e.effective_merge() {
            None => match self.person_of.get(me) {
                Some(&p) => p,
                None => self.create(e.team_id, &[me], e),
            },
            Some((kind, other)) => {
                let into = self.person_of.get(me).copied();
                let from = self.person_of.get(other).copied();
                let p = match (into, from) {
                    // Named after the other id when only it was used personless (its events
                    // carry its UUIDv5), else after the event's id.
                    (None, None)
                        if self.personless.contains(other) && !self.personless.contains(me) =>
                    {
                        self.create(e.team_id, &[other, me], e)
                    }
                    (None, None) => self.create(e.team_id, &[me, other], e),
                    (Some(p), None) => {
                        self.person_of.insert(other.to_owned(), p);
                        p
                    }
                    (None, Some(o)) => {
                        self.person_of.insert(me.to_owned(), o);
                        o
                    }
                    (Some(p), Some(o)) if p == o => p,
                    (Some(p), Some(o)) => {
                        let refused =
                            self.live(o).is_identified && kind != MergeKind::MergeDangerously;
                        if !refused {
                            let gone = self.persons[o].take().expect("live");
                            for idx in self.person_of.values_mut() {
                                if *idx == o {
                                    *idx = p;
                                }
                            }
                            self.live(p).absorb(gone);
                        }
                        p
                    }
                };
                self.live(p).is_identified = true;
                p
            }
        };
        let p = self.live(target);
        p.apply(e);
        EventView {
            person_id: p.uuid,
            properties: p.properties(),
            created_at: p.created.timestamp(),
            mode: "full",
        }
    }

    fn store(&mut self, e: &PersonEvent, person: Uuid) {
        let (carried, events) = self.stored.entry(e.distinct_id.clone()).or_default();
        carried.insert(person);
        events.push(e.stamp.uuid());
    }

    fn group_identify(&mut self, e: &PersonEvent) {
        let Some(gi) = e.group_identify.as_ref().filter(|_| e.process_person) else {
            return;
        };
        let g = self
            .groups
            .entry((gi.group_type.clone(), gi.group_key.clone()))
            .or_insert((e.stamp, HashMap::new()));
        for (k, v) in &gi.set {
            g.1.insert(k.clone(), (e.stamp, v.clone()));
        }
    }
}

/// The final state of applying `events` in the reference order.
pub fn final_state(events: &[PersonEvent]) -> FinalState {
    sequential(events).0
}

/// The override rows a sequential processor writes for `events` (see [`Overrides`]).
pub fn sequential_overrides(events: &[PersonEvent]) -> Overrides {
    sequential(events).1
}

/// What each of `events` carries, by (team, event uuid), when they are applied in the
/// reference order.
pub fn event_views(events: &[PersonEvent]) -> BTreeMap<(i64, Uuid), EventView> {
    sequential(events).2
}

type Views = BTreeMap<(i64, Uuid), EventView>;

fn sequential(events: &[PersonEvent]) -> (FinalState, Overrides, Views) {
    let mut sorted: Vec<&PersonEvent> = events.iter().collect();
    sorted.sort_by(|a, b| (a.stamp, &a.distinct_id).cmp(&(b.stamp, &b.distinct_id)));
    let mut teams: BTreeMap<i64, Team> = BTreeMap::new();
    let mut views = Views::new();
    for e in sorted {
        let team = teams.entry(e.team_id).or_default();
        let view = team.event(e);
        team.store(e, view.person_id);
        team.group_identify(e);
        views.insert((e.team_id, e.stamp.uuid()), view);
    }
    let mut out = FinalState::default();
    let mut overrides = Overrides::new();
    for (team_id, team) in teams {
        for (did, (carried, events)) in &team.stored {
            let person = match team.person_of.get(did) {
                Some(&idx) => team.persons[idx].as_ref().expect("live").uuid,
                None => person_uuid(team_id, did),
            };
            for uuid in events {
                out.event_persons.insert((team_id, *uuid), person);
            }
            if carried.iter().any(|p| *p != person) {
                overrides.insert((team_id, did.clone()), person);
            }
        }
        for p in team.persons.iter().flatten() {
            out.persons.insert(
                (team_id, p.uuid),
                FinalPerson {
                    properties: p.properties(),
                    is_identified: p.is_identified,
                    created_at: p.created.timestamp(),
                },
            );
        }
        for (did, &idx) in &team.person_of {
            let uuid = team.persons[idx].as_ref().expect("live").uuid;
            out.distinct_ids.insert((team_id, did.clone()), uuid);
        }
        for ((t, k), (created, props)) in team.groups {
            out.groups.insert(
                (team_id, t, k),
                FinalGroup {
                    properties: props
                        .into_iter()
                        .map(|(k, (_, v))| (k, v))
                        .collect::<BTreeMap<_, _>>()
                        .into_iter()
                        .collect(),
                    created_at: created.timestamp(),
                },
            );
        }
    }
    (out, overrides, views)
}

/// A small deterministic generator (splitmix64) for generated histories, orders and batchings:
/// the same seed gives the same test on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}
