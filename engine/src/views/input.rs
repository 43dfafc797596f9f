//! What the views receive from the process stage: each stored event once, with its current
//! person. Events and overrides are kept in the store, under the event's distinct id, so that
//! a merge re-points the distinct id's counted events and a restart rebuilds the views from
//! the store instead of Kafka.
//!
//! Resolving persons here, not in the dataflow, keeps the views' state to what each view needs:
//! no view holds every event to find those a merge moves. A merge is rare and finds its
//! distinct id's events with one prefix scan. One team's events are processed by one worker,
//! in order, so a distinct id's events and its overrides never race.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use hogstream_sinks::tables::{
    events::EventRow, person::PersonRow, person_distinct_id2::PersonDistinctIdRow,
};
use hogstream_state::{
    StateError, StateStore,
    views::{ViewRecord, distinct_id_prefix, event_key, override_key, person_key},
};
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use super::{Properties, ViewEvent, ViewPerson, registry::ActiveView};

/// The override each distinct id has now, for the whole process.
pub type Overrides = Arc<Mutex<HashMap<(i64, String), Uuid>>>;

/// Where view inputs are kept: the process's RocksDB store, or memory in tests.
pub(crate) trait InputStore {
    /// The stored values of `keys`, in order.
    fn get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    /// Writes `records`; `None` deletes.
    fn put(&mut self, records: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StateError>;
    /// The values of the keys beginning with `prefix`.
    fn with_prefix(&self, prefix: &[u8]) -> Result<Vec<Box<[u8]>>, StateError>;
}

impl InputStore for StateStore {
    fn get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.view_events(keys)
    }

    fn put(&mut self, records: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StateError> {
        self.put_view_records(&records)
    }

    fn with_prefix(&self, prefix: &[u8]) -> Result<Vec<Box<[u8]>>, StateError> {
        self.view_events_with_prefix(prefix)
    }
}

/// The store's layout in memory, for the test harness.
impl InputStore for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        Ok(keys
            .iter()
            .map(|k| BTreeMap::get(self, k).cloned())
            .collect())
    }

    fn put(&mut self, records: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StateError> {
        for (k, v) in records {
            match v {
                Some(v) => self.insert(k, v),
                None => self.remove(&k),
            };
        }
        Ok(())
    }

    fn with_prefix(&self, prefix: &[u8]) -> Result<Vec<Box<[u8]>>, StateError> {
        Ok(self
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone().into_boxed_slice())
            .collect())
    }
}

fn corrupt(detail: String) -> StateError {
    StateError::Corrupt {
        cf: "views",
        detail,
    }
}

/// The store key of `event`: its distinct id, day, and the rest of the `events` table's
/// deduplication key (uuid and event name).
fn key_of(event: &ViewEvent) -> Vec<u8> {
    let mut h = Xxh3::new();
    h.update(event.event.as_bytes());
    let mut identity = event.uuid.as_bytes().to_vec();
    identity.extend_from_slice(&h.digest().to_be_bytes());
    event_key(event.team_id, &event.distinct_id, event.day(), &identity)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(value).map_err(|e| corrupt(format!("cannot encode a view input: {e}")))
}

fn decode_person(bytes: &[u8]) -> Result<ViewPerson, StateError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(format!("a view person: {e}")))
}

fn decode(bytes: &[u8]) -> Result<ViewEvent, StateError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(format!("a view event: {e}")))
}

