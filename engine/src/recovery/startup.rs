//! Opening a process's store at start-up, never silently empty: a store that is missing, empty
//! or unreadable while the cluster had processed events is restored from its newest checkpoint
//! (when `[checkpoints] restore` says so) or the engine refuses to start with one line that
//! names the cause and the remedy.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use hogstream_objects::Objects;
use hogstream_state::{
    Found, Layout, PartitionOffset, StateError, StateStore,
    checkpoint::{self, Manifest},
    lifecycle::FROM_START,
};
use tokio::runtime::Handle;

use crate::{EngineError, EngineSettings, shards::VIRTUAL_SHARDS, source};

/// The store the engine runs on, and the checkpoint it was just restored from, if it was.
pub struct Opened {
    pub store: StateStore,
    pub restored: Option<Manifest>,
}

/// Why the store is not used as found.
enum Replace {
    Missing,
    Empty,
    Unreadable(StateError),
    /// A readable store that is not the newest state of this process: the object store holds a
    /// newer checkpoint for the cluster's layout made by another store (a resize, or the process
    /// moved to another host and back).
    Superseded {
        before: Option<Layout>,
    },
}

impl Replace {
    fn describe(&self, dir: &Path, newest: Option<&Manifest>) -> String {
        match self {
            Replace::Missing => format!("the state store {} is missing", dir.display()),
            Replace::Empty => format!("the state store {} is empty", dir.display()),
            Replace::Unreadable(e) => {
                format!("the state store {} cannot be opened ({e})", dir.display())
            }
            Replace::Superseded { before } => {
                let laid_out = before.map_or_else(String::new, |l| format!(" (laid out for {l})"));
                let by = newest.map_or_else(String::new, |m| format!(": {m}"));
                format!(
                    "the state store {}{laid_out} is not this process's newest state; the object store holds a newer checkpoint made by another store{by}",
                    dir.display()
                )
            }
        }
    }
}

/// What says that the process had processed events before.
struct Evidence {
    committed_partitions: usize,
    group: String,
    checkpoint: Option<Manifest>,
}

impl Evidence {
    fn any(&self) -> bool {
        self.committed_partitions > 0 || self.checkpoint.is_some()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.committed_partitions > 0 {
            parts.push(format!(
                "the consumer group `{}` has committed offsets for {} partitions",
                self.group, self.committed_partitions
            ));
        }
        if self.checkpoint.is_some() {
            parts.push("the object store holds checkpoints of this process".to_owned());
        }
        parts.join(" and ")
    }
}

/// The directory of process `process`'s store.
pub fn store_dir(settings: &EngineSettings) -> PathBuf {
    settings
        .engine
        .data_dir
        .join(format!("process-{}", settings.cluster.process))
}

/// The layout the cluster runs.
pub fn layout(settings: &EngineSettings) -> Layout {
    Layout {
        processes: settings.cluster.processes.max(1) as u64,
        shards: VIRTUAL_SHARDS,
    }
}

/// Opens the process's store, restoring it first when it must be and may be.
pub fn open_store(
    settings: &EngineSettings,
    objects: Option<&Objects>,
    runtime: &Handle,
) -> Result<Opened, EngineError> {
    let dir = store_dir(settings);
    let layout = layout(settings);
    let cache = settings.engine.block_cache_bytes;
    let process = settings.cluster.process as u64;
    let restore = settings.checkpoints.as_ref().is_some_and(|c| c.restore);
    let root = objects.map(|o| checkpoint::process_root(o, process));
    let found = Found::at(&dir, cache).map_err(|e| {
        EngineError::Refused(format!(
            "engine process {process}: the state store {} cannot be used ({e}); is another engine running on it?",
            dir.display()
        ))
    })?;
    let mut newest: Option<Manifest> = None;
    let replace = match found {
        Found::Ready(store) => match superseded(&store, layout, root.as_ref(), runtime)? {
            None => {
                store.claim_layout(layout)?;
                return Ok(Opened {
                    store,
                    restored: None,
                });
            }
            Some(manifest) => {
                let before = store.layout()?;
                newest = Some(manifest);
                Replace::Superseded { before }
            }
        },
        Found::Empty(store) => {
            drop(store);
            Replace::Empty
        }
        Found::Missing => Replace::Missing,
        Found::Unreadable(e) => Replace::Unreadable(e),
    };

    let evidence = match &replace {
        // A newer checkpoint of this process is evidence enough.
        Replace::Superseded { .. } => None,
        _ => Some(evidence(settings, root.as_ref(), runtime)?),
    };
    if let Some(evidence) = &evidence
        && !evidence.any()
    {
        if let Replace::Unreadable(e) = replace {
            return Err(EngineError::Refused(format!(
                "engine process {process}: {}. Nothing says it held state (no committed offsets, no checkpoint): move it aside to start afresh (runbook 14.4)",
                Replace::Unreadable(e).describe(&dir, None)
            )));
        }
        // A new process of a new cluster.
        std::fs::create_dir_all(&dir)?;
        let store = StateStore::open(&dir, cache)?;
        store.claim_layout(layout)?;
        return Ok(Opened {
            store,
            restored: None,
        });
    }

    let had = evidence
        .as_ref()
        .map(|e| format!(", but {}: it had processed events", e.describe()))
        .unwrap_or_default();
    let start_over = match replace {
        Replace::Unreadable(_) => format!(
            "move {} aside and start over without person state on purpose with `hogstream state init`",
            dir.display()
        ),
        _ => "start over without person state on purpose with `hogstream state init`".to_owned(),
    };
    let Some(root) = root else {
        let cause = replace.describe(&dir, None);
        return Err(EngineError::Refused(format!(
            "engine process {process}: {cause}{had}. Starting without it would split every person it knew into new ones. No [checkpoints] store is configured, so there is nothing to restore from: bring the store back, or {start_over} (runbook 14.4)"
        )));
    };
    if newest.is_none() {
        newest = match evidence.and_then(|e| e.checkpoint) {
            Some(m) if m.layout() == layout => Some(m),
            _ => {
                runtime
                    .block_on(checkpoint::newest(&root, layout))
                    .map_err(checkpoint_error)?
                    .0
            }
        };
    }
    let cause = replace.describe(&dir, newest.as_ref());
    let Some(manifest) = newest else {
        return Err(EngineError::Refused(format!(
            "engine process {process}: {cause}{had}. The object store ({root}) holds no checkpoint of this process for {layout}: if the cluster's size changed, run `hogstream state resize --processes {}` first (runbook 14.6); otherwise {start_over} (runbook 14.4)",
            layout.processes
        )));
    };
    if !restore {
        let why = match replace {
            Replace::Superseded { .. } => {
                "Running on it would lose what the newer checkpoint holds."
            }
            _ => "Starting without it would split every person it knew into new ones.",
        };
        return Err(EngineError::Refused(format!(
            "engine process {process}: {cause}{had}. {why} Restore the newest checkpoint, {manifest}, by setting `restore = true` in [checkpoints] (runbook 14.2), or {start_over} (runbook 14.4)"
        )));
    }
    let store = restore_into(settings, &root, &manifest, &dir, &cause, runtime)?;
    Ok(Opened {
        store,
        restored: Some(manifest),
    })
}

