//! Everything one flush writes, table by table, with deterministic deduplication tokens.

use hogstream_state::persons::Changes;

use crate::{
    clickhouse::ClickHouseSink,
    dead_letter::{DeadLetter, DeadLetterProducer},
    error::SinkError,
    processed::ProcessedProducer,
    tables::{
        Table,
        events::{EventRow, Events},
        group_type_mapping::GroupTypeMapping,
        groups::Groups,
        ingestion_warnings::IngestionWarnings,
        person::Person,
        person_distinct_id_overrides::PersonDistinctIdOverrides,
        person_distinct_id2::PersonDistinctId2,
        token,
    },
};

/// The tables a flush writes, in the order it writes them: persons first, so that a reader
/// never sees an event whose person row is missing; events last. Each becomes a field of
/// [`OutputBatch`] holding that table's rows.
macro_rules! output_batch {
    ($($(#[$doc:meta])* $field:ident: $table:ty),* $(,)?) => {
        #[derive(Debug, Default, Clone)]
        pub struct OutputBatch {
            $($(#[$doc])* pub $field: Vec<<$table as Table>::Row>,)*
            pub dead_letters: Vec<DeadLetter>,
            /// Rows of view tables as JSONEachRow lines, by table; written after the events
            /// they count.
            pub views: std::collections::BTreeMap<String, Vec<String>>,
            /// When capture produced each event of `events` (its Kafka timestamp, ms since the
            /// epoch), for the end-to-end latency histogram.
            pub received_ms: Vec<i64>,
            /// Approximate payload bytes, for flush thresholds.
            pub bytes: usize,
        }

        impl OutputBatch {
            pub fn is_empty(&self) -> bool {
                $(self.$field.is_empty() &&)* self.dead_letters.is_empty() && self.views.is_empty()
            }

            pub fn append(&mut self, mut other: OutputBatch) {
                $(self.$field.append(&mut other.$field);)*
                self.dead_letters.append(&mut other.dead_letters);
                for (table, mut lines) in other.views {
                    self.views.entry(table).or_default().append(&mut lines);
                }
                self.received_ms.append(&mut other.received_ms);
                self.bytes += other.bytes;
            }

            async fn insert_tables(&self, sink: &ClickHouseSink) -> Result<(), SinkError> {
                $(sink.insert(<$table>::NAME, &self.$field, &token::<$table>(&self.$field)).await?;)*
                Ok(())
            }
        }
    };
}

output_batch! {
    persons: Person,
    distinct_ids: PersonDistinctId2,
    /// Distinct ids some of whose stored events carry another person (same columns).
    overrides: PersonDistinctIdOverrides,
    group_type_mappings: GroupTypeMapping,
    groups: Groups,
    warnings: IngestionWarnings,
    events: Events,
}

impl OutputBatch {
    /// Adds an event's row; `received_ms` is when capture produced it.
    pub fn push_event(&mut self, row: EventRow, received_ms: i64) {
        self.bytes += row.properties.len() + row.person_properties.len() + 128;
        self.events.push(row);
        self.received_ms.push(received_ms);
    }

    /// Adds a warning hogstream raised about an event received `at`.
    pub fn push_warning(
        &mut self,
        team_id: i64,
        kind: &str,
        details: &serde_json::Value,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        self.warnings.push(crate::tables::ingestion_warnings::row(
            team_id, kind, details, at,
        ));
    }

    /// Adds the rows of the person stage's changes; `version` gives each row its own.
    pub fn push_changes(&mut self, changes: Changes, mut version: impl FnMut() -> u64) {
        use crate::tables::{group_type_mapping, groups, person, person_distinct_id2};
        for p in changes.persons.persons {
            let row = person::row(p, version());
            self.bytes += row.properties.len() + 64;
            self.persons.push(row);
        }
        for d in changes.persons.distinct_ids {
            self.distinct_ids
                .push(person_distinct_id2::row(d, version()));
        }
        for d in changes.persons.overrides {
            self.overrides.push(person_distinct_id2::row(d, version()));
        }
        for g in changes.groups {
            self.groups.push(groups::row(g, version()));
        }
        for t in changes.group_types {
            self.group_type_mappings
                .push(group_type_mapping::row(t, version()));
        }
    }

    pub fn events_token(&self) -> String {
        token::<Events>(&self.events)
    }

    /// Writes dead letters, every table, then the processed events for destinations, which
    /// see an event only once ClickHouse has it; the order does not matter for correctness
    /// after a replay.
    pub async fn write(&self, outputs: &Outputs) -> Result<(), SinkError> {
        let Outputs {
            clickhouse: sink,
            dlq,
            processed,
        } = outputs;
        dlq.send_all(&self.dead_letters).await?;
        self.insert_tables(sink).await?;
        for (table, lines) in &self.views {
            sink.insert_json_lines(table, lines, &lines_token(table, lines))
                .await?;
        }
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

/// A token for JSON lines of `table`, made like [`token`]: the same lines, the same token.
fn lines_token(table: &str, lines: &[String]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(table.as_bytes());
    for line in lines {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    format!("hs-{:032x}", h.digest128())
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
