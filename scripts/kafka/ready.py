"""Exits 0 when a Kafka broker at HOST:PORT answers an ApiVersions request without error.

scripts/services.sh uses it to tell "accepts requests" from "opened its port": a KRaft broker
listens before it has caught up with its metadata log and serves requests only afterwards.
"""

import socket
import struct
import sys


def api_versions_ok(host: str, port: int, timeout: float) -> bool:
    client_id = b"hogstream-services"
    # Request header v1: api_key 18 (ApiVersions), version 0, correlation id, client id.
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        head = b""
        while len(head) < 10:
            chunk = s.recv(10 - len(head))
            if not chunk:
                return False
            head += chunk
    _size, correlation, error = struct.unpack(">iih", head)
    return correlation == 7 and error == 0


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    try:
        return 0 if api_versions_ok(host, int(port), 2.0) else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