/// The updates of the views' input that `events` (with the person each was stored with) and
/// then `changes` (a distinct id's new override; `None` removes it) bring, given and updating
/// the `current` overrides and `store`.
///
/// Events are keyed like rows of `events`: a copy of a stored event (a replay, an event sent
/// twice) brings nothing, and an event that differs from the stored one of its key replaces
/// it, as the later row of `events` replaces the earlier under `FINAL`. A changed override
/// moves the distinct id's stored events to its person.
pub(crate) fn resolve(
    store: &mut impl InputStore,
    current: &mut HashMap<(i64, String), Uuid>,
    events: Vec<ViewEvent>,
    changes: Vec<(i64, String, Option<Uuid>)>,
) -> Result<Vec<(ViewEvent, isize)>, StateError> {
    let mut out = Vec::new();
    let keys: Vec<Vec<u8>> = events.iter().map(key_of).collect();
    let stored = store.get(&keys)?;
    let mut latest: HashMap<Vec<u8>, ViewEvent> = HashMap::new();
    let mut records = Vec::new();
    for ((event, key), stored) in events.into_iter().zip(keys).zip(stored) {
        let previous = match latest.remove(&key) {
            Some(e) => Some(e),
            None => stored.as_deref().map(decode).transpose()?,
        };
        if previous.as_ref() == Some(&event) {
            metrics::counter!("hogstream_view_duplicate_events_total").increment(1);
            latest.insert(key, event);
            continue;
        }
        let person_of = |e: &ViewEvent| {
            current
                .get(&(e.team_id, e.distinct_id.clone()))
                .copied()
                .unwrap_or(e.person)
        };
        if let Some(previous) = previous {
            out.push((
                ViewEvent {
                    person: person_of(&previous),
                    ..previous
                },
                -1,
            ));
        }
        records.push((key.clone(), Some(encode(&event)?)));
        out.push((
            ViewEvent {
                person: person_of(&event),
                ..event.clone()
            },
            1,
        ));
        latest.insert(key, event);
    }
    // Stored before the overrides are applied: a merge in the same batch moves them too.
    store.put(std::mem::take(&mut records))?;
    for (team_id, distinct_id, new) in changes {
        let key = (team_id, distinct_id);
        let old = current.get(&key).copied();
        if old == new {
            continue;
        }
        for bytes in store.with_prefix(&distinct_id_prefix(team_id, &key.1))? {
            let event = decode(&bytes)?;
            let (before, after) = (old.unwrap_or(event.person), new.unwrap_or(event.person));
            if before != after {
                out.push((
                    ViewEvent {
                        person: before,
                        ..event.clone()
                    },
                    -1,
                ));
                out.push((
                    ViewEvent {
                        person: after,
                        ..event
                    },
                    1,
                ));
            }
        }
        records.push((
            override_key(team_id, &key.1),
            Some(encode(&(team_id, &key.1, new.unwrap_or_else(Uuid::nil)))?),
        ));
        match new {
            Some(p) => current.insert(key, p),
            None => current.remove(&key),
        };
    }
    store.put(records)?;
    Ok(out)
}

/// The updates of the persons collection that `changes` (a person's new declared properties;
/// `None`: the person is gone, e.g. merged into another) bring: the stored properties are
/// retracted and the new ones added.
pub(crate) fn resolve_persons(
    store: &mut impl InputStore,
    changes: Vec<(i64, Uuid, Option<Properties>)>,
) -> Result<Vec<(ViewPerson, isize)>, StateError> {
    let mut out = Vec::new();
    for (team_id, person, new) in changes {
        let key = person_key(team_id, &person);
        let old = match store.get(std::slice::from_ref(&key))?.pop().flatten() {
            Some(bytes) => Some(decode_person(&bytes)?.properties),
            None => None,
        };
        if old == new {
            continue;
        }
        let as_person = |properties| ViewPerson {
            team_id,
            person,
            properties,
        };
        if let Some(old) = old {
            out.push((as_person(old), -1));
        }
        let value = match new {
            Some(new) => {
                let person = as_person(new);
                let value = encode(&person)?;
                out.push((person, 1));
                Some(value)
            }
            None => None,
        };
        store.put(vec![(key, value)])?;
    }
    Ok(out)
}

/// One update of the views' input collections.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ViewUpdate {
    Event(ViewEvent),
    Person(ViewPerson),
}

/// Turns the process stage's rows into the views' input.
pub struct ViewInputs {
    /// Teams some view counts; `None`: every team.
    teams: Option<HashSet<i64>>,
    properties: Vec<&'static str>,
    /// The person properties views declared; none: no persons are kept.
    person_properties: Vec<&'static str>,
    store: StateStore,
    overrides: Overrides,
}

impl ViewInputs {
    /// `None` when no view is enabled.
    pub fn new(active: &[ActiveView], store: StateStore) -> Option<Self> {
        if active.is_empty() {
            return None;
        }
        let teams = active
            .iter()
            .map(|v| v.teams.clone())
            .collect::<Option<Vec<_>>>()
            .map(|sets| sets.into_iter().flatten().collect());
        let mut properties: Vec<&'static str> = active
            .iter()
            .flat_map(|v| v.view.properties().iter().copied())
            .collect();
        properties.sort_unstable();
        properties.dedup();
        let mut person_properties: Vec<&'static str> = active
            .iter()
            .flat_map(|v| v.view.person_properties().iter().copied())
            .collect();
        person_properties.sort_unstable();
        person_properties.dedup();
        Some(Self {
            teams,
            properties,
            person_properties,
            store,
            overrides: Overrides::default(),
        })
    }

