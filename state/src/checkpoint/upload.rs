//! Making checkpoints: a RocksDB checkpoint on the local disk (hard links, taken in
//! milliseconds, so the store never waits), then an upload of the files the object store does
//! not hold yet, the manifest last, and the retention of the newest few.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use hogstream_objects::Objects;
use uuid::Uuid;

use super::{CheckpointError, Manifest, ManifestFile, Source, list, manifest_key, process_root};
use crate::{Layout, PartitionOffset, StateStore};

/// Files uploaded at once: each holds up to three 8 MiB parts in memory
/// (`hogstream_objects`), so a checkpoint's uploads stay under ~75 MB.
const UPLOADS_IN_FLIGHT: usize = 3;

/// Table and blob files never change once written: they are uploaded once per lineage and
/// shared by every checkpoint that holds them. The rest (MANIFEST, CURRENT, OPTIONS, a WAL) are
/// the checkpoint's own.
fn immutable(name: &str) -> bool {
    name.ends_with(".sst") || name.ends_with(".blob")
}

/// A consistent copy of the store on the local disk, deleted when dropped.
pub struct Snapshot {
    dir: PathBuf,
    lineage: Uuid,
    layout: Layout,
    taken: DateTime<Utc>,
}

impl Snapshot {
    /// Takes a RocksDB checkpoint of `store` into `dir` (on the store's file system, so table
    /// files are hard links; memtables are flushed first). A leftover `dir` of an interrupted
    /// attempt is removed first.
    pub fn take(store: &StateStore, dir: &Path) -> Result<Self, CheckpointError> {
        let local = |e: std::io::Error| CheckpointError::Local(format!("{}: {e}", dir.display()));
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(local)?;
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(local)?;
        }
        let lineage = store.lineage()?;
        let layout = store.layout()?.ok_or_else(|| {
            CheckpointError::Local("the store has no layout yet: nothing to checkpoint".into())
        })?;
        let taken = Utc::now();
        rocksdb::checkpoint::Checkpoint::new(&store.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(crate::StateError::from)?;
        Ok(Self {
            dir: dir.to_owned(),
            lineage,
            layout,
            taken,
        })
    }

