"""How many storage reads one connection can make the front run at once: a client that
pipelines queries, batches of queries and ``subscribe`` with ``since`` without waiting for
the answers, and a client whose resumable subscriptions all replay after a gap in the front's
broker link. Measured where the reads happen, in pg_stat_activity (the front's pool has an
application name of its own), while a second client's queries must keep their normal time.
The README's limits table promises one query or replay at a time per connection."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.topics import Topics
from tests.adversity.hostile import (
    ActiveStatements,
    FrontProcess,
    Pipeliner,
    QueryCanary,
    Replies,
    heavy_query,
    heavy_statement,
    opened,
    start_front,
    store_gap,
    store_readings,
    watching,
)
from tests.helpers import BrokerInfo, MqttPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PER_CONNECTION = 1  # queries and replays of one connection reading storage at once (README)
BIG_ROWS = 10_000  # what each heavy query aggregates: ~10-30 ms of PostgreSQL time here


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
    attacker = Pipeliner(front)
    async with opened(front) as canary_ws, watching(database_url, heavy_statement) as watch:
        canary = QueryCanary(canary_ws)
        baseline = statistics.median(await canary.baseline())
        attacker.send(frames)  # back to back: nothing waits for an answer
        reading = attacker.read(200, replays)
        latencies = await canary.until(reading)
        replies = await reading
    assert_answered(replies, 200, [2000] * replays)
    assert_one_at_a_time(watch)
    assert_canary_served(baseline, latencies)


async def test_replays_after_a_broker_gap_run_one_at_a_time_per_connection(
    front: FrontProcess, database_url: str, stored: None, peer: MqttPeer
) -> None:
    """After a gap every resumable subscription replays what storage got meanwhile. Twenty
    subscriptions of one connection used to replay as twenty tasks, holding up to all four
    of the process's long-read slots at once, and the other clients' queries behind them."""
    devices = [f"gap-{k}" for k in range(20)]
    attacker = Pipeliner(front)
    subscribe = {"type": "subscribe", "channel": "telemetry"}
    attacker.send([subscribe | {"device_id": d} for d in devices])
    subscribed = await asyncio.to_thread(
        attacker.client.read_replies, lambda r: r.types["subscribed"] == len(devices), (), 10
    )
    assert subscribed.types["subscribed"] == len(devices), subscribed
    await store_gap(database_url, devices, 3000)
    async with opened(front) as canary_ws, watching(database_url, heavy_statement) as watch:
        canary = QueryCanary(canary_ws)
        baseline = statistics.median(await canary.baseline())
        # what the stream publisher sends after it dropped messages: every front replays
        peer.publish(Topics(front.prefix).stream_resync(), b"{}")
        attacker.send([heavy_query(f"q{i}") for i in range(20)])  # and it keeps asking
        reading = attacker.read(20, len(devices))
        latencies = await canary.until(reading)
        replies = await reading
    assert_answered(replies, 20, [3000] * len(devices))
    assert_one_at_a_time(watch)
    assert_canary_served(baseline, latencies)
