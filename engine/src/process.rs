//! The per-worker processing stage: records in, rows and dead letters out.

use std::sync::Arc;

use chrono::Utc;
use hogstream_sinks::{
    DeadLetter, OutputBatch,
    rows::{EventRow, IngestionWarningRow},
};

use crate::{
    normalize::{NormalizedEvent, Outcome, Rules, Warning, normalize},
    persons::{PersonStage, PersonView},
    record::SourceRecord,
    teams::Teams,
};

pub struct Processor {
    teams: Arc<Teams>,
    rules: Arc<Rules>,
    persons: Box<dyn PersonStage>,
}

fn warning_row(w: Warning) -> IngestionWarningRow {
    IngestionWarningRow {
        team_id: w.team_id,
        source: "hogstream".into(),
        kind: w.kind.into(),
        details: w.details.to_string(),
        timestamp: Utc::now(),
    }
}

fn event_row(
    record: &SourceRecord,
    e: NormalizedEvent,
    person: PersonView,
    version: u64,
) -> EventRow {
    EventRow {
        uuid: e.uuid,
        event: e.event,
        properties: serde_json::Value::Object(e.properties).to_string(),
        timestamp: e.timestamp,
        team_id: e.team_id,
        distinct_id: e.distinct_id,
        elements_chain: e.elements_chain,
        created_at: Utc::now(),
        person_id: person.id,
        person_created_at: person.created_at,
        person_properties: person.properties,
        person_mode: person.mode,
        _timestamp: u32::try_from(record.timestamp_ms / 1000).unwrap_or_default(),
        _offset: u64::try_from(record.offset).unwrap_or_default(),
        _partition: u32::try_from(record.partition).unwrap_or_default(),
        _version: version,
    }
}

impl Processor {
    pub fn new(teams: Arc<Teams>, rules: Arc<Rules>, persons: Box<dyn PersonStage>) -> Self {
        Self {
            teams,
            rules,
            persons,
        }
    }

    /// Processes `records` into `out`. Never fails: what cannot be processed becomes a dead
    /// letter and the records around it go on.
    pub fn process(
        &mut self,
        records: impl IntoIterator<Item = SourceRecord>,
        out: &mut OutputBatch,
    ) {
        // Microseconds since the epoch: grows with every write of a row across restarts.
        let version = u64::try_from(Utc::now().timestamp_micros()).unwrap_or_default();
        let (mut seen, mut stored) = (0u64, 0u64);
        for record in records {
            seen += 1;
            match normalize(
                &record.payload,
                record.force_personless,
                &self.teams,
                &self.rules,
            ) {
                Outcome::Event(mut event, warnings) => {
                    out.warnings.extend(warnings.into_iter().map(warning_row));
                    let person = self.persons.process(&mut event, out);
                    let row = event_row(&record, event, person, version);
                    out.bytes += row.properties.len() + row.person_properties.len() + 128;
                    out.events.push(row);
                    stored += 1;
                }
                Outcome::Dropped { reason, warning } => {
                    metrics::counter!("hogstream_events_dropped_total", "reason" => reason)
                        .increment(1);
                    out.warnings.extend(warning.map(warning_row));
                }
                Outcome::DeadLetter(reason) => {
                    tracing::warn!(
                        topic = record.topic,
                        partition = record.partition,
                        offset = record.offset,
                        reason,
                        "dead letter"
                    );
                    out.bytes += record.payload.len();
                    out.dead_letters.push(DeadLetter {
                        source_topic: record.topic,
                        partition: record.partition,
                        offset: record.offset,
                        key: record.key,
                        payload: record.payload,
                        reason,
                        step: "normalize",
                    });
                }
            }
        }
        metrics::counter!("hogstream_events_in_total").increment(seen);
        metrics::counter!("hogstream_events_processed_total").increment(stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{persons::PersonlessStage, teams::Team};
    use hogstream_event::{CapturedEvent, ids::person_uuid};
    use uuid::Uuid;

    fn record(offset: i64, payload: Vec<u8>) -> SourceRecord {
        SourceRecord {
            topic: "t".into(),
            partition: 3,
            offset,
            timestamp_ms: 1_700_000_000_000,
            key: Some(b"tok:d".to_vec()),
            route: 0,
            force_personless: false,
            payload,
        }
    }

    #[test]
    fn a_bad_record_becomes_a_dead_letter_and_its_neighbours_go_on() {
        let teams = Arc::new(
            Teams::new(vec![Team {
                id: 9,
                token: "tok".into(),
                ..Default::default()
            }])
            .unwrap(),
        );
        let mut p = Processor::new(teams, Arc::new(Rules::default()), Box::new(PersonlessStage));
        let good = |n: u128| {
            serde_json::to_vec(&CapturedEvent {
                uuid: Uuid::from_u128(n),
                distinct_id: "d".into(),
                ip: String::new(),
                data: r#"{"event":"e","properties":{"k":1}}"#.into(),
                now: "2026-01-01T00:00:00Z".into(),
                sent_at: None,
                token: "tok".into(),
                event: "e".into(),
                timestamp: "2026-01-01T00:00:00Z".into(),
                is_cookieless_mode: false,
                historical_migration: false,
            })
            .unwrap()
        };
        let mut out = OutputBatch::default();
        p.process(
            vec![
                record(1, good(1)),
                record(2, b"{broken".to_vec()),
                record(3, good(3)),
            ],
            &mut out,
        );
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.events[0].uuid, Uuid::from_u128(1));
        assert_eq!(out.events[1]._offset, 3);
        assert_eq!(out.events[0]._partition, 3);
        assert_eq!(out.events[0].team_id, 9);
        assert_eq!(out.events[0].person_id, person_uuid(9, "d"));
        assert_eq!(out.events[0].properties, r#"{"k":1}"#);
        assert_eq!(out.dead_letters.len(), 1);
        assert_eq!(out.dead_letters[0].offset, 2);
        assert_eq!(out.dead_letters[0].payload, b"{broken");
        assert!(out.dead_letters[0].reason.contains("undecodable"));
    }
}
