//! Turning a request into events: where the payload is, how it is encoded, and its JSON shape.
//!
//! The order follows PostHog's capture (`docs/posthog-rules.md` §1.2 "Decoding").

pub mod budget;
pub mod decompress;
pub mod lz64;
pub mod shapes;

use std::borrow::Cow;

use crate::error::CaptureError;
use decompress::{
    Grow, decode_lenient_base64, decode_strict_base64, gunzip_within, is_gzip, looks_like_base64,
    too_big,
};

/// The compression a client declared. Unknown values count as no hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    LzString,
    Base64,
}

impl Compression {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gzip-js" => Some(Compression::Gzip),
            "lz64" | "lz-string" => Some(Compression::LzString),
            "base64" | "b64" => Some(Compression::Base64),
            _ => None,
        }
    }
}

/// The query parameters capture reads. The token is never taken from here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureQuery {
    /// Legacy GET payload (`?data=`), already percent-decoded.
    pub data: Option<String>,
    pub compression: Option<String>,
    /// posthog-js `_`: sent_at in milliseconds.
    pub sent_at_ms: Option<String>,
    /// `ver` or `lib_version`; only logged.
    pub lib_version: Option<String>,
    /// `beacon=1`: answer 204 instead of 200.
    pub beacon: bool,
}

impl CaptureQuery {
    /// Parses leniently: malformed pairs are skipped, never an error.
    pub fn parse(query: Option<&str>) -> Self {
        let mut out = CaptureQuery::default();
        let Some(query) = query else {
            return out;
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "data" => out.data = Some(value.into_owned()),
                "compression" => out.compression = Some(value.into_owned()),
                "_" => out.sent_at_ms = Some(value.into_owned()),
                "ver" | "lib_version" => out.lib_version = Some(value.into_owned()),
                "beacon" => out.beacon = matches!(value.as_ref(), "1" | "true"),
                _ => {}
            }
        }
        out
    }
}

/// Everything besides the body that steers decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// `/e`, `/capture*`, `/engage*`, `/track*`: a second base64 layer is tolerated.
    pub legacy_path: bool,
    pub max_decompressed_bytes: usize,
}

/// Decodes the payload of a request to JSON text.
///
/// 1. The payload is the `data` query parameter if non-empty, else the body.
/// 2. A urlencoded form contributes its `data` field (spaces turned back into `+` when that
///    makes it base64) and may carry `compression`.
/// 3. The hint is the first of form `compression`, query `compression`, `Content-Encoding`.
/// 4. Strict base64 that is not a form and not declared gzip/lz64 is decoded; an explicit
///    `base64` hint decodes leniently otherwise.
/// 5. gzip by hint or magic bytes, else lz-string by hint, else plain UTF-8; gzip and lz-string
///    stop at `max_decompressed_bytes`.
/// 6. On legacy paths, text that is still strict base64 is decoded once more.
///
/// hogstream deviations: a body starting with `data=` is read as a form whatever its
/// Content-Type (sendBeacon and some proxies lose the header); the strict-base64 sniff skips
/// declared lz64, whose text is base64-shaped but is not plain base64.
/// The decompressed output is reported to `grow` as it grows (see [`budget`]).
pub fn decode_payload(
    body: &[u8],
    query: &CaptureQuery,
    opts: DecodeOptions<'_>,
    grow: &mut Grow<'_>,
) -> Result<String, CaptureError> {
    let cap = opts.max_decompressed_bytes;
    // The header is a protocol statement, unlike the `compression` hints (which PostHog reads
    // leniently): an encoding we cannot undo must not be taken for plain text.
    if let Some(encoding) = opts
        .content_encoding
        .map(str::trim)
        .filter(|e| !e.is_empty())
        && !encoding.eq_ignore_ascii_case("identity")
        && Compression::parse(encoding).is_none()
    {
        return Err(CaptureError::UnsupportedEncoding(encoding.to_owned()));
    }
    let query_data = query.data.as_deref().filter(|d| !d.is_empty());
    let (source, from_query): (Cow<'_, [u8]>, bool) = match query_data {
        Some(data) => (Cow::Owned(plus_from_spaces(data).into_bytes()), true),
        None => (Cow::Borrowed(body), false),
    };
    if source.trim_ascii().is_empty() {
        return Err(CaptureError::EmptyPayload);
    }

    let is_form =
        !from_query && (is_form_content_type(opts.content_type) || source.starts_with(b"data="));
    let mut form_compression = None;
    let payload: Cow<'_, [u8]> = if is_form {
        let form = Form::parse(&source);
        form_compression = form.compression;
        match form.data.filter(|d| !d.is_empty()) {
            Some(data) => Cow::Owned(plus_from_spaces(&data).into_bytes()),
            None => return Err(CaptureError::EmptyPayload),
        }
    } else {
        source
    };

    let hint = form_compression
        .as_deref()
        .or(query.compression.as_deref())
        .or(opts.content_encoding)
        .filter(|h| !h.trim().is_empty())
        .and_then(Compression::parse);

    let payload: Cow<'_, [u8]> = match hint {
        Some(Compression::Gzip | Compression::LzString) => payload,
        _ if !is_form && looks_like_base64(&payload) && !is_json_scalar(&payload) => {
            Cow::Owned(decode_strict_base64(&payload)?)
        }
        Some(Compression::Base64) => Cow::Owned(decode_lenient_base64(&payload)?),
        None => payload,
    };

    let text = if hint == Some(Compression::Gzip) || is_gzip(&payload) {
        utf8(gunzip_within(&payload, cap, grow)?)?
    } else if hint == Some(Compression::LzString) {
        let packed = std::str::from_utf8(&payload)
            .map_err(|_| CaptureError::RequestDecoding("lz64 payload is not text".into()))?;
        lz64::decompress_within(packed, cap, grow)?
    } else {
        if payload.len() > cap {
            return Err(too_big(cap));
        }
        utf8(payload.into_owned())?
    };

    if opts.legacy_path && looks_like_base64(text.as_bytes()) && !is_json_scalar(text.as_bytes()) {
        return utf8(decode_strict_base64(text.as_bytes())?);
    }
    Ok(text)
}

