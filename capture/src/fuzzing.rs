//! Fuzzing entry point: one capture request, decoded and validated exactly as the handler does
//! (`handler::prepare`), minus the HTTP server, routing and Kafka.
//!
//! Shared by the `cargo fuzz` target in `capture/fuzz` (run with `scripts/fuzz.sh`) and by the
//! test that replays the seed corpus, so `cargo test` exercises the harness too. It is not part
//! of the service's API.
//!
//! # Input format
//!
//! Every byte string is a valid input. Up to [`HEADER_LEN`] leading bytes choose the request's
//! shape (missing bytes count as zero); the rest is the payload.
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | endpoint: [`Endpoint::ALL`]`[b % 6]` |
//! | 1 | `Content-Type`: [`CONTENT_TYPES`]`[b % len]` |
//! | 2 | `Content-Encoding`: [`ENCODINGS`]`[b % len]` |
//! | 3 | `compression=` query parameter: [`ENCODINGS`]`[b % len]` |
//! | 4 | flags, see below |
//!
//! Flags: bit 0 `beacon=1`; bit 1 `ver=1.2.3`; bits 2–4 the `_` (sent_at) parameter,
//! [`SENT_AT`]`[(b >> 2) & 7]`; bit 5 the payload goes percent-encoded into `data=` and the body
//! is empty; bit 6 the payload up to its first `\n` is appended raw to the query string and
//! only the rest is the payload.

use chrono::{DateTime, Utc};
use hogstream_event::time::{parse_rfc3339, rfc3339};
use hogstream_event::{RawEvent, headers};

use crate::distinct_id::MAX_DISTINCT_ID_CHARS;
use crate::error::CaptureError;
use crate::event::EventMessage;
use crate::handler::{Endpoint, PrepareInput, prepare};
use crate::payload::{CaptureQuery, DecodeOptions, decode_payload};
use crate::timestamp::MAX_FUTURE;
use crate::token::{MAX_TOKEN_LEN, validate_token};

/// Bytes of request shape in front of the payload.
pub const HEADER_LEN: usize = 5;

/// The decompression cap under fuzzing: small, so bombs fail fast.
pub const MAX_DECOMPRESSED_BYTES: usize = 1 << 20;

/// The fixed `now` of every fuzzed request, so a crash replays identically.
pub const NOW: &str = "2026-03-01T12:00:00Z";

const CLIENT_IP: &str = "203.0.113.7";

/// `Content-Type` choices; `None` means no header.
pub const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded; charset=UTF-8"),
    Some("text/plain;charset=UTF-8"),
    Some("APPLICATION/X-WWW-FORM-URLENCODED"),
    Some("multipart/form-data; boundary=x"),
    Some(""),
];

/// `Content-Encoding` and `compression=` choices; `None` means absent.
pub const ENCODINGS: [Option<&str>; 16] = [
    None,
    Some("gzip"),
    Some("gzip-js"),
    Some("lz64"),
    Some("lz-string"),
    Some("base64"),
    Some("b64"),
    Some("GZIP"),
    Some(" LZ64 "),
    Some("Base64"),
    Some("br"),
    Some("deflate"),
    Some("identity"),
    Some(""),
    Some(" "),
    Some("gzip, br"),
];

/// `_` (sent_at in milliseconds) choices; `None` means absent.
pub const SENT_AT: [Option<&str>; 8] = [
    None,
    Some("1772362800000"),
    Some("1772362800"),
    Some("-1"),
    Some("1.7723628e12"),
    Some("abc"),
    Some("9223372036854775807"),
    Some(""),
];

/// One request built from fuzzer bytes.
#[derive(Debug, Clone)]
pub struct FuzzRequest<'a> {
    pub endpoint: Endpoint,
    pub content_type: Option<&'static str>,
    pub content_encoding: Option<&'static str>,
    /// The raw query string (without `?`).
    pub query: String,
    pub body: &'a [u8],
}

impl<'a> FuzzRequest<'a> {
    /// Reads the format described in the module documentation. Never fails.
    pub fn from_bytes(data: &'a [u8]) -> Self {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let pick = |i: usize, len: usize| usize::from(byte(i)) % len;
        let flags = byte(4);
        let mut payload = data.get(HEADER_LEN..).unwrap_or_default();

        let mut query = Vec::new();
        if let Some(compression) = ENCODINGS[pick(3, ENCODINGS.len())] {
            query.push(format!("compression={}", urlencode(compression.as_bytes())));
        }
        if let Some(sent_at) = SENT_AT[usize::from((flags >> 2) & 7)] {
            query.push(format!("_={sent_at}"));
        }
        if flags & 1 != 0 {
            query.push("beacon=1".to_owned());
        }
        if flags & 2 != 0 {
            query.push("ver=1.2.3".to_owned());
        }
        if flags & 64 != 0 {
            let split = payload
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(payload.len());
            query.push(String::from_utf8_lossy(&payload[..split]).into_owned());
            payload = payload.get(split + 1..).unwrap_or_default();
        }
        let body = if flags & 32 != 0 {
            query.push(format!("data={}", urlencode(payload)));
            &[][..]
        } else {
            payload
        };
        FuzzRequest {
            endpoint: Endpoint::ALL[pick(0, Endpoint::ALL.len())],
            content_type: CONTENT_TYPES[pick(1, CONTENT_TYPES.len())],
            content_encoding: ENCODINGS[pick(2, ENCODINGS.len())],
            query: query.join("&"),
            body,
        }
    }
}

