//! The RocksDB instance and its column families.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, OnceLock},
};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Options,
    ReadOptions, ReadTier, WriteBatch, WriteOptions,
};

use rayon::prelude::*;

use crate::error::StateError;

pub(crate) const CF_OFFSETS: &str = "offsets";
/// Where the offsets column family kept the cluster's process count before virtual shards (no
/// topic is empty). It now holds [`RETIRED_LAYOUT`].
const LAYOUT_KEY: &[u8] = b"\0layout";
/// Where the offsets column family keeps the [`Layout`].
const SHARDED_LAYOUT_KEY: &[u8] = b"\0layout-sharded";
/// Written to [`LAYOUT_KEY`] with every layout of several processes: a hogstream from before
/// virtual shards reads it as a process count no cluster has, so it refuses a store with person
/// state instead of placing teams by its own rule. (One process holds every team under either
/// rule, so a one-process layout writes 1 there, and such a hogstream may still run on it.)
const RETIRED_LAYOUT: u64 = u64::MAX;
/// Person, distinct-id and group records (see `persons`).
pub(crate) const CF_PERSONS: &str = "persons";
/// Plugin storage and destination progress (see `plugins`).
pub(crate) const CF_PLUGINS: &str = "plugins";
/// View inputs (see `views`).
pub(crate) const CF_VIEWS: &str = "views";
/// Column families whose records belong to teams, and move with them between processes.
const TEAM_COLUMN_FAMILIES: [&str; 2] = [CF_PERSONS, CF_VIEWS];
/// Column families this build knows; opening creates the missing ones.
const COLUMN_FAMILIES: &[&str] = &[CF_OFFSETS, CF_PERSONS, CF_PLUGINS, CF_VIEWS];

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

/// A person-state record: its team, key and value.
type TeamRecord = (i64, Box<[u8]>, Box<[u8]>);

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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

    /// What this layout leaves under the key of hogstreams from before virtual shards.
    fn retired_value(self) -> u64 {
        if self.processes == 1 {
            1
        } else {
            RETIRED_LAYOUT
        }
    }

    fn decode(v: &[u8]) -> Option<Self> {
        let v: [u8; 12] = v.try_into().ok()?;
        let (processes, shards) = v.split_at(8);
        Some(Self {
            processes: u64::from_be_bytes(processes.try_into().ok()?),
            shards: u32::from_be_bytes(shards.try_into().ok()?),
        })
    }
}

