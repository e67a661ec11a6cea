"""
A WebSocket client that completes the twisted-hub handshake and then never
reads again: the slow consumer for tests/test_loopback.py.

    python3 stalled_client.py PORT HUB

Prints "ready" once the HTTP upgrade was accepted and the hello sent, then
sleeps until killed.  Its receive buffer is made small so the server's writes
back up quickly.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import sys
import time

import msgpack


def masked_binary_frame(payload: bytes) -> bytes:
    """One final, masked, binary WebSocket frame (client frames must be masked)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x82, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x82, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, length)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def main() -> None:
    port, hub = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /hub/{hub} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: twisted-hub.v1\r\n"
        "\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: read nothing past the headers
        if not chunk:
            sys.exit("server closed during the handshake")
        response += chunk
    status = response.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        sys.exit(f"handshake refused: {status!r}")
    sock.sendall(masked_binary_frame(msgpack.packb([0, {"caps": []}])))
    print("ready", flush=True)
    while True:  # never read again
        time.sleep(3600)


if __name__ == "__main__":
    main()
