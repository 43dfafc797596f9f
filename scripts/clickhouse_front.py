#!/usr/bin/env python3
"""A ClickHouse HTTP interface in front of chDB (ClickHouse's engine, in-process).

No modern clickhouse-server binary can be installed on the project's machines, but PyPI's
`chdb-core` carries the real ClickHouse engine. This front speaks the part of ClickHouse's HTTP
protocol that clients use, so the official `clickhouse` Rust crate (and curl) run unchanged:

* `GET /ping` and `GET /` answer `Ok.`;
* queries in the body, in `?query=`, or as multipart/form-data with `query` and `param_*` fields;
* `INSERT ... FORMAT X` with the data in the body (also chunked), plain or in ClickHouse's
  compressed-block framing with `decompress=1` (LZ4, ZSTD, none; CityHash128 checksums verified);
* `default_format`, `database`, any query setting as a URL parameter, `param_*` parameters;
* errors as HTTP 500 with `X-ClickHouse-Exception-Code` and ClickHouse's own message text;
* users as ClickHouse's headers (`X-ClickHouse-User`/`-Key`) or basic auth: `default` without a
  password, `hogstream` with the password of --password-file (516 AUTHENTICATION_FAILED
  otherwise); and, with --https-port, an HTTPS port that admits only `hogstream`.

One chDB connection serves one query at a time, so queries are serialized. Data lives in the
directory given with --data and survives restarts.
"""

import argparse
import base64
import email.parser
import email.policy
import hmac
import os
import re
import signal
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb
import lz4.block
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

# URL parameters that steer the HTTP layer rather than naming a ClickHouse setting.
NOT_SETTINGS = {
    "query", "database", "default_format", "decompress", "compress", "user", "password",
    "query_id", "session_id", "session_timeout", "session_check", "role", "buffer_size",
    "wait_end_of_query", "enable_http_compression", "http_zlib_compression_level",
}

CODE_RE = re.compile(r"Code:\s*(\d+)")
INSERT_RE = re.compile(r"^\s*INSERT\s+INTO\b", re.IGNORECASE)
FORMAT_TAIL_RE = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")

# ClickHouse error codes the front raises itself.
CANNOT_PARSE_INPUT = 27
CHECKSUM_DOESNT_MATCH = 40
UNKNOWN_COMPRESSION_METHOD = 89
CANNOT_DECOMPRESS = 271
SYNTAX_ERROR = 62
AUTHENTICATION_FAILED = 516


