//! The RocksDB instance and its column families.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, OnceLock},
};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Options, WriteBatch,
    WriteOptions,
};

use rayon::prelude::*;

use crate::error::StateError;

const CF_OFFSETS: &str = "offsets";
/// Where the offsets column family keeps the cluster's process count (no topic is empty).
const LAYOUT_KEY: &[u8] = b"\0layout";
/// Person, distinct-id and group records (see `persons`).
pub(crate) const CF_PERSONS: &str = "persons";
/// Plugin storage and destination progress (see `plugins`).
pub(crate) const CF_PLUGINS: &str = "plugins";
/// Column families this build knows; opening creates the missing ones.
const COLUMN_FAMILIES: &[&str] = &[CF_OFFSETS, CF_PERSONS, CF_PLUGINS];

/// Reads in flight at once per process (see [`StateStore::get_state_many`]). Reads mostly wait
/// on the disk, so this is more than the cores; the threads sleep when there is nothing to read.
const READ_THREADS: usize = 16;

/// The threads that read person state, shared by every store of the process. Apart from the
/// CPU pool that resolves state, so waiting reads never hold back computation and idle compute
/// threads do not outnumber the cores.
fn read_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(READ_THREADS)
            .thread_name(|i| format!("hs-state-read-{i}"))
            .build()
            .expect("threads can be started at all")
    })
}

/// Why person state could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(
        "team {0} has person state but is not configured in [[teams]]; add it (its token decides its process) and run again"
    )]
    UnknownTeam(i64),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Where the engine resumes reading one partition: the next offset to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// How an engine cluster spreads person state over its processes' stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub processes: u64,
    /// The virtual shards teams are owned by; 0 for stores of hogstream before virtual shards,
    /// which put a team in process `route % processes`.
    pub shards: u32,
}

impl Layout {
    fn encode(self) -> Vec<u8> {
        let mut v = self.processes.to_be_bytes().to_vec();
        v.extend_from_slice(&self.shards.to_be_bytes());
        v
    }

    /// Eight bytes are the process count alone, as stores before virtual shards wrote it.
    fn decode(v: &[u8]) -> Option<Self> {
        let processes = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
        let shards = match v.get(8..) {
            Some([]) | None => 0,
            Some(rest) => u32::from_be_bytes(rest.try_into().ok()?),
        };
        Some(Self { processes, shards })
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.shards {
            0 => write!(
                f,
                "{} processes by team modulo (before virtual shards)",
                self.processes
            ),
            n => write!(f, "{} processes over {n} virtual shards", self.processes),
        }
    }
}

pub(crate) fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// One RocksDB instance shared by the workers of a process.
#[derive(Clone)]
pub struct StateStore {
    pub(crate) db: Arc<DB>,
}

impl StateStore {
    /// Opens (or creates) the store; `cache_bytes` bounds the shared block cache.
    pub fn open(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self, StateError> {
        let path = path.as_ref();
        let cache = Cache::new_lru_cache(cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        // A whole-file filter or index of a large table is megabytes: one such block fills a
        // shard of the block cache and evicts the data blocks around it (at 10 million persons
        // warm reads fell to disk speed). Partitioned into metadata-sized blocks, only the
        // partitions a read needs are cached, and the small top level stays pinned.
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);

        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        cf_opts.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);

        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_opts.clone()));
        let db =
            DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| StateError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { db: Arc::new(db) })
    }

    pub(crate) fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        // Every name in COLUMN_FAMILIES is created at open, so a missing one is a bug.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} is opened with the store"))
    }

    /// The stored resume offset of a partition, if any.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StateError> {
        let Some(v) = self
            .db
            .get_cf(self.cf(CF_OFFSETS), offset_key(topic, partition))?
        else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| StateError::Corrupt {
            cf: CF_OFFSETS,
            detail: format!("offset of {topic}/{partition} has {} bytes", v.len()),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    /// Stores resume offsets durably (fsync'd WAL): after this returns, a crash resumes here.
    pub fn store_offsets<'a>(
        &self,
        offsets: impl IntoIterator<Item = &'a PartitionOffset>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_OFFSETS);
        for o in offsets {
            batch.put_cf(
                cf,
                offset_key(&o.topic, o.partition),
                o.next_offset.to_be_bytes(),
            );
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }
}

