//! The per-worker processing stage: records in, rows, dead letters and person-state writes out.

use std::{collections::BTreeMap, sync::Arc};

use chrono::Utc;
use hogstream_event::headers;
use hogstream_sinks::{
    DeadLetter, OutputBatch,
    tables::events::{self, EventInput, KafkaPosition},
};
use hogstream_state::{
    StateStore,
    persons::{
        Changes, EventPerson, PendingWrites, PersonEvent, PersonState, PersonWarning, Processed,
    },
};
use rayon::prelude::*;

use crate::{
    error::EngineError,
    normalize::{NormalizedEvent, Outcome, Rules, normalize},
    record::SourceRecord,
    teams::Teams,
};

/// Row versions: microseconds since the epoch, strictly growing within a worker, so the
/// latest write of a row wins in ReplacingMergeTree, across restarts too.
#[derive(Default)]
pub(crate) struct Versions(u64);

impl Versions {
    /// Versions that start above `floor`.
    pub(crate) fn above(floor: u64) -> Self {
        Self(floor)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let now = u64::try_from(Utc::now().timestamp_micros()).unwrap_or_default();
        self.0 = now.max(self.0 + 1);
        self.0
    }
}

pub struct Processor {
    teams: Arc<Teams>,
    rules: Arc<Rules>,
    persons: PersonState,
    state_pool: Arc<rayon::ThreadPool>,
    versions: Versions,
}

/// The event's row input: what normalization made of it.
fn event_input(e: NormalizedEvent) -> EventInput {
    EventInput {
        uuid: e.uuid,
        event: e.event,
        properties: e.properties,
        timestamp: e.timestamp,
        team_id: e.team_id,
        distinct_id: e.distinct_id,
        elements_chain: e.elements_chain,
        process_person: e.process_person,
    }
}

fn dead_letter(record: SourceRecord, reason: String, step: &'static str) -> DeadLetter {
    tracing::warn!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        reason,
        step,
        "dead letter"
    );
    DeadLetter {
        source_topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        key: record.key,
        payload: record.payload,
        reason,
        step,
        headers: record.headers.to_pairs(),
    }
}

impl Processor {
    /// `person_cache`: decoded person components kept between batches (see
    /// [`PersonState::with_cache`]).
    pub fn new(
        teams: Arc<Teams>,
        rules: Arc<Rules>,
        store: StateStore,
        state_pool: Arc<rayon::ThreadPool>,
        person_cache: usize,
    ) -> Result<Self, EngineError> {
        let persons = PersonState::with_cache(store, teams.declared_group_types(), person_cache)?;
        Ok(Self {
            teams,
            rules,
            persons,
            state_pool,
            versions: Versions::default(),
        })
    }

    /// Processes `records` into `out` and returns the person-state writes to commit, in order,
    /// once `out` is stored. Never fails: a record that cannot be decoded or normalized, or that
    /// reached this worker without belonging to it, becomes a dead letter and the records around
    /// it go on; a person-state error dead-letters the events of the team it happened in.
    ///
    /// The per-event work (decoding, rules, plugins, person-event parsing, row building) runs
    /// on the state pool, so one busy team is not held to the one worker that owns it.
    pub fn process(
        &mut self,
        records: impl IntoIterator<Item = SourceRecord>,
        out: &mut OutputBatch,
    ) -> Vec<PendingWrites> {
        let _stage = tracing::debug_span!("stage.process").entered();
        let pool = Arc::clone(&self.state_pool);
        let records: Vec<SourceRecord> = records.into_iter().collect();
        pool.install(|| self.process_on_pool(records, out))
    }