/// The newest checkpoint of this process for `layout`, when `store` is not where it came from:
/// a checkpoint of another store (a resize's, or one made on another host after this store was
/// left behind) that this store was not restored from. Such a store is older than the
/// checkpoint. When the object store cannot be asked, the local store is used (a checkpoint
/// can only be newer if it was moved, which a layout change or a move makes explicit), unless
/// the layout changed: then the resize's checkpoint must be looked for.
fn superseded(
    store: &StateStore,
    layout: Layout,
    root: Option<&Objects>,
    runtime: &Handle,
) -> Result<Option<Manifest>, EngineError> {
    let Some(root) = root else {
        return Ok(None);
    };
    let relayout = store.layout()?.is_some_and(|before| {
        before != layout && !(before.processes == 1 && layout.processes == 1)
    });
    let newest = match runtime.block_on(checkpoint::newest(root, layout)) {
        Ok((newest, _)) => newest,
        Err(e) if relayout => {
            return Err(EngineError::Checkpoint(format!(
                "the cluster's layout changed, and the object store does not answer to look for the resize's checkpoint: {e}"
            )));
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot compare the store with its newest checkpoint; starting on the local store");
            return Ok(None);
        }
    };
    let Some(newest) = newest else {
        return Ok(None);
    };
    let lineage = store.lineage()?;
    let origin = store.restored_from()?;
    let ours = newest.lineage == lineage || origin.as_deref() == Some(newest.id.as_str());
    Ok((!ours).then_some(newest))
}

fn checkpoint_error(e: checkpoint::CheckpointError) -> EngineError {
    EngineError::Checkpoint(e.to_string())
}

/// Looks for signs that this process had processed events: offsets committed by the engine's
/// consumer group, or a checkpoint of this process.
fn evidence(
    settings: &EngineSettings,
    root: Option<&Objects>,
    runtime: &Handle,
) -> Result<Evidence, EngineError> {
    let consumer = source::consumer(&settings.kafka)?;
    let partitions = source::all_partitions(&consumer, &settings.kafka.input_topics)?;
    let committed_partitions = source::group_offsets(&consumer, &partitions)?.len();
    let checkpoint = match root {
        Some(root) => runtime
            .block_on(checkpoint::list(root))
            .map_err(|e| {
                EngineError::Checkpoint(format!("cannot tell whether this process had state: {e}"))
            })?
            .into_iter()
            .next(),
        None => None,
    };
    Ok(Evidence {
        committed_partitions,
        group: settings.kafka.group_id.clone(),
        checkpoint,
    })
}

