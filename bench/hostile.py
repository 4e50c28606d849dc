"""Hostile clients against a front process, shared by ``bench.floods``, ``bench.limits`` and
the attack tests (``tests/adversity``): the front as its own process (so its memory can be
read from /proc), a raw WebSocket client that floods and never reads (or pipelines and reads
in a thread), what the kernel says about that client's connection, canary dashboards that
measure their live deliveries or query answers meanwhile, which of the front's statements
PostgreSQL is running at a time, and a busy stream to publish."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.services import FrontProcess, front_process
from storage.pool import FRONT_APPLICATION_NAME


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def start_front(
    mqtt_url: str,
    database_url: str | None,
    tmp: Path,
    *,
    code_dir: Path | None = None,
    **settings: str,
) -> Iterator[FrontProcess]:
    """A front process (``bench.services.front_process``) on a topic prefix of its own, with
    ``BRIDGE_<SETTING>`` from ``settings``; ``code_dir``: the ``bridge`` of another checkout."""
    front_settings: dict[str, Any] = {"ws_new_connections_per_ip_per_min": "10000", **settings}
    prefix = f"adv{uuid.uuid4().hex[:8]}"
    with front_process(
        mqtt_url, database_url, tmp, prefix=prefix, code_dir=code_dir, **front_settings
    ) as front:
        yield front


async def store_readings(database_url: str, device: str, n: int) -> datetime:
    """``n`` stored readings of ``device`` (metric ``t``, the last 20 minutes, 1 ms apart), to
    query and replay; returns a time before all of them."""
    before = datetime.now(UTC) - timedelta(minutes=30)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            INSERT INTO readings (device_id, metric, ts, value, unit, received_at)
            SELECT $1, 't', now() - interval '20 minutes' + g * interval '1 ms', g, NULL,
                   now() - interval '20 minutes' + g * interval '1 ms'
            FROM generate_series(1, $2) AS g
            """,
            device,
            n,
        )
    finally:
        await conn.close()
    return before


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


@dataclass(frozen=True)
class TcpSocket:
    """One end of a TCP connection as /proc/net/tcp shows it."""

    state: int  # 1 ESTABLISHED, 4 FIN_WAIT1, 8 CLOSE_WAIT, ...
    tx_queue: int  # bytes written and not yet acknowledged by the peer
    rx_queue: int  # bytes received and not yet read by the process
    inode: int  # 0: no process holds the socket any more (orphaned, closing)


def tcp_sockets(port_a: int, port_b: int) -> dict[int, TcpSocket]:
    """Both ends of the loopback IPv4 connection between ``port_a`` and ``port_b``, keyed
    by their local port; an end the kernel no longer lists is absent."""
    found: dict[int, TcpSocket] = {}
    a, b = f":{port_a:04X} ", f":{port_b:04X} "
    with open("/proc/net/tcp") as f:
        text = f.read()
    for line in text.splitlines()[1:]:
        if a not in line or b not in line:
            continue
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if {local, remote} != {port_a, port_b}:
            continue
        tx, rx = (int(x, 16) for x in fields[4].split(":"))
        found[local] = TcpSocket(int(fields[3], 16), tx, rx, int(fields[9]))
    return found


def server_ends(port: int) -> dict[int, TcpSocket]:
    """The server's end of every loopback IPv4 connection to ``port``, keyed by the
    client's port: one read of /proc/net/tcp for all of a server's clients."""
    found: dict[int, TcpSocket] = {}
    local = f"0100007F:{port:04X} "
    with open("/proc/net/tcp") as f:
        text = f.read()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if fields[1] + " " != local:
            continue
        tx, rx = (int(x, 16) for x in fields[4].split(":"))
        client_port = int(fields[2].split(":")[1], 16)
        found[client_port] = TcpSocket(int(fields[3], 16), tx, rx, int(fields[9]))
    return found