class FrontError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def quote(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class BlockDecoder:
    """Decodes ClickHouse's compressed-block framing incrementally into a writable file.

    A block is: 16-byte CityHash128 of the rest, 1-byte method, u32 LE size of (header + data),
    u32 LE uncompressed size, then the data.
    """

    HEADER = 9

    def __init__(self, out):
        self.out = out
        self.buf = bytearray()
        self.zstd = zstandard.ZstdDecompressor()

    def feed(self, chunk):
        self.buf += chunk
        while len(self.buf) >= 16 + self.HEADER:
            method, size, raw_size = struct.unpack_from("<BII", self.buf, 16)
            if size < self.HEADER:
                raise FrontError(CANNOT_DECOMPRESS, f"compressed block size {size} is too small")
            end = 16 + size
            if len(self.buf) < end:
                return
            block = bytes(self.buf[16:end])
            expected = bytes(self.buf[:16])
            # ClickHouse stores CityHash128's two 64-bit halves first-then-second, each LE;
            # the Python binding returns them as one int, first half high.
            first, second = struct.unpack("<QQ", expected)
            if CityHash128(block) != (first << 64 | second):
                raise FrontError(CHECKSUM_DOESNT_MATCH, "Checksum doesn't match: corrupted data")
            payload = block[self.HEADER:]
            if method == 0x82:
                data = lz4.block.decompress(payload, uncompressed_size=raw_size)
            elif method == 0x90:
                data = self.zstd.decompress(payload, max_output_size=raw_size)
            elif method == 0x02:
                data = payload
            else:
                raise FrontError(UNKNOWN_COMPRESSION_METHOD, f"Unknown compression method: {method:#x}")
            if len(data) != raw_size:
                raise FrontError(CANNOT_DECOMPRESS, "decompressed size does not match the header")
            self.out.write(data)
            del self.buf[:end]

    def finish(self):
        if self.buf:
            raise FrontError(CANNOT_DECOMPRESS, "truncated compressed block at end of body")


class Engine:
    """The one chDB connection, used under a lock."""

    def __init__(self, data_dir):
        self.data_dir = os.path.abspath(data_dir)
        self.tmp_dir = os.path.join(self.data_dir, "front-tmp")
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.conn = chdb.connect(os.path.join(self.data_dir, "chdb"))
        self.lock = threading.Lock()

    def run(self, sql, fmt, settings, params, database):
        with self.lock:
            applied = []
            try:
                if database:
                    self.conn.query(f"USE {database}")
                for name, value in settings.items():
                    literal = value if NUMBER_RE.match(value) else quote(value)
                    self.conn.query(f"SET {name} = {literal}")
                    applied.append(name)
                result = self.conn.query(sql, fmt, params=params or None)
                return result.bytes() if hasattr(result, "bytes") else bytes(result or b"")
            finally:
                for name in applied:
                    try:
                        self.conn.query(f"SET {name} = DEFAULT")
                    except Exception:  # a setting that failed to apply has nothing to reset
                        pass
                if database:
                    self.conn.query("USE default")

    def close(self):
        with self.lock:
            self.conn.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hogstream-clickhouse-front"
    engine = None  # set in main()
    password = None  # of the user `hogstream`; set in main()
    require_password = False  # the HTTPS port admits only `hogstream`

    def log_message(self, fmt, *args):  # quiet by default; errors are logged explicitly
        if os.environ.get("CLICKHOUSE_FRONT_VERBOSE"):
            super().log_message(fmt, *args)

    # --- plumbing -------------------------------------------------------------------------

    def reply(self, status, body, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body_chunks(self):
        """Yields the request body as it arrives, plain or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    part = self.rfile.read(min(remaining, 1 << 20))
                    if not part:
                        raise FrontError(CANNOT_PARSE_INPUT, "connection closed mid-chunk")
                    remaining -= len(part)
                    yield part
                self.rfile.readline(16)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                part = self.rfile.read(min(remaining, 1 << 20))
                if not part:
                    raise FrontError(CANNOT_PARSE_INPUT, "connection closed mid-body")
                remaining -= len(part)
                yield part

    def parse_multipart(self, body):
        ctype = self.headers.get("Content-Type", "")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
        )
        fields = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = part.get_payload(decode=True).decode("utf-8")
        return fields

    # --- requests -------------------------------------------------------------------------

    def authenticated(self):
        """ClickHouse's users, as this front knows them: `default` without a password, and
        `hogstream` with the password of --password-file. Credentials come in ClickHouse's
        headers or as HTTP basic auth; the HTTPS port (--require-password) admits only
        `hogstream`."""
        user = self.headers.get("X-ClickHouse-User")
        key = self.headers.get("X-ClickHouse-Key", "")
        auth = self.headers.get("Authorization", "")
        if user is None and auth.lower().startswith("basic "):
            try:
                user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = "?"
        user = user or "default"
        if user == "hogstream" and self.password is not None and hmac.compare_digest(key, self.password):
            return True
        if user == "default" and key == "" and not self.require_password:
            return True
        self.reply_error(FrontError(
            AUTHENTICATION_FAILED,
            f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
        ))
        return False

    def do_GET(self):
        path, _, qs = self.path.partition("?")
        if path in ("/ping", "/") and "query=" not in qs:
            return self.reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        if self.authenticated():
            self.handle_query()

    def do_POST(self):
        if self.authenticated():
            self.handle_query()

    def handle_query(self):
        started = time.monotonic()
        tmp_path = None
        try:
            url = urllib.parse.urlsplit(self.path)
            args = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            url_query = args.get("query", "")
            fields = {}
            if INSERT_RE.match(url_query) and self.command == "POST":
                sql, tmp_path = self.stage_insert_body(url_query, args.get("decompress") == "1")
            else:
                body = b"".join(self.body_chunks())
                if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
                    fields = self.parse_multipart(body)
                    sql = (url_query + "\n" + fields.get("query", "")).strip()
                else:
                    sql = (url_query + "\n" + body.decode("utf-8")).strip()
            if not sql:
                raise FrontError(SYNTAX_ERROR, "Empty query")
            params = {k[6:]: v for k, v in {**args, **fields}.items() if k.startswith("param_")}
            settings = {
                k: v for k, v in args.items() if k not in NOT_SETTINGS and not k.startswith("param_")
            }
            fmt = args.get("default_format") or "TabSeparated"
            out = self.engine.run(sql, fmt, settings, params, args.get("database"))
            elapsed = time.monotonic() - started
            self.reply(200, out, {
                "Content-Type": "application/octet-stream",
                "X-ClickHouse-Summary": '{"elapsed_ns":"%d"}' % int(elapsed * 1e9),
            })
        except Exception as e:  # every failure becomes ClickHouse's error shape
            self.reply_error(e)
        finally:
            if tmp_path:
                try:
                    os.unlink(tmp_path)
                except OSError:
                    pass

    def stage_insert_body(self, url_query, compressed):
        """Writes the INSERT's data to a temp file and returns `INSERT ... FROM INFILE` SQL."""
        match = FORMAT_TAIL_RE.search(url_query)
        if not match:
            raise FrontError(SYNTAX_ERROR, "INSERT with a body needs a trailing FORMAT clause")
        fd, tmp_path = tempfile.mkstemp(dir=self.engine.tmp_dir, suffix=".bin")
        with os.fdopen(fd, "wb") as out:
            decoder = BlockDecoder(out) if compressed else None
            for chunk in self.body_chunks():
                if decoder:
                    decoder.feed(chunk)
                else:
                    out.write(chunk)
            if decoder:
                decoder.finish()
        head = url_query[: match.start()].rstrip()
        return f"{head} FROM INFILE {quote(tmp_path)} FORMAT {match.group(1)}", tmp_path

    def reply_error(self, e):
        if isinstance(e, FrontError):
            code, text = e.code, f"Code: {e.code}. DB::Exception: {e}."
        else:
            text = str(e).strip() or type(e).__name__
            m = CODE_RE.search(text)
            code = int(m.group(1)) if m else 1000
            if not m:
                traceback.print_exc(file=sys.stderr)
                text = f"Code: {code}. DB::Exception: {text}."
        try:
            self.reply(500, (text + "\n").encode(), {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(code),
            })
        except OSError:
            pass  # the client went away


class TlsServer(ThreadingHTTPServer):
    """The HTTPS port: TLS is set up per connection, in its thread, so a client that never
    finishes its handshake holds only its own thread."""

    request_queue_size = 256
    daemon_threads = True
    context = None  # set in main()

    def finish_request(self, request, client_address):
        try:
            request.settimeout(10)
            tls = self.context.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError):
            return  # a plaintext client, a refused certificate: the client sees its own error
        self.RequestHandlerClass(tls, client_address, self)


class Server(ThreadingHTTPServer):
    # socketserver's default accept backlog is 5: several pipelines, their engines' parallel
    # flushes and readiness probes connect at once, and connections past the backlog were reset.
    request_queue_size = 256
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--data", required=True, help="directory that holds the tables")
    ap.add_argument("--https-port", type=int, help="also serve HTTPS here (needs --cert/--key)")
    ap.add_argument("--cert", help="PEM certificate chain of the HTTPS port")
    ap.add_argument("--key", help="PEM private key of the HTTPS port")
    ap.add_argument("--password-file", help="password of the user `hogstream`")
    opts = ap.parse_args()

    Handler.engine = Engine(opts.data)
    Handler.require_password = False
    if opts.password_file:
        with open(opts.password_file) as f:
            Handler.password = f.read().rstrip("\r\n")
    server = Server((opts.host, opts.port), Handler)
    if opts.https_port:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(opts.cert, opts.key)
        TlsServer.context = context
        secure_handler = type("SecureHandler", (Handler,), {"require_password": True})
        secure = TlsServer((opts.host, opts.https_port), secure_handler)
        threading.Thread(target=secure.serve_forever, daemon=True).start()

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"clickhouse front on http://{opts.host}:{opts.port} (chDB {chdb.engine_version}), "
          f"data in {Handler.engine.data_dir}", flush=True)
    server.serve_forever()
    Handler.engine.close()


if __name__ == "__main__":
    main()
