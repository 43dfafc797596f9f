//! A component: distinct ids ever linked by a merge attempt, stored as one record. Identity
//! decisions never reach outside a component, so a late event replays only its own component
//! (usually one to three distinct ids), never a team's history.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use hogstream_event::ids::person_uuid;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    identity::{Identity, MergeEntry, ReplayedPerson, replay},
    input::{PersonEvent, Stamp},
    registers::{Earlier, Registers},
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DistinctIdState {
    /// The earliest ordinary person-processing event of this id.
    pub first_plain: Option<Stamp>,
    /// Every property write made by events of this id.
    pub registers: Registers,
}

/// What the last acknowledged output said, so the next one writes only differences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Emitted {
    /// The process lifetime that wrote this snapshot; see [`Component::diff`].
    generation: u64,
    person_of: BTreeMap<String, Uuid>,
    /// Person → hash of its row content.
    persons: BTreeMap<Uuid, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub distinct_ids: BTreeMap<String, DistinctIdState>,
    pub merges: BTreeSet<MergeEntry>,
    pub emitted: Emitted,
    // Fields below were added after the first release: they come last, so a record written
    // before them fails to decode as this type and is read as a [`ComponentV1`].
    /// Each distinct id's earliest personless event: it names a person made by a merge.
    pub personless: BTreeMap<String, Stamp>,
    /// The person ids each distinct id's stored events carry: an override row is needed only
    /// where one of them is not the id's current person.
    pub stored: BTreeMap<String, BTreeSet<Uuid>>,
    /// Distinct ids that have an override row; it is re-pointed whenever their person changes.
    pub overridden: BTreeSet<String>,
    /// The `$set`/`$unset` writes a later one replaced, of the distinct ids that have any:
    /// what lets an event carry its person as of its own time.
    pub earlier: BTreeMap<String, Earlier>,
}

/// The record as written before `earlier` existed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ComponentV2 {
    distinct_ids: BTreeMap<String, DistinctIdState>,
    merges: BTreeSet<MergeEntry>,
    emitted: Emitted,
    personless: BTreeMap<String, Stamp>,
    stored: BTreeMap<String, BTreeSet<Uuid>>,
    overridden: BTreeSet<String>,
}

impl ComponentV2 {
    /// No history: events older than a write already held see its value.
    pub fn upgrade(self) -> Component {
        Component {
            distinct_ids: self.distinct_ids,
            merges: self.merges,
            emitted: self.emitted,
            personless: self.personless,
            stored: self.stored,
            overridden: self.overridden,
            earlier: BTreeMap::new(),
        }
    }
}

/// The record as written before `personless`, `stored` and `overridden` existed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ComponentV1 {
    distinct_ids: BTreeMap<String, DistinctIdState>,
    merges: BTreeSet<MergeEntry>,
    emitted: Emitted,
}

impl ComponentV1 {
    /// What the old rules imply: events carry the id's own UUIDv5 or the person last emitted,
    /// and a linked component wrote an override for each of its ids.
    pub fn upgrade(self, team_id: i64) -> Component {
        let stored = self
            .distinct_ids
            .keys()
            .map(|d| {
                let mut carried = BTreeSet::from([person_uuid(team_id, d)]);
                carried.extend(self.emitted.person_of.get(d).copied());
                (d.clone(), carried)
            })
            .collect();
        let overridden = if self.distinct_ids.len() > 1 {
            self.distinct_ids.keys().cloned().collect()
        } else {
            BTreeSet::new()
        };
        Component {
            distinct_ids: self.distinct_ids,
            merges: self.merges,
            emitted: self.emitted,
            personless: BTreeMap::new(),
            stored,
            overridden,
            earlier: BTreeMap::new(),
        }
    }
}

/// A person with everything its rows need.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPerson {
    pub id: Uuid,
    /// The person's properties as JSON text, made once per resolution and shared by the rows.
    pub properties_json: Arc<str>,
    pub is_identified: bool,
    pub created_at: DateTime<Utc>,
}

