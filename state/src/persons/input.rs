//! What the person stage needs from one event, parsed once from its properties.

use std::borrow::Cow;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The position of an event in the reference order: timestamp, then uuid as a 128-bit
/// big-endian integer (the order of its canonical text). Every register and every identity
/// decision is ordered by it, never by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub ts_us: i64,
    pub uuid: u128,
}

impl Stamp {
    pub fn new(timestamp: DateTime<Utc>, uuid: Uuid) -> Self {
        Self {
            ts_us: timestamp.timestamp_micros(),
            uuid: uuid.as_u128(),
        }
    }

    pub fn timestamp(&self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.ts_us)
            .single()
            .unwrap_or_default()
    }

    pub fn uuid(&self) -> Uuid {
        Uuid::from_u128(self.uuid)
    }
}

/// The three events that try to put two distinct ids in one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeKind {
    /// `$identify` with `$anon_distinct_id`.
    Identify,
    /// `$create_alias` with `alias`.
    Alias,
    /// `$merge_dangerously` with `alias`: merges even into an identified person.
    MergeDangerously,
}

/// What a personless event (`process_person == false`) may learn of its id's person, as
/// PostHog's `processPersonlessStep` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Personless {
    /// `$process_person_profile: false`: the event carries its id's person, if one exists,
    /// without properties, and is `force_upgrade`d when that person was created more than a
    /// minute before it.
    #[default]
    Upgradable,
    /// The team opted out of person processing: the id's person without properties, never
    /// upgraded.
    NeverUpgraded,
    /// Capture's force-disable header: the id's own UUIDv5 person, whether or not a person
    /// exists (PostHog does not look one up).
    Unlinked,
}

/// A `$groupidentify`: LWW properties for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupIdentify {
    pub group_type: String,
    pub group_key: String,
    pub set: Map<String, Value>,
}

/// The person-relevant part of one normalized event. `$set` and `$set_once` are borrowed from
/// the event's properties where they can be: an event carries them on to its row too, and
/// copying them for the person stage was a visible share of the engine's CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonEvent<'a> {
    pub team_id: i64,
    pub stamp: Stamp,
    pub distinct_id: String,
    /// `false` for `$process_person_profile=false` and opted-out teams: no state is written.
    pub process_person: bool,
    /// What a personless event may learn of its id's person.
    pub personless: Personless,
    /// The other distinct id of `$identify` / `$create_alias` / `$merge_dangerously`, as sent.
    pub merge: Option<(MergeKind, String)>,
    pub set: Cow<'a, Map<String, Value>>,
    pub set_once: Cow<'a, Map<String, Value>>,
    pub unset: Vec<String>,
    /// `$groups`: group type → group key.
    pub groups: Vec<(String, String)>,
    pub group_identify: Option<GroupIdentify>,
    /// The event may have been processed before, by a process that crashed before committing
    /// the state (its offset is below the end its partition had when this process started):
    /// its components then rewrite all their rows, because rows of that attempt may exist.
    pub replay: bool,
}

/// Ids PostHog refuses to merge (`cannot_merge_with_illegal_distinct_id`).
pub fn is_illegal_id(id: &str) -> bool {
    const CASE_INSENSITIVE: &[&str] = &[
        "anonymous",
        "guest",
        "distinctid",
        "distinct_id",
        "id",
        "not_authenticated",
        "email",
        "undefined",
        "true",
        "false",
    ];
    const CASE_SENSITIVE: &[&str] = &["[object Object]", "NaN", "None", "none", "null", "0"];
    let trimmed = id.trim();
    if trimmed.is_empty() {
        return true;
    }
    let bare = ["\"", "'"]
        .iter()
        .find_map(|q| {
            id.strip_prefix(q)
                .and_then(|s| s.strip_suffix(q))
                .filter(|_| id.len() >= 2)
        })
        .unwrap_or(id);
    CASE_INSENSITIVE
        .iter()
        .any(|bad| bare.eq_ignore_ascii_case(bad))
        || CASE_SENSITIVE.contains(&bare)
}

