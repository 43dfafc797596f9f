//! The capture request flow: read, decode, validate, route, produce, answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use hogstream_event::headers;
use hogstream_event::time::rfc3339;
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::error::CaptureError;
use crate::event::{EventMessage, RequestContext, process_event};
use crate::metrics;
use crate::payload::budget::DecodeBudget;
use crate::payload::shapes::parse_body;
use crate::payload::{CaptureQuery, DecodeOptions, decode_payload};
use crate::producer::{ProduceError, ProduceRecord};
use crate::state::AppState;
use crate::timestamp::sent_at_from_query;
use crate::token::resolve_token;
use crate::topics::{Route, RouteInput, Topic};

/// Plain JSON bodies up to this size are decoded on the async worker that received them; every
/// other body (larger, or compressed, or encoded, so it may expand up to the decompression cap)
/// is decoded on the blocking pool, so it cannot stall the workers that serve other requests and
/// health checks.
const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// The capture routes. Each is served with and without a trailing slash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    E,
    IV0E,
    Capture,
    Track,
    Engage,
    Batch,
}

impl Endpoint {
    pub const ALL: [Endpoint; 6] = [
        Endpoint::E,
        Endpoint::IV0E,
        Endpoint::Capture,
        Endpoint::Track,
        Endpoint::Engage,
        Endpoint::Batch,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::E => "/e",
            Endpoint::IV0E => "/i/v0/e",
            Endpoint::Capture => "/capture",
            Endpoint::Track => "/track",
            Endpoint::Engage => "/engage",
            Endpoint::Batch => "/batch",
        }
    }

    /// Paths old SDKs used, where a doubly base64-encoded payload is tolerated.
    pub fn is_legacy(self) -> bool {
        matches!(
            self,
            Endpoint::E | Endpoint::Capture | Endpoint::Engage | Endpoint::Track
        )
    }

    pub fn allows_engage(self) -> bool {
        self == Endpoint::Engage
    }

    fn body_limit(self, state: &AppState) -> usize {
        let limits = &state.shared.limits;
        match self {
            Endpoint::Batch => limits.max_batch_body_bytes,
            _ => limits.max_body_bytes,
        }
    }
}

/// Entry point of every capture route.
pub async fn capture(state: AppState, endpoint: Endpoint, req: Request) -> Response {
    let started = Instant::now();
    // Past the limit, answering at once is cheaper for everybody than queueing: SDKs retry.
    let Ok(_permit) = state.shared.requests.try_acquire() else {
        let response = CaptureError::Overloaded.into_response();
        metrics::request(
            endpoint.path(),
            response.status().as_u16(),
            started.elapsed(),
        );
        return response;
    };
    let span = tracing::info_span!(
        "capture",
        route = endpoint.path(),
        method = %req.method(),
        events = tracing::field::Empty,
    );
    let result = handle(&state, endpoint, req).instrument(span.clone()).await;
    let response = match result {
        Ok(Answer::Beacon) => StatusCode::NO_CONTENT.into_response(),
        Ok(Answer::Ok) => {
            (StatusCode::OK, Json(serde_json::json!({"status": "Ok"}))).into_response()
        }
        Err(err) => {
            span.in_scope(|| {
                if err.status().is_server_error() {
                    tracing::warn!(code = err.code(), %err, "capture request failed");
                } else {
                    tracing::debug!(code = err.code(), %err, "capture request refused");
                }
            });
            err.into_response()
        }
    };
    metrics::request(
        endpoint.path(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

enum Answer {
    Ok,
    Beacon,
}

async fn handle(
    state: &AppState,
    endpoint: Endpoint,
    req: Request,
) -> Result<Answer, CaptureError> {
    let (parts, body) = req.into_parts();
    // Only GET and POST carry events. HEAD in particular must never store what its body
    // carries (the framework routes it with GET); OPTIONS is answered like PostHog does.
    match parts.method {
        axum::http::Method::GET | axum::http::Method::POST => {}
        axum::http::Method::OPTIONS => return Ok(Answer::Ok),
        ref other => return Err(CaptureError::MethodNotAllowed(other.to_string())),
    }
    let query = CaptureQuery::parse(parts.uri.query());
    let answer = if query.beacon {
        Answer::Beacon
    } else {
        Answer::Ok
    };
    let limit = endpoint.body_limit(state);
    if content_length(&parts.headers).is_some_and(|len| len > limit) {
        return Err(body_too_big(limit));
    }
    let timeout = Duration::from_millis(state.shared.limits.body_read_timeout_ms);
    let body = read_body(body, limit, timeout).await?;

    let input = PrepareInput {
        body,
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        content_encoding: header_text(&parts.headers, header::CONTENT_ENCODING),
        ip: client_ip(&parts),
        query,
        endpoint,
        now: Utc::now(),
        max_decompressed_bytes: state.shared.limits.max_decompressed_bytes,
        budget: Arc::clone(&state.shared.decode_budget),
    };
    let records = if !decodes_inline(&input) {
        let span = tracing::Span::current();
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| build_records(&state, prepare(input)?))
        })
        .await
        .map_err(|e| CaptureError::Internal(format!("decoding task failed: {e}")))??
    } else {
        build_records(state, prepare(input)?)?
    };
    tracing::Span::current().record("events", records.len());
    deliver(state, records).await?;
    Ok(answer)
}