/// Row changes of the person tables, without versions (the sink stamps those).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonChanges {
    pub persons: Vec<PersonChange>,
    pub distinct_ids: Vec<DistinctIdChange>,
    pub overrides: Vec<DistinctIdChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PersonChange {
    pub team_id: i64,
    pub person: ResolvedPerson,
    pub is_deleted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DistinctIdChange {
    pub team_id: i64,
    pub distinct_id: String,
    pub person_id: Uuid,
}

impl PersonChanges {
    pub fn is_empty(&self) -> bool {
        self.persons.is_empty() && self.distinct_ids.is_empty() && self.overrides.is_empty()
    }

    pub fn append(&mut self, mut other: PersonChanges) {
        self.persons.append(&mut other.persons);
        self.distinct_ids.append(&mut other.distinct_ids);
        self.overrides.append(&mut other.overrides);
    }
}

/// The persons of a component, resolved.
pub struct Resolved {
    pub identity: Identity,
    pub persons: Vec<ResolvedPerson>,
    /// The latest stamp of anything that shapes the persons: an event stamped at or after it
    /// sees them as they are now.
    pub latest: Option<Stamp>,
}

impl Resolved {
    pub fn person_of(&self, distinct_id: &str) -> Option<&ResolvedPerson> {
        let p = self.identity.person_of(distinct_id)?;
        self.persons.iter().find(|r| r.id == p.uuid)
    }
}

fn content_hash(p: &ResolvedPerson) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(p.properties_json.as_bytes());
    h.update(&[u8::from(p.is_identified)]);
    h.update(&p.created_at.timestamp_micros().to_le_bytes());
    h.digest()
}

impl Component {
    /// Records one person-processing event. Re-recording the same event changes nothing.
    pub fn record(&mut self, event: &PersonEvent) {
        if !self.distinct_ids.contains_key(&event.distinct_id) {
            self.distinct_ids
                .insert(event.distinct_id.clone(), DistinctIdState::default());
        }
        let did = self
            .distinct_ids
            .get_mut(&event.distinct_id)
            .expect("inserted above");
        let write = |registers: &mut Registers, earlier: &mut Earlier| {
            registers.write(
                earlier,
                event.stamp,
                &event.set,
                &event.set_once,
                &event.unset,
            );
        };
        match self.earlier.get_mut(&event.distinct_id) {
            Some(earlier) => write(&mut did.registers, earlier),
            None => {
                let mut earlier = Earlier::default();
                write(&mut did.registers, &mut earlier);
                if !earlier.is_empty() {
                    self.earlier.insert(event.distinct_id.clone(), earlier);
                }
            }
        }
        match event.effective_merge() {
            Some((kind, other)) => {
                self.distinct_ids.entry(other.to_owned()).or_default();
                self.merges.insert(MergeEntry {
                    stamp: event.stamp,
                    distinct_id: event.distinct_id.clone(),
                    other: other.to_owned(),
                    dangerous: kind == super::input::MergeKind::MergeDangerously,
                });
            }
            None => {
                let first = &mut did.first_plain;
                *first = Some(first.map_or(event.stamp, |f| f.min(event.stamp)));
            }
        }
    }

    /// Records a personless event of `distinct_id`; `true` when it is the id's earliest one
    /// so far (the record must then be written).
    pub fn record_personless(&mut self, distinct_id: &str, stamp: Stamp) -> bool {
        self.distinct_ids.entry(distinct_id.to_owned()).or_default();
        match self.personless.get_mut(distinct_id) {
            Some(first) if *first <= stamp => false,
            Some(first) => {
                *first = stamp;
                true
            }
            None => {
                self.personless.insert(distinct_id.to_owned(), stamp);
                true
            }
        }
    }

    /// A component of one distinct id that never took part in a merge: its events all carry
    /// the id's own UUIDv5, which is therefore not recorded (most persons stay like this)
    /// until the component is linked ([`Component::absorb`]).
    fn is_single(&self) -> bool {
        self.distinct_ids.len() == 1 && self.merges.is_empty()
    }

    /// What a single component's events carried, made explicit before it is linked.
    fn settle_single(&mut self, team_id: i64) {
        if !self.is_single() {
            return;
        }
        let did = self.distinct_ids.keys().next().expect("one id").clone();
        let used =
            self.distinct_ids[&did].first_plain.is_some() || self.personless.contains_key(&did);
        if used {
            self.stored
                .entry(did.clone())
                .or_default()
                .insert(person_uuid(team_id, &did));
        }
    }

