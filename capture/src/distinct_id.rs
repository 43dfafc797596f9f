//! Resolves the distinct_id PostHog keys persons and partitions by.

use hogstream_event::RawEvent;
use serde_json::Value;

use crate::error::CaptureError;

/// Longer ids are cut to this many characters, as PostHog does.
pub const MAX_DISTINCT_ID_CHARS: usize = 200;

/// Top-level `distinct_id`/`$distinct_id`, else `properties.distinct_id`.
///
/// Non-strings are JSON-stringified (`23` → `"23"`), NUL becomes U+FFFD so the id stays valid
/// text everywhere downstream, and missing, null, empty or whitespace-only ids are refused
/// (newest PostHog; legacy Django accepted null), including ids that are whitespace-only once
/// truncated to [`MAX_DISTINCT_ID_CHARS`].
pub fn resolve_distinct_id(event: &RawEvent) -> Result<String, CaptureError> {
    let value = match &event.distinct_id {
        None | Some(Value::Null) => match event.properties.get("distinct_id") {
            None | Some(Value::Null) => return Err(CaptureError::MissingDistinctId),
            Some(v) => v,
        },
        Some(v) => v,
    };
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    };
    // Truncate first: an id whose first 200 characters are blank would be stored blank.
    let text = truncate_chars(text, MAX_DISTINCT_ID_CHARS);
    if text.trim().is_empty() {
        return Err(CaptureError::MissingDistinctId);
    }
    Ok(text)
}

fn truncate_chars(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(v: Value) -> Result<String, CaptureError> {
        let e: RawEvent = serde_json::from_value(v).unwrap();
        resolve_distinct_id(&e)
    }

    #[test]
    fn string_ids_pass_through() {
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":"u1"})).unwrap(),
            "u1"
        );
        assert_eq!(
            resolve(json!({"event":"e","$distinct_id":"u2"})).unwrap(),
            "u2"
        );
    }

    #[test]
    fn non_strings_are_json_stringified() {
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":23})).unwrap(),
            "23"
        );
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":["a","b"]})).unwrap(),
            r#"["a","b"]"#
        );
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":{"k":1}})).unwrap(),
            r#"{"k":1}"#
        );
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":true})).unwrap(),
            "true"
        );
    }

    #[test]
    fn falls_back_to_properties() {
        let v = json!({"event":"e","properties":{"distinct_id":"p1"}});
        assert_eq!(resolve(v).unwrap(), "p1");
        let v = json!({"event":"e","distinct_id":null,"properties":{"distinct_id":7}});
        assert_eq!(resolve(v).unwrap(), "7");
    }

    #[test]
    fn top_level_wins_over_properties() {
        let v = json!({"event":"e","distinct_id":"top","properties":{"distinct_id":"prop"}});
        assert_eq!(resolve(v).unwrap(), "top");
    }

    #[test]
    fn nul_becomes_replacement_character() {
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":"a\u{0}b"})).unwrap(),
            "a\u{FFFD}b"
        );
    }

    #[test]
    fn missing_null_empty_or_blank_is_refused() {
        for v in [
            json!({"event":"e"}),
            json!({"event":"e","distinct_id":null}),
            json!({"event":"e","distinct_id":""}),
            json!({"event":"e","distinct_id":"  \t"}),
            json!({"event":"e","properties":{"distinct_id":null}}),
            json!({"event":"e","distinct_id":"","properties":{"distinct_id":"p"}}),
        ] {
            assert_eq!(
                resolve(v.clone()),
                Err(CaptureError::MissingDistinctId),
                "{v}"
            );
        }
    }

    /// Regression: the blank check ran before truncation, so 200 spaces and an `x` passed and
    /// were stored as 200 spaces.
    #[test]
    fn ids_blank_once_truncated_are_refused() {
        let id = format!("{}x", " ".repeat(200));
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":id})),
            Err(CaptureError::MissingDistinctId)
        );
        let id = format!("{}x", " ".repeat(199));
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":id.clone()})),
            Ok(id)
        );
    }

    #[test]
    fn long_ids_are_truncated_by_characters() {
        let long = "é".repeat(250);
        let got = resolve(json!({"event":"e","distinct_id":long})).unwrap();
        assert_eq!(got.chars().count(), 200);
        assert!(got.chars().all(|c| c == 'é'));
        let exact = "x".repeat(200);
        assert_eq!(
            resolve(json!({"event":"e","distinct_id":exact.clone()})).unwrap(),
            exact
        );
    }
}
