//! Everything one flush writes, table by table, with deterministic deduplication tokens.

use xxhash_rust::xxh3::Xxh3;

use crate::{
    clickhouse::ClickHouseSink,
    dead_letter::{DeadLetter, DeadLetterProducer},
    error::SinkError,
    processed::ProcessedProducer,
    rows::{
        EventRow, GroupRow, GroupTypeMappingRow, IngestionWarningRow, PersonDistinctIdRow,
        PersonRow,
    },
};

#[derive(Debug, Default, Clone)]
pub struct OutputBatch {
    pub events: Vec<EventRow>,
    pub persons: Vec<PersonRow>,
    pub distinct_ids: Vec<PersonDistinctIdRow>,
    /// Distinct ids whose person is not their own UUIDv5 (same columns).
    pub overrides: Vec<PersonDistinctIdRow>,
    pub groups: Vec<GroupRow>,
    pub group_type_mappings: Vec<GroupTypeMappingRow>,
    pub warnings: Vec<IngestionWarningRow>,
    pub dead_letters: Vec<DeadLetter>,
    /// When capture produced each event of `events` (its Kafka timestamp, ms since the epoch),
    /// for the end-to-end latency histogram.
    pub received_ms: Vec<i64>,
    /// Approximate payload bytes, for flush thresholds.
    pub bytes: usize,
}

/// A token derived only from what identifies the rows, never from timing, so the same rows
/// always carry the same token: ClickHouse then drops a repeated insert of them.
fn token<I, F>(table: &str, items: I, mut feed: F) -> String
where
    I: IntoIterator,
    F: FnMut(&mut Xxh3, I::Item),
{
    let mut h = Xxh3::new();
    h.update(table.as_bytes());
    for item in items {
        feed(&mut h, item);
    }
    format!("hs-{:032x}", h.digest128())
}

impl OutputBatch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.persons.is_empty()
            && self.distinct_ids.is_empty()
            && self.overrides.is_empty()
            && self.groups.is_empty()
            && self.group_type_mappings.is_empty()
            && self.warnings.is_empty()
            && self.dead_letters.is_empty()
    }

    pub fn append(&mut self, mut other: OutputBatch) {
        self.events.append(&mut other.events);
        self.persons.append(&mut other.persons);
        self.distinct_ids.append(&mut other.distinct_ids);
        self.overrides.append(&mut other.overrides);
        self.groups.append(&mut other.groups);
        self.group_type_mappings
            .append(&mut other.group_type_mappings);
        self.warnings.append(&mut other.warnings);
        self.dead_letters.append(&mut other.dead_letters);
        self.received_ms.append(&mut other.received_ms);
        self.bytes += other.bytes;
    }

    pub fn events_token(&self) -> String {
        token("events", &self.events, |h, r| {
            h.update(r.uuid.as_bytes());
        })
    }

    /// Writes dead letters, every table, then the processed events for destinations. Persons
    /// go first so that a reader never sees an event whose person row is missing, and
    /// destinations see an event only once ClickHouse has it; the order does not matter for
    /// correctness after a replay.
    pub async fn write(&self, outputs: &Outputs) -> Result<(), SinkError> {
        let Outputs {
            clickhouse: sink,
            dlq,
            processed,
        } = outputs;
        dlq.send_all(&self.dead_letters).await?;
        let persons = token("person", &self.persons, |h, r| {
            h.update(r.id.as_bytes());
            h.update(&r.version.to_le_bytes());
        });
        sink.insert("person", &self.persons, &persons).await?;

        let ids = token("person_distinct_id2", &self.distinct_ids, |h, r| {
            h.update(&r.team_id.to_le_bytes());
            h.update(r.distinct_id.as_bytes());
            h.update(&r.version.to_le_bytes());
        });
        sink.insert("person_distinct_id2", &self.distinct_ids, &ids)
            .await?;
        let overrides = token("person_distinct_id_overrides", &self.overrides, |h, r| {
            h.update(&r.team_id.to_le_bytes());
            h.update(r.distinct_id.as_bytes());
            h.update(&r.version.to_le_bytes());
        });
        sink.insert("person_distinct_id_overrides", &self.overrides, &overrides)
            .await?;

        let mappings = token("group_type_mapping", &self.group_type_mappings, |h, r| {
            h.update(&r.team_id.to_le_bytes());
            h.update(r.group_type.as_bytes());
            h.update(&r.version.to_le_bytes());
        });
        sink.insert("group_type_mapping", &self.group_type_mappings, &mappings)
            .await?;

        let groups = token("groups", &self.groups, |h, r| {
            h.update(&r.team_id.to_le_bytes());
            h.update(&[r.group_type_index]);
            h.update(r.group_key.as_bytes());
            h.update(&r.version.to_le_bytes());
        });
        sink.insert("groups", &self.groups, &groups).await?;

        let warnings = token("ingestion_warnings", &self.warnings, |h, r| {
            h.update(&r.team_id.to_le_bytes());
            h.update(r.kind.as_bytes());
            h.update(r.details.as_bytes());
            h.update(&r.timestamp.timestamp_micros().to_le_bytes());
        });
        sink.insert("ingestion_warnings", &self.warnings, &warnings)
            .await?;

        sink.insert("events", &self.events, &self.events_token())
            .await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let latency = metrics::histogram!(hogstream_event::latency::EVENT_LATENCY);
        for received in &self.received_ms {
            latency.record((now_ms - received).max(0) as f64 / 1000.0);
        }
        if let Some(p) = processed {
            p.send_all(&self.events).await?;
        }
        Ok(())
    }
}

/// Where a flush writes.
#[derive(Clone)]
pub struct Outputs {
    pub clickhouse: ClickHouseSink,
    pub dlq: DeadLetterProducer,
    /// Present when some team runs a destination.
    pub processed: Option<ProcessedProducer>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn event(uuid: Uuid) -> EventRow {
        EventRow {
            uuid,
            event: "e".into(),
            properties: "{}".into(),
            timestamp: Utc::now(),
            team_id: 1,
            distinct_id: "d".into(),
            elements_chain: String::new(),
            created_at: Utc::now(),
            person_id: Uuid::nil(),
            person_created_at: Utc::now(),
            person_properties: "{}".into(),
            person_mode: 0,
            _timestamp: 0,
            _offset: 0,
            _partition: 0,
            _version: 1,
        }
    }

    #[test]
    fn token_depends_on_rows_not_on_time() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let one = OutputBatch {
            events: vec![event(a), event(b)],
            ..Default::default()
        };
        let same = OutputBatch {
            events: vec![event(a), event(b)],
            ..Default::default()
        };
        let other = OutputBatch {
            events: vec![event(a)],
            ..Default::default()
        };
        assert_eq!(one.events_token(), same.events_token());
        assert_ne!(one.events_token(), other.events_token());
    }
}
