"""Raw HTTP helpers of the attack tests. Their front (no ingest, the settings a test asks for)
is ``tests.stack.front_fixture``, declared by each test module (``front =
pytest.fixture(front_fixture)``): fixtures of tests/integration/conftest.py are not visible here.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def http(
    port: int, target: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> Answer:
    """One GET over a fresh connection, read to the end (the front closes after answering)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return await raw_http(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), timeout)


async def raw_http(port: int, data: bytes, timeout: float = 5.0) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    assert raw, "the connection was closed without an answer"
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return Answer(int(status_line.split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stalled_request(port: int, target: str, headers: dict[str, str]) -> socket.socket:
    """A client that sends a request and then never reads: a receive buffer of a few KiB so
    the server's buffers fill after a few hundred KiB (blocking; call it in a thread)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def peek_head(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """The response head without consuming it (blocking; call it in a thread)."""
    sock.settimeout(timeout)
    data = sock.recv(2048, socket.MSG_PEEK)
    return data.partition(b"\r\n\r\n")[0]


def read_rest(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Whatever the socket still delivers until the server closes or resets it."""
    sock.settimeout(timeout)
    out = bytearray()
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return bytes(out)
