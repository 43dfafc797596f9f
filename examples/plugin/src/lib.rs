//! An example plugin crate, one plugin of each kind, with their tests:
//!
//! - `tag-internal` (transform) marks events of internal users with `internal: true` and can drop
//!   them:
//!   ```toml
//!   [[plugins]]
//!   plugin = "tag-internal"
//!   [plugins.config]
//!   domains = ["example.com"]   # email domains of internal users
//!   drop = false                # drop their events instead of tagging them
//!   ```
//! - `event-counter` (destination) counts processed events per event name in its storage.
//! - `heartbeat` (scheduled task) records, every minute, when it last ran.
//!
//! Register them in the binary's `src/plugins.rs` (docs/plugins.md).
//! - `active_persons_by_plan` (view) counts distinct persons per day and the person's `plan`:
//!   a view that reads persons.
//! - `persons_by_browser` (view) counts distinct persons per day and browser, merge-aware
//!   (docs/views.md); enable it with `[[views]] view = "persons_by_browser"`.
//! - `chaos` (transform) panics on the events it is told to: it shows, in tests, that a
//!   panicking plugin stops neither the event nor ingestion.

mod active_persons_by_plan;
mod chaos;
mod event_counter;
mod heartbeat;
mod persons_by_browser;
mod tag_internal;

pub use active_persons_by_plan::ActivePersonsByPlan;
pub use chaos::Chaos;
pub use event_counter::EventCounter;
pub use heartbeat::Heartbeat;
pub use persons_by_browser::PersonsByBrowser;
pub use tag_internal::TagInternal;
