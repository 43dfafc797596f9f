//! What a store records about its own life, and how a store is found on disk.
//!
//! - **Lineage**: a random id given to a store when it is created or restored. RocksDB never
//!   reuses a file name within one store, so `lineage/file name` names an immutable table file
//!   for good; a restored store gets a new lineage because the store it came from may have
//!   written files of the same names after the checkpoint (`checkpoint`).
//! - **Restored from**: the checkpoint a store was restored from, whose files it shares.
//! - **Restore floors**: after a restore, the offsets from which every partition must be read
//!   again (the checkpoint's state holds every effect of the messages before them, and nothing
//!   certain after). Every process of the cluster rewinds its partitions to them at start-up
//!   and stores the rewound offsets before the floors are cleared, so a crash at any moment of
//!   that hand-over still rewinds.
//!
//! All of these live in the `offsets` column family, beside the offsets they qualify, so a
//! checkpoint carries them.

use std::path::Path;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use uuid::Uuid;

use crate::{
    StateError, StateStore,
    store::{CF_OFFSETS, PartitionOffset, offset_key, parse_offset_key},
};

const LINEAGE_KEY: &[u8] = b"\0lineage";
const RESTORED_FROM_KEY: &[u8] = b"\0restored-from";
/// Restore floors sort after offsets (`topic\0…`), layouts (`\0…`) and horizons (`\x01…`).
const FLOOR_PREFIX: &[u8] = b"\x02floor\0";

/// A floor's offset when the partition must be read from its first retained message: no
/// offset of it was known when the checkpoint was taken.
pub const FROM_START: i64 = -2;

/// How a process's store was found at start-up.
pub enum Found {
    /// No store at the path (no RocksDB `CURRENT` file).
    Missing,
    /// A store that holds nothing yet: no layout, no offset, no team's state.
    Empty(StateStore),
    /// A store RocksDB refuses to open (a truncated or corrupt file, a missing table file).
    Unreadable(StateError),
    Ready(StateStore),
}

impl Found {
    /// Opens the store at `path` if there is one, creating nothing when there is none. `Err`
    /// when it cannot be opened for another reason than damage (another process holds its lock,
    /// permissions, a full disk): nothing to restore, something to fix.
    pub fn at(path: &Path, cache_bytes: usize) -> Result<Self, StateError> {
        if !path.join("CURRENT").exists() {
            return Ok(Found::Missing);
        }
        let store = match StateStore::open(path, cache_bytes) {
            Ok(store) => store,
            Err(e) if damaged(&e) => return Ok(Found::Unreadable(e)),
            Err(e) => return Err(e),
        };
        Ok(match store.holds_anything() {
            Ok(false) => Found::Empty(store),
            Ok(true) => Found::Ready(store),
            Err(e) => Found::Unreadable(e),
        })
    }
}

/// Whether an open failed because the store's files are damaged or missing.
fn damaged(e: &StateError) -> bool {
    let StateError::Open { source, .. } = e else {
        return false;
    };
    match source.kind() {
        rocksdb::ErrorKind::Corruption => true,
        rocksdb::ErrorKind::IOError => {
            let text = source.to_string();
            text.contains("No such file") && !text.contains("LOCK")
        }
        _ => false,
    }
}

impl StateStore {
    /// Whether the store holds a layout, an offset or any team's state.
    fn holds_anything(&self) -> Result<bool, StateError> {
        Ok(self.layout()?.is_some() || !self.offsets()?.is_empty() || self.holds_person_state()?)
    }

