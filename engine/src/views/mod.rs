//! Views: aggregates that data engineers write as differential-dataflow computations over a
//! team's processed events, kept current in ClickHouse as events stream in, arrive late, and
//! persons merge (docs/views.md).
//!
//! This module is the one API that hands timely and differential types to view authors: a view
//! receives an [`Input`] — [`Events`], a differential collection of [`ViewEvent`]s whose `person`
//! changes when persons merge, and [`Persons`], each person's current properties — and returns
//! [`Rows`] for the ClickHouse table its [`TableSpec`] declares. The engine keeps each row of
//! that table equal to the view's current result (see `output`).

mod builtin;
pub(crate) mod dataflow;
pub mod input;
mod output;
pub mod registry;
pub mod testing;
#[cfg(test)]
mod tests;
mod value;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use builtin::{
    DailyActivePersons, EventsPerDay, FirstSeen, SessionsPerDay, WeeklyActivePersons,
};
/// The differential-dataflow crate views are written with (the pinned version), for its
/// operators and traits.
pub use differential_dataflow;
pub use registry::{ViewConfig, ViewRegistry};
pub use value::{Column, Kind, TableSpec, Value};

/// Logical time of the engine's dataflow: an ingestion epoch, never event time.
pub type Time = u64;

/// A team's processed events, as a differential collection: each event once (copies with the
/// same `events` deduplication key count once), with its current person.
pub type Events<'s> = differential_dataflow::VecCollection<'s, Time, ViewEvent>;

/// The teams' persons, as a differential collection: each person once, with the properties the
/// enabled views declared (`View::person_properties`); a change of a person's properties is a
/// retraction and an addition, a person merged into another disappears. Empty unless a view
/// declared person properties.
pub type Persons<'s> = differential_dataflow::VecCollection<'s, Time, ViewPerson>;

/// What a view computes from.
pub struct Input<'s> {
    pub events: Events<'s>,
    pub persons: Persons<'s>,
}

/// A person as views see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewPerson {
    pub team_id: i64,
    pub person: Uuid,
    /// The person's properties that the enabled views declared (`View::person_properties`).
    pub properties: Properties,
}

impl ViewPerson {
    /// One of the declared properties.
    pub fn property(&self, key: &str) -> Option<serde_json::Value> {
        self.properties.value(key)
    }

    /// A declared property that is a string.
    pub fn property_str(&self, key: &str) -> Option<String> {
        self.properties.string(key)
    }
}

/// A view's result: at most one row per (team, key) at any time.
pub type Rows<'s> = differential_dataflow::VecCollection<'s, Time, Row>;

/// An event as views see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewEvent {
    pub team_id: i64,
    /// Event time, microseconds since the Unix epoch (UTC).
    pub timestamp: i64,
    pub uuid: Uuid,
    pub event: String,
    pub distinct_id: String,
    /// The person the event belongs to now: its `person_distinct_id_overrides` row when its
    /// distinct id has one, else the person it was stored with.
    pub person: Uuid,
    /// The event's properties that the enabled views declared (`View::properties`); the
    /// others are left out to keep the views' state small.
    pub properties: Properties,
}

/// Some properties of an event: each key with its value as JSON text, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Properties(Vec<(String, String)>);

