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
    identity::{Identity, MergeEntry, replay},
    input::{PersonEvent, Stamp},
    registers::Registers,
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
    /// Distinct ids of merge attempts recorded since the last diff. Their mapping and override
    /// are written again even when unchanged: before a crash, the same (then uncommitted)
    /// attempt may have written rows the snapshot never learnt of.
    #[serde(skip)]
    restate: BTreeSet<String>,
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
        let did = self
            .distinct_ids
            .entry(event.distinct_id.clone())
            .or_default();
        did.registers
            .write(event.stamp, &event.set, &event.set_once, &event.unset);
        match event.effective_merge() {
            Some((kind, other)) => {
                self.distinct_ids.entry(other.to_owned()).or_default();
                let new = self.merges.insert(MergeEntry {
                    stamp: event.stamp,
                    distinct_id: event.distinct_id.clone(),
                    other: other.to_owned(),
                    dangerous: kind == super::input::MergeKind::MergeDangerously,
                });
                if new {
                    self.restate.insert(event.distinct_id.clone());
                    self.restate.insert(other.to_owned());
                }
            }
            None => {
                let first = &mut did.first_plain;
                *first = Some(first.map_or(event.stamp, |f| f.min(event.stamp)));
            }
        }
    }

    /// Joins another component into this one (their distinct ids were just linked).
    pub fn absorb(&mut self, other: Component) {
        for (did, state) in other.distinct_ids {
            let mine = self.distinct_ids.entry(did).or_default();
            mine.first_plain = match (mine.first_plain, state.first_plain) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            mine.registers.join(&state.registers);
        }
        self.merges.extend(other.merges);
        self.restate.extend(other.restate);
        if other.emitted.generation != self.emitted.generation {
            // One side's snapshot is from another lifetime: trust neither.
            self.emitted.generation = 0;
        }
        self.emitted.person_of.extend(other.emitted.person_of);
        self.emitted.persons.extend(other.emitted.persons);
    }

    pub fn resolve(&self, team_id: i64) -> Resolved {
        let identity = replay(
            team_id,
            self.distinct_ids
                .iter()
                .filter_map(|(d, s)| s.first_plain.map(|f| (d.as_str(), f))),
            &self.merges,
        );
        let persons = identity
            .persons
            .iter()
            .map(|p| {
                let mut registers = Registers::default();
                for did in &p.distinct_ids {
                    if let Some(s) = self.distinct_ids.get(did) {
                        registers.join(&s.registers);
                    }
                }
                registers.write_once(
                    p.creator,
                    "$creator_event_uuid",
                    &Value::String(p.creator.uuid().to_string()),
                );
                ResolvedPerson {
                    id: p.uuid,
                    properties_json: registers.visible_json().into(),
                    is_identified: p.is_identified,
                    created_at: p.creator.timestamp(),
                }
            })
            .collect();
        Resolved { identity, persons }
    }

    /// The rows that bring ClickHouse from the last emitted state to `resolved`, and the new
    /// emitted state. Overrides are written whenever a distinct id's person is not its own
    /// UUIDv5, and kept (pointing at the current person) if it moves back, so events stored
    /// with an interim person still join to the right one.
    ///
    /// The snapshot is trusted only within the process lifetime (`generation`) that wrote it. A
    /// crash between ClickHouse's acknowledgement of a batch and the commit of its state leaves
    /// rows the snapshot does not know about; so the first diff of a component after a restart
    /// writes all of it, including deletions of every person the component could have created.
    pub fn diff(&mut self, team_id: i64, resolved: &Resolved, generation: u64) -> PersonChanges {
        let mut changes = PersonChanges::default();
        let full = self.emitted.generation != generation;
        if full {
            // Hash 0 matches no content: every person is written again.
            let possible: BTreeMap<Uuid, u64> = self
                .distinct_ids
                .keys()
                .map(|d| person_uuid(team_id, d))
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

        for p in &resolved.identity.persons {
            for did in &p.distinct_ids {
                let before = self.emitted.person_of.insert(did.clone(), p.uuid);
                let restate = self.restate.contains(did);
                if before == Some(p.uuid) && !restate {
                    continue;
                }
                let change = DistinctIdChange {
                    team_id,
                    distinct_id: did.clone(),
                    person_id: p.uuid,
                };
                let own = person_uuid(team_id, did);
                let linked = full && self.distinct_ids.len() > 1;
                if linked || restate || p.uuid != own || before.is_some_and(|b| b != own) {
                    changes.overrides.push(change.clone());
                }
                changes.distinct_ids.push(change);
            }
        }
        self.restate.clear();
        changes
    }
}
