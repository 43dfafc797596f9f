//! lz-string `compressToBase64` payloads (posthog-js `compression=lz64`), decoded with a cap.
//!
//! This decoder exists instead of calling the `lz-str` crate because lz-string is LZW: each code
//! can emit a dictionary entry one longer than the last, so a few KB of input can expand to
//! gigabytes, and `lz-str` materializes every dictionary entry as its own vector (quadratic
//! memory) with no way to stop early. Here entries are stored as (prefix, last char) links and
//! the output is checked against the cap before every write. Tests check it against `lz-str`.

use crate::error::CaptureError;
use crate::payload::decompress::{GROW_STEP, Grow, too_big};

/// lz-string's base64 alphabet; `=` is only ever trailing padding and reads as zero bits.
fn sextet(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        // A `+` that went through form decoding unescaped arrives as a space.
        b'+' | b' ' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

const NO_PREFIX: usize = usize::MAX;

/// Dictionary entry: its string is the prefix entry's string followed by `last`.
#[derive(Clone, Copy)]
struct Node {
    prefix: usize,
    last: u16,
    first: u16,
    len: usize,
}

struct Dictionary {
    nodes: Vec<Node>,
}

impl Dictionary {
    fn new() -> Self {
        // Codes 0, 1 and 2 are control codes; their slots are never looked up.
        let placeholder = Node {
            prefix: NO_PREFIX,
            last: 0,
            first: 0,
            len: 0,
        };
        Self {
            nodes: vec![placeholder; 3],
        }
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }

    fn push_char(&mut self, c: u16) -> usize {
        self.nodes.push(Node {
            prefix: NO_PREFIX,
            last: c,
            first: c,
            len: 1,
        });
        self.nodes.len() - 1
    }

    fn push_extension(&mut self, prefix: usize, c: u16) -> usize {
        let base = self.nodes[prefix];
        self.nodes.push(Node {
            prefix,
            last: c,
            first: base.first,
            len: base.len + 1,
        });
        self.nodes.len() - 1
    }

    fn first(&self, index: usize) -> u16 {
        self.nodes[index].first
    }

    fn entry_len(&self, index: usize) -> usize {
        self.nodes[index].len
    }

    fn emit(&self, index: usize, out: &mut Vec<u16>, cap: usize) -> Result<(), CaptureError> {
        let len = self.nodes[index].len;
        let start = out.len();
        if start.saturating_add(len) > cap {
            return Err(too_big(cap));
        }
        out.resize(start + len, 0);
        let mut at = index;
        for slot in out[start..].iter_mut().rev() {
            let node = self.nodes[at];
            *slot = node.last;
            at = node.prefix;
        }
        Ok(())
    }
}

/// Reads bits least-significant first out of 6-bit values, as lz-string writes them.
struct BitReader {
    values: Vec<u8>,
    next: usize,
    current: u8,
    mask: u8,
    exhausted: bool,
}

impl BitReader {
    fn new(values: Vec<u8>) -> Self {
        let current = values.first().copied().unwrap_or(0);
        Self {
            exhausted: values.is_empty(),
            values,
            next: 1,
            current,
            mask: 32,
        }
    }

    fn read(&mut self, count: u32) -> Result<u32, CaptureError> {
        let mut result = 0u32;
        for i in 0..count {
            if self.exhausted {
                return Err(invalid("truncated lz64 payload"));
            }
            if self.current & self.mask != 0 {
                result |= 1 << i;
            }
            self.mask >>= 1;
            if self.mask == 0 {
                self.mask = 32;
                match self.values.get(self.next) {
                    Some(v) => self.current = *v,
                    None => self.exhausted = true,
                }
                self.next += 1;
            }
        }
        Ok(result)
    }
}

fn invalid(msg: &str) -> CaptureError {
    CaptureError::RequestDecoding(msg.to_owned())
}

/// Decompresses lz-string base64 text into UTF-8, refusing output above `cap` bytes as soon as
/// it would be exceeded. Unpaired UTF-16 surrogates become U+FFFD rather than failing the batch.
pub fn decompress_from_base64(input: &str, cap: usize) -> Result<String, CaptureError> {
    decompress_within(input, cap, &mut |_| Ok(()))
}

/// [`decompress_from_base64`], reporting the output (two bytes per UTF-16 unit) to `grow` as it
/// grows, in [`GROW_STEP`]s.
pub fn decompress_within(
    input: &str,
    cap: usize,
    grow: &mut Grow<'_>,
) -> Result<String, CaptureError> {
    let values = input
        .trim_ascii()
        .bytes()
        .map(sextet)
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| invalid("invalid character in lz64 payload"))?;
    if values.is_empty() {
        return Err(invalid("empty lz64 payload"));
    }
    let units = decode_units(BitReader::new(values), cap, grow)?;
    let text = String::from_utf16_lossy(&units);
    if text.len() > cap {
        return Err(too_big(cap));
    }
    Ok(text)
}

