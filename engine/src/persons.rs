//! The person stage's interface. Until RocksDB-backed persons land, every event is processed
//! as PostHog processes personless events: the person id is the UUIDv5 of the distinct id, the
//! properties are empty and `person_created_at` is PostHog's personless placeholder time.

use chrono::{DateTime, TimeZone, Utc};
use hogstream_event::ids::person_uuid;
use hogstream_sinks::{OutputBatch, rows::person_mode};
use uuid::Uuid;

use crate::normalize::NormalizedEvent;

/// The person as the event knows it (PostHog's "persons on events").
#[derive(Debug, Clone, PartialEq)]
pub struct PersonView {
    pub id: Uuid,
    /// JSON object text.
    pub properties: String,
    pub created_at: DateTime<Utc>,
    pub mode: i8,
}

/// Applies person and group rules to events of the identities this worker owns.
pub trait PersonStage {
    /// Updates state for `event` and returns its person; any person, distinct-id and group rows
    /// the update produced are appended to `out`.
    fn process(&mut self, event: &mut NormalizedEvent, out: &mut OutputBatch) -> PersonView;
}

/// PostHog's `person_created_at` for personless events: 1970-01-01 00:00:05 UTC.
pub fn personless_created_at() -> DateTime<Utc> {
    Utc.timestamp_opt(5, 0).single().unwrap_or_default()
}

/// Treats every event as personless.
#[derive(Debug, Default)]
pub struct PersonlessStage;

impl PersonStage for PersonlessStage {
    fn process(&mut self, event: &mut NormalizedEvent, _out: &mut OutputBatch) -> PersonView {
        PersonView {
            id: person_uuid(event.team_id, &event.distinct_id),
            properties: "{}".into(),
            created_at: personless_created_at(),
            mode: person_mode::PROPERTYLESS,
        }
    }
}
