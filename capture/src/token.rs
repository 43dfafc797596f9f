//! Which API token a request belongs to, and whether it is well-formed.
//!
//! Capture only checks the token's shape; whether it names a real project is decided later in
//! ingestion, as in PostHog.

use std::collections::BTreeSet;

use hogstream_event::RawEvent;

use crate::error::CaptureError;

/// PostHog's limit on a project token's length.
pub const MAX_TOKEN_LEN: usize = 64;

/// Why a token was refused (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is longer than 64 characters")]
    TooLong,
    #[error("the token contains non-ASCII characters")]
    NotAscii,
    #[error("the token is a personal API key (phx_), not a project token")]
    PersonalApiKey,
    #[error("the token contains a NUL character")]
    NulByte,
}

/// Trims the token and checks its shape, returning the trimmed token.
pub fn validate_token(raw: &str) -> Result<&str, TokenError> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    if !token.is_ascii() {
        return Err(TokenError::NotAscii);
    }
    if token.starts_with("phx_") {
        return Err(TokenError::PersonalApiKey);
    }
    if token.contains('\0') {
        return Err(TokenError::NulByte);
    }
    Ok(token)
}

/// The token an event names itself: `token`/`$token`/`api_key`, else `properties.token`.
pub fn event_token(event: &RawEvent) -> Option<&str> {
    match &event.token {
        Some(token) => Some(token.as_str()),
        None => event.properties.get("token").and_then(|v| v.as_str()),
    }
}

/// Resolves the one token of a request.
///
/// A `/batch` body's top-level token wins. Otherwise every event that names a token must name
/// the same one; events without a token inherit it. Blank tokens count as absent (hogstream
/// choice: PostHog would answer 403 "empty" for a blank top-level token, 401 is the honest
/// answer for "no usable token").
pub fn resolve_token(
    batch_token: Option<&str>,
    events: &[RawEvent],
) -> Result<String, CaptureError> {
    if let Some(token) = batch_token.filter(|t| !t.trim().is_empty()) {
        return checked(token);
    }
    let distinct: BTreeSet<&str> = events
        .iter()
        .filter_map(event_token)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let mut tokens = distinct.into_iter();
    match (tokens.next(), tokens.next()) {
        (None, _) => Err(CaptureError::NoToken),
        (Some(token), None) => checked(token),
        (Some(_), Some(_)) => Err(CaptureError::MultipleTokens),
    }
}

fn checked(token: &str) -> Result<String, CaptureError> {
    validate_token(token)
        .map(str::to_owned)
        .map_err(CaptureError::InvalidToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: serde_json::Value) -> RawEvent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn valid_token_is_trimmed() {
        assert_eq!(validate_token("  phc_abc \n"), Ok("phc_abc"));
    }

    #[test]
    fn invalid_tokens_are_rejected_with_reason() {
        assert_eq!(validate_token(" \t"), Err(TokenError::Empty));
        assert_eq!(validate_token(&"a".repeat(65)), Err(TokenError::TooLong));
        assert_eq!(validate_token(&"a".repeat(64)), Ok("a".repeat(64).as_str()));
        assert_eq!(validate_token("phc_é"), Err(TokenError::NotAscii));
        assert_eq!(
            validate_token("phx_personal"),
            Err(TokenError::PersonalApiKey)
        );
        assert_eq!(validate_token("phc\0x"), Err(TokenError::NulByte));
    }

    #[test]
    fn batch_token_wins_over_event_tokens() {
        let events = vec![ev(json!({"event":"e","token":"phc_event"}))];
        assert_eq!(
            resolve_token(Some("phc_batch"), &events).unwrap(),
            "phc_batch"
        );
    }

    #[test]
    fn blank_batch_token_falls_back_to_events() {
        let events = vec![ev(json!({"event":"e","api_key":"phc_event"}))];
        assert_eq!(resolve_token(Some("  "), &events).unwrap(), "phc_event");
    }

    #[test]
    fn token_from_aliases_and_properties() {
        for e in [
            json!({"event":"e","token":"phc_1"}),
            json!({"event":"e","$token":"phc_1"}),
            json!({"event":"e","api_key":"phc_1"}),
            json!({"event":"e","properties":{"token":"phc_1"}}),
        ] {
            assert_eq!(
                resolve_token(None, &[ev(e.clone())]).unwrap(),
                "phc_1",
                "{e}"
            );
        }
    }

    #[test]
    fn top_level_token_shadows_properties_token() {
        let e = ev(json!({"event":"e","token":"phc_top","properties":{"token":"phc_prop"}}));
        assert_eq!(resolve_token(None, &[e]).unwrap(), "phc_top");
    }

    #[test]
    fn same_token_repeated_and_tokenless_events_are_fine() {
        let events = vec![
            ev(json!({"event":"a","token":"phc_1"})),
            ev(json!({"event":"b","token":" phc_1 "})),
            ev(json!({"event":"c"})),
        ];
        assert_eq!(resolve_token(None, &events).unwrap(), "phc_1");
    }

    #[test]
    fn multiple_tokens_are_400() {
        let events = vec![
            ev(json!({"event":"a","token":"phc_1"})),
            ev(json!({"event":"b","properties":{"token":"phc_2"}})),
        ];
        assert_eq!(
            resolve_token(None, &events),
            Err(CaptureError::MultipleTokens)
        );
    }

    #[test]
    fn missing_token_is_401_and_bad_token_403() {
        let events = vec![ev(json!({"event":"a","properties":{"token":5}}))];
        let err = resolve_token(None, &events).unwrap_err();
        assert_eq!(err, CaptureError::NoToken);
        assert_eq!(err.status().as_u16(), 401);

        let events = vec![ev(json!({"event":"a","token":"phx_secret"}))];
        let err = resolve_token(None, &events).unwrap_err();
        assert_eq!(err, CaptureError::InvalidToken(TokenError::PersonalApiKey));
        assert_eq!(err.status().as_u16(), 403);
    }
}