fn urlencode(bytes: &[u8]) -> String {
    form_urlencoded::byte_serialize(bytes).collect()
}

fn now() -> DateTime<Utc> {
    parse_rfc3339(NOW).expect("NOW is RFC 3339")
}

/// Decodes and validates one request through the handler's own path.
pub fn decode_request(req: &FuzzRequest<'_>) -> Result<Vec<EventMessage>, CaptureError> {
    prepare(PrepareInput {
        body: bytes::Bytes::copy_from_slice(req.body),
        query: CaptureQuery::parse(Some(&req.query)),
        content_type: req.content_type.map(str::to_owned),
        content_encoding: req.content_encoding.map(str::to_owned),
        ip: CLIENT_IP.to_owned(),
        endpoint: req.endpoint,
        now: now(),
        max_decompressed_bytes: MAX_DECOMPRESSED_BYTES,
        budget: crate::payload::budget::DecodeBudget::new(usize::MAX),
    })
}

/// Runs fuzzer bytes through [`decode_request`] and checks the invariants every answer must
/// keep.
///
/// # Panics
///
/// When an invariant is broken; that is the point: the fuzzer reports the panic as a crash.
pub fn run(data: &[u8]) -> Result<Vec<EventMessage>, CaptureError> {
    let req = FuzzRequest::from_bytes(data);
    let query = CaptureQuery::parse(Some(&req.query));
    let decoded = decode_payload(
        req.body,
        &query,
        DecodeOptions {
            content_type: req.content_type,
            content_encoding: req.content_encoding,
            legacy_path: req.endpoint.is_legacy(),
            max_decompressed_bytes: MAX_DECOMPRESSED_BYTES,
        },
        &mut |_| Ok(()),
    );
    if let Ok(text) = &decoded {
        assert!(
            text.len() <= MAX_DECOMPRESSED_BYTES,
            "decoded {} bytes, over the {MAX_DECOMPRESSED_BYTES} cap",
            text.len()
        );
    }

    let result = decode_request(&req);
    match (&decoded, &result) {
        (Err(decode_err), Err(err)) => assert_eq!(decode_err, err, "decoding failed differently"),
        (Err(decode_err), Ok(_)) => panic!("decoding failed ({decode_err}) but the request passed"),
        (Ok(_), _) => {}
    }
    match &result {
        Ok(events) => {
            events.iter().for_each(check_event);
            assert!(
                events
                    .windows(2)
                    .all(|w| w[0].event.token == w[1].event.token),
                "one request, one token"
            );
        }
        Err(err) => assert!(
            err.status().is_client_error(),
            "a payload must only ever be the client's fault, got {err:?}"
        ),
    }
    result
}