    /// The snapshot's files: name, path and size.
    fn files(&self) -> Result<Vec<(String, PathBuf, u64)>, CheckpointError> {
        let local = |e: std::io::Error| {
            CheckpointError::Local(format!("reading {}: {e}", self.dir.display()))
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(local)? {
            let entry = entry.map_err(local)?;
            let meta = entry.metadata().map_err(local)?;
            if meta.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                out.push((name, entry.path(), meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a local checkpoint");
        }
    }
}

/// Uploads the checkpoints of one process and keeps the newest `keep`.
pub struct Uploader {
    root: Objects,
    process: u64,
    keep: usize,
    /// Immutable files the object store holds, by name in the current store.
    known: HashMap<String, ManifestFile>,
    /// Finished checkpoints, newest first.
    kept: Vec<Manifest>,
    /// Whether unfinished uploads and unreferenced files of earlier runs were deleted.
    swept: bool,
}

impl Uploader {
    /// Reads what the object store holds for `process`: the store of `lineage` (restored from
    /// checkpoint `restored_from`, if it was) needs to upload only the table files none of
    /// them names.
    pub async fn open(
        objects: &Objects,
        process: u64,
        lineage: Uuid,
        restored_from: Option<&str>,
        keep: usize,
    ) -> Result<Self, CheckpointError> {
        let root = process_root(objects, process);
        let kept = list(&root).await?;
        let mut origin = kept
            .iter()
            .find(|m| Some(m.id.as_str()) == restored_from)
            .cloned();
        if origin.is_none()
            && let Some(id) = restored_from
        {
            origin = super::read(&root, id).await?;
        }
        let mut known = HashMap::new();
        // Oldest first, so the newest manifest's entry for a name wins.
        let ours = kept.iter().rev().filter(|m| m.lineage == lineage);
        for manifest in origin.iter().chain(ours) {
            for f in manifest.files.iter().filter(|f| immutable(&f.name)) {
                known.insert(f.name.clone(), f.clone());
            }
        }
        Ok(Self {
            root,
            process,
            keep: keep.max(1),
            known,
            kept,
            swept: false,
        })
    }

    /// The finished checkpoints, newest first.
    pub fn kept(&self) -> &[Manifest] {
        &self.kept
    }

    /// Uploads `snapshot` as a new checkpoint: the files the object store does not hold, then
    /// the manifest. Then deletes checkpoints beyond the newest `keep` (a failure there is
    /// logged, never the checkpoint's).
    pub async fn upload(
        &mut self,
        snapshot: &Snapshot,
        floors: Vec<PartitionOffset>,
        floor_time: Option<DateTime<Utc>>,
        source: Source,
    ) -> Result<Manifest, CheckpointError> {
        // Ids order checkpoints: never before the newest kept one, whatever this host's clock
        // says (a restore on a host whose clock is behind would otherwise sort its checkpoints
        // before older ones).
        let created = match self.kept.first() {
            Some(newest) => snapshot
                .taken
                .max(newest.created + chrono::Duration::milliseconds(1)),
            None => snapshot.taken,
        };
        let id = Manifest::new_id(created, snapshot.lineage);
        let mut files = Vec::new();
        let mut pending = Vec::new();
        for (name, path, size) in snapshot.files()? {
            match self.known.get(&name) {
                Some(f) if immutable(&name) && f.size == size => files.push(f.clone()),
                _ => {
                    let key = if immutable(&name) {
                        format!("sst/{}/{name}", snapshot.lineage.simple())
                    } else {
                        format!("checkpoints/{id}/{name}")
                    };
                    pending.push((name, key, path));
                }
            }
        }
        let root = &self.root;
        let uploaded: Vec<ManifestFile> = stream::iter(pending)
            .map(|(name, key, path)| async move {
                let stored = root.upload_file(&key, &path).await?;
                Ok::<_, CheckpointError>(ManifestFile {
                    name,
                    key,
                    size: stored.size,
                    hash: stored.hash,
                })
            })
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .try_collect()
            .await?;
        let uploaded_bytes = uploaded.iter().map(|f| f.size).sum();
        for f in uploaded.iter().filter(|f| immutable(&f.name)) {
            self.known.insert(f.name.clone(), f.clone());
        }
        files.extend(uploaded);
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let manifest = Manifest {
            format: Manifest::format(),
            id: id.clone(),
            created,
            source,
            process: self.process,
            processes: snapshot.layout.processes,
            shards: snapshot.layout.shards,
            lineage: snapshot.lineage,
            floors,
            floor_time,
            files,
            uploaded_bytes,
        };
        self.root
            .put(&manifest_key(&id), manifest.encode().into())
            .await?;
        self.kept.insert(0, manifest.clone());
        if let Err(e) = self.retain().await {
            tracing::warn!(process = self.process, error = %e, "cannot delete old checkpoints yet; will try again after the next one");
        }
        Ok(manifest)
    }

    /// Deletes the checkpoints beyond the newest `keep` (manifest first, so no reader ever
    /// finds a manifest whose files are gone), the table files no kept checkpoint names, and
    /// once per run what unfinished uploads of earlier runs left. What is kept is read from the
    /// object store first: a manifest written by an attempt that failed only on this side
    /// (a lost answer, an upload abandoned at shutdown) is kept like the others.
    async fn retain(&mut self) -> Result<(), CheckpointError> {
        self.refresh().await?;
        while self.kept.len() > self.keep {
            let old = self.kept.last().expect("more than keep").clone();
            self.root.delete(&manifest_key(&old.id)).await?;
            self.kept.pop();
            let referenced: HashSet<String> =
                self.referenced().into_iter().map(str::to_owned).collect();
            for f in &old.files {
                if !referenced.contains(&f.key) {
                    self.root.delete(&f.key).await?;
                    self.known.retain(|_, k| k.key != f.key);
                }
            }
        }
        if !self.swept {
            let kept: HashSet<String> = self.kept.iter().map(|m| m.id.clone()).collect();
            for id in self.root.folders("checkpoints").await? {
                if !kept.contains(&id) {
                    for (key, _) in self.root.list(&format!("checkpoints/{id}")).await? {
                        self.root.delete(&key).await?;
                    }
                }
            }
            let referenced: HashSet<String> =
                self.referenced().into_iter().map(str::to_owned).collect();
            let mut held = HashSet::new();
            for (key, _) in self.root.list("sst").await? {
                if referenced.contains(&key) {
                    held.insert(key);
                } else {
                    self.root.delete(&key).await?;
                }
            }
            // A file deleted behind hogstream's back (a bucket lifecycle rule) is uploaded again.
            self.known.retain(|_, k| held.contains(&k.key));
            self.swept = true;
        }
        Ok(())
    }

    /// Adds the finished checkpoints the object store holds and this uploader does not know of.
    async fn refresh(&mut self) -> Result<(), CheckpointError> {
        let ids = self.root.folders("checkpoints").await?;
        let known: HashSet<String> = self.kept.iter().map(|m| m.id.clone()).collect();
        let mut added = false;
        for id in ids.iter().filter(|id| !known.contains(*id)) {
            if let Some(m) = super::read_usable(&self.root, id).await? {
                self.kept.push(m);
                added = true;
            }
        }
        if added {
            self.kept.sort_by(|a, b| b.id.cmp(&a.id));
        }
        Ok(())
    }

    fn referenced(&self) -> HashSet<&str> {
        self.kept
            .iter()
            .flat_map(|m| m.files.iter().map(|f| f.key.as_str()))
            .collect()
    }
}
