//! Persons and groups with PostHog's rules, independent of arrival order.
//!
//! Person state splits in two (see docs/persons-design.md):
//! - properties are per-key registers kept per distinct id; their join is order-free, so a
//!   person's properties are the join over its distinct ids;
//! - identity (which distinct ids form a person, its uuid, `created_at`, `is_identified`) is
//!   order-dependent, and is recomputed by replaying a small sorted set of entries of the
//!   *component* the event touches: the distinct ids ever linked by a merge attempt.

mod component;
mod groups;
mod identity;
mod input;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
mod registers;
mod stage;
#[cfg(test)]
mod tests;

pub use component::{DistinctIdChange, PersonChange, PersonChanges, ResolvedPerson};
pub use groups::MAX_GROUP_TYPES;
pub use input::{GroupIdentify, MergeKind, PersonEvent, Personless, Stamp, is_illegal_id};
pub use stage::{
    Changes, DEFAULT_COMPONENT_CACHE, EventPerson, GroupChange, GroupTypeChange, PendingWrites,
    PersonMode, PersonState, PersonWarning, Processed, personless_created_at, record_key,
    team_of_key,
};
