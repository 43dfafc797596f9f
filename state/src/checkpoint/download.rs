//! Restoring a checkpoint's files into a folder, each checked against its manifest.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt, stream};
use hogstream_objects::{Objects, Stored};

use super::{CheckpointError, Manifest};

/// Files downloaded at once.
const DOWNLOADS_IN_FLIGHT: usize = 4;

/// What a download took.
#[derive(Debug, Clone, Copy)]
pub struct Downloaded {
    pub files: usize,
    pub bytes: u64,
    pub took: Duration,
}

/// Downloads every file of `manifest` from `root` (its process's root) into `dir`, which must
/// not exist yet (a leftover of an interrupted download is removed first), checks each file's
/// size and hash, and syncs the folder.
pub async fn download(
    root: &Objects,
    manifest: &Manifest,
    dir: &Path,
) -> Result<Downloaded, CheckpointError> {
    let started = Instant::now();
    let local = |e: std::io::Error| CheckpointError::Local(format!("{}: {e}", dir.display()));
    for f in &manifest.files {
        // A manifest names files of one folder; anything else would write outside it.
        let plain =
            !f.name.is_empty() && !f.name.contains(['/', '\\']) && f.name != "." && f.name != "..";
        if !plain {
            return Err(CheckpointError::Manifest {
                id: manifest.id.clone(),
                detail: format!("file name {:?} is not a plain name", f.name),
            });
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(local)?;
    }
    std::fs::create_dir_all(dir).map_err(local)?;
    stream::iter(&manifest.files)
        .map(|f| async move {
            let expected = Stored {
                size: f.size,
                hash: f.hash.clone(),
            };
            root.download_file(&f.key, &dir.join(&f.name), &expected)
                .await
        })
        .buffer_unordered(DOWNLOADS_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(local)?;
    Ok(Downloaded {
        files: manifest.files.len(),
        bytes: manifest.size(),
        took: started.elapsed(),
    })
}