    /// Records that an event of `distinct_id` was stored with `person`; `true` when that is
    /// new (the record must then be written).
    pub fn record_stored(&mut self, team_id: i64, distinct_id: &str, person: Uuid) -> bool {
        if self.is_single() && person == person_uuid(team_id, distinct_id) {
            return false;
        }
        match self.stored.get_mut(distinct_id) {
            Some(carried) => carried.insert(person),
            None => {
                self.stored
                    .insert(distinct_id.to_owned(), BTreeSet::from([person]));
                true
            }
        }
    }

    /// Whether an event of `distinct_id` was stored with `person`.
    pub fn carried(&self, team_id: i64, distinct_id: &str, person: Uuid) -> bool {
        (self.is_single() && person == person_uuid(team_id, distinct_id))
            || self
                .stored
                .get(distinct_id)
                .is_some_and(|carried| carried.contains(&person))
    }

    /// Whether an event of `distinct_id` was stored with a person other than `person`.
    fn carries_other_than(&self, distinct_id: &str, person: Uuid) -> bool {
        self.stored
            .get(distinct_id)
            .is_some_and(|carried| carried.iter().any(|p| *p != person))
    }

    /// Joins another component into this one (their distinct ids were just linked).
    pub fn absorb(&mut self, team_id: i64, mut other: Component) {
        self.settle_single(team_id);
        other.settle_single(team_id);
        for (did, state) in other.distinct_ids {
            let mine = self.distinct_ids.entry(did.clone()).or_default();
            mine.first_plain = match (mine.first_plain, state.first_plain) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let earlier = self.earlier.entry(did).or_default();
            mine.registers.join_keeping(earlier, &state.registers);
        }
        for (did, earlier) in other.earlier {
            self.earlier.entry(did).or_default().join(&earlier);
        }
        self.earlier.retain(|_, e| !e.is_empty());
        self.merges.extend(other.merges);
        for (did, stamp) in other.personless {
            let mine = self.personless.entry(did).or_insert(stamp);
            *mine = (*mine).min(stamp);
        }
        for (did, carried) in other.stored {
            self.stored.entry(did).or_default().extend(carried);
        }
        self.overridden.extend(other.overridden);
        if other.emitted.generation != self.emitted.generation {
            // One side's snapshot is from another lifetime: trust neither.
            self.emitted.generation = 0;
        }
        self.emitted.person_of.extend(other.emitted.person_of);
        self.emitted.persons.extend(other.emitted.persons);
    }

    pub fn resolve(&self, team_id: i64) -> Resolved {
        let identity = self.replay(team_id, None);
        let persons = identity
            .persons
            .iter()
            .map(|p| self.person(p, None))
            .collect();
        let plain = self.distinct_ids.values().filter_map(|s| s.first_plain);
        let writes = self
            .distinct_ids
            .iter()
            .filter_map(|(d, s)| s.registers.latest_change(self.earlier.get(d)));
        let merges = self.merges.iter().map(|m| m.stamp);
        let latest = plain.chain(writes).chain(merges).max();
        Resolved {
            identity,
            persons,
            latest,
        }
    }

    /// The identity replay of the entries stamped at or before `at` (all of them for `None`).
    fn replay(&self, team_id: i64, at: Option<Stamp>) -> Identity {
        let upto = |s: &Stamp| at.is_none_or(|at| *s <= at);
        let first_plain = self
            .distinct_ids
            .iter()
            .filter_map(|(d, s)| s.first_plain.filter(upto).map(|f| (d.as_str(), f)));
        match at {
            None => replay(team_id, first_plain, &self.merges, &self.personless),
            Some(_) => {
                // Entries are ordered by stamp first: those up to `at` are a prefix.
                let merges: BTreeSet<MergeEntry> = self
                    .merges
                    .iter()
                    .take_while(|m| upto(&m.stamp))
                    .cloned()
                    .collect();
                replay(team_id, first_plain, &merges, &self.personless)
            }
        }
    }

    /// A replayed person with its properties, as they are or as they were at `at`.
    fn person(&self, p: &ReplayedPerson, at: Option<Stamp>) -> ResolvedPerson {
        let dids = p.distinct_ids.iter().filter_map(|d| {
            let s = self.distinct_ids.get(d)?;
            Some((&s.registers, self.earlier.get(d)))
        });
        let mut joined = Registers::default();
        let registers = match at {
            Some(at) => {
                for (r, earlier) in dids {
                    joined.join(&r.as_of(earlier, at));
                }
                &joined
            }
            // Most persons have one distinct id: its registers are read in place.
            None if p.distinct_ids.len() == 1 => dids.map(|(r, _)| r).next().unwrap_or(&joined),
            None => {
                for (r, _) in dids {
                    joined.join(r);
                }
                &joined
            }
        };
        let creator = Value::String(p.creator.uuid().to_string());
        let once = ("$creator_event_uuid", p.creator, &creator);
        ResolvedPerson {
            id: p.uuid,
            properties_json: registers.visible_json_with_once(Some(once)).into(),
            is_identified: p.is_identified,
            created_at: p.creator.timestamp(),
        }
    }

