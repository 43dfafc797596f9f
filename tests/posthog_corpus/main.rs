//! PostHog's own ingestion tests as hogstream's specification.
//!
//! Each test restates one scenario of PostHog's test suites (PostHog/posthog, cited by file and
//! test name on every case) as facts: events in, rows out. They run through hogstream's real
//! layers without services: the engine's processing stage (decoding, normalization, the person
//! stage over a real RocksDB store, row building) for persons, merges, personless events,
//! groups, property lifting and normalization, and capture's timestamp rule for timestamps.
//! The end-to-end versions against the real broker and ClickHouse are in `tests/persons_e2e.rs`
//! and `tests/capture_sdks.rs`.
//!
//! Sources (PostHog/posthog; the suites move between `plugin-server/` and `nodejs/`):
//!
//! | short name | path |
//! |---|---|
//! | person-state-batch.test.ts | `nodejs/tests/worker/ingestion/person-state-batch.test.ts` |
//! | person-state.test.ts | `plugin-server/tests/worker/ingestion/person-state.test.ts` (its last copy) |
//! | process-event.test.ts | `nodejs/tests/main/process-event.test.ts` |
//! | utils.test.ts | `nodejs/tests/utils/db/utils.test.ts` (`personInitialAndUTMProperties`) |
//! | elements-chain.test.ts | `nodejs/src/common/utils/elements-chain.test.ts` |
//! | normalize-event-step.test.ts | `nodejs/src/ingestion/event-processing/normalize-event-step.test.ts` |
//! | normalize-process-person-flag-step.test.ts | `nodejs/src/ingestion/event-processing/` |
//! | prepareEventStep.test.ts | `nodejs/tests/worker/ingestion/event-pipeline/prepareEventStep.test.ts` |
//! | create-event.test.ts | `nodejs/src/worker/ingestion/create-event.test.ts` |
//! | process-personless-step.test.ts | `nodejs/src/ingestion/event-processing/` (formerly `processPersonlessStep.test.ts`) |
//! | groups.test.ts | `nodejs/src/ingestion/event-processing/groups.test.ts` |
//! | group-type-manager.test.ts | `nodejs/src/worker/ingestion/group-type-manager.test.ts` |
//! | process-groups-step.test.ts | `nodejs/src/ingestion/event-processing/process-groups-step.test.ts` |
//! | ingestion-consumer.test.ts | `nodejs/src/ingestion/ingestion-consumer.test.ts` |
//! | timestamps.test.ts | `plugin-server/tests/worker/ingestion/timestamps.test.ts` |
//! | timestamp.rs | `rust/common/types/src/timestamp.rs` |
//!
//! Where hogstream differs on purpose, the case says so and points at the document that
//! explains why. Left out, because what they assert exists only in Postgres (ClickHouse rows
//! cannot show it):
//!
//! - `person-state.test.ts` "handles race condition when person provided has been merged":
//!   Postgres row locking between two ingestion workers; hogstream has one owner per team.
//! - `person-state.test.ts` version assertions (`version: 1` after an update, `+100` on
//!   delete): Postgres `posthog_person.version`; hogstream versions ClickHouse rows with a
//!   growing counter instead (docs/persons-design.md "Output").
//! - `person-state.test.ts` "is_user_id" and `posthog_persondistinctid` row ids: Postgres
//!   columns with no ClickHouse counterpart.
//! - `person-state.test.ts` caching of persons between steps (`personCache`) and the
//!   transaction rollback cases: implementation details of PostHog's Postgres access.
//! - person-state-batch.test.ts "no-op if persons already merged", the merge move-limit
//!   cases and "retries merges up to retry limit if postgres down": Postgres row versions,
//!   a Postgres-side limit, and retries of a Postgres outage.
//! - group-type-manager.test.ts "uses next available index after a group type is deleted
//!   from the dashboard": deleting a type is an operation on PostHog's Postgres mapping.
//! - properties-updater.test.ts: the legacy timestamp-aware updater PostHog removed.
//! - `processPersonlessStep.test.ts` writes to `posthog_personlessdistinctid`: hogstream keeps
//!   the same fact (a distinct id used personless, and when) in its person state; its effect
//!   on naming a merged person is tested in `personless`.

mod harness;

mod groups;
mod lifting;
mod merges;
mod normalization;
mod personless;
mod persons;
mod timestamps;