    fn process_on_pool(
        &mut self,
        records: Vec<SourceRecord>,
        out: &mut OutputBatch,
    ) -> Vec<PendingWrites> {
        let (teams, rules) = (&*self.teams, &*self.rules);
        let outcomes: Vec<Outcome> = records
            .par_iter()
            .map(|r| normalize(&r.payload, r.force_personless, teams, rules))
            .collect();
        let mut events = Vec::new();
        let seen = records.len() as u64;
        for (record, outcome) in records.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Event(event, _) if teams.route(event.team_id) != Some(record.route) => {
                    misrouted(record, out);
                }
                Outcome::Event(event, warnings) => {
                    for w in &warnings {
                        out.push_warning(w.team_id, w.kind, &w.details, w.at);
                    }
                    events.push((record, event));
                }
                Outcome::Dropped { reason, warning } => {
                    metrics::counter!("hogstream_events_dropped_total", "reason" => reason)
                        .increment(1);
                    if let Some(w) = &warning {
                        out.push_warning(w.team_id, w.kind, &w.details, w.at);
                    }
                }
                Outcome::DeadLetter(reason) => {
                    out.bytes += record.payload.len();
                    out.dead_letters
                        .push(dead_letter(record, reason, "normalize"));
                }
            }
        }
        metrics::counter!("hogstream_events_in_total").increment(seen);

        let person_events: Vec<PersonEvent> = events
            .par_iter()
            .map(|(record, e)| PersonEvent {
                replay: record.replay,
                personless: e.personless,
                ..PersonEvent::from_event(
                    e.team_id,
                    e.uuid,
                    e.timestamp,
                    &e.distinct_id,
                    &e.event,
                    &e.properties,
                    e.process_person,
                )
            })
            .collect();
        let persons_span = tracing::debug_span!("stage.persons", events = person_events.len());
        let outcome = persons_span.in_scope(|| self.apply_persons(person_events));

        let mut persons = Vec::with_capacity(events.len());
        let mut stored = Vec::with_capacity(events.len());
        for ((record, event), person) in events.into_iter().zip(outcome.persons) {
            match person {
                Ok(person) => {
                    persons.push(person);
                    stored.push((record, event));
                }
                Err(err) => {
                    out.bytes += record.payload.len();
                    out.dead_letters.push(dead_letter(
                        record,
                        format!("person state: {err}"),
                        "persons",
                    ));
                }
            }
        }
        for w in &outcome.warnings {
            out.push_warning(w.team_id, w.kind, &w.details, w.at);
        }
        let version = self.versions.next();
        let created_at = Utc::now();
        let count = stored.len() as u64;
        let rows: Vec<(events::EventRow, i64)> = stored
            .into_par_iter()
            .zip(persons)
            .map(|((record, event), person)| {
                let kafka = KafkaPosition {
                    timestamp_ms: record.timestamp_ms,
                    offset: record.offset,
                    partition: record.partition,
                };
                let row = events::row(event_input(event), person, &kafka, version, created_at);
                (row, record.timestamp_ms)
            })
            .collect();
        for (row, received_ms) in rows {
            out.push_event(row, received_ms);
        }
        for changes in outcome.changes {
            out.push_changes(changes, || self.versions.next());
        }
        metrics::counter!("hogstream_events_processed_total").increment(count);
        outcome.writes
    }

    /// Applies `events` to person state in one call; when that fails (a corrupt record, a read
    /// error) and the batch holds several teams, again team by team, so only the failing team's
    /// events go to the DLQ. A failed call writes nothing, so the retry starts from the same
    /// state.
    fn apply_persons(&mut self, events: Vec<PersonEvent>) -> PersonsOutcome {
        let mut out = PersonsOutcome::default();
        let err = match self.persons.process(&events) {
            Ok(mut p) => {
                out.persons = p.events.drain(..).map(Ok).collect();
                out.absorb(p);
                return out;
            }
            Err(err) => err,
        };
        if events.iter().all(|e| e.team_id == events[0].team_id) {
            tracing::error!(error = %err, events = events.len(), "person state failed; the team's events go to the DLQ");
            out.persons = events.iter().map(|_| Err(err.to_string())).collect();
            return out;
        }
        tracing::warn!(error = %err, events = events.len(), "person state failed; applying the batch again team by team");
        let mut persons: Vec<Option<Result<EventPerson, String>>> = vec![None; events.len()];
        let mut by_team: BTreeMap<i64, (Vec<usize>, Vec<PersonEvent>)> = BTreeMap::new();
        for (i, e) in events.into_iter().enumerate() {
            let (indices, team) = by_team.entry(e.team_id).or_default();
            indices.push(i);
            team.push(e);
        }
        for (team_id, (indices, team)) in by_team {
            match self.persons.process(&team) {
                Ok(mut p) => {
                    for (i, person) in indices.into_iter().zip(p.events.drain(..)) {
                        persons[i] = Some(Ok(person));
                    }
                    out.absorb(p);
                }
                Err(err) => {
                    tracing::error!(team_id, error = %err, events = team.len(), "person state failed; the team's events go to the DLQ");
                    for i in indices {
                        persons[i] = Some(Err(err.to_string()));
                    }
                }
            }
        }
        out.persons = persons
            .into_iter()
            .map(|p| p.expect("every event belongs to one team"))
            .collect();
        out
    }
}

