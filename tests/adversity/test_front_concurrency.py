"""How many storage reads one connection can make the front run at once: a client that
pipelines queries, batches of queries and ``subscribe`` with ``since`` without waiting for
the answers, and a client whose resumable subscriptions all replay after a gap in the front's
broker link. Measured where the reads happen, in pg_stat_activity (the front's pool has an
application name of its own), while a second client's queries must keep their normal time.
The README's limits table promises one query or replay at a time per connection."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ingest.topics import Topics
from tests.adversity.hostile import (
    ActiveStatements,
    FrontProcess,
    RawClient,
    Replies,
    frame,
    start_front,
    store_readings,
)
from tests.helpers import BrokerInfo, MqttPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PER_CONNECTION = 1  # queries and replays of one connection reading storage at once (README)
BIG_ROWS = 10_000  # what each heavy query aggregates: ~10-30 ms of PostgreSQL time here


def heavy_statement(sql: str) -> bool:
    """The attacker's reads, told apart from the canary's plain page by their SQL: bucketed
    queries (storage/telemetry.py) and replays (storage/history.py)."""
    return "date_bin($8::interval" in sql or "received_at > $1" in sql


def heavy_query(id_: str) -> dict[str, Any]:
    """Heavy for the database, light on the wire: per-second averages over the hour of every
    stored row of ``big-1``, answered with a page of 50 buckets."""
    return {
        "type": "query",
        "id": id_,
        "device_id": "big-1",
        "metric": "t",
        "from": "-1h",
        "bucket": "1s",
        "agg": "avg",
        "limit": 50,
    }


@pytest.fixture
def front(broker: BrokerInfo, database_url: str, tmp_path: Path) -> Iterator[FrontProcess]:
    # The message rate is raised so that everything the attacker pipelines is accepted:
    # the limit under test is how much of it runs at once, not how much is let in.
    with start_front(
        broker.url, database_url, tmp_path, ws_messages_per_s="1000", ws_burst="1000"
    ) as front:
        yield front


@pytest.fixture
async def stored(database_url: str) -> None:
    await store_readings(database_url, "big-1", BIG_ROWS)
    await store_readings(database_url, "small-1", 100)
    for k in range(20):
        await store_readings(database_url, f"rep-{k}", 2000)


@contextlib.asynccontextmanager
async def opened(front: FrontProcess) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {front.token()}"}
    async with connect(front.url + "/ws", additional_headers=headers, max_size=None) as ws:
        assert orjson.loads(await ws.recv())["type"] == "connected"
        yield ws


class QueryCanary:
    """A dashboard on a connection of its own asking for a small page (a plain query, not
    one :func:`heavy_statement` counts), one question at a time."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.asked = 0

    async def ask(self) -> float:
        self.asked += 1
        id_ = f"canary-{self.asked}"
        query = {"type": "query", "id": id_, "device_id": "small-1", "metric": "t", "limit": 100}
        query["from"] = "-1h"
        started = time.monotonic()
        await self.ws.send(orjson.dumps(query))
        while True:
            msg = orjson.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if msg.get("id") == id_:
                assert msg["type"] == "query_result", msg
                assert msg["count"] == 100
                return time.monotonic() - started

    async def baseline(self, n: int = 10) -> float:
        """The median of ``n`` answers with nothing else going on."""
        await self.ask()  # the first one prepares the statement
        return statistics.median([await self.ask() for _ in range(n)])

    async def until(self, done: asyncio.Future[Any]) -> list[float]:
        """Latencies of one question after another until ``done``."""
        latencies = []
        while not done.done():
            latencies.append(await self.ask())
        return latencies


class Attacker:
    """A client that sends everything at once and reads in a thread (``RawClient``): its
    messages are counted, not parsed, so that the test's own event loop stays free for the
    canary and the sampler. It reads: what is measured is concurrency, not backpressure."""

    def __init__(self, front: FrontProcess) -> None:
        self.client = RawClient(front.port, front.token(), rcvbuf=1 << 20)

    def send(self, messages: list[dict[str, Any]]) -> None:
        self.client.send_all([frame(orjson.dumps(m)) for m in messages])

    def read(self, queries: int, replays: int) -> asyncio.Task[Replies]:
        def done(r: Replies) -> bool:
            enough = r.types["query_result"] >= queries and r.types["replay_complete"] >= replays
            return enough or r.types["error"] > 0

        keep = ("replay_complete", "error")
        return asyncio.create_task(asyncio.to_thread(self.client.read_replies, done, keep, 25))