    /// The person `distinct_id` had at `at` (its properties then), if it had one: the
    /// resolved one when nothing that shapes the component is later than `at`.
    pub fn person_at(
        &self,
        team_id: i64,
        resolved: &Resolved,
        distinct_id: &str,
        at: Stamp,
    ) -> Option<ResolvedPerson> {
        if resolved.latest.is_none_or(|latest| latest <= at) {
            return resolved.person_of(distinct_id).cloned();
        }
        let identity = self.replay(team_id, Some(at));
        let p = identity.person_of(distinct_id)?;
        Some(self.person(p, Some(at)))
    }

    /// The rows that bring ClickHouse from the last emitted state to `resolved`, and the new
    /// emitted state. An override row is written only for a distinct id some of whose stored
    /// events carry another person than its current one (PostHog's rule: events that already
    /// carry the right person need none), and kept, re-pointed at the current person, once
    /// written.
    ///
    /// The snapshot is trusted unless `replayed`: when this batch holds an event that may have
    /// been processed before a crash, rows of that attempt may exist that the snapshot never
    /// learnt of (the crash fell between ClickHouse's acknowledgement and the state commit).
    /// The component is then written whole: every person, every mapping, an override for every
    /// id of a linked component, and deletions of every person it could have created.
    pub fn diff(
        &mut self,
        team_id: i64,
        resolved: &Resolved,
        generation: u64,
        replayed: bool,
    ) -> PersonChanges {
        let mut changes = PersonChanges::default();
        let full = replayed;
        if full {
            // Hash 0 matches no content: every person is written again.
            // Persons are named after ids with a person-processing event or a merge attempt;
            // ids seen only in personless events never named one.
            let named = |d: &str| {
                self.merges
                    .iter()
                    .any(|m| m.distinct_id == d || m.other == d)
            };
            let possible: BTreeMap<Uuid, u64> = self
                .distinct_ids
                .iter()
                .filter(|(d, s)| s.first_plain.is_some() || named(d))
                .map(|(d, _)| person_uuid(team_id, d))
                .chain(self.emitted.persons.keys().copied())
                .map(|id| (id, 0))
                .collect();
            self.emitted = Emitted {
                generation,
                person_of: BTreeMap::new(),
                persons: possible,
            };
        }
        let mut persons = BTreeMap::new();
        for p in &resolved.persons {
            let hash = content_hash(p);
            if self.emitted.persons.get(&p.id) != Some(&hash) {
                changes.persons.push(PersonChange {
                    team_id,
                    person: p.clone(),
                    is_deleted: false,
                });
            }
            persons.insert(p.id, hash);
        }
        for (id, _) in std::mem::take(&mut self.emitted.persons) {
            if !persons.contains_key(&id) {
                changes.persons.push(PersonChange {
                    team_id,
                    person: ResolvedPerson {
                        id,
                        properties_json: "{}".into(),
                        is_identified: false,
                        created_at: DateTime::<Utc>::default(),
                    },
                    is_deleted: true,
                });
            }
        }
        self.emitted.persons = persons;

        let linked = full && self.distinct_ids.len() > 1;
        self.emitted.generation = generation;
        for p in &resolved.identity.persons {
            for did in &p.distinct_ids {
                let before = self.emitted.person_of.insert(did.clone(), p.uuid);
                let change = DistinctIdChange {
                    team_id,
                    distinct_id: did.clone(),
                    person_id: p.uuid,
                };
                let has_row = self.overridden.contains(did);
                let needed = linked || has_row || self.carries_other_than(did, p.uuid);
                if needed && (linked || !has_row || before != Some(p.uuid)) {
                    changes.overrides.push(change.clone());
                    self.overridden.insert(did.clone());
                }
                if before != Some(p.uuid) {
                    changes.distinct_ids.push(change);
                }
            }
        }
        changes
    }
}
