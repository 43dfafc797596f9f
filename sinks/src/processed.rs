//! The processed-events topic: after a batch's events are stored in ClickHouse, those of teams
//! that run a destination are written here with their person, for the destinations to read
//! (PostHog's `clickhouse_events_json`). Written before the batch's offsets are committed, so a
//! crash re-writes rather than loses them; destinations skip what they already delivered.

use std::{collections::HashSet, time::Duration};

use futures_util::future::join_all;
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{
    error::SinkError,
    tables::events::{EventRow, person_mode},
};

/// The wire form of [`hogstream_event::ProcessedEvent`], borrowed from an event row so its JSON
/// columns are copied, not parsed again.
#[derive(Serialize)]
struct Wire<'a> {
    uuid: Uuid,
    team_id: i64,
    event: &'a str,
    distinct_id: &'a str,
    timestamp: chrono::DateTime<chrono::Utc>,
    properties: &'a RawValue,
    elements_chain: &'a str,
    person: WirePerson<'a>,
}

#[derive(Serialize)]
struct WirePerson<'a> {
    id: Uuid,
    created_at: chrono::DateTime<chrono::Utc>,
    properties: &'a RawValue,
    mode: &'static str,
}

/// The JSON of one processed event.
pub fn encode(row: &EventRow) -> Result<String, serde_json::Error> {
    let wire = Wire {
        uuid: row.uuid,
        team_id: row.team_id,
        event: &row.event,
        distinct_id: &row.distinct_id,
        timestamp: row.timestamp,
        properties: serde_json::from_str(&row.properties)?,
        elements_chain: &row.elements_chain,
        person: WirePerson {
            id: row.person_id,
            created_at: row.person_created_at,
            properties: serde_json::from_str(&row.person_properties)?,
            mode: match row.person_mode {
                person_mode::PROPERTYLESS => "propertyless",
                person_mode::FORCE_UPGRADE => "force_upgrade",
                _ => "full",
            },
        },
    };
    serde_json::to_string(&wire)
}

#[derive(Clone)]
pub struct ProcessedProducer {
    producer: FutureProducer,
    topic: String,
    teams: HashSet<i64>,
}

impl ProcessedProducer {
    /// Writes the events of `teams` to `topic`; `client` carries the brokers and site settings.
    pub fn new(
        mut client: ClientConfig,
        topic: &str,
        teams: HashSet<i64>,
    ) -> Result<Self, SinkError> {
        // Not idempotent, on purpose: a retry may write an event twice, which destinations skip
        // by uuid anyway, and librdkafka 2.12's idempotent producer spins its broker thread
        // (measured: 4.4 CPU-seconds per 30,000 events here; README, Performance).
        let producer = client
            .set("enable.idempotence", "false")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()
            .map_err(SinkError::Kafka)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            teams,
        })
    }

    /// Produces the selected events and waits until Kafka acknowledged all of them, retrying
    /// the ones that failed.
    pub async fn send_all(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        let mut pending: Vec<(String, String)> = Vec::new();
        for row in rows.iter().filter(|r| self.teams.contains(&r.team_id)) {
            // Rows are made from JSON the engine wrote itself; a failure here is a bug, and
            // dropping the event for destinations beats stalling the pipeline on it.
            match encode(row) {
                Ok(json) => pending.push((format!("{}:{}", row.team_id, row.distinct_id), json)),
                Err(e) => {
                    tracing::error!(uuid = %row.uuid, error = %e, "cannot encode a processed event")
                }
            }
        }
        while !pending.is_empty() {
            let sends = pending.iter().map(|(key, json)| {
                self.producer.send(
                    FutureRecord::to(&self.topic).key(key).payload(json),
                    Duration::from_secs(30),
                )
            });
            let results = join_all(sends).await;
            let attempted = pending.len();
            let mut failed = Vec::new();
            for (result, item) in results.into_iter().zip(pending) {
                if let Err((e, _)) = result {
                    tracing::warn!(error = %e, "processed event not stored yet; retrying");
                    failed.push(item);
                }
            }
            metrics::counter!("hogstream_processed_events_total")
                .increment((attempted - failed.len()) as u64);
            if !failed.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            pending = failed;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_event::ProcessedEvent;

    #[test]
    fn the_wire_form_reads_back_as_a_processed_event() {
        let now = chrono::Utc::now();
        let row = EventRow {
            uuid: Uuid::now_v7(),
            event: "$pageview".into(),
            properties: r#"{"$ip":"1.2.3.4","n":[1,2]}"#.into(),
            timestamp: now,
            team_id: 3,
            distinct_id: "d".into(),
            elements_chain: "a:b".into(),
            created_at: now,
            person_id: Uuid::from_u128(9),
            person_created_at: now,
            person_properties: r#"{"email":"a@b"}"#.into(),
            person_mode: person_mode::FORCE_UPGRADE,
            _timestamp: 0,
            _offset: 0,
            _partition: 0,
            _version: 1,
        };
        let back: ProcessedEvent = serde_json::from_str(&encode(&row).unwrap()).unwrap();
        assert_eq!(back.uuid, row.uuid);
        assert_eq!(back.team_id, 3);
        assert_eq!(back.timestamp, now);
        assert_eq!(back.properties["n"], serde_json::json!([1, 2]));
        assert_eq!(back.person.id, row.person_id);
        assert_eq!(back.person.properties["email"], "a@b");
        assert_eq!(back.person.mode, "force_upgrade");
        assert_eq!(back.elements_chain, "a:b");
    }
}
