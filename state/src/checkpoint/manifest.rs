//! The manifest of a checkpoint: which files make the store, and where Kafka must be read
//! again from after restoring it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CheckpointError;
use crate::{Layout, PartitionOffset};

/// The manifest format this build writes and reads.
const FORMAT: u32 = 1;

/// Who made a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A running engine, on its interval.
    Engine,
    /// An engine that had drained and stored every offset (a graceful stop): its floors are
    /// exactly where it stopped.
    Shutdown,
    /// `hogstream state resize`, from the checkpoints of the cluster's previous layout.
    Resize,
}

/// One file of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its name in the store's folder.
    pub name: String,
    /// Its key below the process's root.
    pub key: String,
    pub size: u64,
    /// xxh3-128 of its content, checked when it is downloaded.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub created: DateTime<Utc>,
    pub source: Source,
    /// The cluster process whose store this is, and the cluster's layout.
    pub process: u64,
    pub processes: u64,
    pub shards: u32,
    /// The lineage of the store (see `lifecycle`).
    pub lineage: Uuid,
    /// Per input partition, the offset from which the cluster must read again after a restore:
    /// the store holds every effect of the messages before it. A partition left out is read
    /// from its first retained message.
    pub floors: Vec<PartitionOffset>,
    /// When the oldest message at a floor was produced: Kafka's retention must not reach it
    /// before a newer checkpoint exists. `None` when every partition was read to its end.
    pub floor_time: Option<DateTime<Utc>>,
    pub files: Vec<ManifestFile>,
    /// Bytes this checkpoint uploaded (the rest it shares with earlier ones).
    pub uploaded_bytes: u64,
}

impl Manifest {
    /// A new checkpoint's id: its creation time, so ids sort by age, and its lineage's first
    /// digits, so stores of one process never collide.
    pub fn new_id(created: DateTime<Utc>, lineage: Uuid) -> String {
        let lineage = lineage.simple().to_string();
        format!("{}-{}", created.format("%Y%m%dT%H%M%S%.3fZ"), &lineage[..8])
    }

    pub fn layout(&self) -> Layout {
        Layout {
            processes: self.processes,
            shards: self.shards,
        }
    }

    /// Bytes of the whole store.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest is plain data")
    }

    pub fn decode(id: &str, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Manifest {
                id: id.to_owned(),
                detail: format!("unreadable manifest: {e}"),
            })?;
        if manifest.format != FORMAT {
            return Err(CheckpointError::Manifest {
                id: id.to_owned(),
                detail: format!(
                    "manifest format {} (this hogstream reads format {FORMAT})",
                    manifest.format
                ),
            });
        }
        if manifest.id != id {
            return Err(CheckpointError::Manifest {
                id: id.to_owned(),
                detail: format!("the manifest names checkpoint {}", manifest.id),
            });
        }
        Ok(manifest)
    }

    pub(crate) fn format() -> u32 {
        FORMAT
    }
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checkpoint {} of process {} ({} processes, made by {:?} at {}, {} files, {:.1} MB)",
            self.id,
            self.process,
            self.processes,
            self.source,
            self.created
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.files.len(),
            self.size() as f64 / 1e6
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_age_and_manifests_round_trip() {
        let lineage = Uuid::from_u128(0xabcdef01_0000_0000_0000_000000000000);
        let early = DateTime::parse_from_rfc3339("2026-12-07T09:05:03.120Z")
            .unwrap()
            .to_utc();
        let late = early + chrono::Duration::milliseconds(990);
        let (a, b) = (
            Manifest::new_id(early, lineage),
            Manifest::new_id(late, lineage),
        );
        assert_eq!(a, "20261207T090503.120Z-abcdef01");
        assert!(a < b);
        let m = Manifest {
            format: Manifest::format(),
            id: a.clone(),
            created: early,
            source: Source::Engine,
            process: 1,
            processes: 2,
            shards: 4096,
            lineage,
            floors: vec![PartitionOffset {
                topic: "events".into(),
                partition: 3,
                next_offset: 99,
            }],
            floor_time: Some(early),
            files: vec![ManifestFile {
                name: "000012.sst".into(),
                key: "sst/x/000012.sst".into(),
                size: 10,
                hash: "00".into(),
            }],
            uploaded_bytes: 10,
        };
        assert_eq!(Manifest::decode(&a, &m.encode()).unwrap(), m);
        let err = Manifest::decode(&b, &m.encode()).unwrap_err();
        assert!(err.to_string().contains("names checkpoint"), "{err}");
        let newer = String::from_utf8(m.encode())
            .unwrap()
            .replace("\"format\": 1", "\"format\": 9");
        let err = Manifest::decode(&a, newer.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
    }
}
