//! The JSON shapes a capture body can take, tried in PostHog's untagged order.

use chrono::{DateTime, Utc};
use hogstream_event::RawEvent;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::CaptureError;
use crate::timestamp::parse_sent_at;

/// The events of one request and the request-level fields that apply to all of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedRequest {
    pub events: Vec<RawEvent>,
    /// The `/batch` body's `api_key`/`token`, which wins over the events' own tokens.
    pub token: Option<String>,
    pub historical_migration: bool,
    /// The `/batch` body's `sent_at`; unparseable values and years outside 0..=9999 are ignored,
    /// as in PostHog.
    pub sent_at: Option<DateTime<Utc>>,
}

/// `{ "api_key"|"token": ..., "batch": [...], "historical_migration"?: bool, "sent_at"?: ... }`.
///
/// The token is optional here (PostHog requires it): a batch without one falls back to the
/// events' tokens instead of failing as an unknown shape.
#[derive(Debug, Deserialize)]
struct BatchBody {
    #[serde(default, alias = "api_key")]
    token: Option<String>,
    batch: Vec<RawEvent>,
    #[serde(default)]
    historical_migration: Option<bool>,
    #[serde(default)]
    sent_at: Option<Value>,
}

/// Parses the decoded JSON text. Shapes, in order: an array of events; a batch object; a single
/// event; and, only when `allow_engage` (the `/engage*` routes), an object without `event`,
/// which becomes `$identify`. Elsewhere that last shape is a hydration error (400).
pub fn parse_body(text: &str, allow_engage: bool) -> Result<ParsedRequest, CaptureError> {
    let parse_err = |e: serde_json::Error| CaptureError::RequestParsing(e.to_string());
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let events: Vec<RawEvent> = serde_json::from_str(text).map_err(parse_err)?;
            Ok(ParsedRequest {
                events,
                ..ParsedRequest::default()
            })
        }
        Some(b'{') => parse_object(text, allow_engage),
        _ => Err(CaptureError::RequestParsing(format!(
            "expected an event, an array of events or a batch object, got {}",
            describe_json(text)
        ))),
    }
}

/// What a body that is not an object or array is, in words, for the error.
fn describe_json(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Null) => "null".into(),
        Ok(Value::Bool(b)) => format!("the boolean {b}"),
        Ok(Value::Number(n)) => format!("the number {n}"),
        Ok(Value::String(_)) => "a JSON string".into(),
        Ok(_) => "another JSON value".into(),
        Err(_) => "text that is not JSON".into(),
    }
}

fn batch_request(body: BatchBody) -> ParsedRequest {
    ParsedRequest {
        events: body.batch,
        token: body.token,
        historical_migration: body.historical_migration.unwrap_or(false),
        sent_at: body
            .sent_at
            .as_ref()
            .and_then(Value::as_str)
            .and_then(parse_sent_at),
    }
}

