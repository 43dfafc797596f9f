//! What the Kafka source hands to the dataflow.

use serde::{Deserialize, Serialize};

/// One Kafka message, with just what the stages need. Bytes, not parsed JSON, travel between
/// workers: parsing happens once, on the worker that owns the event's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka message time, ms since the epoch.
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    /// Hash of the team token, so every event of one team meets its person state.
    pub route: u64,
    /// Capture's `force_disable_person_processing` header.
    pub force_personless: bool,
    pub payload: Vec<u8>,
    /// The message's headers, kept so a dead letter (and its redrive) carries them on.
    pub headers: RecordHeaders,
    /// An earlier run may have processed it before crashing ([`crate::source::ReadHorizon`]).
    pub replay: bool,
}

/// A message's headers in one buffer: read for every message, needed only by the few that
/// become dead letters, so they cost two allocations instead of two per header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordHeaders {
    bytes: Vec<u8>,
    /// Per header, where its name and its value end in `bytes`.
    ends: Vec<(u32, u32)>,
}

impl RecordHeaders {
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let end = |bytes: &Vec<u8>| u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(name.as_bytes());
        let name_end = end(&self.bytes);
        self.bytes.extend_from_slice(value);
        self.ends.push((name_end, end(&self.bytes)));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let name = std::str::from_utf8(&self.bytes[start..name_end]).unwrap_or_default();
            let value = &self.bytes[name_end..value_end];
            start = value_end;
            (name, value)
        })
    }

    /// The headers as owned pairs, in order.
    pub fn to_pairs(&self) -> Vec<(String, Vec<u8>)> {
        self.iter()
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect()
    }
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for RecordHeaders {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(pairs: I) -> Self {
        let mut headers = Self::default();
        for (name, value) in pairs {
            headers.push(name, value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_in_order_with_empty_and_repeated_ones() {
        let pairs: [(&str, &[u8]); 4] = [
            ("token", b"phc"),
            ("", b""),
            ("k", b"\xff\x00"),
            ("token", b"x"),
        ];
        let headers: RecordHeaders = pairs.into_iter().collect();
        assert_eq!(headers.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(
            headers.to_pairs()[2],
            ("k".to_owned(), b"\xff\x00".to_vec())
        );
    }
}
