//! What views keep in the process's store: their input, so that a restart rebuilds every view
//! in memory without reading Kafka again.
//!
//! Keys of the `views` column family (values are opaque to this crate; the engine encodes them):
//! - `e` team distinct-id day identity → an event the views counted, under its distinct id so a
//!   merge finds the distinct id's events; `identity` is whatever else makes two copies of one
//!   event the same key (the engine uses the rest of the `events` table's deduplication key),
//!   so a replayed or re-sent event is found and not counted twice;
//! - `o` team distinct-id → the person the distinct id's stored events are joined to (its
//!   latest `person_distinct_id_overrides` row);
//! - `p` team person-uuid → a person's properties, for views that read them.

use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::{StateError, StateStore, store::CF_VIEWS};

const EVENT: u8 = b'e';
const OVERRIDE: u8 = b'o';
const PERSON: u8 = b'p';

/// Where the events of a distinct id begin: the distinct id is length-prefixed, so no id's
/// prefix is another's.
pub fn distinct_id_prefix(team_id: i64, distinct_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(13 + distinct_id.len());
    k.push(EVENT);
    k.extend_from_slice(&team_id.to_be_bytes());
    k.extend_from_slice(
        &u32::try_from(distinct_id.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    k.extend_from_slice(distinct_id.as_bytes());
    k
}

/// The store key of a counted event: `day` is UTC days since the Unix epoch.
pub fn event_key(team_id: i64, distinct_id: &str, day: i32, identity: &[u8]) -> Vec<u8> {
    let mut k = distinct_id_prefix(team_id, distinct_id);
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(identity);
    k
}

/// The team a key of the `views` column family belongs to.
pub fn team_of_key(key: &[u8]) -> Option<i64> {
    if !matches!(key.first(), Some(&(EVENT | OVERRIDE | PERSON))) {
        return None;
    }
    Some(i64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// The store key of a distinct id's override.
pub fn override_key(team_id: i64, distinct_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + distinct_id.len());
    k.push(OVERRIDE);
    k.extend_from_slice(&team_id.to_be_bytes());
    k.extend_from_slice(distinct_id.as_bytes());
    k
}

/// The store key of a person's properties.
pub fn person_key(team_id: i64, person: &uuid::Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(PERSON);
    k.extend_from_slice(&team_id.to_be_bytes());
    k.extend_from_slice(person.as_bytes());
    k
}

/// One stored view input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewRecord {
    Event(Box<[u8]>),
    Override(Box<[u8]>),
    Person(Box<[u8]>),
}

impl StateStore {
    /// The stored values of `keys` (made by [`event_key`] or [`person_key`]), in `keys` order.
    pub fn view_events(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let cf = self.cf(CF_VIEWS);
        self.db
            .batched_multi_get_cf(cf, keys, false)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    /// Writes view inputs (`None` deletes). Not synced on its own: the offsets commit that follows syncs the
    /// write-ahead log, and an input lost with the machine is read again from Kafka because
    /// its offset was not committed either.
    pub fn put_view_records(
        &self,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StateError> {
        if records.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_VIEWS);
        let mut batch = WriteBatch::default();
        for (k, v) in records {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Visits, in key order and without holding them all at once, the stored events whose keys
    /// begin with `prefix` (a [`distinct_id_prefix`], or `b"e"` for every event).
    pub fn for_each_view_event(
        &self,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        for item in self.db.iterator_cf(
            self.cf(CF_VIEWS),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            visit(&v)?;
        }
        Ok(())
    }

    /// Every stored view input, events and overrides, in key order.
    pub fn view_records(&self) -> impl Iterator<Item = Result<ViewRecord, StateError>> + '_ {
        self.db
            .iterator_cf(
                self.cf(CF_VIEWS),
                IteratorMode::From(&[], Direction::Forward),
            )
            .filter_map(|item| match item {
                Err(e) => Some(Err(e.into())),
                Ok((k, v)) => match k.first() {
                    Some(&EVENT) => Some(Ok(ViewRecord::Event(v))),
                    Some(&OVERRIDE) => Some(Ok(ViewRecord::Override(v))),
                    Some(&PERSON) => Some(Ok(ViewRecord::Person(v))),
                    _ => None,
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_found_by_key_and_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = event_key(7, "d", 20_000, b"a");
        let b = event_key(7, "d", 20_000, b"b");
        // "d" is not a prefix of "dd": its events are not those of "dd".
        let other = event_key(7, "dd", 20_000, b"a");
        {
            let store = StateStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.view_events(std::slice::from_ref(&a)).unwrap(), [None]);
            store
                .put_view_records(&[
                    (a.clone(), Some(b"ev-a".to_vec())),
                    (other, Some(b"ev-other".to_vec())),
                    (override_key(7, "d"), Some(b"p".to_vec())),
                    (person_key(7, &uuid::Uuid::nil()), Some(b"gone".to_vec())),
                    (person_key(7, &uuid::Uuid::nil()), None),
                ])
                .unwrap();
            let mut of_d = Vec::new();
            store
                .for_each_view_event(&distinct_id_prefix(7, "d"), |v| {
                    of_d.push(v.to_vec());
                    Ok(())
                })
                .unwrap();
            assert_eq!(of_d, [b"ev-a".to_vec()]);
            assert_eq!(
                store.view_events(&[a.clone(), b.clone()]).unwrap(),
                [Some(b"ev-a".to_vec()), None]
            );
        }
        let store = StateStore::open(dir.path(), 1 << 20).unwrap();
        let all: Vec<ViewRecord> = store.view_records().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            all,
            [
                ViewRecord::Event(b"ev-a".to_vec().into()),
                ViewRecord::Event(b"ev-other".to_vec().into()),
                ViewRecord::Override(b"p".to_vec().into())
            ]
        );
    }
}