    fn counts(&self, team: i64) -> bool {
        self.teams.as_ref().is_none_or(|t| t.contains(&team))
    }

    fn view_event(&self, row: &EventRow) -> ViewEvent {
        let properties = if self.properties.is_empty() {
            Properties::default()
        } else {
            Properties::from_json(&row.properties, Some(&self.properties))
        };
        ViewEvent {
            team_id: row.team_id,
            timestamp: row.timestamp.timestamp_micros(),
            uuid: row.uuid,
            event: row.event.clone(),
            distinct_id: row.distinct_id.clone(),
            person: row.person_id,
            properties,
        }
    }

    /// The updates that `events`, `overrides` and `persons` (rows the process stage just made)
    /// bring, recorded in the store (see [`resolve`] and [`resolve_persons`]).
    pub fn updates(
        &self,
        events: &[EventRow],
        overrides: &[PersonDistinctIdRow],
        persons: &[PersonRow],
    ) -> Result<Vec<(ViewUpdate, isize)>, StateError> {
        let events: Vec<ViewEvent> = events
            .iter()
            .filter(|r| self.counts(r.team_id))
            .map(|r| self.view_event(r))
            .collect();
        let changes: Vec<(i64, String, Option<Uuid>)> = overrides
            .iter()
            .filter(|r| self.counts(r.team_id))
            .map(|r| {
                (
                    r.team_id,
                    r.distinct_id.clone(),
                    (r.is_deleted == 0).then_some(r.person_id),
                )
            })
            .collect();
        let persons: Vec<(i64, Uuid, Option<Properties>)> = if self.person_properties.is_empty() {
            Vec::new()
        } else {
            persons
                .iter()
                .filter(|r| self.counts(r.team_id))
                .map(|r| {
                    let kept = (r.is_deleted == 0).then(|| {
                        Properties::from_json(&r.properties, Some(&self.person_properties))
                    });
                    (r.team_id, r.id, kept)
                })
                .collect()
        };
        if events.is_empty() && changes.is_empty() && persons.is_empty() {
            return Ok(Vec::new());
        }
        let mut current = self.overrides.lock().unwrap_or_else(|p| p.into_inner());
        let mut store = self.store.clone();
        let mut out: Vec<(ViewUpdate, isize)> = resolve(&mut store, &mut current, events, changes)?
            .into_iter()
            .map(|(e, d)| (ViewUpdate::Event(e), d))
            .collect();
        out.extend(
            resolve_persons(&mut store, persons)?
                .into_iter()
                .map(|(p, d)| (ViewUpdate::Person(p), d)),
        );
        Ok(out)
    }

    /// Everything the views counted before this start, each event with its current person;
    /// fills the overrides.
    pub fn load(&self) -> Result<Vec<(ViewUpdate, isize)>, StateError> {
        let mut current = self.overrides.lock().unwrap_or_else(|p| p.into_inner());
        let mut events = Vec::new();
        let mut persons = Vec::new();
        for record in self.store.view_records() {
            match record? {
                ViewRecord::Event(bytes) => {
                    let event = decode(&bytes)?;
                    if self.counts(event.team_id) {
                        events.push(event);
                    }
                }
                ViewRecord::Override(bytes) => {
                    let (team_id, distinct_id, person): (i64, String, Uuid) =
                        postcard::from_bytes(&bytes)
                            .map_err(|e| corrupt(format!("an override: {e}")))?;
                    if !person.is_nil() {
                        current.insert((team_id, distinct_id), person);
                    }
                }
                ViewRecord::Person(bytes) => {
                    let person = decode_person(&bytes)?;
                    if self.counts(person.team_id) {
                        persons.push((ViewUpdate::Person(person), 1));
                    }
                }
            }
        }
        let events = events.into_iter().map(|e| {
            let person = current
                .get(&(e.team_id, e.distinct_id.clone()))
                .copied()
                .unwrap_or(e.person);
            (ViewUpdate::Event(ViewEvent { person, ..e }), 1)
        });
        Ok(events.chain(persons).collect())
    }
}
