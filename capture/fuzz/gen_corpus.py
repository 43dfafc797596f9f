#!/usr/bin/env python3
"""Writes the seed corpus of the `decode_payload` fuzz target (capture/fuzz/corpus/decode_payload).

Each seed is the 5 header bytes of `hogstream_capture::fuzzing` (endpoint, Content-Type,
Content-Encoding, `compression=`, flags) followed by the payload. Names say what the replay test
(`fuzzing::tests::seed_corpus_replays`) expects: `ok-*` yields at least one event,
`err-<code>-*` fails with that `CaptureError::code()`.

Deterministic (gzip mtime 0), so re-running it rewrites identical files:

    python3 capture/fuzz/gen_corpus.py
"""

import base64
import gzip
import json
import os
import urllib.parse

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "decode_payload")

# Indices into hogstream_capture::fuzzing's tables.
E, IV0E, CAPTURE, TRACK, ENGAGE, BATCH = range(6)
CT_NONE, CT_JSON, CT_FORM, CT_FORM_UTF8, CT_TEXT = range(5)
ENC_NONE, ENC_GZIP, ENC_GZIP_JS, ENC_LZ64, ENC_LZ_STRING, ENC_BASE64, ENC_B64 = range(7)
BEACON, VER, DATA_IN_QUERY, RAW_QUERY = 1, 2, 32, 64


def sent_at(index):
    """Flag bits choosing fuzzing::SENT_AT[index]; 1 is a valid millisecond `_`."""
    return index << 2


def header(endpoint, content_type=CT_NONE, encoding=ENC_NONE, query_compression=ENC_NONE, flags=0):
    return bytes([endpoint, content_type, encoding, query_compression, flags])


def js(value):
    return json.dumps(value, separators=(",", ":")).encode()


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def b64(data):
    return base64.b64encode(data)


def form(**fields):
    return urllib.parse.urlencode(fields).encode()


B64_KEYS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def lz_compress_to_base64(text):
    """lz-string's compressToBase64: LZW over UTF-16 units, bits packed 6 per base64 char."""
    out = []
    state = {"val": 0, "pos": 0}

    def write(value, bits):
        for _ in range(bits):
            state["val"] = (state["val"] << 1) | (value & 1)
            value >>= 1
            if state["pos"] == 5:
                out.append(B64_KEYS[state["val"]])
                state["val"], state["pos"] = 0, 0
            else:
                state["pos"] += 1

    units = [chr(u) for u in _utf16_units(text)]
    dictionary, to_create = {}, set()
    w, enlarge_in, dict_size, num_bits = "", 2, 3, 2

    def emit(w):
        nonlocal enlarge_in, num_bits
        if w in to_create:
            code = ord(w[0])
            if code < 256:
                write(0, num_bits)
                write(code, 8)
            else:
                write(1, num_bits)
                write(code, 16)
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in, num_bits = 1 << num_bits, num_bits + 1
            to_create.discard(w)
        else:
            write(dictionary[w], num_bits)
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in, num_bits = 1 << num_bits, num_bits + 1

    for c in units:
        if c not in dictionary:
            dictionary[c] = dict_size
            dict_size += 1
            to_create.add(c)
        wc = w + c
        if wc in dictionary:
            w = wc
        else:
            emit(w)
            dictionary[wc] = dict_size
            dict_size += 1
            w = c
    if w:
        emit(w)
    write(2, num_bits)
    # Flush: shift zeros in until the current base64 char is complete.
    while True:
        state["val"] <<= 1
        if state["pos"] == 5:
            out.append(B64_KEYS[state["val"]])
            break
        state["pos"] += 1
    packed = "".join(out)
    return packed + "=" * (-len(packed) % 4)


def _utf16_units(text):
    data = text.encode("utf-16-le")
    return [int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)]


