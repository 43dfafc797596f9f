//! Fuzzes the whole decode+validate path of a capture request: body bytes plus the endpoint,
//! `Content-Type`, `Content-Encoding` and query parameters that steer decoding.
//!
//! The input format and the invariants checked are documented in `hogstream_capture::fuzzing`;
//! the seed corpus in `corpus/decode_payload` replays in `cargo test -p hogstream-capture`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Errors are expected answers; only a panic (including a broken invariant) is a finding.
    let _ = hogstream_capture::fuzzing::run(data);
});
