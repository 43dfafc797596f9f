//! Which distinct ids form one person: the one order-dependent part of person state, computed
//! as the deterministic replay of a component's identity entries sorted by stamp.
//!
//! The entries of a component are every merge attempt among its distinct ids (refused ones
//! included, because a refusal still marks a person identified) and, per distinct id, its
//! earliest ordinary person-processing event (the only one that can create a person). Both
//! are sets that re-applying an event cannot change, so the replay of the same entries always
//! gives the same persons, whatever order the events arrived in. The earliest personless event
//! of each distinct id is a further input: it decides the name of a person made by a merge of
//! two ids that had none (PostHog's personless distinct-id record).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use hogstream_event::ids::person_uuid;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::input::Stamp;

/// One merge attempt between two legal, different distinct ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MergeEntry {
    pub stamp: Stamp,
    /// The event's distinct id: the person merged into.
    pub distinct_id: String,
    /// `$anon_distinct_id` or `alias`: the person merged from.
    pub other: String,
    /// `$merge_dangerously` merges even when the other person is identified.
    pub dangerous: bool,
}

/// A person as the replay leaves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayedPerson {
    /// UUIDv5 of the distinct id the person was created with.
    pub uuid: Uuid,
    /// The earliest creation folded into this person: its time is `created_at` and its uuid
    /// the `$creator_event_uuid`.
    pub creator: Stamp,
    pub is_identified: bool,
    pub distinct_ids: BTreeSet<String>,
}

/// The persons of one component.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub persons: Vec<ReplayedPerson>,
    person_of: HashMap<String, usize>,
    /// Merge attempts refused because the other person was already identified (by stamp).
    pub refused: HashSet<Stamp>,
}

impl Identity {
    pub fn person_of(&self, distinct_id: &str) -> Option<&ReplayedPerson> {
        self.person_of.get(distinct_id).map(|&i| &self.persons[i])
    }
}

enum Step<'a> {
    Plain(&'a str),
    Merge(&'a MergeEntry),
}

/// Working state of a replay; persons absorbed by a merge become `None`.
struct Replay<'p> {
    team_id: i64,
    /// Each distinct id's earliest personless event.
    personless: &'p BTreeMap<String, Stamp>,
    persons: Vec<Option<ReplayedPerson>>,
    person_of: HashMap<String, usize>,
    refused: HashSet<Stamp>,
}

impl Replay<'_> {
    fn create(&mut self, stamp: Stamp, distinct_ids: &[&str]) -> usize {
        let idx = self.persons.len();
        self.persons.push(Some(ReplayedPerson {
            uuid: person_uuid(self.team_id, distinct_ids[0]),
            creator: stamp,
            is_identified: false,
            distinct_ids: distinct_ids.iter().map(|d| (*d).to_owned()).collect(),
        }));
        for d in distinct_ids {
            self.person_of.insert((*d).to_owned(), idx);
        }
        idx
    }

    fn person(&mut self, idx: usize) -> &mut ReplayedPerson {
        self.persons[idx]
            .as_mut()
            .expect("person_of only points at live persons")
    }

    fn plain(&mut self, stamp: Stamp, did: &str) {
        if !self.person_of.contains_key(did) {
            self.create(stamp, &[did]);
        }
    }

    fn merge(&mut self, m: &MergeEntry) {
        let into = self.person_of.get(&m.distinct_id).copied();
        let from = self.person_of.get(&m.other).copied();
        match (into, from) {
            (None, None) => {
                // PostHog names the person so that events already stored need no override: after
                // the other id when only it was used by personless events before this merge
                // (they carry its UUIDv5), else after the event's id.
                let before = |d: &str| self.personless.get(d).is_some_and(|s| *s < m.stamp);
                let ids = if before(&m.other) && !before(&m.distinct_id) {
                    [m.other.as_str(), m.distinct_id.as_str()]
                } else {
                    [m.distinct_id.as_str(), m.other.as_str()]
                };
                let p = self.create(m.stamp, &ids);
                self.person(p).is_identified = true;
            }
            (Some(p), None) => self.adopt(p, &m.other),
            (None, Some(p)) => self.adopt(p, &m.distinct_id),
            (Some(p), Some(o)) if p == o => self.person(p).is_identified = true,
            (Some(p), Some(o)) => {
                let refused = self.person(o).is_identified && !m.dangerous;
                if refused {
                    self.refused.insert(m.stamp);
                } else {
                    let absorbed = self.persons[o].take().expect("live person");
                    for d in &absorbed.distinct_ids {
                        self.person_of.insert(d.clone(), p);
                    }
                    let into = self.person(p);
                    into.distinct_ids.extend(absorbed.distinct_ids);
                    into.creator = into.creator.min(absorbed.creator);
                }
                self.person(p).is_identified = true;
            }
        }
    }

    fn adopt(&mut self, p: usize, did: &str) {
        self.person_of.insert(did.to_owned(), p);
        let person = self.person(p);
        person.distinct_ids.insert(did.to_owned());
        person.is_identified = true;
    }
}