TOKEN = "phc_fuzz"
PAGEVIEW = {
    "event": "$pageview",
    "distinct_id": "u1",
    "token": TOKEN,
    "uuid": "0190f4a6-0000-7000-8000-000000000001",
    "timestamp": "2026-03-01T11:59:00Z",
    "properties": {"$current_url": "https://example.com/?a=1&b=2", "$session_id": "s1", "héllo": "wörld 🦔"},
}
ARRAY = [
    {"event": "click", "properties": {"distinct_id": 7, "token": TOKEN, "$ignore_sent_at": True}},
    {"event": "$performance_event", "distinct_id": "u1"},
    {"event": "$identify", "$distinct_id": "u1", "$set": {"email": "a@example.com"}, "offset": 500},
]
BATCH_BODY = {
    "api_key": TOKEN,
    "historical_migration": True,
    "sent_at": "2026-03-01T11:00:00Z",
    "batch": [
        {"event": "old", "distinct_id": "u1", "timestamp": "2026-03-01T10:59:00Z"},
        {"event": "cookieless", "distinct_id": "u2", "properties": {"$cookieless_mode": True, "capture_internal": True}},
    ],
}
# A run of `>` base64-encodes with `+` in it, which a form turns into a space.
PLUSSY = {"event": ">>>>>>", "distinct_id": "u1", "token": TOKEN}

SEEDS = {
    "ok-single-event": header(IV0E, CT_JSON) + js(PAGEVIEW),
    "ok-array-sent-at": header(IV0E, CT_TEXT, flags=sent_at(1)) + js(ARRAY),
    "ok-batch": header(BATCH, CT_JSON) + js(BATCH_BODY),
    "ok-gzip-header": header(IV0E, CT_TEXT, ENC_GZIP) + gz(js(ARRAY)),
    "ok-gzip-magic-beacon": header(BATCH, flags=BEACON | sent_at(1)) + gz(js(BATCH_BODY)),
    "ok-gzip-query-hint": header(E, CT_TEXT, query_compression=ENC_GZIP_JS) + gz(js(PAGEVIEW)),
    "ok-base64-gzip": header(IV0E) + b64(gz(js(PAGEVIEW))),
    "ok-lz64-form": header(E, CT_FORM_UTF8, flags=VER)
    + form(data=lz_compress_to_base64(json.dumps(ARRAY)), compression="lz64", ver="1.0"),
    "ok-lz64-query-hint": header(IV0E, CT_TEXT, query_compression=ENC_LZ64)
    + lz_compress_to_base64(json.dumps(PAGEVIEW, ensure_ascii=False)).encode(),
    "ok-base64-body": header(IV0E) + b64(js(PAGEVIEW)),
    "ok-base64-twice-legacy": header(CAPTURE) + b64(b64(js(ARRAY))),
    "ok-base64-declared-urlsafe": header(TRACK, CT_FORM)
    + form(data=base64.urlsafe_b64encode(js(PAGEVIEW)).rstrip(b"=").decode(), compression="b64"),
    "ok-form-data": header(E, CT_FORM) + form(data=json.dumps(PAGEVIEW)),
    "ok-form-spaces-for-pluses": header(E) + b"data=" + b64(js(PLUSSY)),
    "ok-get-data-query": header(E, flags=DATA_IN_QUERY) + js(PAGEVIEW),
    "ok-engage-identify": header(ENGAGE, CT_JSON)
    + js({"$set": {"email": "a@example.com"}, "distinct_id": "u1", "token": TOKEN}),
    "ok-raw-query": header(IV0E, flags=RAW_QUERY) + b"compression=gzip&_=1772362800000&ver=1\n" + gz(js(ARRAY)),
    "err-event_too_big-gzip-bomb": header(IV0E, encoding=ENC_GZIP) + gz(b" " * (2 << 20)),
    "err-event_too_big-lz64-bomb": header(IV0E, query_compression=ENC_LZ64)
    + lz_compress_to_base64("x" * 100_000 + "y" * 1_100_000).encode(),
    "err-multiple_tokens-array": header(E)
    + js([{"event": "a", "distinct_id": "d", "token": "phc_a"}, {"event": "b", "distinct_id": "d", "token": "phc_b"}]),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        total += len(data)
    print(f"wrote {len(SEEDS)} seeds, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