/// Everything [`prepare`] needs, owned so it can move to the blocking pool.
#[derive(Debug)]
pub(crate) struct PrepareInput {
    pub body: Bytes,
    pub query: CaptureQuery,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub ip: String,
    pub endpoint: Endpoint,
    pub now: DateTime<Utc>,
    pub max_decompressed_bytes: usize,
    pub budget: Arc<DecodeBudget>,
}

/// Small plain JSON, which costs what it weighs to decode: no compression hint or encoding, no
/// `?data=`, and a body that starts like JSON.
fn decodes_inline(input: &PrepareInput) -> bool {
    input.body.len() <= INLINE_DECODE_BYTES
        && input.query.data.is_none()
        && input.query.compression.is_none()
        && input.content_encoding.is_none()
        && matches!(input.body.trim_ascii_start().first(), Some(b'{' | b'['))
}

/// Decodes and validates a whole request. Either every event is valid or the request fails.
pub(crate) fn prepare(input: PrepareInput) -> Result<Vec<EventMessage>, CaptureError> {
    // Held until the decoded text is parsed and dropped, below.
    let mut reservation = input.budget.reserve();
    let text = decode_payload(
        &input.body,
        &input.query,
        DecodeOptions {
            content_type: input.content_type.as_deref(),
            content_encoding: input.content_encoding.as_deref(),
            legacy_path: input.endpoint.is_legacy(),
            max_decompressed_bytes: input.max_decompressed_bytes,
        },
        &mut |bytes| reservation.grow_to(bytes),
    )?;
    let parsed = parse_body(&text, input.endpoint.allows_engage())?;
    drop(text);
    drop(reservation);
    if parsed.events.is_empty() {
        return Err(CaptureError::EmptyBatch);
    }
    metrics::batch_size(parsed.events.len());
    if let Some(version) = &input.query.lib_version {
        tracing::debug!(lib_version = %version, "sdk version");
    }

    let mut events = parsed.events;
    let before = events.len();
    // Web-vitals performance events are not stored by PostHog; dropping them here saves Kafka.
    events.retain(|e| e.event != "$performance_event");
    metrics::dropped("performance_event", (before - events.len()) as u64);
    if events.is_empty() {
        return Ok(Vec::new());
    }

    let token = resolve_token(parsed.token.as_deref(), &events)?;
    let sent_at = parsed.sent_at.or_else(|| {
        input
            .query
            .sent_at_ms
            .as_deref()
            .and_then(sent_at_from_query)
    });
    let ctx = RequestContext {
        token,
        ip: input.ip,
        now: input.now,
        sent_at,
        historical_migration: parsed.historical_migration,
    };
    events.into_iter().map(|e| process_event(e, &ctx)).collect()
}