/// `null`, `true`, `false` and bare numbers are strict base64 too (four letters or digits), but
/// decode to garbage: they are JSON, and answered as a body of the wrong shape.
fn is_json_scalar(bytes: &[u8]) -> bool {
    matches!(bytes.trim_ascii(), b"null" | b"true" | b"false")
        || bytes.trim_ascii().iter().all(u8::is_ascii_digit)
}

fn utf8(bytes: Vec<u8>) -> Result<String, CaptureError> {
    String::from_utf8(bytes)
        .map_err(|e| CaptureError::RequestDecoding(format!("payload is not valid UTF-8: {e}")))
}

fn is_form_content_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// URL decoding turns an unescaped `+` into a space; base64 has `+` but never spaces, so when the
/// restored text is base64 the spaces were pluses.
fn plus_from_spaces(data: &str) -> String {
    if data.contains(' ') {
        let restored = data.replace(' ', "+");
        if looks_like_base64(restored.as_bytes()) {
            return restored;
        }
    }
    data.to_owned()
}

/// The fields of a urlencoded capture form.
struct Form {
    data: Option<String>,
    compression: Option<String>,
}

impl Form {
    fn parse(bytes: &[u8]) -> Self {
        let mut form = Form {
            data: None,
            compression: None,
        };
        for (key, value) in form_urlencoded::parse(bytes) {
            match key.as_ref() {
                "data" => form.data = Some(value.into_owned()),
                "compression" => form.compression = Some(value.into_owned()),
                _ => {}
            }
        }
        form
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`decode_payload`] without a shared budget.
    fn decode(
        body: &[u8],
        query: &CaptureQuery,
        opts: DecodeOptions<'_>,
    ) -> Result<String, CaptureError> {
        decode_payload(body, query, opts, &mut |_| Ok(()))
    }

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use decompress::gzip;

    const JSON: &str = r#"[{"event":"e","distinct_id":"d","properties":{"q":"a+b c"}}]"#;