impl Properties {
    /// The properties of a JSON object's text, those among `keep` only (all when `None`);
    /// anything but an object has none.
    pub fn from_json(text: &str, keep: Option<&[&str]>) -> Self {
        // Values stay raw text: only the kept ones are copied, none is parsed.
        type Raw<'a> =
            std::collections::HashMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>;
        let Ok(all) = serde_json::from_str::<Raw<'_>>(text) else {
            return Self::default();
        };
        let mut kept: Vec<(String, String)> = all
            .into_iter()
            .filter(|(k, _)| keep.is_none_or(|keep| keep.contains(&k.as_ref())))
            .map(|(k, v)| (k.into_owned(), v.get().to_owned()))
            .collect();
        kept.sort();
        Self(kept)
    }

    /// These properties, those among `keys` only.
    pub fn only(&self, keys: &[&str]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// A property's value as JSON text.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// A property's value.
    pub fn value(&self, key: &str) -> Option<serde_json::Value> {
        serde_json::from_str(self.get(key)?).ok()
    }

    /// A property that is a string.
    pub fn string(&self, key: &str) -> Option<String> {
        let text = self.get(key)?;
        if !text.starts_with('"') {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

impl From<&str> for Properties {
    /// Every property of a JSON object's text.
    fn from(text: &str) -> Self {
        Self::from_json(text, None)
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl ViewEvent {
    /// UTC day of the event: days since the Unix epoch.
    pub fn day(&self) -> i32 {
        i32::try_from(self.timestamp.div_euclid(MICROS_PER_DAY)).unwrap_or(i32::MIN)
    }

    /// Monday of the event's UTC week, as days since the Unix epoch (1970-01-01 was a Thursday).
    pub fn week(&self) -> i32 {
        let day = self.day();
        day - (day + 3).rem_euclid(7)
    }

    /// One of the declared properties.
    pub fn property(&self, key: &str) -> Option<serde_json::Value> {
        self.properties.value(key)
    }

    /// A declared property that is a string.
    pub fn property_str(&self, key: &str) -> Option<String> {
        self.properties.string(key)
    }
}

/// One row of a view's table: the team, the key columns and the value columns, in the order
/// of the view's [`TableSpec`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row {
    pub team_id: i64,
    pub key: Vec<Value>,
    pub values: Vec<Value>,
}

/// How a view's rows are dated, so that a window can retire old days: `column` is a `Date` key
/// column; a row dated D depends only on events of days D − `reach_days` ..= D + `reach_days`,
/// and an event of day d changes only rows dated d − `reach_days` ..= d + `reach_days` (0 for a
/// per-day count; 6 for a row per week dated by its Monday; 1 for sessions, which may cross
/// midnight). A row is final once D + `reach_days` left the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatedBy {
    pub column: &'static str,
    pub reach_days: u32,
}

/// A view: a name, its table, the event properties it reads, and its computation.
pub trait View: Send + Sync + 'static {
    /// Its name in `[[views]] view = "…"`; its table is `view_<name>`. Lower-case letters,
    /// digits and `_`.
    fn name(&self) -> &'static str;

    /// The key and value columns of its table (`team_id` comes first, implicitly).
    fn table(&self) -> TableSpec;

    /// The event properties it reads; views see no others.
    fn properties(&self) -> &'static [&'static str] {
        &[]
    }

    /// The person properties it reads; with none declared by any view, `Input::persons` is
    /// empty and no person is kept for views.
    fn person_properties(&self) -> &'static [&'static str] {
        &[]
    }

    /// The key column that dates each row, for views that may run with a window
    /// (`[[views]] window_days`); `None`: the view takes no window.
    fn dated_by(&self) -> Option<DatedBy> {
        None
    }

    /// The computation, over the events and persons of the teams that enabled the view.
    fn build<'s>(&self, input: Input<'s>) -> Rows<'s>;
}

#[cfg(test)]
mod event_tests {
    use super::*;

    fn at(timestamp: i64) -> ViewEvent {
        ViewEvent {
            team_id: 1,
            timestamp,
            uuid: Uuid::nil(),
            event: "e".into(),
            distinct_id: "d".into(),
            person: Uuid::nil(),
            properties: r#"{"a":"x","n":3}"#.into(),
        }
    }

    #[test]
    fn days_and_weeks_are_utc_and_weeks_start_on_monday() {
        // 2026-12-06 is a Sunday: its week began on Monday 2026-11-30.
        let sunday = chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let monday = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let micros = sunday
            .and_hms_opt(23, 59, 59)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        let e = at(micros);
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        assert_eq!(i64::from(e.day()), (sunday - epoch).num_days());
        assert_eq!(i64::from(e.week()), (monday - epoch).num_days());
        assert_eq!(at(-1).day(), -1, "before 1970 rounds down");
    }

    #[test]
    fn properties_are_read_by_key() {
        let e = at(0);
        assert_eq!(e.property_str("a").as_deref(), Some("x"));
        assert_eq!(e.property("n"), Some(serde_json::json!(3)));
        assert_eq!(e.property_str("n"), None);
        assert_eq!(e.property("missing"), None);
    }
}
