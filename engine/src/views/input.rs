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
    sync::Mutex,
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

use super::{
    Properties, ViewEvent, ViewPerson,
    registry::{ActiveView, Window},
};

/// The first byte of every event key of the store (see `hogstream_state::views`).
const EVENT_PREFIX: u8 = b'e';

/// Where view inputs are kept: the process's RocksDB store, or memory in tests.
pub(crate) trait InputStore {
    /// The stored values of `keys`, in order.
    fn get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    /// Writes `records`; `None` deletes.
    fn put(&mut self, records: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StateError>;
    /// Visits the values of the keys beginning with `prefix`, in key order, one at a time.
    fn each_with_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError>;
}

impl InputStore for StateStore {
    fn get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.view_events(keys)
    }

    fn put(&mut self, records: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StateError> {
        self.put_view_records(&records)
    }

    fn each_with_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        self.for_each_view_event(prefix, visit)
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

    fn each_with_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        self.range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .try_for_each(|(_, v)| visit(v))
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

/// An update for one view (`Some(index)` among the active views) or for every view (`None`).
pub type Routed = (Option<u16>, ViewUpdate);

/// What the input stage keeps in memory: each distinct id's override, and per active view the
/// first day whose events it holds (`None`: every day).
#[derive(Debug, Default)]
pub(crate) struct InputState {
    /// By team, then distinct id: looked up by a borrowed distinct id for every event.
    pub overrides: HashMap<i64, HashMap<String, Uuid>>,
    pub held_from: Vec<Option<i32>>,
}

impl InputState {
    fn override_of(&self, team_id: i64, distinct_id: &str) -> Option<Uuid> {
        self.overrides.get(&team_id)?.get(distinct_id).copied()
    }

    fn set_override(&mut self, team_id: i64, distinct_id: String, person: Option<Uuid>) {
        match person {
            Some(p) => {
                self.overrides
                    .entry(team_id)
                    .or_default()
                    .insert(distinct_id, p);
            }
            None => {
                if let Some(ids) = self.overrides.get_mut(&team_id) {
                    ids.remove(&distinct_id);
                }
            }
        }
    }

    /// Where an update of an event of `day` goes: `None` for every view, else the views that
    /// hold that day (possibly none: the event is older than every window).
    fn route(&self, day: i32) -> Option<Vec<u16>> {
        if self.held_from.iter().flatten().all(|from| day >= *from) {
            return None;
        }
        Some(
            (0..self.held_from.len())
                .filter(|&i| self.held_from[i].is_none_or(|from| day >= from))
                .map(|i| u16::try_from(i).unwrap_or(u16::MAX))
                .collect(),
        )
    }

    fn person_of(&self, e: &ViewEvent) -> Uuid {
        self.override_of(e.team_id, &e.distinct_id)
            .unwrap_or(e.person)
    }

    /// `event` with `person`, `diff` times, to the views that hold its day.
    fn push(&self, out: &mut Vec<(Routed, isize)>, event: ViewEvent, person: Uuid, diff: isize) {
        let event = ViewEvent { person, ..event };
        match self.route(event.day()) {
            None => out.push(((None, ViewUpdate::Event(event)), diff)),
            Some(views) => {
                for v in views {
                    out.push(((Some(v), ViewUpdate::Event(event.clone())), diff));
                }
            }
        }
    }

    /// Whether some view holds events of `day`.
    fn holds(&self, day: i32) -> bool {
        self.route(day).is_none_or(|views| !views.is_empty())
    }
}

/// The updates of the views' input that `events` (with the person each was stored with) and
/// then `changes` (a distinct id's new override; `None` removes it) bring, given and updating
/// `state` and `store`.
///
/// Events are keyed like rows of `events`: a copy of a stored event (a replay, an event sent
/// twice) brings nothing, and an event that differs from the stored one of its key replaces
/// it, as the later row of `events` replaces the earlier under `FINAL`. A changed override
/// moves the distinct id's stored events to its person. An event older than every view's
/// window is neither counted nor kept.
pub(crate) fn resolve(
    store: &mut impl InputStore,
    state: &mut InputState,
    events: Vec<ViewEvent>,
    changes: Vec<(i64, String, Option<Uuid>)>,
) -> Result<Vec<(Routed, isize)>, StateError> {
    let mut out = Vec::new();
    let (events, late): (Vec<ViewEvent>, Vec<ViewEvent>) =
        events.into_iter().partition(|e| state.holds(e.day()));
    if !late.is_empty() {
        metrics::counter!("hogstream_view_late_events_total").increment(late.len() as u64);
    }
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
        if let Some(previous) = previous {
            let person = state.person_of(&previous);
            state.push(&mut out, previous, person, -1);
        }
        records.push((key.clone(), Some(encode(&event)?)));
        let person = state.person_of(&event);
        state.push(&mut out, event.clone(), person, 1);
        latest.insert(key, event);
    }
    // Stored before the overrides are applied: a merge in the same batch moves them too.
    store.put(std::mem::take(&mut records))?;
    for (team_id, distinct_id, new) in changes {
        let old = state.override_of(team_id, &distinct_id);
        if old == new {
            continue;
        }
        // One distinct id's events: few, so held together.
        let mut of_id = Vec::new();
        store.each_with_prefix(&distinct_id_prefix(team_id, &distinct_id), &mut |bytes| {
            of_id.push(decode(bytes)?);
            Ok(())
        })?;
        for event in of_id {
            let (before, after) = (old.unwrap_or(event.person), new.unwrap_or(event.person));
            if before != after {
                state.push(&mut out, event.clone(), before, -1);
                state.push(&mut out, event, after, 1);
            }
        }
        records.push((
            override_key(team_id, &distinct_id),
            Some(encode(&(
                team_id,
                &distinct_id,
                new.unwrap_or_else(Uuid::nil),
            ))?),
        ));
        state.set_override(team_id, distinct_id, new);
    }
    store.put(records)?;
    Ok(out)
}

/// Moves the windowed views' first held days to those of `today`: the events of the days
/// that left a view's window leave that view (retracted with their current person), and
/// events no view holds any more leave the store.
pub(crate) fn expire(
    store: &mut impl InputStore,
    state: &mut InputState,
    windows: &[Option<Window>],
    today: i32,
) -> Result<Vec<(Routed, isize)>, StateError> {
    let from: Vec<Option<i32>> = windows
        .iter()
        .zip(&state.held_from)
        .map(|(w, old)| {
            let new = w.map(|w| w.first_held_day(today));
            // A clock that steps back does not bring days back.
            match (old, new) {
                (Some(old), Some(new)) => Some(new.max(*old)),
                (_, new) => new,
            }
        })
        .collect();
    if from == state.held_from {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut gone = Vec::new();
    // The whole store, one event at a time: only what leaves is kept.
    store.each_with_prefix(&[EVENT_PREFIX], &mut |bytes| {
        let event = decode(bytes)?;
        let day = event.day();
        let leaves: Vec<u16> = state
            .held_from
            .iter()
            .zip(&from)
            .enumerate()
            .filter(|(_, (old, new))| matches!((old, new), (Some(old), Some(new)) if (*old..*new).contains(&day)))
            .map(|(v, _)| u16::try_from(v).unwrap_or(u16::MAX))
            .collect();
        if !leaves.is_empty() {
            let person = state.person_of(&event);
            for v in leaves {
                let update = ViewUpdate::Event(ViewEvent {
                    person,
                    ..event.clone()
                });
                out.push(((Some(v), update), -1));
            }
        }
        if from.iter().all(|f| f.is_some_and(|f| day < f)) {
            gone.push((key_of(&event), None));
        }
        Ok(())
    })?;
    metrics::counter!("hogstream_view_expired_events_total").increment(gone.len() as u64);
    store.put(gone)?;
    state.held_from = from;
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
    /// Per active view, its window.
    windows: Vec<Option<Window>>,
    store: StateStore,
    /// For the whole process: one lock orders every change of the views' input.
    state: Mutex<InputState>,
}

/// Today's UTC day number.
pub fn today() -> i32 {
    let micros = chrono::Utc::now().timestamp_micros();
    i32::try_from(micros.div_euclid(super::MICROS_PER_DAY)).unwrap_or(i32::MAX)
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
        let declared = |of: fn(&ActiveView) -> &'static [&'static str]| {
            let mut all: Vec<&'static str> =
                active.iter().flat_map(|v| of(v).iter().copied()).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let windows: Vec<Option<Window>> = active.iter().map(|v| v.window).collect();
        let state = InputState {
            overrides: HashMap::new(),
            held_from: vec![None; windows.len()],
        };
        Some(Self {
            teams,
            properties: declared(|v| v.view.properties()),
            person_properties: declared(|v| v.view.person_properties()),
            windows,
            store,
            state: Mutex::new(state),
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

    fn state(&self) -> std::sync::MutexGuard<'_, InputState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The updates that `events`, `overrides` and `persons` (rows the process stage just made)
    /// bring, recorded in the store (see [`resolve`] and [`resolve_persons`]).
    pub fn updates(
        &self,
        events: &[EventRow],
        overrides: &[PersonDistinctIdRow],
        persons: &[PersonRow],
    ) -> Result<Vec<(Routed, isize)>, StateError> {
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
        let mut state = self.state();
        let mut store = self.store.clone();
        let mut out = resolve(&mut store, &mut state, events, changes)?;
        out.extend(
            resolve_persons(&mut store, persons)?
                .into_iter()
                .map(|(p, d)| ((None, ViewUpdate::Person(p)), d)),
        );
        Ok(out)
    }

    /// Retires the days that left the windows by `today` (see [`expire`]).
    pub fn expire(&self, today: i32) -> Result<Vec<(Routed, isize)>, StateError> {
        let mut state = self.state();
        let mut store = self.store.clone();
        expire(&mut store, &mut state, &self.windows, today)
    }

    /// Everything the views counted before this start that their windows still hold on
    /// `today`, each event with its current person; fills the overrides.
    pub fn load(&self, today: i32) -> Result<Vec<(Routed, isize)>, StateError> {
        let mut state = self.state();
        let mut events = Vec::new();
        let mut out = Vec::new();
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
                        state.set_override(team_id, distinct_id, Some(person));
                    }
                }
                ViewRecord::Person(bytes) => {
                    let person = decode_person(&bytes)?;
                    if self.counts(person.team_id) {
                        out.push(((None, ViewUpdate::Person(person)), 1));
                    }
                }
            }
        }
        state.held_from = self
            .windows
            .iter()
            .map(|w| w.map(|w| w.first_held_day(today)))
            .collect();
        // Events no window holds any more leave the store now.
        let mut gone = Vec::new();
        for event in events {
            if !state.holds(event.day()) {
                gone.push((key_of(&event), None));
                continue;
            }
            let person = state.person_of(&event);
            state.push(&mut out, event, person, 1);
        }
        let mut store = self.store.clone();
        store.put(gone)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u128, day: i32) -> ViewEvent {
        ViewEvent {
            team_id: 1,
            timestamp: i64::from(day) * 86_400_000_000,
            uuid: Uuid::from_u128(n),
            event: "e".into(),
            distinct_id: format!("d{n}"),
            person: Uuid::from_u128(n),
            properties: Properties::default(),
        }
    }