class RawClient:
    """A WebSocket client on a blocking socket with a tiny receive buffer that never reads
    after the handshake: what the server sends it piles up on the server's side."""

    def __init__(
        self,
        port: int,
        token: str | None = None,
        path: str = "/ws",
        *,
        timeout: float = 10.0,
        rcvbuf: int = 4096,
    ) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # before connecting: the window the kernel offers depends on it
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
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
        self.local_port: int = self.sock.getsockname()[1]
        self.sent = 0  # whole frames handed to the kernel by flood()
        self.sent_bytes = 0
        self.dropped = False  # flood() ended on a reset / broken pipe
        # held around each send and its count, so that a watcher reading the kernel's
        # queues together with ``sent_bytes`` sees both at the same point
        self.lock = threading.Lock()

    def flood(
        self,
        data: bytes,
        seconds: float,
        stall_s: float = 1.0,
        *,
        count: int | None = None,
        persist: bool = False,
    ) -> bool:
        """Send ``data`` back to back for ``seconds`` (``count`` copies at most); True when
        the server stopped taking it (a send blocked for ``stall_s``), False when it took
        everything, and also when the server dropped the connection. ``persist``: go on
        trying after a stall until ``seconds`` are over (a stubborn attacker)."""
        block = data * max(1, 16384 // len(data))
        start = self.sent_bytes
        limit = None if count is None else count * len(data)
        end = time.monotonic() + seconds
        stalled = False
        pending = memoryview(b"")
        self.sock.setblocking(False)
        try:
            while (now := time.monotonic()) < end:
                if not pending:
                    if limit is None:
                        pending = memoryview(block)
                    else:
                        left = limit - (self.sent_bytes - start)
                        if left <= 0:
                            break
                        pending = memoryview(block)[:left]
                _, writable, _ = select.select([], [self.sock], [], min(stall_s, end - now))
                if not writable:
                    if time.monotonic() - now >= stall_s:
                        stalled = True
                        if not persist:
                            return True
                    continue
                with self.lock:
                    try:
                        n = self.sock.send(pending)
                    except BlockingIOError:
                        continue
                    self.sent_bytes += n
                    self.sent = (self.sent_bytes - start) // len(data)
                pending = pending[n:]
        except OSError:
            self.dropped = True
            return False
        finally:
            self.sock.setblocking(True)
        return stalled

    def kernel_view(self) -> tuple[TcpSocket | None, TcpSocket | None]:
        """(the server's end, this end) of the connection, None once the kernel dropped it."""
        ends = tcp_sockets(self.port, self.local_port)
        return ends.get(self.port), ends.get(self.local_port)

    def observe(self) -> tuple[int, TcpSocket] | None:
        """(bytes of the flood the server process has read off its socket, the server's end
        as the kernel shows it); None once the server no longer holds its socket. Read =
        sent, minus what still waits in this end's send queue and the server's receive
        queue."""
        with self.lock:
            server, mine = self.kernel_view()
            if server is None or mine is None or server.inode == 0:
                return None
            return self.sent_bytes - mine.tx_queue - server.rx_queue, server

    def server_read_bytes(self) -> int | None:
        seen = self.observe()
        return None if seen is None else seen[0]

    def server_dropped(self) -> bool:
        """Whether the server process has let go of its socket (closed or aborted it), read
        from the kernel's table: this does not read from the connection."""
        server, _ = self.kernel_view()
        return server is None or server.inode == 0

    def closed_by_server(self, within_s: float) -> bool:
        """Whether the server has let go of the connection within ``within_s``, read from the
        kernel's table without reading from the socket: a client that never reads must be
        torn down too, which a check that drains the server's buffers could not show."""
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            if self.server_dropped():
                return True
            time.sleep(0.05)
        return False

    def send_all(self, frames: list[bytes]) -> None:
        """``frames`` back to back, without waiting for anything in between (blocking)."""
        with self.lock:
            self.sock.sendall(b"".join(frames))

    def read_replies(
        self, done: Callable[[Replies], bool], keep: Collection[str] = (), timeout: float = 30.0
    ) -> Replies:
        """Read what the server sends until ``done(replies)``, ``timeout`` or the end of the
        connection (blocking; call it in a thread). Messages are counted by type and only
        those of the types in ``keep`` are parsed, so a thread can keep up with tens of
        thousands of frames a second without taking the GIL from the test for long; pings
        are answered."""
        replies = Replies()
        buffer = bytearray()
        self.sock.settimeout(0.2)
        end = time.monotonic() + timeout
        while not done(replies) and time.monotonic() < end:
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                break
            buffer += chunk
            for opcode, payload in server_frames(buffer):
                if opcode == 0x9:
                    self.send_all([frame(payload, opcode=0xA)])
                elif opcode == 0x8:
                    replies.close_code = int.from_bytes(payload[:2], "big") or None
                elif payload.startswith(b'{"type":"'):
                    type_ = payload[9 : payload.index(b'"', 9)].decode()
                    replies.types[type_] += 1
                    if type_ in keep:
                        replies.kept.append(orjson.loads(payload))
        return replies

    def close(self) -> None:
        self.sock.close()


@dataclass
class Replies:
    """What :meth:`RawClient.read_replies` read: messages by type, those it was asked to keep
    (parsed), and the code of a close frame if one came."""

    types: Counter[str] = field(default_factory=Counter)
    kept: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


def server_frames(buffer: bytearray) -> Iterator[tuple[int, bytes]]:
    """(opcode, payload) of each whole frame at the start of ``buffer`` (unmasked, as a
    server sends them), taken out of it; an incomplete last frame stays for the next read.
    Fragmented messages are not joined (the front sends none)."""
    i = 0
    try:
        while i + 2 <= len(buffer):
            opcode, n, at = buffer[i] & 0x0F, buffer[i + 1] & 0x7F, i + 2
            if n == 126:
                n, at = int.from_bytes(buffer[at : at + 2], "big"), at + 2
            elif n == 127:
                n, at = int.from_bytes(buffer[at : at + 8], "big"), at + 8
            if at > len(buffer) or at + n > len(buffer):
                break
            yield opcode, bytes(buffer[at : at + n])
            i = at + n
    finally:
        del buffer[:i]


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


def stream_event(device: str, value: float, metric: str = "t") -> bytes:
    """A validated-stream message as the ingest publishes it after commit."""
    now = datetime.now(UTC).isoformat()
    event = {"device_id": device, "metric": metric, "value": value, "unit": None, "ts": now}
    event["received_at"] = now
    return orjson.dumps(event)


async def canary(
    ws_url: str,
    token: str,
    publish: Callable[[int], object],
    device: str,
    interval_s: float,
    *,
    count: int | None = None,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    begin: asyncio.Event | None = None,
    grace_s: float = 1.0,
) -> list[float]:
    """A dashboard subscribed to ``device``'s stream: publish a message every ``interval_s``
    (``count`` of them, or until ``stop`` is set) and return each one's delivery latency
    (seconds; infinity when it did not arrive within ``grace_s`` of the last publish).
    ``started`` is set once the subscription is live; publishing waits for ``begin``."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    latencies: dict[int, float] = {}
    sent: dict[int, float] = {}
    arrived = asyncio.Event()  # set on each delivery, and when the connection ends
    async with connect(
        ws_url + "/ws", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.recv()  # connected
        await ws.send(
            orjson.dumps({"type": "subscribe", "channel": "telemetry", "device_id": device})
        )
        while orjson.loads(await ws.recv())["type"] != "subscribed":
            pass
        if started is not None:
            started.set()
        if begin is not None:
            await begin.wait()

        async def reader() -> None:
            try:
                async for raw in ws:
                    received = time.monotonic()
                    msg = orjson.loads(raw)
                    if msg.get("type") == "telemetry_update":
                        i = int(msg["telemetry"]["t"]["value"])
                        latencies[i] = received - sent[i]
                        arrived.set()
            except ConnectionClosed:
                pass
            finally:
                arrived.set()

        task = asyncio.create_task(reader())
        i, tick = 0, time.monotonic()
        while (count is None or i < count) and not (stop is not None and stop.is_set()):
            sent[i] = time.monotonic()
            publish(i)
            i += 1
            tick += interval_s
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        end = time.monotonic() + grace_s
        while len(latencies) < i and not task.done() and (left := end - time.monotonic()) > 0:
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), left)
        task.cancel()
    return [latencies.get(k, float("inf")) for k in range(i)]


# Statements of a front's pool running at one moment: ``query`` text and nothing else, so a
# sample is cheap enough to take every few milliseconds.
_ACTIVE = (
    "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()"
)


@dataclass
class ActiveStatements:
    """How many of the front's statements that ``match`` (by their SQL text) PostgreSQL runs
    at once, sampled from pg_stat_activity on ``conn`` (a connection of the caller's own, to
    the front's database). ``counts[n]``: samples in which ``n`` were running."""

    conn: asyncpg.Connection
    match: Callable[[str], bool]
    application_name: str = FRONT_APPLICATION_NAME
    counts: Counter[int] = field(default_factory=Counter)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)

    @property
    def samples(self) -> int:
        return sum(self.counts.values())

    @property
    def busy(self) -> int:
        """Samples that caught at least one: the sampler saw the work it is meant to watch."""
        return self.samples - self.counts[0]

    async def sample(self) -> int:
        rows = await self.conn.fetch(_ACTIVE, self.application_name)
        n = sum(1 for r in rows if self.match(r["query"]))
        self.counts[n] += 1
        return n

    async def run(self, stop: asyncio.Event, interval_s: float = 0.002) -> None:
        """Sample until ``stop`` is set."""
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


@contextlib.asynccontextmanager
async def watching(
    database_url: str, match: Callable[[str], bool], application_name: str = FRONT_APPLICATION_NAME
) -> AsyncIterator[ActiveStatements]:
    """:class:`ActiveStatements` sampled every 2 ms for as long as the block runs."""
    conn = await asyncpg.connect(database_url)
    watch = ActiveStatements(conn, match, application_name)
    stop = asyncio.Event()
    sampler = asyncio.create_task(watch.run(stop))
    try:
        yield watch
    finally:
        stop.set()
        await sampler
        await conn.close()


# -- what one connection makes the front run at once (bench.limits, test_front_concurrency) --
def heavy_statement(sql: str) -> bool:
    """The reads of :func:`heavy_query` and of replays, told apart by their SQL from the plain
    page :class:`QueryCanary` asks for: bucketed queries (storage/telemetry.py) and replays
    (storage/history.py)."""
    return "date_bin($8::interval" in sql or "received_at > $1" in sql


def heavy_query(id_: str, device: str = "big-1") -> dict[str, Any]:
    """Heavy for the database, light on the wire: per-second averages over the hour of every
    stored row of ``device``, answered with a page of 50 buckets."""
    return {
        "type": "query",
        "id": id_,
        "device_id": device,
        "metric": "t",
        "from": "-1h",
        "bucket": "1s",
        "agg": "avg",
        "limit": 50,
    }


async def store_gap(database_url: str, devices: list[str], n: int) -> None:
    """``n`` readings of each device received now: what the ingest stored while the front's
    broker link was down, so the front never streamed them."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            INSERT INTO readings (device_id, metric, ts, value, unit, received_at)
            SELECT d, 't', now() - g * interval '1 ms', g, NULL, now() + g * interval '1 us'
            FROM unnest($1::text[]) AS d, generate_series(1, $2) AS g
            """,
            devices,
            n,
        )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def opened(front: FrontProcess) -> AsyncIterator[Any]:
    """An authenticated ``websockets`` client of ``front``, past its ``connected``."""
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {front.token()}"}
    async with connect(front.url + "/ws", additional_headers=headers, max_size=None) as ws:
        assert orjson.loads(await ws.recv())["type"] == "connected"
        yield ws