/// Routes every event and serializes its message. Dropped events are left out; size checks run
/// here, before anything is sent, so a request refused with 413 leaves nothing behind.
pub(crate) fn build_records(
    state: &AppState,
    events: Vec<EventMessage>,
) -> Result<Vec<(Topic, ProduceRecord)>, CaptureError> {
    let shared = &state.shared;
    let now = rfc3339(Utc::now());
    let mut records = Vec::with_capacity(events.len());
    let mut dropped = 0u64;
    for processed in events {
        let key = processed.partition_key();
        let event = &processed.event;
        let person_processing_disabled = shared
            .router
            .person_processing_disabled(&event.token, &event.distinct_id);
        let route = shared.router.route(RouteInput {
            token: &event.token,
            distinct_id: &event.distinct_id,
            partition_key: &key,
            historical_migration: event.historical_migration,
            person_processing_disabled,
        });
        let (topic, keyed, reason) = match route {
            Route::Drop => {
                dropped += 1;
                continue;
            }
            Route::Produce {
                topic,
                keyed,
                reason,
            } => (topic, keyed, reason),
        };
        let mut hdrs = processed.headers;
        if person_processing_disabled {
            hdrs.set(headers::FORCE_DISABLE_PERSON_PROCESSING, "true");
        }
        if let Some(reason) = reason {
            metrics::rerouted(topic.label(), reason);
            if topic == Topic::Dlq {
                hdrs.set(headers::DLQ_REASON, reason)
                    .set(headers::DLQ_STEP, "capture")
                    .set(headers::DLQ_TIMESTAMP, now.as_str());
            }
        }
        let payload = serde_json::to_string(&processed.event)
            .map_err(|e| CaptureError::Internal(format!("could not serialize an event: {e}")))?;
        let record = ProduceRecord {
            topic: shared.topics.name(topic).to_owned(),
            key: keyed.then_some(key),
            payload,
            headers: hdrs,
        };
        if record.approximate_size() > shared.message_max_bytes {
            metrics::rejected("event_too_big", 1);
            return Err(CaptureError::EventTooBig(format!(
                "an event is {} bytes, the limit is {}",
                record.approximate_size(),
                shared.message_max_bytes
            )));
        }
        records.push((topic, record));
    }
    metrics::dropped("drop_list", dropped);
    Ok(records)
}

