//! The engine's real processing stage (decoding, normalization, the person stage over a real
//! RocksDB store, row building) fed events as capture writes them to Kafka, and the rows it
//! would insert, read back the way PostHog's tables are read.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, TimeZone, Utc};
use hogstream_engine::{
    normalize::Rules,
    process::Processor,
    record::SourceRecord,
    teams::{Team, Teams, team_route},
};
use hogstream_event::CapturedEvent;
use hogstream_sinks::{
    OutputBatch,
    tables::{events::EventRow, groups::GroupRow, person::PersonRow},
};
use hogstream_state::{StateStore, persons::PendingWrites};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub const TEAM: i64 = 2;
const TOKEN: &str = "phc_corpus";

/// One engine worker's processing stage with a state store of its own.
pub struct Engine {
    processor: Processor,
    store: StateStore,
    _dir: tempfile::TempDir,
    offset: i64,
}

/// A time of the corpus: seconds after 2026-01-01 00:00:00 UTC.
pub fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + second, 0).unwrap()
}

impl Engine {
    pub fn new() -> Self {
        Self::with_team(|_| {})
    }

    /// An engine whose one team is edited first (opt-outs, group types).
    pub fn with_team(edit: impl FnOnce(&mut Team)) -> Self {
        let mut team = Team {
            id: TEAM,
            token: TOKEN.into(),
            ..Default::default()
        };
        edit(&mut team);
        let teams = Teams::new(vec![team]).expect("one team");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = StateStore::open(dir.path(), 8 << 20).expect("a state store");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool");
        let processor = Processor::new(
            Arc::new(teams),
            Arc::new(Rules::default()),
            store.clone(),
            Arc::new(pool),
            1_000,
        )
        .expect("a processor");
        Self {
            processor,
            store,
            _dir: dir,
            offset: 0,
        }
    }

    /// Processes `events` as one batch and commits its state. Each event is
    /// `{"event", "distinct_id", "properties", "timestamp" (seconds, see [`at`]), "uuid"?}`.
    pub fn send(&mut self, events: &[Value]) -> Out {
        let records: Vec<SourceRecord> = events.iter().map(|e| self.record(e)).collect();
        let mut out = OutputBatch::default();
        let writes = self.processor.process(records, &mut out);
        PendingWrites::commit_all(&writes, &self.store).expect("commit");
        Out(out)
    }

    fn record(&mut self, e: &Value) -> SourceRecord {
        self.offset += 1;
        let ts = at(e["timestamp"].as_i64().unwrap_or(0));
        let uuid = e["uuid"]
            .as_str()
            .map(|u| Uuid::parse_str(u).expect("a uuid"))
            .unwrap_or_else(|| {
                Uuid::from_u128(0x0197_0000_0000_7000_8000_0000_0000_0000 | self.offset as u128)
            });
        let event = e["event"].as_str().expect("an event name").to_owned();
        let data = json!({"event": e["event"], "properties": e["properties"]});
        let time = hogstream_event::time::rfc3339(ts);
        let captured = CapturedEvent {
            uuid,
            distinct_id: e["distinct_id"].as_str().expect("a distinct id").into(),
            ip: "203.0.113.7".into(),
            data: data.to_string(),
            now: time.clone(),
            sent_at: None,
            token: TOKEN.into(),
            event,
            timestamp: time,
            is_cookieless_mode: false,
            historical_migration: false,
        };
        SourceRecord {
            topic: "events_plugin_ingestion".into(),
            partition: 0,
            offset: self.offset,
            timestamp_ms: ts.timestamp_millis(),
            key: Some(captured.partition_key().into_bytes()),
            route: team_route(TOKEN),
            force_personless: false,
            payload: serde_json::to_vec(&captured).expect("encodes"),
            headers: Default::default(),
            replay: false,
        }
    }
}

/// What one batch would insert.
pub struct Out(pub OutputBatch);

pub fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON object: {text}: {e}"))
}

impl Out {
    /// The stored event with this distinct id and name (the only one in the batch).
    pub fn event(&self, distinct_id: &str, name: &str) -> &EventRow {
        let mut found = self
            .0
            .events
            .iter()
            .filter(|r| r.distinct_id == distinct_id && r.event == name);
        let row = found
            .next()
            .unwrap_or_else(|| panic!("no {name} event of {distinct_id} in {:?}", self.names()));
        assert!(found.next().is_none(), "one {name} event of {distinct_id}");
        row
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.events.iter().map(|r| r.event.as_str()).collect()
    }

    pub fn properties(&self, distinct_id: &str, name: &str) -> Map<String, Value> {
        object(&self.event(distinct_id, name).properties)
    }

    pub fn person_properties(&self, distinct_id: &str, name: &str) -> Map<String, Value> {
        object(&self.event(distinct_id, name).person_properties)
    }

    /// The persons the batch leaves (the latest row of each id, deleted ones left out).
    pub fn persons(&self) -> BTreeMap<Uuid, &PersonRow> {
        let mut latest: BTreeMap<Uuid, &PersonRow> = BTreeMap::new();
        for r in &self.0.persons {
            if latest.get(&r.id).is_none_or(|l| l.version <= r.version) {
                latest.insert(r.id, r);
            }
        }
        latest.retain(|_, r| r.is_deleted == 0);
        latest
    }

    /// The one live person of the batch.
    pub fn person(&self) -> &PersonRow {
        let persons = self.persons();
        assert_eq!(persons.len(), 1, "one person: {persons:?}");
        persons.into_values().next().expect("one")
    }

    /// The distinct id → person rows of the batch.
    pub fn distinct_ids(&self) -> BTreeMap<&str, Uuid> {
        let mut rows: Vec<_> = self.0.distinct_ids.iter().collect();
        rows.sort_by_key(|r| r.version);
        rows.into_iter()
            .filter(|r| r.is_deleted == 0)
            .map(|r| (r.distinct_id.as_str(), r.person_id))
            .collect()
    }

    pub fn warnings(&self) -> Vec<&str> {
        self.0.warnings.iter().map(|w| w.kind.as_str()).collect()
    }

    pub fn groups(&self) -> Vec<&GroupRow> {
        self.0.groups.iter().collect()
    }
}