fn corrupt_layout(what: &str, value: &[u8]) -> StateError {
    StateError::Corrupt {
        cf: CF_OFFSETS,
        detail: format!("{what}: {value:?}"),
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

/// Beside the offsets; topic names cannot start with this byte.
pub(crate) fn horizon_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = b"\x01horizon\0".to_vec();
    k.extend_from_slice(&offset_key(topic, partition));
    k
}

pub(crate) fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The partition of an offset key; `None` for the other keys of the offsets column family
/// (layouts, horizons, …), which start with a byte no topic name does.
pub(crate) fn parse_offset_key(key: &[u8]) -> Option<(String, i32)> {
    if key.first().is_none_or(|b| *b < b' ') || key.len() < 6 {
        return None;
    }
    let (topic, rest) = key.split_at(key.len() - 5);
    let (zero, partition) = rest.split_first()?;
    if *zero != 0 {
        return None;
    }
    let topic = std::str::from_utf8(topic).ok()?.to_owned();
    Some((topic, i32::from_be_bytes(partition.try_into().ok()?)))
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
        let (mut db_opts, cf_opts) = Self::options(cache_bytes);
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_opts.clone()));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)
            .map_err(|source| Self::open_error(path, source))?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Opens an existing store to read it, creating and changing nothing, also while an engine
    /// has it open: for reports. Only [`StateStore::layout`] and the person state may be read.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref();
        let (db_opts, cf_opts) = Self::options(8 << 20);
        let names = DB::list_cf(&db_opts, path).map_err(|source| Self::open_error(path, source))?;
        let cfs = names
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
        let db = DB::open_cf_descriptors_read_only(&db_opts, path, cfs, false)
            .map_err(|source| Self::open_error(path, source))?;
        Ok(Self { db: Arc::new(db) })
    }

    fn open_error(path: &Path, source: rocksdb::Error) -> StateError {
        StateError::Open {
            path: path.display().to_string(),
            source,
        }
    }

    /// Database and column-family options; `cache_bytes` bounds the shared block cache.
    fn options(cache_bytes: usize) -> (Options, Options) {
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
        db_opts.increase_parallelism(2);
        (db_opts, cf_opts)
    }

    pub(crate) fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        // Every name in COLUMN_FAMILIES is created at open, so a missing one is a bug.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} is opened with the store"))
    }

    /// The stored resume offset of a partition, if any.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StateError> {
        self.offsets_number(&offset_key(topic, partition), || {
            format!("offset of {topic}/{partition}")
        })
    }

    /// How far any run may have read a partition: no message at or past it was processed.
    pub fn read_horizon(&self, topic: &str, partition: i32) -> Result<Option<i64>, StateError> {
        self.offsets_number(&horizon_key(topic, partition), || {
            format!("read horizon of {topic}/{partition}")
        })
    }

    /// Moves a partition's read horizon, durably (fsync'd WAL), before anything past the old
    /// one is processed.
    pub fn store_read_horizon(
        &self,
        topic: &str,
        partition: i32,
        horizon: i64,
    ) -> Result<(), StateError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.put_cf_opt(
            self.cf(CF_OFFSETS),
            horizon_key(topic, partition),
            horizon.to_be_bytes(),
            &opts,
        )?;
        Ok(())
    }

    /// Raises a partition's read horizon to `horizon` (durably) unless it is there already:
    /// every message before it is treated as a possible replay.
    pub fn raise_read_horizon(
        &self,
        topic: &str,
        partition: i32,
        horizon: i64,
    ) -> Result<(), StateError> {
        if self
            .read_horizon(topic, partition)?
            .is_some_and(|h| h >= horizon)
        {
            return Ok(());
        }
        self.store_read_horizon(topic, partition, horizon)
    }

    fn offsets_number(
        &self,
        key: &[u8],
        what: impl Fn() -> String,
    ) -> Result<Option<i64>, StateError> {
        let Some(v) = self.db.get_cf(self.cf(CF_OFFSETS), key)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| StateError::Corrupt {
            cf: CF_OFFSETS,
            detail: format!("{} has {} bytes", what(), v.len()),
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

    /// The layout this store was last claimed or set for, if any. A process count that a
    /// hogstream from before virtual shards wrote (alone, or over a sharded layout) is that
    /// hogstream's layout (`shards: 0`).
    pub fn layout(&self) -> Result<Option<Layout>, StateError> {
        let cf = self.cf(CF_OFFSETS);
        let Some(old) = self.db.get_cf(cf, LAYOUT_KEY)? else {
            return Ok(None);
        };
        let processes = <[u8; 8]>::try_from(old.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt_layout("layout", &old))?;
        let sharded = match self.db.get_cf(cf, SHARDED_LAYOUT_KEY)? {
            Some(v) => {
                Some(Layout::decode(&v).ok_or_else(|| corrupt_layout("sharded layout", &v))?)
            }
            None => None,
        };
        match sharded {
            Some(layout) if layout.retired_value() == processes => Ok(Some(layout)),
            _ if processes == RETIRED_LAYOUT => {
                Err(corrupt_layout("retired layout without a sharded one", &old))
            }
            _ => Ok(Some(Layout {
                processes,
                shards: 0,
            })),
        }
    }

    /// Every record of a team's person or group state, with its team, in key order (the
    /// store-wide generation key is nobody's).
    fn team_records(&self) -> impl Iterator<Item = Result<TeamRecord, StateError>> + '_ {
        self.records_of_teams(CF_PERSONS)
    }

    /// Every record of `cf` (one of [`TEAM_COLUMN_FAMILIES`]) that belongs to a team, with it.
    fn records_of_teams(
        &self,
        cf: &'static str,
    ) -> impl Iterator<Item = Result<TeamRecord, StateError>> + '_ {
        let team_of = match cf {
            CF_VIEWS => crate::views::team_of_key,
            _ => crate::persons::team_of_key,
        };
        self.db
            .iterator_cf(self.cf(cf), rocksdb::IteratorMode::Start)
            .filter_map(move |item| match item {
                Ok((key, value)) => team_of(&key).map(|team| Ok((team, key, value))),
                Err(e) => Some(Err(e.into())),
            })
    }

    /// Whether the store holds any team's person, group or view state.
    pub(crate) fn holds_person_state(&self) -> Result<bool, StateError> {
        for cf in TEAM_COLUMN_FAMILIES {
            if self.records_of_teams(cf).next().transpose()?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records the layout of the engine cluster this store belongs to, and refuses a different
    /// one while the store holds person state: teams are owned by processes, so another layout
    /// would look for a team's persons in another process's store. One process holds every
    /// team whatever the layout, so that change alone is accepted.
    pub fn claim_layout(&self, layout: Layout) -> Result<(), StateError> {
        if let Some(before) = self.layout()?
            && before != layout
            && !(before.processes == 1 && layout.processes == 1)
            && self.holds_person_state()?
        {
            return Err(StateError::Layout {
                before,
                now: layout,
            });
        }
        self.write_layout(layout, &WriteOptions::default())
    }

    fn write_layout(&self, layout: Layout, opts: &WriteOptions) -> Result<(), StateError> {
        let cf = self.cf(CF_OFFSETS);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, SHARDED_LAYOUT_KEY, layout.encode());
        batch.put_cf(cf, LAYOUT_KEY, layout.retired_value().to_be_bytes());
        self.db.write_opt(batch, opts)?;
        Ok(())
    }

    /// Records `layout`, whatever was there: for the resize tool, after it moved every team's
    /// person state to its owner under that layout.
    pub fn set_layout(&self, layout: Layout) -> Result<(), StateError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.write_layout(layout, &opts)
    }

    /// Person-state records per team: what the resize tool reports before it moves anything.
    pub fn person_records_by_team(&self) -> Result<BTreeMap<i64, u64>, StateError> {
        let mut teams = BTreeMap::new();
        for record in self.team_records() {
            *teams.entry(record?.0).or_default() += 1;
        }
        Ok(teams)
    }

    /// Moves the person state and view inputs of every team for which `target(team)` names
    /// another store (an index into `stores`) there: copied with a synced write, then deleted
    /// here, in batches, so an interrupted move can simply be run again. Returns the records
    /// moved per target. A key with a team `target` does not know (`Err(team)`) stops the move.
    pub fn move_team_state(
        &self,
        stores: &[StateStore],
        target: impl Fn(i64) -> Result<Option<usize>, i64>,
    ) -> Result<Vec<u64>, MoveError> {
        const BATCH: usize = 10_000;
        type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;
        let mut moved = vec![0u64; stores.len()];
        for cf in TEAM_COLUMN_FAMILIES {
            // Per target store its copies, and here the deletes of what was copied.
            let mut copies: Vec<Writes> = vec![Vec::new(); stores.len()];
            let mut deletes: Writes = Vec::new();
            let flush =
                |copies: &mut Vec<Writes>, deletes: &mut Writes| -> Result<(), StateError> {
                    for (store, writes) in stores.iter().zip(copies.iter_mut()) {
                        store.write_cf(cf, writes.iter())?;
                        writes.clear();
                    }
                    self.write_cf(cf, deletes.iter())?;
                    deletes.clear();
                    Ok(())
                };
            for record in self.records_of_teams(cf) {
                let (team, key, value) = record?;
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
        }
        Ok(moved)
    }

    /// One person-state record, undecoded (see `persons::record_key`).
    pub fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get_cf(self.cf(CF_PERSONS), key)?)
    }

    /// Person-state records of many keys, in `keys` order. One batched lookup on the calling
    /// thread answers every key held in memory (memtables, block cache); only the keys that need
    /// the disk are read in chunks on [`read_pool`], so misses wait on the disk together instead
    /// of one after another, and a warm batch wakes no thread at all.
    pub fn get_state_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        /// Small enough to give every read thread several chunks, large enough that RocksDB's
        /// batched lookup pays for itself.
        const MIN_CHUNK: usize = 16;
        let cf = self.cf(CF_PERSONS);
        let mut cached = ReadOptions::default();
        cached.set_read_tier(ReadTier::BlockCache);
        let mut out = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        for (i, r) in self
            .db
            .batched_multi_get_cf_opt(cf, keys, false, &cached)
            .into_iter()
            .enumerate()
        {
            match r {
                // A cache-only lookup was seen answering "found, empty" for a key that a full
                // read says is absent (`cargo bench --bench persons -- identified` hit it after
                // ~77k users). No person-state value is empty, so such an answer is re-read.
                Ok(Some(v)) if v.is_empty() => {
                    misses.push(i);
                    out.push(None);
                }
                Ok(v) => out.push(v.map(|v| v.to_vec())),
                Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => {
                    misses.push(i);
                    out.push(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if misses.is_empty() {
            return Ok(out);
        }
        let chunk = misses.len().div_ceil(READ_THREADS * 4).max(MIN_CHUNK);
        let read: Vec<Vec<Option<Vec<u8>>>> = read_pool().install(|| {
            misses
                .par_chunks(chunk)
                .map(|part| {
                    self.db
                        .batched_multi_get_cf(cf, part.iter().map(|&i| &keys[i]), false)
                        .into_iter()
                        .map(|r| Ok(r?.map(|v| v.to_vec())))
                        .collect::<Result<_, StateError>>()
                })
                .collect::<Result<_, _>>()
        })?;
        for (&i, v) in misses.iter().zip(read.into_iter().flatten()) {
            out[i] = v;
        }
        Ok(out)
    }

    /// Writes person-state records (`None` deletes) atomically and durably. Outside the person
    /// stage this is for tools and tests that put records in place raw (a repair, a fault).
    pub fn write_state<'w>(
        &self,
        writes: impl IntoIterator<Item = &'w (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StateError> {
        self.write_cf(CF_PERSONS, writes)
    }

    /// Writes records of `cf` (`None` deletes) atomically and durably, in order (a key written
    /// twice keeps its last value).
    fn write_cf<'w>(
        &self,
        cf: &'static str,
        writes: impl IntoIterator<Item = &'w (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StateError> {
        let mut writes = writes.into_iter().peekable();
        if writes.peek().is_none() {
            return Ok(());
        }
        let cf = self.cf(cf);
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
        let dir = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(dir.path(), 1 << 20).unwrap();
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
        let s = StateStore::open(dir.path(), 1 << 20).unwrap();
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
    fn person_state_and_view_inputs_move_by_team_and_the_layout_can_be_set() {
        let base = tempfile::tempdir().unwrap();
        let a = StateStore::open(base.path().join("a"), 1 << 20).unwrap();
        let b = StateStore::open(base.path().join("b"), 1 << 20).unwrap();
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
        a.put_view_records(&[
            (
                crate::views::event_key(2, "y", 1, b"e"),
                Some(b"view-two".to_vec()),
            ),
            (
                crate::views::override_key(1, "x"),
                Some(b"view-one".to_vec()),
            ),
        ])
        .unwrap();
        let moved = a
            .move_team_state(&stores, |team| Ok((team == 2).then_some(1)))
            .unwrap();
        assert_eq!(moved, vec![0, 3], "two person records and a view input");
        let prefix = crate::views::distinct_id_prefix(2, "y");
        let count = |s: &StateStore| {
            let mut n = 0;
            s.for_each_view_event(&prefix, |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
            n
        };
        assert_eq!((count(&a), count(&b)), (0, 1));
        assert_eq!(a.view_records().count(), 1, "team 1's override stays");
        assert_eq!(a.get_state(&record(1, "x")).unwrap(), Some(b"one".to_vec()));
        assert_eq!(a.get_state(&record(2, "y")).unwrap(), None);
        assert_eq!(b.get_state(&record(2, "y")).unwrap(), Some(b"two".to_vec()));
        assert_eq!(
            b.get_state(&record(2, "z")).unwrap(),
            Some(b"three".to_vec())
        );
        assert!(a.get_state(b"G").unwrap().is_some(), "the generation stays");
        // Moving again changes nothing; an unknown team stops the move.
        let again = a.move_team_state(&stores, |team| Ok((team == 2).then_some(1)));
        assert_eq!(again.unwrap(), vec![0, 0]);
        let err = a.move_team_state(&stores, Err).unwrap_err();
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
    }

    #[test]
    fn a_store_without_person_state_takes_any_layout_and_reads_open_change_nothing() {
        let base = tempfile::tempdir().unwrap();
        assert!(StateStore::open_read_only(base.path().join("none")).is_err());
        assert!(
            !base.path().join("none").exists(),
            "a read-only open creates nothing"
        );

        let s = StateStore::open(base.path().join("s"), 1 << 20).unwrap();
        s.db.put_cf(s.cf(CF_OFFSETS), LAYOUT_KEY, 3u64.to_be_bytes())
            .unwrap();
        s.write_state(&[(b"G".to_vec(), Some(vec![1]))]).unwrap();
        s.claim_layout(sharded(2))
            .expect("the generation key is no team's state");
        s.write_state(&[(crate::persons::record_key(5, "x"), Some(vec![1]))])
            .unwrap();

        let r = StateStore::open_read_only(base.path().join("s")).unwrap();
        assert_eq!(r.layout().unwrap(), Some(sharded(2)));
        assert_eq!(
            r.person_records_by_team().unwrap(),
            BTreeMap::from([(5, 1)])
        );
        assert!(
            r.claim_layout(sharded(3)).is_err(),
            "refused, and cannot write anyway"
        );
        drop((r, s));
    }

    #[test]
    fn a_layout_from_before_virtual_shards_is_read_and_refused_with_persons_in_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), 1 << 20).unwrap();
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

        // What an older hogstream finds, and what it writes over a sharded layout.
        let old_key = || s.db.get_cf(s.cf(CF_OFFSETS), LAYOUT_KEY).unwrap().unwrap();
        assert_eq!(
            old_key(),
            1u64.to_be_bytes(),
            "one process: an older hogstream may run"
        );
        s.set_layout(sharded(3)).unwrap();
        assert_eq!(old_key(), u64::MAX.to_be_bytes(), "no real process count");
        assert_eq!(s.layout().unwrap(), Some(sharded(3)));
        legacy(2);
        let err = s.claim_layout(sharded(2)).unwrap_err().to_string();
        assert!(
            err.contains("2 processes by team modulo (before virtual shards)")
                && err.contains("resize --processes 2")
                && !err.contains("as before"),
            "{err}"
        );

        s.db.put_cf(s.cf(CF_OFFSETS), LAYOUT_KEY, [1, 2, 3])
            .unwrap();
        let err = s.claim_layout(sharded(2)).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        drop(s);
    }
}