fn check_event(p: &EventMessage) {
    let e = &p.event;
    assert!(!e.event.is_empty(), "empty event name");
    assert_ne!(
        e.event, "$performance_event",
        "performance events are dropped"
    );
    assert_eq!(validate_token(&e.token), Ok(e.token.as_str()), "bad token");
    assert!(e.token.len() <= MAX_TOKEN_LEN);
    assert!(!e.distinct_id.trim().is_empty(), "blank distinct_id");
    assert!(
        e.distinct_id.chars().count() <= MAX_DISTINCT_ID_CHARS,
        "distinct_id longer than {MAX_DISTINCT_ID_CHARS} chars"
    );
    assert!(!e.distinct_id.contains('\0'), "NUL in distinct_id");
    assert!(e.ip == CLIENT_IP || e.ip == "127.0.0.1", "ip {:?}", e.ip);

    let now = now();
    assert_eq!(e.now, rfc3339(now));
    let ts = parse_rfc3339(&e.timestamp)
        .unwrap_or_else(|| panic!("timestamp {:?} is not RFC 3339", e.timestamp));
    assert!(ts <= now + MAX_FUTURE, "timestamp {ts} is too far ahead");
    if let Some(sent_at) = &e.sent_at {
        assert!(parse_rfc3339(sent_at).is_some(), "sent_at {sent_at:?}");
    }

    let data: RawEvent = serde_json::from_str(&e.data)
        .unwrap_or_else(|err| panic!("`data` does not parse back: {err}: {}", e.data));
    assert_eq!(data.event, e.event);

    let h = &p.headers;
    assert_eq!(h.get(headers::TOKEN), Some(e.token.as_str()));
    assert_eq!(h.get(headers::DISTINCT_ID), Some(e.distinct_id.as_str()));
    assert_eq!(h.get(headers::EVENT), Some(e.event.as_str()));
    assert_eq!(h.get(headers::UUID), Some(e.uuid.to_string().as_str()));
    assert_eq!(
        h.get(headers::TIMESTAMP),
        Some(ts.timestamp_millis().to_string().as_str())
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every seed of `capture/fuzz/corpus/decode_payload` (written by `capture/fuzz/gen_corpus.py`)
    /// goes through the fuzz target's own entry point, invariants included. `ok-*` seeds must
    /// yield events; `err-<code>-*` seeds must fail with that code.
    #[test]
    fn seed_corpus_replays() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_payload");
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        seeds.sort();
        assert!(
            seeds.len() >= 10,
            "only {} seeds in {}",
            seeds.len(),
            dir.display()
        );
        for path in seeds {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let result = run(&std::fs::read(&path).unwrap());
            if name.starts_with("ok-") {
                let events = result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert!(!events.is_empty(), "{name}: no events");
            } else if let Some(code) = name.strip_prefix("err-").and_then(|n| n.split('-').next()) {
                assert_eq!(result.map_err(|e| e.code()).err(), Some(code), "{name}");
            } else {
                panic!("{name}: seed names start with ok- or err-<code>-");
            }
        }
    }

    #[test]
    fn request_shape_comes_from_the_header_bytes() {
        let req = FuzzRequest::from_bytes(b"");
        assert_eq!(req.endpoint, Endpoint::E);
        assert_eq!((req.content_type, req.content_encoding), (None, None));
        assert_eq!(req.query, "");
        assert!(req.body.is_empty());

        // /batch, urlencoded form, gzip header, lz64 query hint, beacon + ver + `_` + data=.
        let req = FuzzRequest::from_bytes(b"\x05\x02\x01\x03\x27{\"a\":1}");
        assert_eq!(req.endpoint, Endpoint::Batch);
        assert_eq!(req.content_type, Some("application/x-www-form-urlencoded"));
        assert_eq!(req.content_encoding, Some("gzip"));
        assert_eq!(
            req.query,
            "compression=lz64&_=1772362800000&beacon=1&ver=1.2.3&data=%7B%22a%22%3A1%7D"
        );
        assert!(req.body.is_empty());

        // Raw query: up to the first newline; indices wrap around.
        let req = FuzzRequest::from_bytes(b"\x07\x08\x10\x00\x40a=%ZZ&data\nbody");
        assert_eq!(req.endpoint, Endpoint::IV0E);
        assert_eq!((req.content_type, req.content_encoding), (None, None));
        assert_eq!(req.query, "a=%ZZ&data");
        assert_eq!(req.body, b"body");
    }

    /// Crashes the fuzzer found, replayed byte for byte. Root causes and their own tests:
    /// `timestamp::tests::sent_at_outside_rfc3339_years_is_ignored` and
    /// `shapes::tests::batch_sent_at_outside_rfc3339_years_is_ignored`.
    #[test]
    fn fuzzer_crashes_stay_fixed() {
        // crash-8a982a86…: /batch whose `sent_at` has the year -13, written to Kafka as
        // "-0013-06-01T11:00:00.000000Z" (not RFC 3339).
        let mut crash = b"\x05\x01\x00\x00\x00".to_vec();
        crash.extend_from_slice(br#"{"api_key":"phc_fuzz","histn":true,"sent_at":"-013-06-01T11:00:00Z","batch":[{"event":"old","distinct_id":"u1","timestamp":"2026-03okiedess","dist":{"$cookieapture_internal":true}}]}"#);
        let events = run(&crash).unwrap();
        assert_eq!(events[0].event.sent_at, None);

        // Found by review of the same invariant: the first 200 characters of the id are blank.
        let mut blank = b"\x01\x00\x00\x00\x00".to_vec();
        blank.extend_from_slice(br#"{"event":"e","token":"phc","distinct_id":""#);
        blank.extend_from_slice(&[b' '; 200]);
        blank.extend_from_slice(br#"x"}"#);
        assert_eq!(run(&blank).unwrap_err(), CaptureError::MissingDistinctId);
    }

    #[test]
    fn short_and_garbage_inputs_are_ordinary_errors() {
        for data in [
            &b""[..],
            b"\x01",
            b"\x00\x00\x00\x00\x00",
            b"\x01\x00\x01\x00\x00\x1f\x8b\x08",
            b"\x04\x00\x00\x03\x00!!!!",
        ] {
            assert!(run(data).is_err(), "{data:?}");
        }
    }
}