/// Downloads `manifest` next to `dir`, marks it restored, and puts it in `dir`'s place (a store
/// found there is kept beside it for inspection).
fn restore_into(
    settings: &EngineSettings,
    root: &Objects,
    manifest: &Manifest,
    dir: &Path,
    cause: &str,
    runtime: &Handle,
) -> Result<StateStore, EngineError> {
    let process = settings.cluster.process;
    let consumer = source::consumer(&settings.kafka)?;
    let partitions = source::all_partitions(&consumer, &settings.kafka.input_topics)?;
    let logs = source::watermarks(&consumer, &partitions)?;
    let (floors, horizons) = replay_from(manifest, &logs).map_err(EngineError::Refused)?;

    tracing::info!(process, checkpoint = %manifest.id, cause, "restoring the state store from its newest checkpoint");
    let staging = dir.with_extension("restoring");
    let got = runtime
        .block_on(checkpoint::download(root, manifest, &staging))
        .map_err(checkpoint_error)?;
    {
        let restored = StateStore::open(&staging, settings.engine.block_cache_bytes)?;
        restored.mark_restored(&manifest.id, &floors, &horizons)?;
    }
    if dir.exists() {
        let aside = dir.with_extension(format!(
            "replaced-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        std::fs::rename(dir, &aside)?;
        tracing::warn!(process, kept = %aside.display(), "the store found at start-up is kept beside the restored one; delete it once it is not needed");
    }
    std::fs::rename(&staging, dir)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    let store = StateStore::open(dir, settings.engine.block_cache_bytes)?;
    store.claim_layout(layout(settings))?;
    tracing::info!(
        process,
        checkpoint = %manifest.id,
        files = got.files,
        megabytes = got.bytes as f64 / 1e6,
        took = ?got.took,
        "restored the state store; the cluster reads Kafka again from the checkpoint's offsets"
    );
    Ok(store)
}

/// The floors a restore of `manifest` hands the cluster (every partition of the input topics:
/// the manifest's offset, or its first message when the manifest names none) and the read
/// horizons it sets (each partition's end now: the lost store may have processed anything
/// before it). Refused when Kafka no longer holds a floor's messages.
fn replay_from(
    manifest: &Manifest,
    logs: &source::Logs,
) -> Result<(Vec<PartitionOffset>, Vec<PartitionOffset>), String> {
    let named: HashMap<(&str, i32), i64> = manifest
        .floors
        .iter()
        .map(|f| ((f.topic.as_str(), f.partition), f.next_offset))
        .collect();
    let mut keys: Vec<&(String, i32)> = logs.keys().collect();
    keys.sort();
    let mut floors = Vec::new();
    let mut horizons = Vec::new();
    for key @ (topic, partition) in keys {
        let (low, high) = logs[key];
        let floor = match named.get(&(topic.as_str(), *partition)) {
            Some(&floor) if floor < low => {
                return Err(format!(
                    "{manifest} needs {topic}/{partition} from offset {floor}, but Kafka holds it only from offset {low}: retention deleted the {} events between, so the restored state would miss them. Raise the topics' retention above the checkpoints' age (alert HogstreamCheckpointNearRetention, runbook 14.7)",
                    low - floor
                ));
            }
            Some(&floor) => floor,
            None => FROM_START,
        };
        floors.push(PartitionOffset {
            topic: topic.clone(),
            partition: *partition,
            next_offset: floor,
        });
        horizons.push(PartitionOffset {
            topic: topic.clone(),
            partition: *partition,
            next_offset: high,
        });
    }
    Ok((floors, horizons))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use hogstream_state::checkpoint::Source;

    fn manifest(floors: &[(&str, i32, i64)]) -> Manifest {
        Manifest {
            format: 1,
            id: "20261207T000000.000Z-00000000".into(),
            created: Utc::now(),
            source: Source::Engine,
            process: 0,
            processes: 1,
            shards: VIRTUAL_SHARDS,
            lineage: uuid::Uuid::nil(),
            floors: floors
                .iter()
                .map(|(t, p, o)| PartitionOffset {
                    topic: (*t).into(),
                    partition: *p,
                    next_offset: *o,
                })
                .collect(),
            floor_time: None,
            files: Vec::new(),
            uploaded_bytes: 0,
        }
    }

    #[test]
    fn a_restore_replays_every_partition_from_its_floor_and_refuses_what_retention_deleted() {
        let logs = HashMap::from([
            (("events".to_owned(), 0), (0, 100)),
            (("events".to_owned(), 1), (10, 50)),
            (("overflow".to_owned(), 0), (5, 5)),
        ]);
        let (floors, horizons) =
            replay_from(&manifest(&[("events", 0, 40), ("events", 1, 10)]), &logs).unwrap();
        let offsets = |v: &[PartitionOffset]| {
            v.iter()
                .map(|o| (o.topic.clone(), o.partition, o.next_offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            offsets(&floors),
            vec![
                ("events".into(), 0, 40),
                ("events".into(), 1, 10),
                ("overflow".into(), 0, FROM_START)
            ]
        );
        assert_eq!(
            offsets(&horizons),
            vec![
                ("events".into(), 0, 100),
                ("events".into(), 1, 50),
                ("overflow".into(), 0, 5)
            ]
        );
        let err = replay_from(&manifest(&[("events", 1, 7)]), &logs).unwrap_err();
        assert!(
            err.contains("events/1 from offset 7")
                && err.contains("only from offset 10")
                && err.contains("3 events"),
            "{err}"
        );
    }
}
