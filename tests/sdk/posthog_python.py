"""Sends a known set of events with PostHog's Python SDK (`posthog` from PyPI) to a capture URL.

    python posthog_python.py CAPTURE_URL TOKEN RUN_ID REPORT_FILE TIMED_UUID

Every HTTP request the SDK makes is recorded (method, path, query, headers, status, the decoded
payload) into REPORT_FILE as JSON, for tests/capture_sdks.rs to compare with what reached Kafka.
Exits non-zero if the SDK reports an error, a request fails, or any response is not 200.
"""

import base64
import datetime
import gzip
import importlib.metadata
import json
import sys
import threading
import urllib.parse

import requests

import posthog
from posthog import Posthog

if len(sys.argv) != 6:
    sys.exit("usage: posthog_python.py CAPTURE_URL TOKEN RUN_ID REPORT_FILE TIMED_UUID")
URL, TOKEN, RUN, OUT, TIMED_UUID = sys.argv[1:6]

records = []
errors = []
lock = threading.Lock()
_send = requests.Session.send


def decode(body, headers):
    """The payload as JSON, undoing the SDK's transport encoding, and the encoding's name."""
    raw = body if isinstance(body, bytes) else (body or "").encode("utf-8")
    encoding = "none"
    if (headers.get("Content-Encoding") or "").lower() == "gzip" or raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
        encoding = "gzip"
    return json.loads(raw.decode("utf-8")), encoding, body if isinstance(body, bytes) else raw


def recording_send(self, request, **kwargs):
    parts = urllib.parse.urlsplit(request.url)
    record = {
        "method": request.method,
        "path": parts.path,
        "query": parts.query,
        "headers": {k.lower(): v for k, v in request.headers.items()},
    }
    try:
        payload, encoding, raw = decode(request.body, request.headers)
        record["payload"] = payload
        record["encoding"] = encoding
        record["body_prefix"] = base64.b64encode(raw[:48]).decode()
    except Exception as exc:  # recorded, and the run fails below
        record["decode_error"] = repr(exc)
    try:
        response = _send(self, request, **kwargs)
    except Exception as exc:
        record["error"] = repr(exc)
        with lock:
            records.append(record)
        raise
    record["status"] = response.status_code
    record["response"] = response.text[:500]
    with lock:
        records.append(record)
    return response


requests.Session.send = recording_send


def on_error(error, batch):
    errors.append(f"{error!r} ({len(batch)} events)")


def client(**options):
    return Posthog(
        TOKEN,
        host=URL,
        on_error=on_error,
        max_retries=0,
        flush_interval=0.2,
        enable_local_evaluation=False,
        **options,
    )


user = f"{RUN}-py-user"
sent = {}

# 1. A plain JSON /batch/ (the SDK's default): capture, person and group calls, a timed event
#    and several events for one distinct_id in one request.
ph = client(gzip=False)
sent["single"] = ph.capture(
    "sdk py single",
    distinct_id=user,
    properties={
        "plan": "pro",
        "count": 3,
        "price": 9.5,
        "flag": True,
        "nothing": None,
        "nested": {"list": [1, "two", None, False], "deep": {"x": "y"}},
        "unicode": "héllo ✓ 日本 🦔",
        "quote": 'a "quoted" \\ value',
    },
)
sent["set"] = ph.set(distinct_id=user, properties={"email": f"{RUN}@example.com", "name": "Py Hog"})
sent["group"] = ph.group_identify(
    "company", f"{RUN}-acme", {"name": "Acme", "employees": 42}, distinct_id=user
)
sent["alias"] = ph.alias(previous_id=f"{RUN}-py-anon", distinct_id=user)
sent["timed"] = ph.capture(
    "sdk py timed",
    distinct_id=user,
    properties={"kind": "explicit timestamp and uuid"},
    groups={"company": f"{RUN}-acme"},
    timestamp=datetime.datetime.now(tz=datetime.timezone.utc) - datetime.timedelta(seconds=90),
    uuid=TIMED_UUID,
)
if sent["timed"] != TIMED_UUID:
    errors.append(f"capture returned uuid {sent['timed']}, not the one given ({TIMED_UUID})")
sent["batch"] = [
    ph.capture("sdk py batch item", distinct_id=user, properties={"i": i}) for i in range(5)
]
ph.flush()
ph.shutdown()

# 2. gzip=True: Content-Encoding: gzip on /batch/.
gz = client(gzip=True)
sent["gzip"] = gz.capture(
    "sdk py gzip", distinct_id=f"{RUN}-py-gzip", properties={"compressed": True, "n": 1}
)
gz.flush()
gz.shutdown()

for name, value in sent.items():
    for v in value if isinstance(value, list) else [value]:
        if not v:
            errors.append(f"{name}: the SDK did not queue the event (returned {v!r})")
for r in records:
    if r.get("status") != 200:
        errors.append(f"{r['method']} {r['path']}?{r['query']} answered {r.get('status')}: {r.get('response') or r.get('error')}")
    if "decode_error" in r:
        errors.append(f"cannot decode the body of {r['path']}: {r['decode_error']}")

report = {
    "sdk": "posthog-python",
    "version": importlib.metadata.version("posthog"),
    "module_version": posthog.VERSION,
    "sent": sent,
    "requests": records,
    "errors": errors,
}
with open(OUT, "w", encoding="utf-8") as f:
    json.dump(report, f, ensure_ascii=False, indent=1)
if errors:
    print("posthog-python errors:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"posthog-python {report['version']}: {len(records)} requests")
