//! The person stage over RocksDB: applies a batch of events, resolves the touched components,
//! and returns each event's person, the row changes, and the state writes.
//!
//! State in RocksDB only ever reflects output that ClickHouse acknowledged: a batch's writes
//! are held (and visible to later batches through an overlay) until the sink has stored the
//! batch's rows and calls [`PendingWrites::commit`]. After a crash, the events since the last
//! commit are read again, applied to the acknowledged state, and their rows emitted again.
//!
//! One team's batch is applied by one caller, but its expensive parts run on the current rayon
//! pool: the records it names are read in parallel (so cold reads overlap on the disk), and its
//! components are decoded, resolved, diffed and encoded in parallel (components are
//! independent). The sequential part is the cheap one: linking ids and recording events.

use std::{
    borrow::Cow,
    collections::{BTreeSet, HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, TimeZone, Utc};
use hogstream_event::ids::person_uuid;
use lru::LruCache;
use rayon::prelude::*;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    component::{Component, ComponentV1, ComponentV2, PersonChanges, Resolved, ResolvedPerson},
    groups::{GroupState, GroupTypes},
    input::{PersonEvent, Personless},
};
use crate::{StateError, StateStore};

/// PostHog's `person_created_at` for personless events: 1970-01-01 00:00:05 UTC.
pub fn personless_created_at() -> DateTime<Utc> {
    Utc.timestamp_opt(5, 0).single().unwrap_or_default()
}

/// How long after its person's creation a personless event is still `propertyless`: PostHog
/// allows for ingestion lag, since an event sent before the person was created can be
/// processed after it.
pub const FORCE_UPGRADE_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The mode of a personless event whose distinct id has a person created at `created_at`.
fn personless_mode(e: &PersonEvent, created_at: DateTime<Utc>) -> PersonMode {
    if e.personless == Personless::Upgradable
        && e.stamp.timestamp() > created_at + FORCE_UPGRADE_GRACE
    {
        PersonMode::ForceUpgrade
    } else {
        PersonMode::Propertyless
    }
}

/// PostHog's `person_mode` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonMode {
    Full,
    /// A personless event whose distinct id already has a person.
    ForceUpgrade,
    Propertyless,
}