    fn opts() -> DecodeOptions<'static> {
        DecodeOptions {
            content_type: None,
            content_encoding: None,
            legacy_path: false,
            max_decompressed_bytes: 1 << 20,
        }
    }

    fn form_opts() -> DecodeOptions<'static> {
        DecodeOptions {
            content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
            ..opts()
        }
    }

    fn query(q: &str) -> CaptureQuery {
        CaptureQuery::parse(Some(q))
    }

    fn urlencode(s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    #[test]
    fn compression_names_are_case_insensitive() {
        assert_eq!(Compression::parse("GZIP-JS"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("gzip"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("LZ64"), Some(Compression::LzString));
        assert_eq!(Compression::parse("lz-string"), Some(Compression::LzString));
        assert_eq!(Compression::parse("b64"), Some(Compression::Base64));
        assert_eq!(Compression::parse("Base64"), Some(Compression::Base64));
        assert_eq!(Compression::parse("br"), None);
        assert_eq!(Compression::parse(""), None);
    }

    #[test]
    fn query_parsing() {
        let q = query("data=abc&compression=gzip-js&_=1700000000000&ver=1.2.3&beacon=1&ip=1");
        assert_eq!(q.data.as_deref(), Some("abc"));
        assert_eq!(q.compression.as_deref(), Some("gzip-js"));
        assert_eq!(q.sent_at_ms.as_deref(), Some("1700000000000"));
        assert_eq!(q.lib_version.as_deref(), Some("1.2.3"));
        assert!(q.beacon);
        assert!(!query("beacon=0").beacon);
        assert_eq!(CaptureQuery::parse(None), CaptureQuery::default());
        assert_eq!(query("%%%&=&data").data.as_deref(), Some(""));
    }

    #[test]
    fn plain_json_body() {
        assert_eq!(
            decode(JSON.as_bytes(), &CaptureQuery::default(), opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn empty_payload_is_400() {
        let err = decode(b"", &CaptureQuery::default(), opts()).unwrap_err();
        assert_eq!(err, CaptureError::EmptyPayload);
        assert_eq!(
            decode(b"  \n", &query("data="), opts()),
            Err(CaptureError::EmptyPayload)
        );
        assert_eq!(
            decode(b"ver=1", &CaptureQuery::default(), form_opts()),
            Err(CaptureError::EmptyPayload)
        );
    }

    #[test]
    fn gzip_by_hint_from_query_header_and_form() {
        let packed = gzip(JSON.as_bytes());
        assert_eq!(
            decode(&packed, &query("compression=gzip-js"), opts()).unwrap(),
            JSON
        );
        let header = DecodeOptions {
            content_encoding: Some("gzip"),
            ..opts()
        };
        assert_eq!(
            decode(&packed, &CaptureQuery::default(), header).unwrap(),
            JSON
        );
    }

    #[test]
    fn gzip_hint_on_non_gzip_is_a_decoding_error() {
        let err = decode(JSON.as_bytes(), &query("compression=gzip"), opts()).unwrap_err();
        assert!(matches!(err, CaptureError::RequestDecoding(_)));
    }

    #[test]
    fn gzip_by_magic_bytes_without_hint() {
        let packed = gzip(JSON.as_bytes());
        assert_eq!(
            decode(&packed, &CaptureQuery::default(), opts()).unwrap(),
            JSON
        );
        // An unsupported hint is ignored, so the magic still decides.
        assert_eq!(
            decode(&packed, &query("compression=zstd"), opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn gzip_bomb_hits_the_decompressed_cap() {
        let bomb = gzip(&vec![b' '; 4 << 20]);
        let err = decode(&bomb, &CaptureQuery::default(), opts()).unwrap_err();
        assert!(matches!(err, CaptureError::EventTooBig(_)));
        assert_eq!(err.status().as_u16(), 413);
    }

    #[test]
    fn plain_payload_over_the_cap_is_too_big() {
        let small = DecodeOptions {
            max_decompressed_bytes: 10,
            ..opts()
        };
        let err = decode(JSON.as_bytes(), &CaptureQuery::default(), small).unwrap_err();
        assert!(matches!(err, CaptureError::EventTooBig(_)));
    }

    #[test]
    fn lz64_form_body_round_trip() {
        let packed = lz_str::compress_to_base64(JSON);
        let body = format!("data={}&compression=lz64&ver=1.0", urlencode(&packed));
        assert_eq!(
            decode(body.as_bytes(), &CaptureQuery::default(), form_opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn lz64_raw_body_with_query_hint() {
        let packed = lz_str::compress_to_base64(JSON);
        let got = decode(packed.as_bytes(), &query("compression=lz64"), opts()).unwrap();
        assert_eq!(got, JSON);
    }

    #[test]
    fn lz64_bomb_hits_the_cap() {
        let packed = lz_str::compress_to_base64("x".repeat(200_000).as_str());
        let body = format!("data={}&compression=lz64", urlencode(&packed));
        let small = DecodeOptions {
            max_decompressed_bytes: 100_000,
            ..form_opts()
        };
        let err = decode(body.as_bytes(), &CaptureQuery::default(), small).unwrap_err();
        assert!(matches!(err, CaptureError::EventTooBig(_)));
    }

    #[test]
    fn raw_base64_body_is_detected() {
        let b64 = STANDARD.encode(JSON);
        assert_eq!(
            decode(b64.as_bytes(), &CaptureQuery::default(), opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn base64_wrapped_gzip_is_detected() {
        let b64 = STANDARD.encode(gzip(JSON.as_bytes()));
        assert_eq!(
            decode(b64.as_bytes(), &CaptureQuery::default(), opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn declared_base64_in_form_is_decoded_leniently() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(JSON);
        let body = format!("data={}&compression=base64", urlencode(&b64));
        assert_eq!(
            decode(body.as_bytes(), &CaptureQuery::default(), form_opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn form_data_with_spaces_for_pluses() {
        // A run of `>` always contains an aligned `>>>`, which encodes to `Pj4+`; that `+`
        // arrives as a space when the client did not escape it.
        let json = r#"{"event":">>>>>>","distinct_id":"d"}"#;
        let b64 = STANDARD.encode(json);
        assert!(b64.contains('+'), "fixture must contain a plus: {b64}");
        let body = format!("data={}", b64.replace('+', "%20"));
        let legacy = DecodeOptions {
            legacy_path: true,
            ..form_opts()
        };
        assert_eq!(
            decode(body.as_bytes(), &CaptureQuery::default(), legacy).unwrap(),
            json
        );
        // Form data that is not base64 keeps its spaces.
        let body = format!("data={}", urlencode(JSON));
        assert_eq!(
            decode(body.as_bytes(), &CaptureQuery::default(), form_opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn form_is_recognised_without_content_type() {
        let body = format!("data={}", urlencode(JSON));
        assert_eq!(
            decode(body.as_bytes(), &CaptureQuery::default(), opts()).unwrap(),
            JSON
        );
    }

    #[test]
    fn base64_form_data_is_decoded_only_on_legacy_paths() {
        let body = format!("data={}", urlencode(&STANDARD.encode(JSON)));
        let legacy = DecodeOptions {
            legacy_path: true,
            ..form_opts()
        };
        assert_eq!(
            decode(body.as_bytes(), &CaptureQuery::default(), legacy).unwrap(),
            JSON
        );
        let modern = decode(body.as_bytes(), &CaptureQuery::default(), form_opts()).unwrap();
        assert_eq!(modern, STANDARD.encode(JSON));
    }

    #[test]
    fn get_data_query_param_wins_over_body() {
        let q = CaptureQuery {
            data: Some(STANDARD.encode(JSON).replace('+', " ")),
            ..CaptureQuery::default()
        };
        assert_eq!(decode(b"ignored", &q, opts()).unwrap(), JSON);
        let q = query(&format!("data={}", urlencode(JSON)));
        assert_eq!(decode(b"", &q, opts()).unwrap(), JSON);
    }

    #[test]
    fn double_base64_on_legacy_path_only() {
        let twice = STANDARD.encode(STANDARD.encode(JSON));
        let legacy = DecodeOptions {
            legacy_path: true,
            ..opts()
        };
        assert_eq!(
            decode(twice.as_bytes(), &CaptureQuery::default(), legacy).unwrap(),
            JSON
        );
        let modern = decode(twice.as_bytes(), &CaptureQuery::default(), opts()).unwrap();
        assert_eq!(modern, STANDARD.encode(JSON));
    }

    #[test]
    fn invalid_utf8_is_a_decoding_error() {
        let err = decode(b"{\"event\":\"\xff\"}", &CaptureQuery::default(), opts()).unwrap_err();
        assert!(matches!(err, CaptureError::RequestDecoding(_)));
        assert_eq!(err.status().as_u16(), 400);
    }
}