class QueryCanary:
    """A dashboard on a connection of its own asking for a small page of ``device`` (100
    stored readings; a plain query, not one :func:`heavy_statement` counts), one question at
    a time."""

    def __init__(self, ws: Any, device: str = "small-1") -> None:
        self.ws, self.device = ws, device
        self.asked = 0

    async def ask(self) -> float:
        self.asked += 1
        id_ = f"canary-{self.asked}"
        query: dict[str, Any] = {"type": "query", "id": id_, "device_id": self.device}
        query |= {"metric": "t", "from": "-1h", "limit": 100}
        started = time.monotonic()
        await self.ws.send(orjson.dumps(query))
        while True:
            msg = orjson.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if msg.get("id") == id_:
                assert msg["type"] == "query_result", msg
                assert msg["count"] == 100
                return time.monotonic() - started

    async def baseline(self, n: int = 10) -> list[float]:
        """``n`` answers with nothing else going on."""
        await self.ask()  # the first one prepares the statement
        return [await self.ask() for _ in range(n)]

    async def until(self, done: asyncio.Future[Any]) -> list[float]:
        """Latencies of one question after another until ``done``."""
        latencies = []
        while not done.done():
            latencies.append(await self.ask())
        return latencies


class Pipeliner:
    """A client that sends everything at once and reads in a thread (:class:`RawClient`):
    its messages are counted, not parsed, so that the caller's event loop stays free for the
    canary and the sampler. It reads: what is measured is concurrency, not backpressure."""

    def __init__(self, front: FrontProcess) -> None:
        self.client = RawClient(front.port, front.token(), rcvbuf=1 << 20)

    def send(self, messages: list[dict[str, Any]]) -> None:
        self.client.send_all([frame(orjson.dumps(m)) for m in messages])

    def read(self, queries: int, replays: int, timeout: float = 25) -> asyncio.Task[Replies]:
        """Until ``queries`` query results and ``replays`` replay_complete (or an error)."""

        def done(r: Replies) -> bool:
            enough = r.types["query_result"] >= queries and r.types["replay_complete"] >= replays
            return enough or r.types["error"] > 0

        keep = ("replay_complete", "error")
        read = asyncio.to_thread(self.client.read_replies, done, keep, timeout)
        return asyncio.create_task(read)