    fn window(days: u32) -> Option<Window> {
        Some(Window {
            days,
            key_index: 0,
            reach_days: 0,
        })
    }

    #[test]
    fn days_that_leave_every_window_leave_the_views_and_the_store() {
        let mut store = BTreeMap::new();
        // Two views: a 2-day and a 4-day window.
        let windows = [window(2), window(4)];
        let mut state = InputState {
            overrides: HashMap::new(),
            held_from: vec![None, None],
        };
        assert!(
            expire(&mut store, &mut state, &windows, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(state.held_from, [Some(9), Some(7)]);
        let added = resolve(
            &mut store,
            &mut state,
            vec![event(1, 6), event(2, 7), event(3, 9)],
            Vec::new(),
        )
        .unwrap();
        let routes: Vec<Option<u16>> = added.iter().map(|((to, _), _)| *to).collect();
        assert_eq!(
            routes,
            [Some(1), None],
            "day 6 is too old for both; day 7 only for the 4-day view"
        );
        assert_eq!(store.len(), 2, "the event no view holds is not kept");
        // Two days later: day 7 leaves the 4-day view (and so every window), day 9 the 2-day one.
        let gone = expire(&mut store, &mut state, &windows, 12).unwrap();
        let retracted: Vec<(Option<u16>, i32, isize)> = gone
            .iter()
            .map(|((to, u), d)| match u {
                ViewUpdate::Event(e) => (*to, e.day(), *d),
                ViewUpdate::Person(_) => panic!("no persons here"),
            })
            .collect();
        assert_eq!(retracted, [(Some(1), 7, -1), (Some(0), 9, -1)]);
        assert_eq!(store.len(), 1, "day 9 stays for the 4-day view");
        assert!(
            expire(&mut store, &mut state, &windows, 12)
                .unwrap()
                .is_empty(),
            "once"
        );
    }
}
