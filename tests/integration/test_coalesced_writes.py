"""Frames queued for a client in one burst reach it in one write, in order, over a real
WebSocket connection (plain and with per-message deflate)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.connection import Connection, Connections, FrontStats
from bridge.limits import FrontLimits
from bridge.outbound import OutboundQueue

pytestmark = pytest.mark.timeout(30)


@dataclass
class _Output:
    """What a Connection writes from: a session's queue and its two flags."""

    queue: OutboundQueue = field(default_factory=OutboundQueue)
    batch_mode: bool = False
    close_request: tuple[int, str] | None = None


@dataclass
class _Server:
    connections: Connections
    opened: asyncio.Queue[Connection]
    port: int
    compression: str | None  # what the server offers, and the test's client asks for


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[_Server]:
    stats = FrontStats()
    connections = Connections(stats, FrontLimits())
    opened: asyncio.Queue[Connection] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        conn = connections.accept(ws)
        conn.session = _Output()  # type: ignore[assignment]
        await opened.put(conn)
        await ws.wait_closed()

    compression = getattr(request, "param", None)
    async with serve(handler, "127.0.0.1", 0, compression=compression) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield _Server(connections, opened, port, compression)


class _Counting(ClientConnection):
    """A client connection that counts the bytes it reads off the socket."""

    wire_bytes = 0

    def data_received(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        super().data_received(data)


def _frame(i: int) -> bytes:
    return orjson.dumps({"type": "telemetry_update", "n": i, "pad": "x" * (i % 300)})


async def _receive(ws: object, n: int) -> list[int]:
    got = []
    for _ in range(n):
        async with asyncio.timeout(5):
            got.append(orjson.loads(await ws.recv())["n"])  # type: ignore[attr-defined]
    return got


@pytest.mark.parametrize("server", [None, "deflate"], indirect=True)
async def test_a_burst_for_one_client_is_one_write_in_order(server: _Server) -> None:
    async with connect(
        f"ws://127.0.0.1:{server.port}",
        compression=server.compression,
        create_connection=_Counting,
    ) as ws:
        conn = await server.opened.get()
        assert bool(conn.ws.protocol.extensions) == (server.compression is not None)
        queue = conn.session.queue
        frames = [_frame(i) for i in range(50)]  # e.g. one broker read this client matches
        for frame in frames:
            queue.put(frame, time.monotonic())
            conn.kick()
        assert server.connections.stats.batches == 0  # nothing written mid-burst
        assert await _receive(ws, 50) == list(range(50))
        assert server.connections.stats.sent == 50
        assert server.connections.stats.batches == 1
        payload = sum(len(f) for f in frames)
        assert isinstance(ws, _Counting)
        if server.compression:  # each frame went through this client's compressor
            assert ws.wire_bytes < payload / 2
        else:
            assert ws.wire_bytes >= payload


async def test_a_burst_past_the_conflation_point_reaches_a_reading_client_whole(
    server: _Server,
) -> None:
    """One broker read can bring a client more readings of one metric than make its queue
    conflate (an ingest's backlog after a restart). The client reads: it is not behind, so
    it gets every one of them, not the last value alone (the scale-out test's lost runs)."""
    async with connect(f"ws://127.0.0.1:{server.port}") as ws:
        conn = await server.opened.get()
        queue = conn.session.queue
        n = 3 * queue.conflate_from + 7
        for i in range(n):
            queue.put(_frame(i), time.monotonic(), key=("s", "d", "m"))
            conn.kick()
        assert queue.conflated == 0
        assert await _receive(ws, n) == list(range(n))
        assert server.connections.stats.sent == n


async def test_a_client_whose_socket_is_full_gets_the_latest_value(server: _Server) -> None:
    async with connect(f"ws://127.0.0.1:{server.port}") as ws:
        conn = await server.opened.get()
        queue = conn.session.queue
        conn.ws.pause_writing()  # what the transport calls when the client's socket is full
        n = 3 * queue.conflate_from
        for i in range(n):
            queue.put(_frame(i), time.monotonic(), key=("s", "d", "m"))
            conn.kick()
        assert server.connections.stats.sent == 0  # nothing written: the client is behind
        assert queue.conflated == n - queue.conflate_from
        conn.ws.resume_writing()
        conn.kick()
        expected = [*range(queue.conflate_from - 1), n - 1]  # the newest replaced the last
        assert await _receive(ws, len(expected)) == expected


async def test_every_client_of_a_burst_gets_its_frames_in_one_flush(server: _Server) -> None:
    """One flush for the whole burst: three clients, each its own write."""
    clients = [await connect(f"ws://127.0.0.1:{server.port}").__aenter__() for _ in range(3)]
    try:
        conns = [await server.opened.get() for _ in clients]
        for i in range(10):  # interleaved, as one message after another reaches each
            for conn in conns:
                conn.session.queue.put(_frame(i), time.monotonic())
                conn.kick()
        for ws in clients:
            assert await _receive(ws, 10) == list(range(10))
        assert server.connections.stats.batches == 3
    finally:
        for ws in clients:
            await ws.close()


async def test_a_reply_after_live_frames_stays_after_them(server: _Server) -> None:
    async with connect(f"ws://127.0.0.1:{server.port}") as ws:
        conn = await server.opened.get()
        queue = conn.session.queue
        queue.put(_frame(0), time.monotonic(), key=("s", "d", "m"))
        conn.kick()
        queue.put(_frame(1), time.monotonic(), force=True)  # a reply: never dropped
        conn.kick()
        queue.put(_frame(2), time.monotonic(), key=("s", "d", "m"))
        conn.kick()
        assert await _receive(ws, 3) == [0, 1, 2]


class _BrokenQueue(OutboundQueue):
    def pop(self, limit: int = 100) -> list[bytes]:
        raise RuntimeError("a bug in one client's output")


async def test_one_client_failing_to_write_leaves_the_others_written(server: _Server) -> None:
    clients = [await connect(f"ws://127.0.0.1:{server.port}").__aenter__() for _ in range(3)]
    try:
        conns = [await server.opened.get() for _ in clients]
        conns[0].session.queue = _BrokenQueue()
        for conn in conns:
            conn.session.queue.put(_frame(7), time.monotonic())
            conn.kick()
        for ws in clients[1:]:
            assert await _receive(ws, 1) == [7]
        assert not conns[0].scheduled  # a later burst tries it again
    finally:
        for ws in clients:
            await ws.close()