/// Produces every record and waits for every acknowledgement.
///
/// A Kafka failure after sending can leave part of a request stored; the client's retry then
/// duplicates those events, which downstream deduplicates by uuid.
async fn deliver(
    state: &AppState,
    records: Vec<(Topic, ProduceRecord)>,
) -> Result<(), CaptureError> {
    let shared = &state.shared;
    // With the broker known to be down, librdkafka would queue the request's events until
    // `message_timeout_ms` and then fail them anyway: answer 503 at once, so SDKs retry later
    // and no connection is held for the whole timeout.
    if !records.is_empty() && !shared.producer.is_ready() {
        metrics::rejected("service_unavailable", records.len() as u64);
        return Err(CaptureError::RetryableSink("kafka is unavailable".into()));
    }
    let deliveries = records.into_iter().map(|(topic, record)| {
        // Enqueued here, in request order; only the acknowledgements are awaited together.
        let delivery = shared.producer.send(record);
        async move { (topic, delivery.await) }
    });
    let results = join_all(deliveries.collect::<Vec<_>>()).await;

    let mut too_large = None;
    let mut retryable = None;
    let mut failed = 0u64;
    for (topic, result) in results {
        match result {
            Ok(()) => metrics::stored(topic.label(), 1),
            Err(ProduceError::MessageTooLarge(msg)) => {
                failed += 1;
                too_large.get_or_insert(msg);
            }
            Err(ProduceError::Retryable(msg)) => {
                failed += 1;
                retryable.get_or_insert(msg);
            }
        }
    }
    // A message that can never fit is the client's problem to fix (413), even if others in the
    // request only failed transiently: retrying the same request could not succeed.
    if let Some(msg) = too_large {
        metrics::rejected("event_too_big", failed);
        return Err(CaptureError::EventTooBig(msg));
    }
    if let Some(msg) = retryable {
        metrics::rejected("service_unavailable", failed);
        return Err(CaptureError::RetryableSink(msg));
    }
    Ok(())
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn body_too_big(limit: usize) -> CaptureError {
    CaptureError::EventTooBig(format!("request body exceeds {limit} bytes"))
}

/// Reads the body up to `limit` bytes within `timeout`, refusing as soon as the limit is passed
/// rather than buffering an oversized body first.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, CaptureError> {
    let collect = async move {
        let mut body = body;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                CaptureError::RequestDecoding(format!("could not read the body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(body_too_big(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, collect)
        .await
        .map_err(|_| CaptureError::BodyReadTimeout)?
}

/// The first `X-Forwarded-For` entry (the original client behind proxies), else the peer.
/// Without either (in-process tests) the loopback address stands in.
fn client_ip(parts: &Parts) -> String {
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if let Some(ip) = forwarded {
        return ip.to_owned();
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::decompress::gzip;
    use serde_json::json;

    fn input(body: &[u8], endpoint: Endpoint, query: &str) -> PrepareInput {
        PrepareInput {
            body: Bytes::copy_from_slice(body),
            query: CaptureQuery::parse(Some(query)),
            content_type: None,
            content_encoding: None,
            ip: "1.2.3.4".into(),
            endpoint,
            now: DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
                .unwrap()
                .to_utc(),
            max_decompressed_bytes: 1 << 20,
            budget: DecodeBudget::new(1 << 20),
        }
    }

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn legacy_paths() {
        let legacy: Vec<_> = Endpoint::ALL
            .iter()
            .filter(|e| e.is_legacy())
            .map(|e| e.path())
            .collect();
        assert_eq!(legacy, ["/e", "/capture", "/track", "/engage"]);
    }

    #[test]
    fn sent_at_from_underscore_param_corrects_skew() {
        // Client clock 1 h behind the server: `_` says 11:00, the event happened 11:00 - 5 s.
        let b = body(
            json!([{"event":"e","distinct_id":"d","token":"phc","timestamp":"2026-03-01T10:59:55Z"}]),
        );
        let got = prepare(input(&b, Endpoint::IV0E, "_=1772362800000")).unwrap();
        assert_eq!(got[0].event.timestamp, "2026-03-01T11:59:55.000000Z");
        assert_eq!(
            got[0].event.sent_at.as_deref(),
            Some("2026-03-01T11:00:00.000000Z")
        );
    }

    #[test]
    fn batch_sent_at_wins_over_underscore_param() {
        let b = body(json!({"api_key":"phc","sent_at":"2026-03-01T11:30:00Z",
                            "batch":[{"event":"e","distinct_id":"d","timestamp":"2026-03-01T11:29:00Z"}]}));
        let got = prepare(input(&b, Endpoint::Batch, "_=1772362800000")).unwrap();
        assert_eq!(got[0].event.timestamp, "2026-03-01T11:59:00.000000Z");
    }

    #[test]
    fn empty_batch_and_performance_events() {
        let err = prepare(input(b"[]", Endpoint::E, "")).unwrap_err();
        assert_eq!(err, CaptureError::EmptyBatch);
        let b = body(json!({"api_key":"phc","batch":[]}));
        assert_eq!(
            prepare(input(&b, Endpoint::Batch, "")).unwrap_err(),
            CaptureError::EmptyBatch
        );

        // Only performance events: nothing to store, no token needed.
        let b = body(json!([{"event":"$performance_event"}]));
        assert!(prepare(input(&b, Endpoint::E, "")).unwrap().is_empty());

        let b = body(
            json!([{"event":"$performance_event","distinct_id":"d","token":"phc"},
                            {"event":"keep","distinct_id":"d","token":"phc"}]),
        );
        let got = prepare(input(&b, Endpoint::E, "")).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.event, "keep");
    }

    #[test]
    fn one_bad_event_fails_the_request() {
        let b = body(json!([{"event":"ok","distinct_id":"d","token":"phc"},
                            {"event":"bad","token":"phc"}]));
        assert_eq!(
            prepare(input(&b, Endpoint::E, "")).unwrap_err(),
            CaptureError::MissingDistinctId
        );
    }

    #[test]
    fn gzip_batch_with_historical_migration() {
        let b = gzip(&body(json!({"token":"phc","historical_migration":true,
                                  "batch":[{"event":"old","distinct_id":"d"}]})));
        let got = prepare(input(&b, Endpoint::Batch, "")).unwrap();
        assert!(got[0].event.historical_migration);
        assert_eq!(got[0].event.token, "phc");
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let seeds: [&[u8]; 5] = [
            b"[{\"event\":",
            b"\x1f\x8b\x08",
            b"data=",
            b"{\"batch\":[",
            b"eyJ",
        ];
        for round in 0..2000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..(round % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push((seed & 0xff) as u8);
            }
            for endpoint in [Endpoint::E, Endpoint::Engage, Endpoint::Batch] {
                let mut i = input(&bytes, endpoint, "");
                if round % 3 == 0 {
                    i.query = CaptureQuery::parse(Some("compression=lz64"));
                }
                let _ = prepare(i);
            }
        }
    }
}
