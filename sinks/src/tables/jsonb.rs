//! Person and group properties as PostHog stores them: it keeps them in Postgres `jsonb`, which
//! refuses NUL, so PostHog writes U+FFFD for every NUL (its `sanitizeJsonbValue`) and its rows in
//! ClickHouse carry that. hogstream's rows match.

use std::borrow::Cow;

const NUL_ESCAPE: &str = "\\u0000";
const REPLACEMENT_ESCAPE: &str = "\\ufffd";

/// `json` (compact JSON text, as serde_json writes it: NUL only ever as the `\u0000` escape)
/// with each NUL in a string or key replaced by U+FFFD. Borrowed when there is none, which is
/// nearly always.
pub fn without_nul(json: &str) -> Cow<'_, str> {
    if !json.contains(NUL_ESCAPE) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    // Walks escape by escape: `\\u0000` is an escaped backslash followed by text, not a NUL.
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let escape = &rest[i..];
        if let Some(after) = escape.strip_prefix(NUL_ESCAPE) {
            out.push_str(REPLACEMENT_ESCAPE);
            rest = after;
        } else {
            // A backslash and the (ASCII) character it escapes.
            let len = escape.len().min(2);
            out.push_str(&escape[..len]);
            rest = &escape[len..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// PostHog's person-state.test.ts "creates person if they are new" (`null_byte`).
    #[test]
    fn nul_becomes_the_replacement_character_everywhere_and_nothing_else_changes() {
        let props = json!({
            "null_byte": "\u{0}",
            "nested": {"list": ["a\u{0}b", 1, null]},
            "key\u{0}": true,
            "not_a_nul": "\\u0000 is text",
            "quote": "\"\\",
        });
        let text = serde_json::to_string(&props).unwrap();
        let out = without_nul(&text);
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            json!({
                "null_byte": "\u{fffd}",
                "nested": {"list": ["a\u{fffd}b", 1, null]},
                "key\u{fffd}": true,
                "not_a_nul": "\\u0000 is text",
                "quote": "\"\\",
            })
        );
    }

    #[test]
    fn text_without_nul_is_borrowed() {
        assert!(matches!(without_nul(r#"{"a":1}"#), Cow::Borrowed(_)));
    }
}
