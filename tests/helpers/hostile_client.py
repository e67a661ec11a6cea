"""
A client that opens a twisted-hub connection and then never reads: the
attacker of tests/test_hostile.py and bench/memory.py.

    python3 -m tests.helpers.hostile_client [--tls CAFILE] PORT MODE [ARGS...]

Modes, each after the HTTP upgrade and the hello:
  echo COUNT SIZE   send COUNT calls echo(SIZE bytes), whose results it never reads
  ping COUNT        send COUNT pings (125-byte payload), whose pongs it never reads
  join GROUP        call join(GROUP), then stay silent

Prints "ready" after the hello (and the join), "sent" when its frames are
out, "reset" if the server cut the connection while it was sending; then
sleeps until killed.  Its receive buffer is small, so the server's writes
back up at once.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
import sys
import time

import msgpack


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame (client frames must be masked)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    key = (mask * (length // 4 + 1))[:length]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big") if length else b""
    return header + mask + body


def open_connection(port: int, hub: str = "hostile", cafile: str | None = None) -> socket.socket:
    """Upgrade to a hub connection (over TLS if C{cafile}) and send the hello, reading only the HTTP answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    if cafile is not None:
        context = ssl.create_default_context(cafile=cafile)
        sock = context.wrap_socket(sock, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /hub/{hub} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: twisted-hub.v1\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: read nothing past the headers
        if not chunk:
            sys.exit("server closed during the handshake")
        response += chunk
    if b" 101 " not in response.split(b"\r\n", 1)[0]:
        sys.exit(f"handshake refused: {response!r}")
    sock.sendall(masked_frame(0x2, msgpack.packb([0, {"caps": []}])))
    return sock


def main(argv: list[str]) -> None:
    cafile = None
    if argv[0] == "--tls":
        cafile, argv = argv[1], argv[2:]
    port, mode, args = int(argv[0]), argv[1], argv[2:]
    sock = open_connection(port, cafile=cafile)
    frames: list[bytes] = []
    if mode == "echo":
        count, size = int(args[0]), int(args[1])
        frames = [masked_frame(0x2, msgpack.packb([2, i + 1, "echo", [b"e" * size]])) for i in range(count)]
    elif mode == "ping":
        frames = [masked_frame(0x9, b"p" * 125)] * int(args[0])
    elif mode == "join":
        sock.sendall(masked_frame(0x2, msgpack.packb([2, 1, "join", [args[0]]])))
    else:
        sys.exit(f"unknown mode {mode!r}")
    print("ready", flush=True)
    try:
        for start in range(0, len(frames), 256):
            sock.sendall(b"".join(frames[start : start + 256]))
    except OSError:
        print("reset", flush=True)
    else:
        print("sent", flush=True)
    while True:  # never read
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