# -- many clients that never read (bench.limits, test_front_budget) --------------------------
def never_reading_subscriber(front: FrontProcess) -> RawClient:
    """A client subscribed to every reading that never reads after the ``subscribed``
    (blocking)."""
    client = RawClient(front.port, front.token())
    client.send_all([frame(b'{"type":"subscribe","channel":"telemetry"}')])
    replies = client.read_replies(lambda r: r.types["subscribed"] > 0, (), 10)
    assert replies.types["subscribed"] == 1, replies
    return client


# The longest names a reading can have (storage/names.py, ingest/payload.py): the kernel
# buffers a few MiB for each client before the front has to hold anything, and bigger frames
# fill it with fewer messages.
LONG_DEVICE = "d" * 58  # and a 6-digit number: 64
LONG_METRIC = "m" * 64
LONG_UNIT = "u" * 32


def publish_stream(client: Any, prefix: str, per_s: int, stop: threading.Event) -> int:
    """Readings of the validated stream through ``client`` (a connected paho client), each
    of a device of its own (nothing conflates) with names of the longest legal length,
    ``per_s`` a second (QoS 0) until ``stop`` (blocking); returns how many."""
    from ingest.topics import Topics

    topics = Topics(prefix)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
    n, started = 0, time.monotonic()
    while not stop.is_set():
        time.sleep(max(0.0, started + n / per_s - time.monotonic()))
        for _ in range(max(1, per_s // 20)):
            device = f"{LONG_DEVICE}{n:06d}"
            event = (
                f'{{"device_id":"{device}","metric":"{LONG_METRIC}","value":{n},'
                f'"unit":"{LONG_UNIT}","ts":"{stamp}","received_at":"{stamp}"}}'
            )
            client.publish(topics.telemetry(device, LONG_METRIC), event, qos=0)
            n += 1
    return n


@dataclass
class Teardown:
    """When the kernel last took more of a client's data (the front's send queue to it grew)
    and when the front let go of its socket, from /proc/net/tcp."""

    grew_at: float
    most: int = 0
    gone_at: float | None = None

    @property
    def after_behind(self) -> float | None:
        """Seconds from falling behind (the kernel full) to the teardown."""
        return None if self.gone_at is None else self.gone_at - self.grew_at


def watch_teardowns(port: int, clients: list[RawClient], seen: dict[int, Teardown]) -> bool:
    """One look at the front's end of each client's connection; True once all are gone."""
    ends, now = server_ends(port), time.monotonic()
    for c in clients:
        t = seen.setdefault(c.local_port, Teardown(now))
        end = ends.get(c.local_port)
        if t.gone_at is not None:
            continue
        if end is None or end.inode == 0:
            t.gone_at = now
        elif end.tx_queue > t.most:
            t.most, t.grew_at = end.tx_queue, now
    return all(t.gone_at is not None for t in seen.values())
