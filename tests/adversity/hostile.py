"""Tools of the attack tests: the front as its own process (so its memory can be read from
/proc), and a raw WebSocket client that floods and never reads."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import requests

from bridge.auth import mint
from bridge.embedded import free_port

SECRET = "adversity-secret-" + "a" * 40


@dataclass
class FrontProcess:
    proc: subprocess.Popen[bytes]
    port: int
    prefix: str
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def token(self, scope: str = "telemetry:read alerts:read devices:read", **kw: object) -> str:
        return mint(
            key=SECRET, algorithm="HS256", sub=str(kw.pop("sub", "alice")), scopes=scope, **kw
        )  # type: ignore[arg-type]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def metrics(self) -> dict[str, object]:
        r = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def connections(self) -> int:
        return int(self.metrics()["connections"]["current"])  # type: ignore[index]


def start_front(
    mqtt_url: str, database_url: str | None, tmp: Path, **settings: str
) -> Iterator[FrontProcess]:
    port = free_port()
    prefix = f"adv{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_MQTT_URL=mqtt_url,
        BRIDGE_MQTT_TOPIC_PREFIX=prefix,
        BRIDGE_JWT_SECRET=SECRET,
        BRIDGE_WS_PORT=str(port),
        BRIDGE_WS_NEW_CONNECTIONS_PER_IP_PER_MIN="10000",
        BRIDGE_STATE_DIR=str(tmp / "state"),
        **{f"BRIDGE_{k.upper()}": v for k, v in settings.items()},
    )
    if database_url:
        env["BRIDGE_DATABASE_URL"] = database_url
    log = tmp / f"front-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    front = FrontProcess(proc, port, prefix, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                if body["checks"].get("mqtt") == "ok":
                    break
            except (requests.RequestException, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"front did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield front
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame, masked with a zero key (legal; the payload then goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


class RawClient:
    """A WebSocket client on a blocking socket with a tiny receive buffer that never reads
    after the handshake: what the server sends it piles up on the server's side."""

    def __init__(self, port: int, token: str | None = None, path: str = "/ws") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{auth}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise AssertionError("handshake refused")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self.sent = 0

    def flood(self, data: bytes, seconds: float, stall_s: float = 1.0) -> bool:
        """Send ``data`` back to back for ``seconds``; True when the server stopped taking
        it (a send blocked for ``stall_s``), False when it took everything, and also when
        the server dropped the connection."""
        self.sock.settimeout(stall_s)
        block = data * max(1, 16384 // len(data))
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self.sock.sendall(block)
                self.sent += len(block) // len(data)
        except TimeoutError:
            return True
        except OSError:
            return False
        return False

    def closed_by_server(self, within_s: float) -> bool:
        """Whether the server has torn the connection down within ``within_s`` (reads what
        is buffered until EOF or a reset)."""
        self.sock.settimeout(0.5)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def close_code_of(data: bytes) -> int | None:
    """The code of the first close frame in a server's byte stream (unmasked frames)."""
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        if opcode == 0x8:
            return int.from_bytes(data[i : i + 2], "big") if n >= 2 else None
        i += n
    return None


async def canary_latencies(
    ws_url: str, token: str, publish: object, device: str, count: int, interval_s: float
) -> list[float]:
    """Publish ``count`` stream messages for ``device`` and return each one's delivery
    latency to a subscribed client (seconds); a missing one is infinity."""
    from websockets.asyncio.client import connect

    latencies: dict[int, float] = {}
    async with connect(
        ws_url + "/ws", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.recv()  # connected
        await ws.send(
            orjson.dumps({"type": "subscribe", "channel": "telemetry", "device_id": device})
        )
        while orjson.loads(await ws.recv())["type"] != "subscribed":
            pass
        sent: dict[int, float] = {}

        async def reader() -> None:
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg.get("type") == "telemetry_update":
                    i = int(msg["telemetry"]["t"]["value"])
                    latencies[i] = time.monotonic() - sent[i]

        task = asyncio.create_task(reader())
        for i in range(count):
            sent[i] = time.monotonic()
            publish(i)  # type: ignore[operator]
            await asyncio.sleep(interval_s)
        await asyncio.sleep(1.0)
        task.cancel()
    return [latencies.get(i, float("inf")) for i in range(count)]