/// What the person stage made of a batch: per event its person or the error that kept it out,
/// and what the calls that succeeded produced, in call order.
#[derive(Default)]
struct PersonsOutcome {
    persons: Vec<Result<EventPerson, String>>,
    warnings: Vec<PersonWarning>,
    changes: Vec<Changes>,
    writes: Vec<PendingWrites>,
}

impl PersonsOutcome {
    fn absorb(&mut self, p: Processed) {
        self.warnings.extend(p.warnings);
        self.changes.push(p.changes);
        if !p.writes.is_empty() {
            self.writes.push(p.writes);
        }
    }
}

/// A record whose route is not its event's team's (a producer's token header naming another
/// team than the payload): this worker does not own its person state, so it must not apply it.
/// It is dead-lettered without that header, so a redrive routes it by its payload's token.
fn misrouted(mut record: SourceRecord, out: &mut OutputBatch) {
    let header = record
        .headers
        .iter()
        .find(|(k, _)| *k == headers::TOKEN)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let reason = format!(
        "misrouted: the token header `{header}` names another team than the event's token; dead-lettered without it, so a redrive routes the event by its token"
    );
    record.headers = record
        .headers
        .iter()
        .filter(|(k, _)| *k != headers::TOKEN)
        .collect();
    out.bytes += record.payload.len();
    out.dead_letters.push(dead_letter(record, reason, "route"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teams::Team;
    use hogstream_event::{CapturedEvent, ids::person_uuid};
    use uuid::Uuid;

    fn record(offset: i64, payload: Vec<u8>) -> SourceRecord {
        SourceRecord {
            topic: "t".into(),
            partition: 3,
            offset,
            timestamp_ms: 1_700_000_000_000,
            key: Some(b"tok:d".to_vec()),
            route: crate::teams::team_route("tok"),
            force_personless: false,
            payload,
            headers: [("origin", &b"test"[..])].into_iter().collect(),
            replay: false,
        }
    }

    fn captured(n: u128, did: &str, event: &str, data: &str) -> Vec<u8> {
        serde_json::to_vec(&CapturedEvent {
            uuid: Uuid::from_u128(n),
            distinct_id: did.into(),
            ip: String::new(),
            data: data.into(),
            now: "2026-01-01T00:00:00Z".into(),
            sent_at: None,
            token: "tok".into(),
            event: event.into(),
            timestamp: format!("2026-01-01T00:00:0{n}Z"),
            is_cookieless_mode: false,
            historical_migration: false,
        })
        .unwrap()
    }

    /// A processor on a fresh store, which lives as long as the directory returned with it.
    fn processor() -> (Processor, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let p = processor_on(StateStore::open(dir.path(), 1 << 20).unwrap());
        (p, dir)
    }

    /// Team 9 (`tok`, declaring `company`) and team 10 (`tok10`).
    fn processor_on(store: StateStore) -> Processor {
        let teams = Arc::new(
            Teams::new(vec![
                Team {
                    id: 9,
                    token: "tok".into(),
                    group_types: vec!["company".into()],
                    ..Default::default()
                },
                Team {
                    id: 10,
                    token: "tok10".into(),
                    ..Default::default()
                },
            ])
            .unwrap(),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        Processor::new(
            teams,
            Arc::new(Rules::default()),
            store,
            Arc::new(pool),
            hogstream_state::persons::DEFAULT_COMPONENT_CACHE,
        )
        .unwrap()
    }

    #[test]
    fn a_bad_record_becomes_a_dead_letter_and_its_neighbours_go_on() {
        let (mut p, _dir) = processor();
        let good = |n: u128| captured(n, "d", "e", r#"{"event":"e","properties":{"k":1}}"#);
        let mut out = OutputBatch::default();
        let writes = p.process(
            vec![
                record(1, good(1)),
                record(2, b"{broken".to_vec()),
                record(3, good(3)),
            ],
            &mut out,
        );
        assert_eq!(writes.len(), 1, "the person of `d` is new state");
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.events[0].uuid, Uuid::from_u128(1));
        assert_eq!(out.events[1]._offset, 3);
        assert_eq!(out.events[0]._partition, 3);
        assert_eq!(out.events[0].team_id, 9);
        assert_eq!(out.events[0].person_id, person_uuid(9, "d"));
        assert_eq!(
            out.events[0].person_mode,
            hogstream_sinks::tables::events::person_mode::FULL
        );
        assert_eq!(out.events[0].properties, r#"{"k":1}"#);
        assert_eq!(out.dead_letters.len(), 1);
        assert_eq!(out.dead_letters[0].offset, 2);
        assert_eq!(out.dead_letters[0].payload, b"{broken");
        assert!(out.dead_letters[0].reason.contains("undecodable"));
        assert_eq!(
            out.dead_letters[0].headers,
            vec![("origin".to_string(), b"test".to_vec())]
        );
        assert_eq!(out.persons.len(), 1);
        assert_eq!(out.distinct_ids.len(), 1);
    }

    fn of_team(token: &str, r: SourceRecord) -> SourceRecord {
        let mut e: CapturedEvent = serde_json::from_slice(&r.payload).unwrap();
        e.token = token.into();
        SourceRecord {
            route: crate::teams::team_route(token),
            payload: serde_json::to_vec(&e).unwrap(),
            ..r
        }
    }

    #[test]
    fn a_corrupt_person_record_dead_letters_only_its_teams_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 1 << 20).unwrap();
        store
            .write_state(&[(
                hogstream_state::persons::record_key(9, "bad"),
                Some(b"\xff\xff\xff not a component".to_vec()),
            )])
            .unwrap();
        let mut p = processor_on(store.clone());
        let page = |n: u128, did: &str| captured(n, did, "$pageview", r#"{"properties":{}}"#);
        let mut out = OutputBatch::default();
        let writes = p.process(
            vec![
                record(1, page(1, "fine")),
                record(2, page(2, "bad")),
                of_team("tok10", record(3, page(3, "other"))),
            ],
            &mut out,
        );
        let stored: Vec<u64> = out.events.iter().map(|e| e._offset).collect();
        assert_eq!(
            stored,
            [3],
            "team 10's event is stored; team 9's wait in the DLQ"
        );
        assert_eq!(out.events[0].person_id, person_uuid(10, "other"));
        let mut dead: Vec<i64> = out.dead_letters.iter().map(|d| d.offset).collect();
        dead.sort_unstable();
        assert_eq!(dead, [1, 2]);
        assert!(
            out.dead_letters
                .iter()
                .all(|d| d.step == "persons" && d.reason.contains("component bad"))
        );
        assert_eq!(out.persons.len(), 1, "only team 10's person is written");
        // A batch of that team alone: dead-lettered at once.
        let mut alone = OutputBatch::default();
        assert!(
            p.process(vec![record(5, page(5, "bad"))], &mut alone)
                .is_empty()
        );
        assert!(alone.events.is_empty());
        assert_eq!(alone.dead_letters.len(), 1);
        PendingWrites::commit_all(&writes, &store).unwrap();
        let mut again = processor_on(store);
        let mut out = OutputBatch::default();
        again.process(
            vec![of_team("tok10", record(4, page(4, "other")))],
            &mut out,
        );
        assert_eq!(
            out.persons.len(),
            0,
            "team 10's person was committed: nothing new"
        );
        assert_eq!(out.events[0].person_id, person_uuid(10, "other"));
    }

    #[test]
    fn an_event_routed_by_another_teams_token_is_dead_lettered_without_that_header() {
        let (mut p, _dir) = processor();
        let mut out = OutputBatch::default();
        let lying = SourceRecord {
            route: crate::teams::team_route("tok10"),
            headers: [(headers::TOKEN, &b"tok10"[..]), ("origin", &b"test"[..])]
                .into_iter()
                .collect(),
            ..record(1, captured(1, "d", "e", r#"{"properties":{}}"#))
        };
        let writes = p.process(
            vec![lying, record(2, captured(2, "d", "e", "{}"))],
            &mut out,
        );
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0]._offset, 2, "the neighbour goes on");
        assert_eq!(writes.len(), 1);
        assert_eq!(out.dead_letters.len(), 1);
        let dead = &out.dead_letters[0];
        assert_eq!((dead.offset, dead.step), (1, "route"));
        assert!(dead.reason.contains("tok10"), "{}", dead.reason);
        assert_eq!(dead.headers, vec![("origin".to_string(), b"test".to_vec())]);
    }

    /// `user` identifies as `anon`.
    fn identify_anon(uuid: u128) -> Vec<u8> {
        captured(
            uuid,
            "user",
            "$identify",
            r#"{"properties":{"$anon_distinct_id":"anon"}}"#,
        )
    }

    #[test]
    fn a_login_after_personless_browsing_keeps_the_browsing_id_and_writes_no_override() {
        let (mut p, _dir) = processor();
        let mut out = OutputBatch::default();
        let personless = r#"{"properties":{"$process_person_profile":false}}"#;
        p.process(
            vec![record(1, captured(1, "anon", "$pageview", personless))],
            &mut out,
        );
        p.process(vec![record(2, identify_anon(2))], &mut out);
        let anon = person_uuid(9, "anon");
        assert_eq!(
            out.events[0].person_id, anon,
            "stored personless, with its UUIDv5"
        );
        assert_eq!(
            out.events[1].person_id, anon,
            "PostHog's id for the new person"
        );
        assert!(out.overrides.is_empty(), "{:?}", out.overrides);
        assert_eq!(out.persons.len(), 1);
        assert_eq!(out.persons[0].id, anon);
    }

    #[test]
    fn a_merge_read_again_after_a_crash_rewrites_its_overrides() {
        // Below an earlier run's read horizon, the same merge may have written rows before a
        // crash that the state never learnt of: every id of the component gets its override.
        let (mut p, _dir) = processor();
        let mut out = OutputBatch::default();
        let replayed = |offset, payload| SourceRecord {
            replay: true,
            ..record(offset, payload)
        };
        p.process(
            vec![
                replayed(1, captured(1, "anon", "$pageview", r#"{"properties":{}}"#)),
                replayed(2, identify_anon(2)),
            ],
            &mut out,
        );
        let anon = person_uuid(9, "anon");
        let mut ids: Vec<&str> = out
            .overrides
            .iter()
            .map(|o| o.distinct_id.as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["anon", "user"]);
        assert!(out.overrides.iter().all(|o| o.person_id == anon));
    }

    #[test]
    fn events_carry_their_person_and_groups_and_need_no_override_when_they_carry_it() {
        let (mut p, _dir) = processor();
        let mut out = OutputBatch::default();
        p.process(
            vec![
                record(1, captured(1, "anon", "$pageview", r#"{"properties":{"$set":{"plan":"free"},"$groups":{"company":"acme","other":"x"}}}"#)),
                record(2, captured(2, "user", "$identify", r#"{"properties":{"$anon_distinct_id":"anon"}}"#)),
                record(3, captured(3, "loner", "$pageview", r#"{"properties":{"$process_person_profile":false,"$group_0":"leak"}}"#)),
            ],
            &mut out,
        );
        let anon = person_uuid(9, "anon");
        assert!(out.events[..2].iter().all(|e| e.person_id == anon));
        let first: serde_json::Value = serde_json::from_str(&out.events[0].properties).unwrap();
        assert_eq!(first["$group_0"], "acme");
        assert!(
            first.get("$group_1").is_none(),
            "undeclared types get no index"
        );
        let person: serde_json::Value =
            serde_json::from_str(&out.events[1].person_properties).unwrap();
        assert_eq!(person["plan"], "free");
        assert_eq!(
            out.events[2].person_mode,
            hogstream_sinks::tables::events::person_mode::PROPERTYLESS
        );
        assert!(!out.events[2].properties.contains("$group_0"));
        assert!(out.warnings.is_empty(), "the identify merged: no warning");
        // Every event of both ids was stored with the surviving person: no override is needed.
        assert!(out.overrides.is_empty(), "{:?}", out.overrides);
        assert_eq!(out.group_type_mappings.len(), 1);
        let mut versions: Vec<u64> = out.persons.iter().map(|r| r.version).collect();
        versions.dedup();
        assert_eq!(
            versions.len(),
            out.persons.len(),
            "every row has its own version"
        );
    }
}