fn parse_object(text: &str, allow_engage: bool) -> Result<ParsedRequest, CaptureError> {
    // Cheap pre-check: only bodies that mention `batch` can be batches, which spares single
    // events a failed parse.
    if text.contains("\"batch\"") {
        match serde_json::from_str::<BatchBody>(text) {
            Ok(body) => return Ok(batch_request(body)),
            Err(_) => {
                // A body whose `batch` is there but not a list, and that is no event either, is
                // a batch gone wrong, not an event without a name: say so.
                if let Ok(object) = serde_json::from_str::<Map<String, Value>>(text)
                    && !object.contains_key("event")
                    && object.get("batch").is_some_and(|b| !b.is_array())
                {
                    return Err(CaptureError::RequestParsing(
                        "`batch` must be an array of events".into(),
                    ));
                }
            }
        }
    }
    let single_err = match serde_json::from_str::<RawEvent>(text) {
        Ok(event) => {
            return Ok(ParsedRequest {
                events: vec![event],
                ..ParsedRequest::default()
            });
        }
        Err(e) => e,
    };
    let mut object: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| CaptureError::RequestParsing(e.to_string()))?;
    if object.contains_key("event") {
        return Err(CaptureError::RequestParsing(single_err.to_string()));
    }
    if !allow_engage {
        return Err(CaptureError::RequestHydration(
            "the object has no `event` field; events without a name are accepted only on /engage"
                .into(),
        ));
    }
    object.insert("event".into(), Value::String("$identify".into()));
    let event: RawEvent = serde_json::from_value(Value::Object(object))
        .map_err(|e| CaptureError::RequestParsing(e.to_string()))?;
    Ok(ParsedRequest {
        events: vec![event],
        ..ParsedRequest::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_of_events() {
        let got = parse_body(r#" [{"event":"a","distinct_id":"1"},{"event":"b"}]"#, false).unwrap();
        assert_eq!(got.events.len(), 2);
        assert_eq!(got.events[1].event, "b");
        assert_eq!(got.token, None);
        assert!(!got.historical_migration);
    }

    #[test]
    fn batch_object_with_api_key_sent_at_and_historical() {
        let got = parse_body(
            r#"{"api_key":"phc_x","historical_migration":true,"sent_at":"2026-01-01T00:00:00Z",
                "batch":[{"event":"a","distinct_id":"1"}]}"#,
            false,
        )
        .unwrap();
        assert_eq!(got.token.as_deref(), Some("phc_x"));
        assert!(got.historical_migration);
        assert_eq!(
            got.sent_at.unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(got.events[0].event, "a");
    }

    #[test]
    fn batch_object_with_token_and_bad_sent_at() {
        let got = parse_body(r#"{"token":"phc_y","sent_at":"nope","batch":[]}"#, false).unwrap();
        assert_eq!(got.token.as_deref(), Some("phc_y"));
        assert!(got.events.is_empty());
        assert_eq!(got.sent_at, None);
    }

    /// Regression (cargo fuzz, `decode_payload`): chrono reads the signed year `-013`, and the
    /// message then carried `sent_at` "-0013-06-01T11:00:00.000000Z", which is not RFC 3339.
    #[test]
    fn batch_sent_at_outside_rfc3339_years_is_ignored() {
        let got = parse_body(
            r#"{"api_key":"phc_fuzz","histn":true,"sent_at":"-013-06-01T11:00:00Z","batch":[{"event":"old","distinct_id":"u1","timestamp":"2026-03okiedess","dist":{"$cookieapture_internal":true}}]}"#,
            false,
        )
        .unwrap();
        assert_eq!(got.sent_at, None);
        assert_eq!(got.events.len(), 1);
    }

    #[test]
    fn single_event() {
        let got = parse_body(
            r#"{"event":"one","distinct_id":"d","properties":{"batch":1}}"#,
            false,
        )
        .unwrap();
        assert_eq!(got.events.len(), 1);
        assert_eq!(got.events[0].event, "one");
    }

    #[test]
    fn engage_object_becomes_identify_on_engage_only() {
        let body = r#"{"$set":{"email":"a@b.c"},"distinct_id":"d","token":"phc_x"}"#;
        let got = parse_body(body, true).unwrap();
        assert_eq!(got.events[0].event, "$identify");
        assert_eq!(got.events[0].set.as_ref().unwrap()["email"], "a@b.c");
        let err = parse_body(body, false).unwrap_err();
        assert!(matches!(err, CaptureError::RequestHydration(_)));
        assert_eq!(err.status().as_u16(), 400);
    }

    #[test]
    fn object_with_bad_event_is_a_parse_error_not_engage() {
        let err = parse_body(r#"{"event":5,"distinct_id":"d"}"#, true).unwrap_err();
        assert!(matches!(err, CaptureError::RequestParsing(_)));
        let err = parse_body(r#"{"event":"e","uuid":"not-a-uuid"}"#, true).unwrap_err();
        assert!(
            matches!(err, CaptureError::RequestParsing(ref m) if m.contains("invalid character")),
            "{err:?}"
        );
    }

    #[test]
    fn invalid_json_and_other_shapes_are_parse_errors() {
        for body in [
            "",
            "nope",
            "42",
            "\"str\"",
            "{",
            "[{\"event\":\"a\"},",
            "[1]",
            "null",
        ] {
            assert!(
                matches!(parse_body(body, true), Err(CaptureError::RequestParsing(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn malformed_batch_falls_through_to_single_event() {
        // `batch` is not an array, so the untagged order moves on to the single-event shape.
        let got = parse_body(r#"{"event":"e","batch":"x"}"#, false).unwrap();
        assert_eq!(got.events[0].event, "e");
    }
}