fn decode_units(
    mut bits: BitReader,
    cap: usize,
    grow: &mut Grow<'_>,
) -> Result<Vec<u16>, CaptureError> {
    let mut reported = 0;
    let mut dict = Dictionary::new();
    let mut out: Vec<u16> = Vec::new();
    let first = match bits.read(2)? {
        0 => bits.read(8)?,
        1 => bits.read(16)?,
        2 => return Ok(out),
        _ => return Err(invalid("invalid lz64 header")),
    };
    // Both arms read at most 16 bits.
    let mut w = dict.push_char(first as u16);
    dict.emit(w, &mut out, cap)?;
    let mut num_bits: u32 = 3;
    let mut enlarge_in: u64 = 4;

    loop {
        let code = bits.read(num_bits)?;
        let code = match code {
            0 | 1 => {
                let c = bits.read(if code == 0 { 8 } else { 16 })? as u16;
                enlarge_in = enlarge_in.saturating_sub(1);
                dict.push_char(c)
            }
            2 => return Ok(out),
            c => c as usize,
        };
        if enlarge_in == 0 {
            enlarge_in = 1u64 << num_bits;
            num_bits += 1;
        }
        let (entry, already_added) = if (3..dict.len()).contains(&code) {
            (code, false)
        } else if code == dict.len() {
            // The "cScSc" case: the entry is w + w[0], which is also the next dictionary entry.
            (dict.push_extension(w, dict.first(w)), true)
        } else {
            return Err(invalid("invalid lz64 code"));
        };
        let next_len = out.len().saturating_add(dict.entry_len(entry)).min(cap);
        if next_len > out.capacity() {
            // Doubling, but never past the cap; each UTF-16 unit is two bytes.
            let capacity = (out.capacity() * 2).max(GROW_STEP).min(cap).max(next_len);
            if capacity * 2 > reported {
                reported = capacity * 2;
                grow(reported)?;
            }
            out.reserve_exact(capacity - out.len());
        }
        dict.emit(entry, &mut out, cap)?;
        if !already_added {
            dict.push_extension(w, dict.first(entry));
        }
        enlarge_in = enlarge_in.saturating_sub(1);
        w = entry;
        if enlarge_in == 0 {
            enlarge_in = 1u64 << num_bits;
            num_bits += 1;
        }
        if num_bits > 31 {
            return Err(invalid("lz64 dictionary overflow"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) {
        let packed = lz_str::compress_to_base64(text);
        let got = decompress_from_base64(&packed, 64 * 1024 * 1024).unwrap();
        assert_eq!(got, text);
    }

    #[test]
    fn round_trips_json_and_unicode() {
        round_trip(
            r#"[{"event":"$pageview","distinct_id":"u1","properties":{"$current_url":"https://x.y/?a=1&b=2"}}]"#,
        );
        round_trip("héllo wörld — 你好 — emoji 🦔🦔🦔 and \u{1}\u{ffff}");
        round_trip("a");
        round_trip("");
    }

    #[test]
    fn round_trips_long_repetitive_text() {
        // Repetition exercises dictionary growth and the w + w[0] case.
        let text: String = (0..20_000).map(|i| format!("{}ab", i % 17)).collect();
        round_trip(&text);
        round_trip(&"z".repeat(100_000));
    }

    #[test]
    fn agrees_with_lz_str_on_varied_inputs() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in [1usize, 2, 3, 7, 64, 500, 4096] {
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from_u32(0x20 + (seed % 0x250) as u32).unwrap_or('?')
                })
                .collect();
            let packed = lz_str::compress_to_base64(text.as_str());
            let reference = lz_str::decompress_from_base64(&packed).unwrap();
            let ours = decompress_from_base64(&packed, usize::MAX).unwrap();
            assert_eq!(ours, String::from_utf16(&reference).unwrap(), "len {len}");
        }
    }

    #[test]
    fn spaces_stand_for_plus() {
        let text = r#"{"event":"e2","distinct_id":"u838"}"#;
        let packed = lz_str::compress_to_base64(text);
        assert!(
            packed.contains('+'),
            "fixture must contain a plus: {packed}"
        );
        let spaced = packed.replace('+', " ");
        assert_eq!(decompress_from_base64(&spaced, 1 << 20).unwrap(), text);
    }

    #[test]
    fn bomb_is_refused_at_the_cap() {
        // LZW output grows quadratically with the input: 300 000 chars pack into ~1 KB. (Kept
        // small because lz-str's compressor is slow on such input, not because ours is.)
        let text = "a".repeat(300_000);
        let packed = lz_str::compress_to_base64(text.as_str());
        assert!(
            packed.len() * 100 < text.len(),
            "fixture is {} bytes",
            packed.len()
        );
        let err = decompress_from_base64(&packed, 100_000).unwrap_err();
        assert!(matches!(err, CaptureError::EventTooBig(_)));
        assert_eq!(
            decompress_from_base64(&packed, 300_000).unwrap().len(),
            300_000
        );
    }

    #[test]
    fn multibyte_output_counts_utf8_bytes_against_the_cap() {
        let text = "é".repeat(1000); // 1000 UTF-16 units, 2000 UTF-8 bytes
        let packed = lz_str::compress_to_base64(text.as_str());
        assert!(matches!(
            decompress_from_base64(&packed, 1500),
            Err(CaptureError::EventTooBig(_))
        ));
        assert_eq!(decompress_from_base64(&packed, 2000).unwrap(), text);
    }

    #[test]
    fn malformed_input_is_a_decoding_error() {
        let packed = lz_str::compress_to_base64("some reasonably long text to truncate");
        let truncated = &packed[..packed.len() / 2];
        for bad in ["", "   ", "!!!!", "abc{", truncated] {
            assert!(
                matches!(
                    decompress_from_base64(bad, 1 << 20),
                    Err(CaptureError::RequestDecoding(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn never_panics_on_arbitrary_alphabet_input() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 1..300 {
            let s: String = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()] as char
                })
                .collect();
            let _ = decompress_from_base64(&s, 1 << 16);
        }
    }
}
