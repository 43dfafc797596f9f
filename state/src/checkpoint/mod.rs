//! Checkpoints of a process's store in an object store: what lets a process that lost its disk,
//! or moved to another host, start again with its state instead of without it.
//!
//! A checkpoint is a RocksDB checkpoint of the whole store (every column family at one point of
//! its write sequence: person state, view inputs, plugin storage and the offsets) uploaded with a
//! [`Manifest`] that says which files make it and from which Kafka offsets the cluster must read
//! again after restoring it (its *floors*: the engine computes them; see `mark_restored`).
//!
//! Keys, below the configured prefix:
//!
//! ```text
//! process-{p}/sst/{lineage}/{file}               table and blob files: immutable, shared by
//!                                                every checkpoint of the store that holds them
//! process-{p}/checkpoints/{id}/{file}            the checkpoint's own files (MANIFEST, CURRENT,
//!                                                OPTIONS, a WAL)
//! process-{p}/checkpoints/{id}/manifest.json     written last: a checkpoint without it is an
//!                                                unfinished upload, never restored
//! ```
//!
//! So a checkpoint uploads only the table files the store made since the last one (Flink's
//! incremental RocksDB checkpoints work the same way), and the newest `keep` checkpoints are kept;
//! files no kept manifest names are deleted.

mod download;
mod manifest;
mod upload;

pub use download::{Downloaded, download};
pub use manifest::{Manifest, ManifestFile, Source};
pub use upload::{Snapshot, Uploader};

use hogstream_objects::Objects;

use crate::{Layout, StateError};

/// Why a checkpoint could not be made, listed or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Objects(#[from] hogstream_objects::ObjectsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("checkpoint {id}: {detail}")]
    Manifest { id: String, detail: String },
    #[error("{0}")]
    Local(String),
}

/// The checkpoints of process `process`, below the configured prefix.
pub fn process_root(objects: &Objects, process: u64) -> Objects {
    objects.child(&format!("process-{process}"))
}

fn manifest_key(id: &str) -> String {
    format!("checkpoints/{id}/manifest.json")
}

/// Every finished checkpoint below `root` (a [`process_root`]), newest first; unfinished
/// uploads (no manifest yet) are left out, and so is a manifest this build cannot read (with
/// a warning: it must not keep every other checkpoint from being used).
pub async fn list(root: &Objects) -> Result<Vec<Manifest>, CheckpointError> {
    let mut ids = root.folders("checkpoints").await?;
    ids.reverse();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(manifest) = read_usable(root, &id).await? {
            out.push(manifest);
        }
    }
    Ok(out)
}

/// [`read`], with an unreadable manifest left out and warned about.
async fn read_usable(root: &Objects, id: &str) -> Result<Option<Manifest>, CheckpointError> {
    match read(root, id).await {
        Err(e @ CheckpointError::Manifest { .. }) => {
            tracing::warn!(store = %root, error = %e, "a checkpoint's manifest cannot be read; it is left out");
            Ok(None)
        }
        other => other,
    }
}

/// The manifest of checkpoint `id`, if that checkpoint was finished.
pub async fn read(root: &Objects, id: &str) -> Result<Option<Manifest>, CheckpointError> {
    let Some(bytes) = root.get(&manifest_key(id)).await? else {
        return Ok(None);
    };
    Manifest::decode(id, &bytes).map(Some)
}

/// The newest finished checkpoint below `root` made for `layout`, and the newest of any layout
/// (to say what there is when none fits).
pub async fn newest(
    root: &Objects,
    layout: Layout,
) -> Result<(Option<Manifest>, Option<Manifest>), CheckpointError> {
    let mut any = None;
    let mut ids = root.folders("checkpoints").await?;
    ids.reverse();
    for id in ids {
        let Some(manifest) = read_usable(root, &id).await? else {
            continue;
        };
        if manifest.layout() == layout {
            return Ok((Some(manifest), any));
        }
        any.get_or_insert(manifest);
    }
    Ok((None, any))
}

#[cfg(test)]
mod tests;
