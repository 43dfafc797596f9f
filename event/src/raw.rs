//! The event as a client sends it (PostHog's `RawEvent`), with the field aliases the SDKs use.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawEvent {
    #[serde(
        alias = "$token",
        alias = "api_key",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<String>,
    /// Any JSON value: non-strings are stringified with JSON when resolved.
    #[serde(
        alias = "$distinct_id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub distinct_id: Option<Value>,
    /// An empty string counts as absent; anything else must parse as a UUID.
    #[serde(
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub uuid: Option<Uuid>,
    pub event: String,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(rename = "$set", default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Map<String, Value>>,
    #[serde(rename = "$set_once", default, skip_serializing_if = "Option::is_none")]
    pub set_once: Option<Map<String, Value>>,
}

fn empty_string_as_none<'de, D>(d: D) -> Result<Option<Uuid>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v: Option<String> = Option::deserialize(d)?;
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => Uuid::parse_str(s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_empty_uuid() {
        let e: RawEvent = serde_json::from_str(
            r#"{"$token":"t","$distinct_id":23,"uuid":"","event":"x","$set":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(e.token.as_deref(), Some("t"));
        assert_eq!(e.distinct_id, Some(Value::from(23)));
        assert_eq!(e.uuid, None);
        assert_eq!(e.set.unwrap()["a"], 1);
    }

    #[test]
    fn invalid_uuid_is_an_error() {
        let r: Result<RawEvent, _> = serde_json::from_str(r#"{"uuid":"nope","event":"x"}"#);
        assert!(r.is_err());
    }
}