    /// Every stored resume offset.
    pub fn offsets(&self) -> Result<Vec<PartitionOffset>, StateError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OFFSETS), IteratorMode::Start)
        {
            let (key, value) = item?;
            let Some((topic, partition)) = parse_offset_key(&key) else {
                continue;
            };
            let next_offset = decode_offset(&key, &value)?;
            out.push(PartitionOffset {
                topic,
                partition,
                next_offset,
            });
        }
        Ok(out)
    }

    /// This store's lineage; one is made and written durably the first time it is asked for.
    pub fn lineage(&self) -> Result<Uuid, StateError> {
        let cf = self.cf(CF_OFFSETS);
        if let Some(v) = self.db.get_cf(cf, LINEAGE_KEY)? {
            return Uuid::from_slice(&v).map_err(|_| StateError::Corrupt {
                cf: CF_OFFSETS,
                detail: format!("lineage: {v:?}"),
            });
        }
        let lineage = Uuid::new_v4();
        self.db
            .put_cf_opt(cf, LINEAGE_KEY, lineage.as_bytes(), &synced())?;
        Ok(lineage)
    }

    /// Gives the store a new lineage (durably) and returns it: for a store whose table files
    /// were rewritten outside its own life, such as one built by a resize.
    pub fn renew_lineage(&self) -> Result<Uuid, StateError> {
        let lineage = Uuid::new_v4();
        self.db.put_cf_opt(
            self.cf(CF_OFFSETS),
            LINEAGE_KEY,
            lineage.as_bytes(),
            &synced(),
        )?;
        Ok(lineage)
    }

    /// The checkpoint this store was restored from, if it was.
    pub fn restored_from(&self) -> Result<Option<String>, StateError> {
        let v = self.db.get_cf(self.cf(CF_OFFSETS), RESTORED_FROM_KEY)?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Marks a store just downloaded from checkpoint `checkpoint`: a new lineage, the
    /// checkpoint it came from, the offsets every partition must be read again from (`floors`,
    /// offsets may be [`FROM_START`]), and read horizons that make every message up to
    /// `horizons` (each partition's end when the restore began) a possible replay, because the
    /// store's earlier life may have processed any of them after the checkpoint. One synced write.
    pub fn mark_restored(
        &self,
        checkpoint: &str,
        floors: &[PartitionOffset],
        horizons: &[PartitionOffset],
    ) -> Result<Uuid, StateError> {
        let cf = self.cf(CF_OFFSETS);
        let lineage = Uuid::new_v4();
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, LINEAGE_KEY, lineage.as_bytes());
        batch.put_cf(cf, RESTORED_FROM_KEY, checkpoint.as_bytes());
        for f in floors {
            batch.put_cf(
                cf,
                floor_key(&f.topic, f.partition),
                f.next_offset.to_be_bytes(),
            );
        }
        for h in horizons {
            batch.put_cf(
                cf,
                crate::store::horizon_key(&h.topic, h.partition),
                h.next_offset.to_be_bytes(),
            );
        }
        self.db.write_opt(batch, &synced())?;
        Ok(lineage)
    }

    /// The restore floors this store still asks its cluster to rewind to.
    pub fn restore_floors(&self) -> Result<Vec<PartitionOffset>, StateError> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_OFFSETS),
            IteratorMode::From(FLOOR_PREFIX, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let Some(rest) = key.strip_prefix(FLOOR_PREFIX) else {
                break;
            };
            let Some((topic, partition)) = parse_offset_key(rest) else {
                continue;
            };
            out.push(PartitionOffset {
                topic,
                partition,
                next_offset: decode_offset(&key, &value)?,
            });
        }
        Ok(out)
    }

    /// Lowers every stored offset that is past a restore floor of the cluster to it (or forgets
    /// it, for a floor at the partition's start), so that no partition this store once read
    /// resumes past a floor later on.
    pub fn lower_offsets(&self, floors: &[PartitionOffset]) -> Result<(), StateError> {
        let cf = self.cf(CF_OFFSETS);
        let mut batch = WriteBatch::default();
        for stored in self.offsets()? {
            let Some(floor) = floors
                .iter()
                .find(|f| f.topic == stored.topic && f.partition == stored.partition)
            else {
                continue;
            };
            let key = offset_key(&stored.topic, stored.partition);
            if floor.next_offset == FROM_START {
                batch.delete_cf(cf, key);
            } else if floor.next_offset < stored.next_offset {
                batch.put_cf(cf, key, floor.next_offset.to_be_bytes());
            }
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Clears the restore floors once every process stored its rewound offsets.
    pub fn clear_restore_floors(&self) -> Result<(), StateError> {
        let cf = self.cf(CF_OFFSETS);
        let mut batch = WriteBatch::default();
        for f in self.restore_floors()? {
            batch.delete_cf(cf, floor_key(&f.topic, f.partition));
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }
}

fn floor_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = FLOOR_PREFIX.to_vec();
    k.extend_from_slice(&offset_key(topic, partition));
    k
}

fn decode_offset(key: &[u8], value: &[u8]) -> Result<i64, StateError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| StateError::Corrupt {
        cf: CF_OFFSETS,
        detail: format!("{key:?} has {} bytes", value.len()),
    })?;
    Ok(i64::from_be_bytes(bytes))
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Layout;

    fn offset(topic: &str, partition: i32, next_offset: i64) -> PartitionOffset {
        PartitionOffset {
            topic: topic.into(),
            partition,
            next_offset,
        }
    }

    #[test]
    fn a_store_is_found_missing_empty_ready_or_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("process-0");
        let found = |path: &Path| Found::at(path, 1 << 20).unwrap();
        assert!(matches!(found(&path), Found::Missing));
        assert!(!path.exists(), "looking creates nothing");

        let store = StateStore::open(&path, 1 << 20).unwrap();
        drop(store);
        let Found::Empty(store) = found(&path) else {
            panic!("a store that holds nothing is empty");
        };
        store
            .claim_layout(Layout {
                processes: 1,
                shards: 64,
            })
            .unwrap();
        // Held by another process (here: open in this one): an error, never "damaged".
        let err = Found::at(&path, 1 << 20).err().expect("the lock is held");
        assert!(err.to_string().contains("lock"), "{err}");
        drop(store);
        assert!(matches!(found(&path), Found::Ready(_)));

        // A table file cut short, as a failing disk leaves it.
        let store = StateStore::open(&path, 1 << 20).unwrap();
        store
            .write_state(&[(crate::persons::record_key(1, "x"), Some(vec![7; 4096]))])
            .unwrap();
        store.compact().unwrap();
        drop(store);
        let table = std::fs::read_dir(&path)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "sst"))
            .expect("a table file after compaction");
        let len = std::fs::metadata(&table).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&table)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        match found(&path) {
            Found::Unreadable(e) => assert!(e.to_string().contains("rocksdb"), "{e}"),
            _ => panic!("a truncated table file makes the store unreadable"),
        }
    }

    #[test]
    fn a_restored_store_gets_a_new_lineage_floors_and_horizons() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 1 << 20).unwrap();
        let first = store.lineage().unwrap();
        assert_eq!(store.lineage().unwrap(), first, "kept once made");
        store
            .store_offsets(&[offset("t", 0, 10), offset("t", 1, 4)])
            .unwrap();
        assert_eq!(store.offsets().unwrap().len(), 2);
        assert_eq!(store.restored_from().unwrap(), None);

        let floors = [offset("t", 0, 7), offset("t", 1, FROM_START)];
        let ends = [offset("t", 0, 90), offset("t", 1, 50)];
        let lineage = store.mark_restored("cp-1", &floors, &ends).unwrap();
        assert_ne!(lineage, first);
        assert_eq!(store.lineage().unwrap(), lineage);
        assert_eq!(store.restored_from().unwrap().as_deref(), Some("cp-1"));
        assert_eq!(store.restore_floors().unwrap(), floors.to_vec());
        assert_eq!(store.read_horizon("t", 0).unwrap(), Some(90));
        assert_eq!(
            store.offsets().unwrap().len(),
            2,
            "floors and horizons are not offsets"
        );
        store.clear_restore_floors().unwrap();
        assert!(store.restore_floors().unwrap().is_empty());
        assert_eq!(store.offset("t", 0).unwrap(), Some(10));

        store
            .store_offsets(&[offset("t", 2, 3), offset("u", 0, 8)])
            .unwrap();
        store.lower_offsets(&floors).unwrap();
        assert_eq!(
            store.offset("t", 0).unwrap(),
            Some(7),
            "lowered to its floor"
        );
        assert_eq!(
            store.offset("t", 1).unwrap(),
            None,
            "a floor at the start forgets it"
        );
        assert_eq!(store.offset("t", 2).unwrap(), Some(3), "no floor: kept");
        store.lower_offsets(&[offset("u", 0, 20)]).unwrap();
        assert_eq!(store.offset("u", 0).unwrap(), Some(8), "never raised");
    }
}
