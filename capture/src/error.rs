//! Every way a capture request can fail, and the HTTP answer each one gets.
//!
//! Status codes follow the newest PostHog capture (`docs/posthog-rules.md` §1.9): an invalid
//! token is 403 (older versions: 401), multiple tokens are 400 (older: 401) and a payload that is
//! too big is 413 (older: 400). Bodies are the newest JSON shape
//! `{"status":<u16>,"code":"<snake_code>","error":"<message>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::token::TokenError;

/// Why a capture request was refused. One bad event fails its whole request, never another one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("the request has no payload")]
    EmptyPayload,
    #[error("failed to decode the request: {0}")]
    RequestDecoding(String),
    #[error("failed to parse the request: {0}")]
    RequestParsing(String),
    #[error("failed to read events from the request: {0}")]
    RequestHydration(String),
    #[error("the batch contains no events")]
    EmptyBatch,
    #[error("an event has no name")]
    MissingEventName,
    #[error("an event has no distinct_id")]
    MissingDistinctId,
    #[error("$cookieless_mode must be a boolean")]
    InvalidCookielessMode,
    #[error("the request carries no API token")]
    NoToken,
    #[error("the API token is invalid: {0}")]
    InvalidToken(TokenError),
    #[error("the request carries more than one API token")]
    MultipleTokens,
    #[error("the payload is too big: {0}")]
    EventTooBig(String),
    #[error("rate limited")]
    RateLimited,
    #[error("timed out while reading the request body")]
    BodyReadTimeout,
    #[error("events could not be stored, retry later: {0}")]
    RetryableSink(String),
    #[error("session recordings (/s) are not supported by this server")]
    RecordingsNotSupported,
    #[error("no such endpoint")]
    NotFound,
    #[error("method {0} is not allowed here: send events with POST (or GET with ?data=)")]
    MethodNotAllowed(String),
    #[error(
        "Content-Encoding `{0}` is not supported: send gzip, lz64 (lz-string) or base64, or no Content-Encoding"
    )]
    UnsupportedEncoding(String),
    #[error("{0}")]
    DecodingCapacity(String),
    #[error("the server is handling too many requests at once; retry shortly")]
    Overloaded,
    #[error("internal error: {0}")]
    Internal(String),
}

impl CaptureError {
    pub fn status(&self) -> StatusCode {
        match self {
            CaptureError::EmptyPayload
            | CaptureError::RequestDecoding(_)
            | CaptureError::RequestParsing(_)
            | CaptureError::RequestHydration(_)
            | CaptureError::EmptyBatch
            | CaptureError::MissingEventName
            | CaptureError::MissingDistinctId
            | CaptureError::InvalidCookielessMode
            | CaptureError::MultipleTokens => StatusCode::BAD_REQUEST,
            CaptureError::NoToken => StatusCode::UNAUTHORIZED,
            CaptureError::InvalidToken(_) => StatusCode::FORBIDDEN,
            CaptureError::EventTooBig(_) => StatusCode::PAYLOAD_TOO_LARGE,
            CaptureError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            CaptureError::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
            CaptureError::RetryableSink(_) => StatusCode::SERVICE_UNAVAILABLE,
            CaptureError::RecordingsNotSupported => StatusCode::NOT_IMPLEMENTED,
            CaptureError::NotFound => StatusCode::NOT_FOUND,
            CaptureError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            CaptureError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            CaptureError::DecodingCapacity(_) | CaptureError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CaptureError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code clients and dashboards match on.
    pub fn code(&self) -> &'static str {
        match self {
            CaptureError::EmptyPayload => "empty_payload",
            CaptureError::RequestDecoding(_) => "request_decoding_error",
            CaptureError::RequestParsing(_) => "request_parsing_error",
            CaptureError::RequestHydration(_) => "request_hydration_error",
            CaptureError::EmptyBatch => "empty_batch",
            CaptureError::MissingEventName => "missing_event_name",
            CaptureError::MissingDistinctId => "missing_distinct_id",
            CaptureError::InvalidCookielessMode => "invalid_cookieless_mode",
            CaptureError::NoToken => "no_token",
            CaptureError::InvalidToken(_) => "invalid_token",
            CaptureError::MultipleTokens => "multiple_tokens",
            CaptureError::EventTooBig(_) => "event_too_big",
            CaptureError::RateLimited => "rate_limited",
            CaptureError::BodyReadTimeout => "request_timeout",
            CaptureError::RetryableSink(_) => "service_unavailable",
            CaptureError::RecordingsNotSupported => "recordings_not_supported",
            CaptureError::NotFound => "not_found",
            CaptureError::MethodNotAllowed(_) => "method_not_allowed",
            CaptureError::UnsupportedEncoding(_) => "unsupported_encoding",
            CaptureError::DecodingCapacity(_) => "decoding_capacity",
            CaptureError::Overloaded => "overloaded",
            CaptureError::Internal(_) => "internal_error",
        }
    }
}

/// The JSON error body every failed request gets.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub status: u16,
    pub code: &'static str,
    pub error: String,
}

impl IntoResponse for CaptureError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            status: status.as_u16(),
            code: self.code(),
            error: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid capture configuration: {0}")]
    Config(String),
    #[error("could not create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("could not bind the HTTP listener: {0}")]
    Bind(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(
        "the Kafka producer hit a fatal error and cannot produce again: {0}; capture stopped so that it can be restarted with a new producer"
    )]
    ProducerFatal(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn body_of(err: CaptureError) -> (StatusCode, serde_json::Value) {
        let resp = err.into_response();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn status_codes_follow_newest_posthog() {
        let cases = [
            (CaptureError::EmptyPayload, 400),
            (CaptureError::RequestDecoding("x".into()), 400),
            (CaptureError::RequestParsing("x".into()), 400),
            (CaptureError::RequestHydration("x".into()), 400),
            (CaptureError::EmptyBatch, 400),
            (CaptureError::MissingEventName, 400),
            (CaptureError::MissingDistinctId, 400),
            (CaptureError::InvalidCookielessMode, 400),
            (CaptureError::MultipleTokens, 400),
            (CaptureError::NoToken, 401),
            (CaptureError::InvalidToken(TokenError::TooLong), 403),
            (CaptureError::EventTooBig("x".into()), 413),
            (CaptureError::RateLimited, 429),
            (CaptureError::BodyReadTimeout, 408),
            (CaptureError::RetryableSink("x".into()), 503),
            (CaptureError::RecordingsNotSupported, 501),
            (CaptureError::NotFound, 404),
            (CaptureError::MethodNotAllowed("PUT".into()), 405),
            (CaptureError::UnsupportedEncoding("br".into()), 415),
            (CaptureError::DecodingCapacity("x".into()), 503),
            (CaptureError::Overloaded, 503),
            (CaptureError::Internal("x".into()), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
        }
    }

    #[tokio::test]
    async fn body_is_status_code_and_message() {
        let (status, body) = body_of(CaptureError::InvalidToken(TokenError::PersonalApiKey)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["status"], 403);
        assert_eq!(body["code"], "invalid_token");
        assert!(body["error"].as_str().unwrap().contains("personal API key"));
        assert_eq!(body.as_object().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn too_big_body() {
        let (status, body) = body_of(CaptureError::EventTooBig("over 10 bytes".into())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["code"], "event_too_big");
        assert!(body["error"].as_str().unwrap().contains("over 10 bytes"));
    }
}
