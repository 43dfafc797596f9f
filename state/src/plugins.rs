//! What plugins keep in the process's store: each entry's key-value storage, and each
//! destination's place in the processed-events topic plus the uuids it delivered lately.
//!
//! Keys of the `plugins` column family:
//! - `s` id 0 key → a storage value (JSON bytes);
//! - `o` id 0 topic 0 partition → the destination's next offset (big-endian i64);
//! - `d` id 0 day uuid → a uuid the destination delivered on that day (UTC days since the epoch,
//!   big-endian u32), kept for a few days so re-processed events are not delivered twice.

use rocksdb::{WriteBatch, WriteOptions};
use uuid::Uuid;

use crate::{
    PartitionOffset, StateError, StateStore,
    store::{CF_PLUGINS, offset_key},
};

fn key(kind: u8, id: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.len() + rest.len());
    k.push(kind);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

fn delivered_key(id: &str, day: u32, uuid: &Uuid) -> Vec<u8> {
    let mut rest = day.to_be_bytes().to_vec();
    rest.extend_from_slice(uuid.as_bytes());
    key(b'd', id, &rest)
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

impl StateStore {
    pub fn plugin_get(&self, id: &str, k: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_PLUGINS), key(b's', id, k.as_bytes()))?)
    }

    /// `None` deletes. Durable when it returns.
    pub fn plugin_put(&self, id: &str, k: &str, value: Option<&[u8]>) -> Result<(), StateError> {
        let cf = self.cf(CF_PLUGINS);
        let k = key(b's', id, k.as_bytes());
        let mut batch = WriteBatch::default();
        match value {
            Some(v) => batch.put_cf(cf, k, v),
            None => batch.delete_cf(cf, k),
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// The state of destination `id`.
    pub fn destination(&self, id: &str) -> DestinationState<'_> {
        DestinationState {
            store: self,
            id: id.to_owned(),
        }
    }
}

/// One destination's progress and recent deliveries.
pub struct DestinationState<'a> {
    store: &'a StateStore,
    id: String,
}

impl DestinationState<'_> {
    /// The next offset to read in a partition of the processed-events topic, if it ever stored one.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StateError> {
        let k = key(b'o', &self.id, &offset_key(topic, partition));
        let Some(v) = self.store.db.get_cf(self.store.cf(CF_PLUGINS), k)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| StateError::Corrupt {
            cf: CF_PLUGINS,
            detail: format!("offset of destination {} has {} bytes", self.id, v.len()),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    /// Which of `uuids` were delivered on one of `days`.
    pub fn delivered(&self, uuids: &[Uuid], days: &[u32]) -> Result<Vec<bool>, StateError> {
        let cf = self.store.cf(CF_PLUGINS);
        let keys: Vec<Vec<u8>> = uuids
            .iter()
            .flat_map(|u| days.iter().map(move |d| delivered_key(&self.id, *d, u)))
            .collect();
        let found = self
            .store
            .db
            .multi_get_cf(keys.iter().map(|k| (cf, k.as_slice())));
        let mut out = vec![false; uuids.len()];
        for (i, r) in found.into_iter().enumerate() {
            if r?.is_some() {
                out[i / days.len().max(1)] = true;
            }
        }
        Ok(out)
    }

    /// Records, atomically and durably, that `uuids` were delivered on `day` and that reading
    /// goes on at `offsets`.
    pub fn commit(
        &self,
        offsets: &[PartitionOffset],
        uuids: &[Uuid],
        day: u32,
    ) -> Result<(), StateError> {
        let cf = self.store.cf(CF_PLUGINS);
        let mut batch = WriteBatch::default();
        for o in offsets {
            let k = key(b'o', &self.id, &offset_key(&o.topic, o.partition));
            batch.put_cf(cf, k, o.next_offset.to_be_bytes());
        }
        for u in uuids {
            batch.put_cf(cf, delivered_key(&self.id, day, u), []);
        }
        self.store.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Forgets deliveries of days before `day`.
    pub fn forget_before(&self, day: u32) -> Result<(), StateError> {
        let cf = self.store.cf(CF_PLUGINS);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf,
            delivered_key(&self.id, 0, &Uuid::nil()),
            delivered_key(&self.id, day, &Uuid::nil()),
        );
        self.store.db.write_opt(batch, &synced())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_deliveries_and_storage_survive_reopen_and_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        {
            let s = StateStore::open(dir.path(), 1 << 20).unwrap();
            let web = s.destination("web");
            assert_eq!(web.offset("t", 0).unwrap(), None);
            let at = PartitionOffset {
                topic: "t".into(),
                partition: 0,
                next_offset: 7,
            };
            web.commit(&[at], &[a], 100).unwrap();
            s.destination("web").commit(&[], &[b], 101).unwrap();
            s.plugin_put("web", "k", Some(b"v")).unwrap();
        }
        let s = StateStore::open(dir.path(), 1 << 20).unwrap();
        let web = s.destination("web");
        assert_eq!(web.offset("t", 0).unwrap(), Some(7));
        assert_eq!(s.destination("other").offset("t", 0).unwrap(), None);
        assert_eq!(
            web.delivered(&[a, b, Uuid::from_u128(3)], &[100, 101])
                .unwrap(),
            vec![true, true, false]
        );
        assert_eq!(
            s.destination("other").delivered(&[a], &[100]).unwrap(),
            vec![false]
        );
        web.forget_before(101).unwrap();
        assert_eq!(
            web.delivered(&[a, b], &[100, 101]).unwrap(),
            vec![false, true]
        );
        assert_eq!(s.plugin_get("web", "k").unwrap(), Some(b"v".to_vec()));
        s.plugin_put("web", "k", None).unwrap();
        assert_eq!(s.plugin_get("web", "k").unwrap(), None);
    }
}