/// Replays a component: `first_plain` holds each distinct id's earliest ordinary event,
/// `personless` its earliest personless one.
pub fn replay<'a>(
    team_id: i64,
    first_plain: impl IntoIterator<Item = (&'a str, Stamp)>,
    merges: &'a BTreeSet<MergeEntry>,
    personless: &BTreeMap<String, Stamp>,
) -> Identity {
    if merges.is_empty() {
        return unmerged(team_id, first_plain);
    }
    // Ties cannot happen between different events (their uuids differ); the distinct id only
    // makes the order total.
    let mut steps: BTreeMap<(Stamp, &str, bool), Step<'a>> = BTreeMap::new();
    for (did, stamp) in first_plain {
        steps.insert((stamp, did, false), Step::Plain(did));
    }
    for m in merges {
        steps.insert((m.stamp, m.distinct_id.as_str(), true), Step::Merge(m));
    }
    let mut r = Replay {
        team_id,
        personless,
        persons: Vec::new(),
        person_of: HashMap::new(),
        refused: HashSet::new(),
    };
    for ((stamp, _, _), step) in steps {
        match step {
            Step::Plain(did) => r.plain(stamp, did),
            Step::Merge(m) => r.merge(m),
        }
    }
    // Compact away absorbed persons, keeping creation order.
    let mut remap = HashMap::new();
    let mut persons = Vec::new();
    for (i, p) in r.persons.into_iter().enumerate() {
        if let Some(p) = p {
            remap.insert(i, persons.len());
            persons.push(p);
        }
    }
    let person_of = r
        .person_of
        .into_iter()
        .map(|(d, i)| (d, remap[&i]))
        .collect();
    Identity {
        persons,
        person_of,
        refused: r.refused,
    }
}

/// [`replay`] of a component without merges (most persons): each distinct id with an ordinary
/// event is its own person, in the order of those events.
fn unmerged<'a>(team_id: i64, first_plain: impl IntoIterator<Item = (&'a str, Stamp)>) -> Identity {
    let mut plain: Vec<(Stamp, &str)> = first_plain.into_iter().map(|(d, s)| (s, d)).collect();
    plain.sort_unstable();
    let person_of = plain
        .iter()
        .enumerate()
        .map(|(i, (_, d))| ((*d).to_owned(), i))
        .collect();
    let persons = plain
        .into_iter()
        .map(|(stamp, d)| ReplayedPerson {
            uuid: person_uuid(team_id, d),
            creator: stamp,
            is_identified: false,
            distinct_ids: BTreeSet::from([d.to_owned()]),
        })
        .collect();
    Identity {
        persons,
        person_of,
        refused: HashSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ts: i64) -> Stamp {
        Stamp {
            ts_us: ts,
            uuid: ts as u128,
        }
    }

    fn m(ts: i64, d: &str, o: &str) -> MergeEntry {
        MergeEntry {
            stamp: st(ts),
            distinct_id: d.into(),
            other: o.into(),
            dangerous: false,
        }
    }

    #[test]
    fn anonymous_then_identify_keeps_the_anonymous_person() {
        let merges = BTreeSet::from([m(2, "user", "anon")]);
        let id = replay(1, [("anon", st(1))], &merges, &BTreeMap::new());
        assert_eq!(id.persons.len(), 1);
        let p = id.person_of("user").unwrap();
        assert_eq!(p.uuid, person_uuid(1, "anon"));
        assert!(p.is_identified);
        assert_eq!(p.creator, st(1));
    }

    #[test]
    fn a_second_identify_into_an_identified_person_is_refused() {
        // anon is identified as u1, then identified again as u2: refused, u2 is its own person.
        let merges = BTreeSet::from([m(2, "u1", "anon"), m(4, "u2", "anon")]);
        let id = replay(
            1,
            [("anon", st(1)), ("u2", st(3))],
            &merges,
            &BTreeMap::new(),
        );
        assert_eq!(id.persons.len(), 2);
        assert_eq!(id.person_of("u1").unwrap().uuid, person_uuid(1, "anon"));
        let u2 = id.person_of("u2").unwrap();
        assert_eq!(u2.uuid, person_uuid(1, "u2"));
        assert!(
            u2.is_identified,
            "a refused merge still marks the event's person"
        );
        assert!(id.refused.contains(&st(4)));

        let mut dangerous = m(4, "u2", "anon");
        dangerous.dangerous = true;
        let merges = BTreeSet::from([m(2, "u1", "anon"), dangerous]);
        let id = replay(
            1,
            [("anon", st(1)), ("u2", st(3))],
            &merges,
            &BTreeMap::new(),
        );
        assert_eq!(id.persons.len(), 1);
        let p = id.person_of("anon").unwrap();
        assert_eq!(p.uuid, person_uuid(1, "u2"), "the event's person survives");
        assert_eq!(p.creator, st(1), "created_at is the older one");
    }

    #[test]
    fn a_merge_of_two_unknown_ids_creates_one_person_named_after_the_event_id() {
        let merges = BTreeSet::from([m(5, "user", "anon")]);
        let id = replay(1, [("anon", st(6))], &merges, &BTreeMap::new());
        assert_eq!(id.persons.len(), 1);
        assert_eq!(id.person_of("anon").unwrap().uuid, person_uuid(1, "user"));
        assert_eq!(id.person_of("anon").unwrap().creator, st(5));
    }

    #[test]
    fn a_merge_after_personless_browsing_names_the_person_after_the_browsed_id() {
        let merges = BTreeSet::from([m(5, "user", "anon")]);
        let named = |personless: &[(&str, i64)]| {
            let personless = personless
                .iter()
                .map(|(d, t)| ((*d).to_owned(), st(*t)))
                .collect();
            let id = replay(1, [], &merges, &personless);
            assert_eq!(id.persons.len(), 1);
            let p = id.person_of("user").unwrap();
            assert!(p.is_identified);
            assert_eq!(p.creator, st(5));
            p.uuid
        };
        assert_eq!(named(&[("anon", 2)]), person_uuid(1, "anon"));
        assert_eq!(named(&[]), person_uuid(1, "user"));
        // Personless use after the merge: the event found the person, it carries its id.
        assert_eq!(named(&[("anon", 6)]), person_uuid(1, "user"));
        // Both used personless: the event's id, as PostHog does (the other gets an override).
        assert_eq!(named(&[("anon", 2), ("user", 3)]), person_uuid(1, "user"));
        assert_eq!(named(&[("user", 3)]), person_uuid(1, "user"));
    }
}