@contextlib.asynccontextmanager
async def watching(database_url: str) -> AsyncIterator[ActiveStatements]:
    """The attacker's statements sampled every 2 ms for as long as the block runs."""
    conn = await asyncpg.connect(database_url)
    watch = ActiveStatements(conn, heavy_statement)
    stop = asyncio.Event()
    sampler = asyncio.create_task(watch.run(stop))
    try:
        yield watch
    finally:
        stop.set()
        await sampler
        await conn.close()


def assert_answered(replies: Replies, queries: int, replayed: list[int]) -> None:
    kept = replies.kept
    assert not replies.types["error"], [m for m in kept if m["type"] == "error"]
    assert replies.types["query_result"] == queries, replies.types
    assert [m["count"] for m in kept if m["type"] == "replay_complete"] == replayed


def assert_one_at_a_time(watch: ActiveStatements) -> None:
    # the sampler did see the attacker's reads (a broken match would pass any bound)
    assert watch.busy >= 20, f"the attacker's reads were caught in {watch.busy} samples"
    assert watch.peak <= PER_CONNECTION, f"samples by reads running at once: {dict(watch.counts)}"


def assert_canary_served(baseline: float, latencies: list[float]) -> None:
    assert latencies, "the canary asked nothing while the attack ran"
    bound = max(1.0, 10 * baseline)
    assert max(latencies) < bound, (
        f"canary worst {max(latencies) * 1000:.0f} ms (baseline median "
        f"{baseline * 1000:.1f} ms, {len(latencies)} answers)"
    )


async def test_pipelined_queries_batches_and_replays_run_one_at_a_time(
    front: FrontProcess, database_url: str, stored: None
) -> None:
    since = {"type": "subscribe", "channel": "telemetry", "since": "2000-01-01T00:00:00Z"}
    frames: list[dict[str, Any]] = []
    for i in range(150):
        frames.append(heavy_query(f"q{i}"))
        if i in (50, 100):  # and two batches of 25: 200 queries in all
            items = [heavy_query(f"b{i}-{j}") for j in range(25)]
            frames.append({"type": "batch", "id": f"b{i}", "messages": items})
        if i % 15 == 7:  # ten replays of 2,000 stored readings, each a subscription of its own
            frames.append(since | {"device_id": f"rep-{i // 15}"})
    replays = sum(1 for f in frames if f["type"] == "subscribe")
    attacker = Attacker(front)
    async with opened(front) as canary_ws, watching(database_url) as watch:
        canary = QueryCanary(canary_ws)
        baseline = await canary.baseline()
        attacker.send(frames)  # back to back: nothing waits for an answer
        reading = attacker.read(200, replays)
        latencies = await canary.until(reading)
        replies = await reading
    assert_answered(replies, 200, [2000] * replays)
    assert_one_at_a_time(watch)
    assert_canary_served(baseline, latencies)


async def store_gap(db: asyncpg.Connection, devices: list[str], n: int) -> None:
    """``n`` readings of each device received now: what the ingest stored while the front's
    broker link was down, so the front never streamed them."""
    await db.execute(
        """
        INSERT INTO readings (device_id, metric, ts, value, unit, received_at)
        SELECT d, 't', now() - g * interval '1 ms', g, NULL, now() + g * interval '1 us'
        FROM unnest($1::text[]) AS d, generate_series(1, $2) AS g
        """,
        devices,
        n,
    )


async def test_replays_after_a_broker_gap_run_one_at_a_time_per_connection(
    front: FrontProcess, database_url: str, stored: None, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    """After a gap every resumable subscription replays what storage got meanwhile. Twenty
    subscriptions of one connection used to replay as twenty tasks, holding every heavy
    slot of the process at once (4) and the other clients' queries behind them."""
    devices = [f"gap-{k}" for k in range(20)]
    attacker = Attacker(front)
    subscribe = {"type": "subscribe", "channel": "telemetry"}
    attacker.send([subscribe | {"device_id": d} for d in devices])
    subscribed = await asyncio.to_thread(
        attacker.client.read_replies, lambda r: r.types["subscribed"] == len(devices), (), 10
    )
    assert subscribed.types["subscribed"] == len(devices), subscribed
    await store_gap(db, devices, 3000)
    async with opened(front) as canary_ws, watching(database_url) as watch:
        canary = QueryCanary(canary_ws)
        baseline = await canary.baseline()
        # what the stream publisher sends after it dropped messages: every front replays
        peer.publish(Topics(front.prefix).stream_resync(), b"{}")
        attacker.send([heavy_query(f"q{i}") for i in range(20)])  # and it keeps asking
        reading = attacker.read(20, len(devices))
        latencies = await canary.until(reading)
        replies = await reading
    assert_answered(replies, 20, [3000] * len(devices))
    assert_one_at_a_time(watch)
    assert_canary_served(baseline, latencies)
