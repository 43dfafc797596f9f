//! Groups: the per-team group-type index (assigned at first sight, at most five, never
//! changed) and each group's properties as last-writer-wins registers by stamp.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_64;

use super::{
    input::Stamp,
    registers::{join_latest, json_text},
};

/// PostHog's limit of group types per project.
pub const MAX_GROUP_TYPES: usize = 5;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupTypes {
    /// Position is the group type index.
    pub types: Vec<String>,
}

impl GroupTypes {
    /// The index of `group_type`, assigning the next free one if there is room. The second
    /// value says whether the type was assigned just now.
    pub fn index_of(&mut self, group_type: &str) -> (Option<u8>, bool) {
        if let Some(i) = self.types.iter().position(|t| t == group_type) {
            return (u8::try_from(i).ok(), false);
        }
        if self.types.len() >= MAX_GROUP_TYPES {
            return (None, false);
        }
        self.types.push(group_type.to_owned());
        (u8::try_from(self.types.len() - 1).ok(), true)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The earliest `$groupidentify`: its time is the group's `created_at`.
    pub created: Option<Stamp>,
    /// JSON text per key; the latest stamp wins.
    pub properties: BTreeMap<String, (Stamp, String)>,
    /// Hash of the last acknowledged row, so unchanged groups are not written again.
    pub emitted: u64,
}

impl GroupState {
    pub fn write(&mut self, stamp: Stamp, set: &Map<String, Value>) {
        self.created = Some(self.created.map_or(stamp, |c| c.min(stamp)));
        for (k, v) in set {
            join_latest(&mut self.properties, k, stamp, || json_text(v));
        }
    }

    pub fn visible(&self) -> Map<String, Value> {
        self.properties
            .iter()
            .map(|(k, (_, v))| (k.clone(), serde_json::from_str(v).unwrap_or(Value::Null)))
            .collect()
    }

    /// The row hash of the current content; differs from `emitted` when a row is due.
    pub fn content_hash(&self) -> u64 {
        let mut bytes = serde_json::to_vec(&self.visible()).unwrap_or_default();
        bytes.extend_from_slice(&self.created.map_or(0, |c| c.ts_us).to_le_bytes());
        xxh3_64(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn at_most_five_types_and_indices_never_move() {
        let mut t = GroupTypes::default();
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert_eq!(t.index_of(name), (Some(i as u8), true));
        }
        assert_eq!(t.index_of("f"), (None, false));
        assert_eq!(t.index_of("c"), (Some(2), false));
    }

    #[test]
    fn group_properties_are_last_writer_wins_by_stamp() {
        let st = |ts| Stamp { ts_us: ts, uuid: 1 };
        let mut g = GroupState::default();
        g.write(st(5), json!({"n": "late"}).as_object().unwrap());
        g.write(st(2), json!({"n": "early", "m": 1}).as_object().unwrap());
        assert_eq!(Value::Object(g.visible()), json!({"m": 1, "n": "late"}));
        assert_eq!(g.created, Some(st(2)));
    }
}
