//! Byte-level decoders: base64 detection and decoding, and size-capped gzip.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use flate2::read::GzDecoder;

use crate::error::CaptureError;

/// The three bytes every gzip member starts with (magic + deflate method). Many SDKs gzip without
/// saying so, so this is checked regardless of hints.
pub const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Whether the bytes are canonical padded standard base64 (ASCII whitespace around is allowed).
///
/// JSON never is (it starts with `{` or `[`), and neither is gzip, so this safely spots payloads
/// that SDKs base64-encoded without saying so.
pub fn looks_like_base64(bytes: &[u8]) -> bool {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() || !trimmed.len().is_multiple_of(4) {
        return false;
    }
    let body = trimmed
        .strip_suffix(b"==")
        .or_else(|| trimmed.strip_suffix(b"="));
    let body = body.unwrap_or(trimmed);
    body.iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        && STANDARD.decode(trimmed).is_ok()
}

/// Decodes base64 that [`looks_like_base64`] accepted.
pub fn decode_strict_base64(bytes: &[u8]) -> Result<Vec<u8>, CaptureError> {
    STANDARD
        .decode(bytes.trim_ascii())
        .map_err(|e| CaptureError::RequestDecoding(format!("invalid base64: {e}")))
}

/// Decodes base64 the client declared (`compression=base64`): any whitespace is ignored and the
/// standard or URL-safe alphabet, padded or not, is accepted.
pub fn decode_lenient_base64(bytes: &[u8]) -> Result<Vec<u8>, CaptureError> {
    let compact: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(decoded) = engine.decode(&compact) {
            return Ok(decoded);
        }
    }
    Err(CaptureError::RequestDecoding(
        "invalid base64 payload".into(),
    ))
}

/// A decoder reports its output size through this as it grows; an error stops it.
pub type Grow<'a> = dyn FnMut(usize) -> Result<(), CaptureError> + 'a;

/// Output is reported to [`Grow`] in steps of at least this many bytes.
pub const GROW_STEP: usize = 1 << 20;

/// Gunzips at most `cap` bytes: reading stops one byte past the cap, so a gzip bomb costs at
/// most `cap + 1` bytes of memory before it is refused.
pub fn gunzip_capped(bytes: &[u8], cap: usize) -> Result<Vec<u8>, CaptureError> {
    gunzip_within(bytes, cap, &mut |_| Ok(()))
}

/// [`gunzip_capped`], reporting the memory of its output to `grow` before it is taken.
pub fn gunzip_within(
    bytes: &[u8],
    cap: usize,
    grow: &mut Grow<'_>,
) -> Result<Vec<u8>, CaptureError> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut reader = GzDecoder::new(bytes).take(limit);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut chunk)
            .map_err(|e| CaptureError::RequestDecoding(format!("invalid gzip payload: {e}")))?;
        if n == 0 {
            break;
        }
        // The buffer's capacity is what it costs, so that is what is reported, before growing.
        if out.len() + n > out.capacity() {
            // Doubling, but never past what the cap lets through (`take` stops at cap + 1).
            let capacity = (out.capacity() * 2)
                .max(GROW_STEP)
                .min(cap.saturating_add(1))
                .max(out.len() + n);
            grow(capacity)?;
            out.reserve_exact(capacity - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.len() > cap {
        return Err(too_big(cap));
    }
    Ok(out)
}

pub(crate) fn too_big(cap: usize) -> CaptureError {
    CaptureError::EventTooBig(format!("decompressed payload exceeds {cap} bytes"))
}

#[cfg(test)]
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_detection_is_strict() {
        assert!(looks_like_base64(
            STANDARD.encode(r#"{"event":"x"}"#).as_bytes()
        ));
        assert!(looks_like_base64(b"YWJj\n"));
        assert!(looks_like_base64(b"YQ=="));
        assert!(!looks_like_base64(br#"{"event":"x"}"#));
        assert!(!looks_like_base64(b"[1]"));
        assert!(!looks_like_base64(b""));
        assert!(!looks_like_base64(b"YWJ")); // not a multiple of 4
        assert!(!looks_like_base64(b"Y=Jj")); // padding in the middle
        assert!(!looks_like_base64(b"YW-_")); // URL-safe alphabet is not strict
        assert!(!looks_like_base64(b"data=YWJj"));
        assert!(!looks_like_base64(&gzip(b"{}")));
        assert!(!looks_like_base64(b"YR==")); // non-canonical trailing bits
    }

    #[test]
    fn lenient_base64_accepts_variants() {
        let want = b"{\"a\":\"\xff\xfe\"}".to_vec();
        for text in [
            STANDARD.encode(&want),
            STANDARD_NO_PAD.encode(&want),
            URL_SAFE.encode(&want),
            URL_SAFE_NO_PAD.encode(&want),
        ] {
            let spaced = format!(" {}\n", text);
            assert_eq!(
                decode_lenient_base64(spaced.as_bytes()).unwrap(),
                want,
                "{text}"
            );
        }
        assert!(matches!(
            decode_lenient_base64(b"!!!"),
            Err(CaptureError::RequestDecoding(_))
        ));
    }

    #[test]
    fn gzip_round_trip_and_magic() {
        let packed = gzip(b"hello world");
        assert!(is_gzip(&packed));
        assert!(!is_gzip(b"hello"));
        assert_eq!(gunzip_capped(&packed, 1024).unwrap(), b"hello world");
        assert_eq!(gunzip_capped(&packed, 11).unwrap(), b"hello world");
    }

    #[test]
    fn gzip_bomb_is_refused_at_the_cap() {
        // 20 MB of zeros compress to ~20 KB.
        let bomb = gzip(&vec![0u8; 20 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        let err = gunzip_capped(&bomb, 1024 * 1024).unwrap_err();
        assert_eq!(err.status().as_u16(), 413);
        assert!(matches!(err, CaptureError::EventTooBig(_)));
    }

    #[test]
    fn corrupt_gzip_is_a_decoding_error() {
        let mut packed = gzip(b"hello world, hello world");
        let n = packed.len();
        packed.truncate(n - 6);
        assert!(matches!(
            gunzip_capped(&packed, 1024),
            Err(CaptureError::RequestDecoding(_))
        ));
        assert!(matches!(
            gunzip_capped(&[0x1f, 0x8b, 0x08, 0, 1, 2], 1024),
            Err(CaptureError::RequestDecoding(_))
        ));
    }
}
