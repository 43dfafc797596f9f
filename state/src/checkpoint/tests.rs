//! Checkpoints against a folder store (`file://`); the S3 server is exercised end to end in
//! `tests/state_recovery.rs`.

use std::path::Path;

use hogstream_objects::{ObjectStoreConfig, Objects};

use super::*;
use crate::{PartitionOffset, StateStore, persons::record_key};

fn layout() -> Layout {
    Layout {
        processes: 1,
        shards: 64,
    }
}

fn offsets(next: i64) -> Vec<PartitionOffset> {
    vec![PartitionOffset {
        topic: "events".into(),
        partition: 0,
        next_offset: next,
    }]
}

/// Writes persons `range` with values that do not compress away (a store of a few MB).
fn write_persons(store: &StateStore, range: std::ops::Range<u32>) {
    let writes: Vec<_> = range
        .map(|i| {
            let value: Vec<u8> = (0..200u32)
                .map(|j| (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) as u8)
                .collect();
            (record_key(7, &format!("user-{i}")), Some(value))
        })
        .collect();
    store.write_state(&writes).unwrap();
}

async fn checkpoint(
    uploader: &mut Uploader,
    store: &StateStore,
    dir: &Path,
    floor: i64,
) -> Manifest {
    let snapshot = Snapshot::take(store, &dir.join("snapshot")).unwrap();
    let manifest = uploader
        .upload(&snapshot, offsets(floor), None, Source::Engine)
        .await
        .unwrap();
    drop(snapshot);
    assert!(!dir.join("snapshot").exists(), "the local copy is removed");
    manifest
}

/// A folder object store and a compacted store of 20,000 persons, in `dir`.
fn fixture(dir: &Path) -> (Objects, StateStore) {
    let objects = Objects::connect(&ObjectStoreConfig::at(format!(
        "file://{}",
        dir.join("bucket").display()
    )))
    .unwrap();
    let store = StateStore::open(dir.join("store"), 1 << 20).unwrap();
    store.claim_layout(layout()).unwrap();
    write_persons(&store, 0..20_000);
    store.compact().unwrap();
    (objects, store)
}

#[tokio::test]
async fn checkpoints_upload_only_new_files_restore_exactly_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let (objects, store) = fixture(dir.path());
    let lineage = store.lineage().unwrap();
    let mut uploader = Uploader::open(&objects, 0, lineage, None, 2).await.unwrap();

    let first = checkpoint(&mut uploader, &store, dir.path(), 10).await;
    assert_eq!(
        first.uploaded_bytes,
        first.size(),
        "the first uploads everything"
    );
    // New writes reach a new table file when the snapshot flushes them; the old ones stay.
    write_persons(&store, 20_000..20_100);
    let second = checkpoint(&mut uploader, &store, dir.path(), 20).await;
    assert!(
        second.uploaded_bytes < second.size() / 2,
        "incremental: {} of {} bytes uploaded",
        second.uploaded_bytes,
        second.size()
    );

    // A fresh uploader (a restarted engine) knows what is there: nothing to upload but the
    // checkpoint's own small files.
    let mut again = Uploader::open(&objects, 0, lineage, None, 2).await.unwrap();
    let third = checkpoint(&mut again, &store, dir.path(), 30).await;
    assert!(third.uploaded_bytes < 100_000, "{}", third.uploaded_bytes);

    let root = process_root(&objects, 0);
    let listed = list(&root).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        vec![third.id.as_str(), second.id.as_str()],
        "the newest two are kept"
    );
    assert!(root.get(&manifest_key(&first.id)).await.unwrap().is_none());
    let referenced: std::collections::HashSet<_> = listed
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.key.clone()))
        .collect();
    let held = root.list("").await.unwrap();
    for (key, _) in &held {
        assert!(
            referenced.contains(key) || key.ends_with("manifest.json"),
            "{key} is named by no kept checkpoint"
        );
    }

    // Restore the newest into another folder: the same records, and the floors it names.
    let (newest_for_layout, _) = newest(&root, layout()).await.unwrap();
    let newest_for_layout = newest_for_layout.unwrap();
    assert_eq!(newest_for_layout.id, third.id);
    assert_eq!(newest_for_layout.floors, offsets(30));
    let restored_dir = dir.path().join("restored");
    let got = download(&root, &newest_for_layout, &restored_dir)
        .await
        .unwrap();
    assert_eq!(got.bytes, third.size());
    let restored = StateStore::open(&restored_dir, 1 << 20).unwrap();
    for i in [0u32, 19_999, 20_099] {
        assert_eq!(
            restored
                .get_state(&record_key(7, &format!("user-{i}")))
                .unwrap(),
            store
                .get_state(&record_key(7, &format!("user-{i}")))
                .unwrap()
        );
    }
    assert_eq!(restored.layout().unwrap(), Some(layout()));
    let other = Layout {
        processes: 2,
        shards: 64,
    };
    let (none, any) = newest(&root, other).await.unwrap();
    assert!(none.is_none() && any.is_some_and(|m| m.id == third.id));
}

#[tokio::test]
async fn a_restored_store_shares_its_origin_files_and_a_damaged_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (objects, store) = fixture(dir.path());
    let mut uploader = Uploader::open(&objects, 0, store.lineage().unwrap(), None, 3)
        .await
        .unwrap();
    let origin = checkpoint(&mut uploader, &store, dir.path(), 5).await;
    // Files of an unfinished upload of another run: swept once a checkpoint finishes.
    let root = process_root(&objects, 0);
    root.put("sst/deadbeef/000999.sst", b"orphan".to_vec().into())
        .await
        .unwrap();
    root.put(
        "checkpoints/20000101T000000.000Z-deadbeef/CURRENT",
        b"x".to_vec().into(),
    )
    .await
    .unwrap();

    let restored_dir = dir.path().join("restored");
    download(&root, &origin, &restored_dir).await.unwrap();
    let restored = StateStore::open(&restored_dir, 1 << 20).unwrap();
    let lineage = restored
        .mark_restored(&origin.id, &offsets(5), &offsets(50))
        .unwrap();
    let mut next = Uploader::open(&objects, 0, lineage, Some(&origin.id), 3)
        .await
        .unwrap();
    let after = checkpoint(&mut next, &restored, dir.path(), 6).await;
    assert!(
        after.uploaded_bytes < origin.uploaded_bytes / 2,
        "the restored table files are not uploaded again ({} of {})",
        after.uploaded_bytes,
        origin.uploaded_bytes
    );
    assert!(root.get("sst/deadbeef/000999.sst").await.unwrap().is_none());
    assert!(
        root.list("checkpoints/20000101T000000.000Z-deadbeef")
            .await
            .unwrap()
            .is_empty(),
        "the unfinished checkpoint is gone"
    );

    // A table file changed in the object store is caught before RocksDB ever reads it.
    let victim = after
        .files
        .iter()
        .find(|f| f.name.ends_with(".sst"))
        .unwrap();
    root.put(&victim.key, b"not a table".to_vec().into())
        .await
        .unwrap();
    let err = download(&root, &after, &dir.path().join("again"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not what its manifest says"),
        "{err}"
    );

    // A manifest naming a file outside its folder is refused.
    let mut evil = after.clone();
    evil.files[0].name = "../escape".into();
    let err = download(&root, &evil, &dir.path().join("evil"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a plain name"), "{err}");
}