/// A JSON scalar as PostHog stringifies ids and keys; `None` for null, objects and arrays.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn borrowed_object<'a>(
    properties: &'a Map<String, Value>,
    key: &str,
) -> Cow<'a, Map<String, Value>> {
    match properties.get(key) {
        Some(Value::Object(m)) => Cow::Borrowed(m),
        _ => Cow::Owned(Map::new()),
    }
}

fn object(properties: &Map<String, Value>, key: &str) -> Map<String, Value> {
    match properties.get(key) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// Events that never update their person's properties (PostHog's `NO_PERSON_UPDATE_EVENTS`):
/// their `$set`, `$set_once` and `$unset` stay on the event and change no person.
pub const NO_PERSON_UPDATE_EVENTS: [&str; 2] = ["$exception", "$$heatmap"];

impl<'a> PersonEvent<'a> {
    /// Reads the person-relevant fields of a normalized event. `properties` are left as they
    /// are: PostHog keeps `$set` and friends on the stored event.
    pub fn from_event(
        team_id: i64,
        uuid: Uuid,
        timestamp: DateTime<Utc>,
        distinct_id: &str,
        event: &str,
        properties: &'a Map<String, Value>,
        process_person: bool,
    ) -> Self {
        let other = |key: &str| properties.get(key).and_then(id_text);
        let merge = match event {
            "$identify" => other("$anon_distinct_id").map(|o| (MergeKind::Identify, o)),
            "$create_alias" => other("alias").map(|o| (MergeKind::Alias, o)),
            "$merge_dangerously" => other("alias").map(|o| (MergeKind::MergeDangerously, o)),
            _ => None,
        };
        let updates = !NO_PERSON_UPDATE_EVENTS.contains(&event);
        let unset = match properties.get("$unset") {
            _ if !updates => Vec::new(),
            Some(Value::Array(keys)) => keys.iter().filter_map(id_text).collect(),
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let groups = object(properties, "$groups")
            .iter()
            .filter_map(|(t, k)| id_text(k).filter(|k| !k.is_empty()).map(|k| (t.clone(), k)))
            .collect();
        let group_identify = (event == "$groupidentify")
            .then(|| {
                let group_type = other("$group_type").filter(|t| !t.is_empty())?;
                let group_key = other("$group_key").filter(|k| !k.is_empty())?;
                Some(GroupIdentify {
                    group_type,
                    group_key,
                    set: object(properties, "$group_set"),
                })
            })
            .flatten();
        Self {
            team_id,
            stamp: Stamp::new(timestamp, uuid),
            distinct_id: distinct_id.to_owned(),
            process_person,
            personless: Personless::default(),
            merge,
            set: if updates {
                borrowed_object(properties, "$set")
            } else {
                Cow::Owned(Map::new())
            },
            set_once: if updates {
                borrowed_object(properties, "$set_once")
            } else {
                Cow::Owned(Map::new())
            },
            unset,
            groups,
            group_identify,
            replay: false,
        }
    }

    /// The merge this event really attempts: `None` when there is no other id, it equals the
    /// event's own id, or either id is illegal (then the event is an ordinary one).
    pub fn effective_merge(&self) -> Option<(MergeKind, &str)> {
        let (kind, other) = self.merge.as_ref()?;
        if !self.process_person
            || other == &self.distinct_id
            || is_illegal_id(other)
            || is_illegal_id(&self.distinct_id)
        {
            return None;
        }
        Some((*kind, other.as_str()))
    }

    /// The event, owning what it borrowed.
    pub fn into_owned(self) -> PersonEvent<'static> {
        PersonEvent {
            set: Cow::Owned(self.set.into_owned()),
            set_once: Cow::Owned(self.set_once.into_owned()),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn illegal_ids_follow_posthog() {
        for bad in [
            "",
            "  ",
            "anonymous",
            "Anonymous",
            "GUEST",
            "null",
            "\"null\"",
            "'id'",
            "0",
            "[object Object]",
            "NaN",
            "undefined",
            "'undefined'",
        ] {
            assert!(is_illegal_id(bad), "{bad:?} should be illegal");
        }
        for ok in ["user-1", "Null", "NULL", "00", "nan", "\"", "anonymous1"] {
            assert!(!is_illegal_id(ok), "{ok:?} should be legal");
        }
    }

    /// PostHog `person-state-batch.test.ts` "does not update person properties for %s"
    /// (`$exception`, `$$heatmap`).
    #[test]
    fn exceptions_and_heatmaps_never_update_their_person() {
        let props = json!({"$set": {"a": 1}, "$set_once": {"b": 2}, "$unset": ["c"]});
        for event in NO_PERSON_UPDATE_EVENTS {
            let e = PersonEvent::from_event(
                1,
                Uuid::from_u128(9),
                Utc::now(),
                "user",
                event,
                props.as_object().unwrap(),
                true,
            );
            assert!(
                e.set.is_empty() && e.set_once.is_empty() && e.unset.is_empty(),
                "{event}"
            );
            assert!(e.process_person, "{event} still has its person");
        }
        let e = PersonEvent::from_event(
            1,
            Uuid::from_u128(9),
            Utc::now(),
            "user",
            "$pageview",
            props.as_object().unwrap(),
            true,
        );
        assert_eq!(e.set.len(), 1);
    }

    #[test]
    fn parses_merges_unset_groups_and_groupidentify() {
        let props = json!({
            "$anon_distinct_id": "anon",
            "$set": {"a": 1},
            "$set_once": {"b": 2},
            "$unset": ["c", 7],
            "$groups": {"company": "acme", "project": 42, "bad": null}
        });
        let e = PersonEvent::from_event(
            1,
            Uuid::from_u128(9),
            Utc::now(),
            "user",
            "$identify",
            props.as_object().unwrap(),
            true,
        );
        assert_eq!(e.merge, Some((MergeKind::Identify, "anon".into())));
        assert_eq!(e.effective_merge(), Some((MergeKind::Identify, "anon")));
        assert_eq!(*e.set, *json!({"a": 1}).as_object().unwrap());
        assert_eq!(e.unset, vec!["c".to_string(), "7".to_string()]);
        assert_eq!(
            e.groups,
            vec![
                ("company".into(), "acme".into()),
                ("project".into(), "42".into())
            ]
        );

        let gi = json!({"$group_type": "company", "$group_key": "acme", "$group_set": {"n": 1}});
        let g = PersonEvent::from_event(
            1,
            Uuid::from_u128(9),
            Utc::now(),
            "user",
            "$groupidentify",
            gi.as_object().unwrap(),
            true,
        );
        let gi = g.group_identify.unwrap();
        assert_eq!(
            (gi.group_type.as_str(), gi.group_key.as_str()),
            ("company", "acme")
        );
    }

    #[test]
    fn same_or_illegal_ids_are_not_merges() {
        let mk = |d: &str, o: &str| PersonEvent {
            team_id: 1,
            stamp: Stamp { ts_us: 0, uuid: 0 },
            distinct_id: d.into(),
            process_person: true,
            personless: Personless::default(),
            merge: Some((MergeKind::Alias, o.into())),
            set: Default::default(),
            set_once: Default::default(),
            unset: vec![],
            groups: vec![],
            group_identify: None,
            replay: false,
        };
        assert_eq!(mk("a", "a").effective_merge(), None);
        assert_eq!(mk("a", "null").effective_merge(), None);
        assert_eq!(mk("guest", "b").effective_merge(), None);
        assert_eq!(
            mk("a", "b").effective_merge(),
            Some((MergeKind::Alias, "b"))
        );
    }
}