/// The person as one event knows it ("persons on events").
#[derive(Debug, Clone, PartialEq)]
pub struct EventPerson {
    pub id: Uuid,
    /// The person's properties as JSON text (shared by the events of one person in a batch).
    pub properties: Arc<str>,
    pub created_at: DateTime<Utc>,
    pub mode: PersonMode,
    /// `$group_N` properties for the event: (index, group key).
    pub groups: Vec<(u8, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupChange {
    pub team_id: i64,
    pub group_type_index: u8,
    pub group_key: String,
    pub properties: Map<String, Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupTypeChange {
    pub team_id: i64,
    pub group_type: String,
    pub group_type_index: u8,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub persons: PersonChanges,
    pub groups: Vec<GroupChange>,
    pub group_types: Vec<GroupTypeChange>,
}

/// State writes of one batch, to be committed once its rows are stored. Committing a clone
/// again is harmless: the writes are the same values.
#[derive(Debug, Default, Clone)]
pub struct PendingWrites {
    seq: u64,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    committed: Option<Arc<AtomicU64>>,
}

impl PendingWrites {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Writes the batch's state durably. Batches of one stage must be committed in the order
    /// they were produced.
    pub fn commit(&self, store: &StateStore) -> Result<(), StateError> {
        Self::commit_all(std::slice::from_ref(self), store)
    }

    /// Writes several batches' state in one durable write: one sync instead of one per batch.
    /// They are applied in the order their stage produced them, whatever order they come in
    /// (a key written by two batches keeps the later batch's value).
    pub fn commit_all(batches: &[PendingWrites], store: &StateStore) -> Result<(), StateError> {
        let mut ordered: Vec<&PendingWrites> = batches.iter().collect();
        ordered.sort_by_key(|b| b.seq);
        store.write_state(ordered.iter().flat_map(|b| &b.writes))?;
        for b in ordered {
            if let Some(c) = &b.committed {
                c.fetch_max(b.seq, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// An ingestion warning of the person stage (PostHog's merge warnings). Its time is the event's,
/// so processing the event again raises the same warning.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonWarning {
    pub team_id: i64,
    pub kind: &'static str,
    pub details: Value,
    pub at: DateTime<Utc>,
}

/// Output of [`PersonState::process`].
#[derive(Debug, Default)]
pub struct Processed {
    /// One per input event, in order.
    pub events: Vec<EventPerson>,
    pub warnings: Vec<PersonWarning>,
    pub changes: Changes,
    pub writes: PendingWrites,
}

const COMPONENT: u8 = b'c';
const INDEX: u8 = b'i';
const GROUP_TYPES: u8 = b't';
const GROUP: u8 = b'g';
/// The last process lifetime that opened the person state.
const GENERATION: &[u8] = b"G";

/// The team of a person-state key; `None` for the store-wide generation key.
pub fn team_of_key(key: &[u8]) -> Option<i64> {
    if !matches!(
        key.first(),
        Some(&(COMPONENT | INDEX | GROUP_TYPES | GROUP))
    ) {
        return None;
    }
    Some(i64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

fn key(kind: u8, team_id: i64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + rest.len());
    k.push(kind);
    k.extend_from_slice(&team_id.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

fn group_key(team_id: i64, index: u8, group_key: &str) -> Vec<u8> {
    let mut rest = vec![index];
    rest.extend_from_slice(group_key.as_bytes());
    key(GROUP, team_id, &rest)
}

/// What an event carries, given its distinct id's person as of the event (if it had one).
fn event_person(
    e: &PersonEvent,
    person: Option<ResolvedPerson>,
    types: Option<&GroupTypes>,
) -> EventPerson {
    match (person, e.process_person) {
        (Some(p), true) => {
            let groups = e
                .groups
                .iter()
                .filter_map(|(group_type, group_key)| {
                    let i = types?.types.iter().position(|x| x == group_type)?;
                    Some((u8::try_from(i).ok()?, group_key.clone()))
                })
                .collect();
            EventPerson {
                id: p.id,
                properties: p.properties_json,
                created_at: p.created_at,
                mode: PersonMode::Full,
                groups,
            }
        }
        (Some(p), false) if e.personless != Personless::Unlinked => EventPerson {
            id: p.id,
            // A personless event never carries person properties, even its person's.
            properties: "{}".into(),
            created_at: p.created_at,
            mode: personless_mode(e, p.created_at),
            groups: Vec::new(),
        },
        (_, _) => EventPerson {
            id: person_uuid(e.team_id, &e.distinct_id),
            properties: "{}".into(),
            created_at: personless_created_at(),
            mode: PersonMode::Propertyless,
            groups: Vec::new(),
        },
    }
}

/// PostHog's warning for a merge attempt that did not merge, if any: an illegal id on either
/// side, or (as the component's replay says now) an other person that was already identified.
fn merge_warning(e: &PersonEvent, resolved: &Resolved) -> Option<&'static str> {
    let (_, other) = e.merge.as_ref().filter(|_| e.process_person)?;
    if other == &e.distinct_id {
        return None;
    }
    if super::input::is_illegal_id(other) || super::input::is_illegal_id(&e.distinct_id) {
        return Some("cannot_merge_with_illegal_distinct_id");
    }
    resolved
        .identity
        .refused
        .contains(&e.stamp)
        .then_some("cannot_merge_already_identified")
}

/// The key of the record that holds `distinct_id` when it is its component's id (always, for a
/// distinct id never linked to another): for tools and benchmarks that read records raw.
pub fn record_key(team_id: i64, distinct_id: &str) -> Vec<u8> {
    key(COMPONENT, team_id, distinct_id.as_bytes())
}

type CompKey = (i64, String);

/// What one batch loaded and changed.
#[derive(Default)]
struct Work {
    comps: HashMap<CompKey, Component>,
    /// Components to resolve, diff and write.
    touched: BTreeSet<CompKey>,
    /// Components of events that may have been processed before a crash: written whole.
    replayed: BTreeSet<CompKey>,
    /// Components whose record changed without a possible change of their persons (a first
    /// personless event, a person carried by stored events): written, not diffed.
    dirty: BTreeSet<CompKey>,
    removed: Vec<CompKey>,
    /// Index changes: `None` when the distinct id is its component's id.
    index: HashMap<CompKey, Option<String>>,
    types: HashMap<i64, GroupTypes>,
    types_dirty: BTreeSet<i64>,
    groups: HashMap<(i64, u8, String), GroupState>,
}

/// Person and group state of the teams this worker owns.
pub struct PersonState {
    store: StateStore,
    declared: HashMap<i64, Vec<String>>,
    generation: u64,
    overlay: HashMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    /// Records read ahead for the batch being applied (see [`PersonState::prefetch`]).
    fetched: HashMap<Vec<u8>, Option<Vec<u8>>>,
    queue: VecDeque<(u64, Vec<u8>)>,
    seq: u64,
    committed: Arc<AtomicU64>,
    /// Components as this stage last wrote them, decoded: a person active again in a later
    /// batch skips the read and the decode. An entry always equals what its record decodes to
    /// (every write here replaces it, every removal drops it); a batch takes its components
    /// out and puts back only those it writes.
    decoded: LruCache<CompKey, Component>,
}

/// Decoded components a stage keeps by default (see [`PersonState::with_cache`]).
pub const DEFAULT_COMPONENT_CACHE: usize = 50_000;

impl PersonState {
    /// `declared` holds the group types of teams that declare them (index = position).
    /// Every call starts a new generation (see `Component::diff`).
    pub fn new(store: StateStore, declared: HashMap<i64, Vec<String>>) -> Result<Self, StateError> {
        Self::with_cache(store, declared, DEFAULT_COMPONENT_CACHE)
    }

    /// [`PersonState::new`] keeping up to `components` decoded components (at least one).
    pub fn with_cache(
        store: StateStore,
        declared: HashMap<i64, Vec<String>>,
        components: usize,
    ) -> Result<Self, StateError> {
        let generation = match store.get_state(GENERATION)? {
            Some(b) => b.try_into().map(u64::from_be_bytes).unwrap_or_default() + 1,
            None => 1,
        };
        store.write_state(&[(GENERATION.to_vec(), Some(generation.to_be_bytes().to_vec()))])?;
        Ok(Self {
            store,
            declared,
            generation,
            overlay: HashMap::new(),
            fetched: HashMap::new(),
            queue: VecDeque::new(),
            seq: 0,
            committed: Arc::new(AtomicU64::new(0)),
            decoded: LruCache::new(NonZeroUsize::new(components).unwrap_or(NonZeroUsize::MIN)),
        })
    }

    /// A record as this stage last wrote or read it: borrowed from the overlay or the records
    /// read ahead, so the common case copies nothing.
    fn get(&self, k: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        if let Some((_, v)) = self.overlay.get(k) {
            return Ok(v.as_deref().map(Cow::Borrowed));
        }
        match self.fetched.get(k) {
            Some(v) => Ok(v.as_deref().map(Cow::Borrowed)),
            None => Ok(self.store.get_state(k)?.map(Cow::Owned)),
        }
    }

    /// Reads the keys the overlay does not hold into `fetched`, in parallel.
    fn fetch(&mut self, keys: impl IntoIterator<Item = Vec<u8>>) -> Result<(), StateError> {
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| !self.overlay.contains_key(k))
            .collect();
        let values = self.store.get_state_many(&keys)?;
        self.fetched.extend(keys.into_iter().zip(values));
        Ok(())
    }

    /// Reads ahead what applying `events` reads: the index entries of every distinct id they
    /// name, then their components' records, which are decoded into `work` in parallel. The
    /// result is what the sequential pass would load lazily (nothing is written before it),
    /// only read together.
    fn prefetch(&mut self, events: &[PersonEvent], work: &mut Work) -> Result<(), StateError> {
        self.fetched.clear();
        let ids: BTreeSet<(i64, &str)> = events
            .iter()
            .flat_map(|e| {
                let other = e.effective_merge().map(|(_, other)| (e.team_id, other));
                std::iter::once((e.team_id, e.distinct_id.as_str())).chain(other)
            })
            .collect();
        self.fetch(ids.iter().map(|(t, d)| key(INDEX, *t, d.as_bytes())))?;
        let mut comps = ids
            .iter()
            .map(|(t, d)| Ok((*t, self.comp_id(work, *t, d)?)))
            .collect::<Result<BTreeSet<CompKey>, StateError>>()?;
        comps.retain(|k| match self.decoded.pop(k) {
            Some(c) => {
                work.comps.insert(k.clone(), c);
                false
            }
            None => true,
        });
        self.fetch(comps.iter().map(|(t, c)| key(COMPONENT, *t, c.as_bytes())))?;
        let this = &*self;
        let decoded = comps
            .into_par_iter()
            .map(|k| {
                let c = this.load_component(&k)?;
                Ok((k, c))
            })
            .collect::<Result<Vec<(CompKey, Component)>, StateError>>()?;
        work.comps.extend(decoded);
        Ok(())
    }

    /// A component record, of the current layout or an earlier one ([`ComponentV2`],
    /// [`ComponentV1`]): each older layout is a prefix of the next, so the newest is tried first.
    fn load_component(&self, k: &CompKey) -> Result<Component, StateError> {
        let record = key(COMPONENT, k.0, k.1.as_bytes());
        let Some(bytes) = self.get(&record)? else {
            return Ok(Component::default());
        };
        postcard::from_bytes::<Component>(&bytes).or_else(|current| {
            postcard::from_bytes::<ComponentV2>(&bytes)
                .map(ComponentV2::upgrade)
                .or_else(|_| postcard::from_bytes::<ComponentV1>(&bytes).map(|v1| v1.upgrade(k.0)))
                .map_err(|first| StateError::Corrupt {
                    cf: crate::store::CF_PERSONS,
                    detail: format!(
                        "component {}: {current} (as the first layout: {first})",
                        k.1
                    ),
                })
        })
    }

    fn load<T: DeserializeOwned + Default>(&self, k: &[u8]) -> Result<T, StateError> {
        match self.get(k)? {
            None => Ok(T::default()),
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| StateError::Corrupt {
                cf: crate::store::CF_PERSONS,
                detail: format!("record {}: {e}", String::from_utf8_lossy(&k[9..])),
            }),
        }
    }

    fn comp_id(&self, work: &Work, team_id: i64, did: &str) -> Result<String, StateError> {
        let k = (team_id, did.to_owned());
        if let Some(c) = work.index.get(&k) {
            return Ok(c.clone().unwrap_or_else(|| did.to_owned()));
        }
        Ok(match self.get(&key(INDEX, team_id, did.as_bytes()))? {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => did.to_owned(),
        })
    }

    fn comp<'w>(&self, work: &'w mut Work, k: &CompKey) -> Result<&'w mut Component, StateError> {
        if !work.comps.contains_key(k) {
            let c = self.load_component(k)?;
            work.comps.insert(k.clone(), c);
        }
        Ok(work.comps.get_mut(k).expect("just inserted"))
    }

    /// Links the components of two distinct ids; returns the surviving component's key.
    fn link(&self, work: &mut Work, a: CompKey, b: CompKey) -> Result<CompKey, StateError> {
        if a == b {
            return Ok(a);
        }
        let size_a = self.comp(work, &a)?.distinct_ids.len();
        let size_b = self.comp(work, &b)?.distinct_ids.len();
        let (keep, gone) = if (size_a, &b.1) >= (size_b, &a.1) {
            (a, b)
        } else {
            (b, a)
        };
        let absorbed = work.comps.remove(&gone).expect("loaded above");
        for did in absorbed.distinct_ids.keys() {
            let target = (did != &keep.1).then(|| keep.1.clone());
            work.index.insert((keep.0, did.clone()), target);
        }
        work.comps
            .get_mut(&keep)
            .expect("loaded above")
            .absorb(keep.0, absorbed);
        work.touched.remove(&gone);
        work.dirty.remove(&gone);
        if work.replayed.remove(&gone) {
            work.replayed.insert(keep.clone());
        }
        work.removed.push(gone);
        work.touched.insert(keep.clone());
        Ok(keep)
    }

    fn group_index(
        &self,
        work: &mut Work,
        team_id: i64,
        group_type: &str,
    ) -> Result<Option<u8>, StateError> {
        if !work.types.contains_key(&team_id) {
            let mut types: GroupTypes = self.load(&key(GROUP_TYPES, team_id, &[]))?;
            if let Some(declared) = self.declared.get(&team_id)
                && types.types != *declared
            {
                types.types.clone_from(declared);
                work.types_dirty.insert(team_id);
            }
            work.types.insert(team_id, types);
        }
        let types = work.types.get_mut(&team_id).expect("just loaded");
        if self.declared.contains_key(&team_id) {
            return Ok(types
                .types
                .iter()
                .position(|t| t == group_type)
                .and_then(|i| u8::try_from(i).ok()));
        }
        let (index, new) = types.index_of(group_type);
        if new {
            work.types_dirty.insert(team_id);
        }
        Ok(index)
    }

    fn record(&self, work: &mut Work, e: &PersonEvent) -> Result<(), StateError> {
        let mut comp = (e.team_id, self.comp_id(work, e.team_id, &e.distinct_id)?);
        if let Some((_, other)) = e.effective_merge() {
            let other_comp = (e.team_id, self.comp_id(work, e.team_id, other)?);
            comp = self.link(work, comp, other_comp)?;
            // An id seen for the first time has no component of its own to re-point.
            for did in [e.distinct_id.as_str(), other] {
                let target = (did != comp.1).then(|| comp.1.clone());
                work.index.insert((e.team_id, did.to_owned()), target);
            }
        }
        self.comp(work, &comp)?.record(e);
        work.touched.insert(comp);
        for (group_type, _) in &e.groups {
            self.group_index(work, e.team_id, group_type)?;
        }
        if let Some(gi) = &e.group_identify
            && let Some(index) = self.group_index(work, e.team_id, &gi.group_type)?
        {
            let k = (e.team_id, index, gi.group_key.clone());
            if !work.groups.contains_key(&k) {
                let g = self.load(&group_key(k.0, k.1, &k.2))?;
                work.groups.insert(k.clone(), g);
            }
            work.groups
                .get_mut(&k)
                .expect("just loaded")
                .write(e.stamp, &gi.set);
        }
        Ok(())
    }

    /// Records a personless event's distinct id with its time: a merge that makes its first
    /// person names it after an id used this way before (see `identity`).
    fn record_personless(&self, work: &mut Work, e: &PersonEvent) -> Result<(), StateError> {
        let k = (e.team_id, self.comp_id(work, e.team_id, &e.distinct_id)?);
        let comp = self.comp(work, &k)?;
        if comp.record_personless(&e.distinct_id, e.stamp) {
            if comp.merges.is_empty() {
                work.dirty.insert(k);
            } else {
                work.touched.insert(k);
            }
        }
        Ok(())
    }

    fn prune_overlay(&mut self) {
        let committed = self.committed.load(Ordering::Acquire);
        while self.queue.front().is_some_and(|(s, _)| *s <= committed) {
            let (_, k) = self.queue.pop_front().expect("checked");
            if self.overlay.get(&k).is_some_and(|(s, _)| *s <= committed) {
                self.overlay.remove(&k);
            }
        }
    }

    /// Applies `events` (of the teams this stage owns) and returns their persons, the row
    /// changes and the state writes to commit once those rows are stored.
    pub fn process(&mut self, events: &[PersonEvent]) -> Result<Processed, StateError> {
        self.prune_overlay();
        let mut work = Work::default();
        self.prefetch(events, &mut work)?;
        for e in events.iter().filter(|e| e.process_person) {
            self.record(&mut work, e)?;
        }
        for e in events.iter().filter(|e| !e.process_person) {
            self.record_personless(&mut work, e)?;
        }
        for e in events.iter().filter(|e| e.replay) {
            let k = (e.team_id, self.comp_id(&work, e.team_id, &e.distinct_id)?);
            self.comp(&mut work, &k)?;
            work.touched.insert(k.clone());
            work.replayed.insert(k);
        }

        let mut out = Processed::default();
        // Every component the batch names, resolved in parallel (components are independent).
        let keys = events
            .iter()
            .map(|e| Ok((e.team_id, self.comp_id(&work, e.team_id, &e.distinct_id)?)))
            .collect::<Result<Vec<CompKey>, StateError>>()?;
        // `record` and `record_personless` loaded every event's component into `work`.
        let needed: BTreeSet<&CompKey> = keys.iter().chain(&work.touched).collect();
        let (comps, types) = (&work.comps, &work.types);
        let comp = |k: &CompKey| comps.get(k).expect("every event's component is loaded");
        let resolved: HashMap<CompKey, Resolved> = needed
            .into_par_iter()
            .map(|k| (k.clone(), comp(k).resolve(k.0)))
            .collect();

        // Each event's person as of its own stamp: independent per event, so in parallel.
        let persons: Vec<EventPerson> = events
            .par_iter()
            .zip(&keys)
            .map(|(e, k)| {
                let person = comp(k).person_at(k.0, &resolved[k], &e.distinct_id, e.stamp);
                event_person(e, person, types.get(&e.team_id))
            })
            .collect();

        // What each event was stored with decides whether its id needs an override: most
        // events carry a person their id's events already carried (a lookup, no write); one
        // that carries an earlier person than its id's current one needs its component diffed.
        for ((e, k), ep) in events.iter().zip(&keys).zip(persons) {
            let r = &resolved[k];
            if let Some(kind) = merge_warning(e, r) {
                let other = e
                    .merge
                    .as_ref()
                    .map(|(_, o)| o.as_str())
                    .unwrap_or_default();
                out.warnings.push(PersonWarning {
                    team_id: e.team_id,
                    kind,
                    details: serde_json::json!({
                        "eventUuid": e.stamp.uuid().to_string(),
                        "distinctId": e.distinct_id,
                        "otherDistinctId": other,
                    }),
                    at: e.stamp.timestamp(),
                });
            }
            let known = work
                .comps
                .get(k)
                .is_some_and(|c| c.carried(k.0, &e.distinct_id, ep.id));
            if !known
                && self
                    .comp(&mut work, k)?
                    .record_stored(k.0, &e.distinct_id, ep.id)
            {
                let current = r.identity.person_of(&e.distinct_id).map(|p| p.uuid);
                if current.is_some_and(|c| c != ep.id) {
                    work.touched.insert(k.clone());
                } else if !work.touched.contains(k) {
                    work.dirty.insert(k.clone());
                }
            }
            out.events.push(ep);
        }

        // Touched components are taken out of `work` to be diffed in parallel, then put back
        // for `writes`; the changes keep the touched set's order.
        let mut touched: Vec<(CompKey, Component)> = work
            .touched
            .iter()
            .map(|k| {
                let c = work.comps.remove(k).expect("touched components are loaded");
                (k.clone(), c)
            })
            .collect();
        let generation = self.generation;
        let replayed = &work.replayed;
        let diffs: Vec<PersonChanges> = touched
            .par_iter_mut()
            .map(|(k, comp)| comp.diff(k.0, &resolved[k], generation, replayed.contains(k)))
            .collect();
        for ((k, comp), changes) in touched.into_iter().zip(diffs) {
            out.changes.persons.append(changes);
            work.dirty.remove(&k);
            work.comps.insert(k, comp);
        }

        for ((team_id, index, group_key_text), g) in &mut work.groups {
            let hash = g.content_hash();
            if hash != g.emitted {
                g.emitted = hash;
                out.changes.groups.push(GroupChange {
                    team_id: *team_id,
                    group_type_index: *index,
                    group_key: group_key_text.clone(),
                    properties: g.visible(),
                    created_at: g.created.map(|c| c.timestamp()).unwrap_or_default(),
                });
            }
        }
        out.changes.groups.sort_by(|a, b| {
            (a.team_id, a.group_type_index, &a.group_key).cmp(&(
                b.team_id,
                b.group_type_index,
                &b.group_key,
            ))
        });
        for team_id in &work.types_dirty {
            for (i, t) in work.types[team_id].types.iter().enumerate() {
                out.changes.group_types.push(GroupTypeChange {
                    team_id: *team_id,
                    group_type: t.clone(),
                    group_type_index: u8::try_from(i).unwrap_or_default(),
                });
            }
        }

        out.writes = self.writes(&mut work)?;
        // Freeing a batch's records, components and resolutions is a visible share of the
        // sequential path: the pool frees them while the caller goes on.
        let fetched = std::mem::take(&mut self.fetched);
        rayon::spawn(move || drop((work, resolved, fetched)));
        Ok(out)
    }

    /// The batch's state writes; the components written move into the decoded cache.
    fn writes(&mut self, work: &mut Work) -> Result<PendingWrites, StateError> {
        fn encode<T: Serialize>(v: &T) -> Vec<u8> {
            postcard::to_allocvec(v).expect("state records always encode")
        }
        let mut writes = Vec::new();
        for k in &work.removed {
            self.decoded.pop(k);
            writes.push((key(COMPONENT, k.0, k.1.as_bytes()), None));
        }
        for ((team_id, did), comp) in &work.index {
            let v = comp.as_ref().map(|c| c.as_bytes().to_vec());
            writes.push((key(INDEX, *team_id, did.as_bytes()), v));
        }
        let written: Vec<&CompKey> = work.touched.union(&work.dirty).collect();
        let comps = &work.comps;
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = written
            .par_iter()
            .map(|k| {
                let record = encode(&comps[*k]);
                (key(COMPONENT, k.0, k.1.as_bytes()), Some(record))
            })
            .collect();
        writes.extend(encoded);
        for k in written {
            if let Some(c) = work.comps.remove(k) {
                self.decoded.put(k.clone(), c);
            }
        }
        for team_id in &work.types_dirty {
            writes.push((
                key(GROUP_TYPES, *team_id, &[]),
                Some(encode(&work.types[team_id])),
            ));
        }
        for ((team_id, index, gk), g) in &work.groups {
            writes.push((group_key(*team_id, *index, gk), Some(encode(g))));
        }
        self.seq += 1;
        for (k, v) in &writes {
            self.overlay.insert(k.clone(), (self.seq, v.clone()));
            self.queue.push_back((self.seq, k.clone()));
        }
        Ok(PendingWrites {
            seq: self.seq,
            writes,
            committed: Some(Arc::clone(&self.committed)),
        })
    }
}

#[cfg(test)]
mod commit_tests {
    use super::*;

    #[test]
    fn batches_committed_together_apply_in_the_order_they_were_produced() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 1 << 20).unwrap();
        let committed = Arc::new(AtomicU64::new(0));
        let batch = |seq: u64, value: &[u8]| PendingWrites {
            seq,
            writes: vec![(record_key(1, "d"), Some(value.to_vec()))],
            committed: Some(Arc::clone(&committed)),
        };
        // Handed over out of order: the later batch's value must still win.
        PendingWrites::commit_all(&[batch(2, b"later"), batch(1, b"earlier")], &store).unwrap();
        assert_eq!(
            store.get_state(&record_key(1, "d")).unwrap().as_deref(),
            Some(&b"later"[..])
        );
        assert_eq!(committed.load(Ordering::Acquire), 2);
    }
}