impl StateStore {
    /// Flushes memtables and compacts every column family: what an operator runs before
    /// measuring or copying the store.
    pub fn compact(&self) -> Result<(), StateError> {
        self.db.flush()?;
        for name in COLUMN_FAMILIES {
            let cf = self.cf(name);
            self.db.flush_cf(cf)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// The layout this store was last claimed or set for, if any.
    pub fn layout(&self) -> Result<Option<Layout>, StateError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_OFFSETS), LAYOUT_KEY)?
            .and_then(|v| Layout::decode(&v)))
    }

    /// Records the layout of the engine cluster this store belongs to, and refuses a different
    /// one while the store holds person state: teams are owned by processes, so another layout
    /// would look for a team's persons in another process's store. One process holds every
    /// team whatever the layout, so that change alone is accepted.
    pub fn claim_layout(&self, layout: Layout) -> Result<(), StateError> {
        if let Some(before) = self.layout()?
            && before != layout
            && !(before.processes == 1 && layout.processes == 1)
        {
            let mut persons = self.db.prefix_iterator_cf(self.cf(CF_PERSONS), b"c");
            if persons.next().transpose()?.is_some() {
                return Err(StateError::Layout {
                    before,
                    now: layout,
                });
            }
        }
        self.db
            .put_cf(self.cf(CF_OFFSETS), LAYOUT_KEY, layout.encode())?;
        Ok(())
    }

    /// Records `layout`, whatever was there: for the resize tool, after it moved every team's
    /// person state to its owner under that layout.
    pub fn set_layout(&self, layout: Layout) -> Result<(), StateError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .put_cf_opt(self.cf(CF_OFFSETS), LAYOUT_KEY, layout.encode(), &opts)?;
        Ok(())
    }

    /// Person-state records per team: what the resize tool reports before it moves anything.
    pub fn person_records_by_team(&self) -> Result<BTreeMap<i64, u64>, StateError> {
        let mut teams = BTreeMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PERSONS), rocksdb::IteratorMode::Start)
        {
            let (key, _) = item?;
            if let Some(team) = crate::persons::team_of_key(&key) {
                *teams.entry(team).or_default() += 1;
            }
        }
        Ok(teams)
    }

    /// Moves the person state of every team for which `target(team)` names another store
    /// (an index into `stores`) there: copied with a synced write, then deleted here, in batches,
    /// so an interrupted move can simply be run again. Returns the records moved per target.
    /// A key with a team `target` does not know (`Err(team)`) stops the move.
    pub fn move_person_state(
        &self,
        stores: &[StateStore],
        target: impl Fn(i64) -> Result<Option<usize>, i64>,
    ) -> Result<Vec<u64>, MoveError> {
        const BATCH: usize = 10_000;
        type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;
        let mut moved = vec![0u64; stores.len()];
        // Per target store its copies, and here the deletes of what was copied.
        let mut copies: Vec<Writes> = vec![Vec::new(); stores.len()];
        let mut deletes: Writes = Vec::new();
        let flush = |copies: &mut Vec<Writes>, deletes: &mut Writes| -> Result<(), StateError> {
            for (store, writes) in stores.iter().zip(copies.iter_mut()) {
                store.write_state(writes)?;
                writes.clear();
            }
            self.write_state(deletes)?;
            deletes.clear();
            Ok(())
        };
        for item in self
            .db
            .iterator_cf(self.cf(CF_PERSONS), rocksdb::IteratorMode::Start)
        {
            let (key, value) = item.map_err(StateError::from)?;
            let Some(team) = crate::persons::team_of_key(&key) else {
                continue;
            };
            if let Some(t) = target(team).map_err(MoveError::UnknownTeam)? {
                moved[t] += 1;
                copies[t].push((key.to_vec(), Some(value.into_vec())));
                deletes.push((key.into_vec(), None));
                if deletes.len() >= BATCH {
                    flush(&mut copies, &mut deletes)?;
                }
            }
        }
        flush(&mut copies, &mut deletes)?;
        Ok(moved)
    }

    /// One person-state record, undecoded (see `persons::record_key`).
    pub fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get_cf(self.cf(CF_PERSONS), key)?)
    }

    /// Person-state records of many keys, in `keys` order. The keys are read in chunks on
    /// [`read_pool`], so reads that miss the caches wait on the disk together instead of one
    /// after another.
    pub fn get_state_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        /// Small enough to give every read thread several chunks, large enough that RocksDB's
        /// batched lookup pays for itself.
        const MIN_CHUNK: usize = 16;
        let chunk = keys.len().div_ceil(READ_THREADS * 4).max(MIN_CHUNK);
        let cf = self.cf(CF_PERSONS);
        let chunks: Vec<Vec<Option<Vec<u8>>>> = read_pool().install(|| {
            keys.par_chunks(chunk)
                .map(|part| {
                    self.db
                        .batched_multi_get_cf(cf, part, false)
                        .into_iter()
                        .map(|r| Ok(r?.map(|v| v.to_vec())))
                        .collect::<Result<_, StateError>>()
                })
                .collect::<Result<_, _>>()
        })?;
        Ok(chunks.into_iter().flatten().collect())
    }

    /// Writes person-state records (`None` deletes) atomically and durably.
    pub(crate) fn write_state(
        &self,
        writes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_PERSONS);
        let mut batch = WriteBatch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharded(processes: u64) -> Layout {
        Layout {
            processes,
            shards: 64,
        }
    }

    #[test]
    fn offsets_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("hs-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = StateStore::open(&dir, 1 << 20).unwrap();
            assert_eq!(s.offset("t", 0).unwrap(), None);
            s.store_offsets(&[
                PartitionOffset {
                    topic: "t".into(),
                    partition: 0,
                    next_offset: 42,
                },
                PartitionOffset {
                    topic: "t".into(),
                    partition: 1,
                    next_offset: 7,
                },
            ])
            .unwrap();
        }
        let s = StateStore::open(&dir, 1 << 20).unwrap();
        assert_eq!(s.offset("t", 0).unwrap(), Some(42));
        // Without person state the layout may change; with it, a new process count is refused.
        s.claim_layout(sharded(2)).unwrap();
        s.claim_layout(sharded(3)).unwrap();
        s.write_state(&[(b"c-some-component".to_vec(), Some(vec![1]))])
            .unwrap();
        s.claim_layout(sharded(3)).unwrap();
        let err = s.claim_layout(sharded(4)).unwrap_err().to_string();
        assert!(
            err.contains("for 3 processes over 64 virtual shards")
                && err.contains("now runs 4 processes")
                && err.contains("--processes 4"),
            "{err}"
        );
        assert_eq!(s.offset("t", 1).unwrap(), Some(7));
        assert_eq!(s.offset("t2", 0).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn person_state_moves_by_team_and_the_layout_can_be_set() {
        let base = std::env::temp_dir().join(format!("hs-move-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let a = StateStore::open(base.join("a"), 1 << 20).unwrap();
        let b = StateStore::open(base.join("b"), 1 << 20).unwrap();
        let record = |team: i64, id: &str| crate::persons::record_key(team, id);
        a.write_state(&[
            (record(1, "x"), Some(b"one".to_vec())),
            (record(2, "y"), Some(b"two".to_vec())),
            (record(2, "z"), Some(b"three".to_vec())),
            (b"G".to_vec(), Some(vec![0, 0, 0, 0, 0, 0, 0, 7])),
        ])
        .unwrap();
        a.claim_layout(sharded(1)).unwrap();
        let stores = [a.clone(), b.clone()];
        let moved = a
            .move_person_state(&stores, |team| Ok((team == 2).then_some(1)))
            .unwrap();
        assert_eq!(moved, vec![0, 2]);
        assert_eq!(a.get_state(&record(1, "x")).unwrap(), Some(b"one".to_vec()));
        assert_eq!(a.get_state(&record(2, "y")).unwrap(), None);
        assert_eq!(b.get_state(&record(2, "y")).unwrap(), Some(b"two".to_vec()));
        assert_eq!(
            b.get_state(&record(2, "z")).unwrap(),
            Some(b"three".to_vec())
        );
        assert!(a.get_state(b"G").unwrap().is_some(), "the generation stays");
        // Moving again changes nothing; an unknown team stops the move.
        let again = a.move_person_state(&stores, |team| Ok((team == 2).then_some(1)));
        assert_eq!(again.unwrap(), vec![0, 0]);
        let err = a.move_person_state(&stores, Err).unwrap_err();
        assert!(err.to_string().contains("team 1 has person state"), "{err}");

        assert!(
            a.claim_layout(sharded(2)).is_err(),
            "persons exist under layout 1"
        );
        a.set_layout(sharded(2)).unwrap();
        a.claim_layout(sharded(2)).unwrap();
        assert_eq!(
            a.person_records_by_team().unwrap(),
            BTreeMap::from([(1, 1)]),
            "the generation key belongs to no team"
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_layout_from_before_virtual_shards_is_read_and_refused_with_persons_in_a_cluster() {
        let dir = std::env::temp_dir().join(format!("hs-legacy-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = StateStore::open(&dir, 1 << 20).unwrap();
        let legacy = |processes: u64| {
            s.db.put_cf(s.cf(CF_OFFSETS), LAYOUT_KEY, processes.to_be_bytes())
                .unwrap();
        };
        legacy(1);
        let old_single = Layout {
            processes: 1,
            shards: 0,
        };
        assert_eq!(s.layout().unwrap(), Some(old_single));
        s.write_state(&[(crate::persons::record_key(1, "x"), Some(vec![1]))])
            .unwrap();
        s.claim_layout(sharded(1))
            .expect("one process holds every team under any layout");
        assert_eq!(s.layout().unwrap(), Some(sharded(1)));

        legacy(2);
        let err = s.claim_layout(sharded(2)).unwrap_err().to_string();
        assert!(
            err.contains("2 processes by team modulo (before virtual shards)")
                && err.contains("resize --processes 2"),
            "{err}"
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
