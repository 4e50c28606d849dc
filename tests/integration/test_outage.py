"""The database fails under load (connections terminated mid-batch, the server stopped):
nothing acknowledged is lost, nothing doubled."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from bridge.app import run_migrations
from ingest.service import IngestService
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until
from tests.pgcluster import PrivatePostgres

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_terminated_database_connections_are_retried_without_loss(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    async with running_ingest(broker.url, database_url, topics, batch_max_messages=200) as service:
        await _flood_while_terminating(broker, database_url, topics, service)


async def _flood_while_terminating(
    broker: BrokerInfo, database_url: str, topics: Topics, service: IngestService
) -> None:
    db = await asyncpg.connect(database_url)
    peer = MqttPeer(broker.url)
    try:
        base = datetime.now(UTC) - timedelta(minutes=5)
        items = [
            (
                topics.device_telemetry(f"o-{i % 7}"),
                orjson.dumps({"ts": (base + timedelta(milliseconds=i)).isoformat(), "v": i}),
            )
            for i in range(6000)
        ]
        publishing = asyncio.create_task(asyncio.to_thread(peer.publish_many, items))
        terminated = 0
        while not publishing.done():
            # Kill the ingest's writer connection whenever it is there: mid-COPY, mid-commit.
            terminated += int(
                await db.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = 'telemetry-bridge'"
                )
            )
            await asyncio.sleep(0.05)
        assert await publishing == len(items)

        async def all_stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= len(items)

        await wait_until(all_stored, timeout=60)
        assert int(await db.fetchval("SELECT count(*) FROM readings")) == len(items)
        values = {r["value"] for r in await db.fetch("SELECT value FROM readings")}
        assert values == {float(i) for i in range(6000)}
        assert terminated > 0, "no connection was terminated; the test proved nothing"
        assert service.stats.db_retries > 0
    finally:
        peer.close()
        await db.close()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    # Not tmp_path: pytest's directories are private to root, and PostgreSQL runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="tb-pg-"))
    base.chmod(0o755)
    try:
        pg = PrivatePostgres(base)
        pg.init()
        pg.start()
    except (RuntimeError, OSError, KeyError) as exc:  # KeyError: no `postgres` user
        pytest.skip(f"cannot run a private PostgreSQL cluster: {exc}")
    yield pg
    with contextlib.suppress(RuntimeError):
        pg.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(180)
async def test_database_stopped_under_load_loses_nothing_and_acks_nothing(
    broker: BrokerInfo, private_pg: PrivatePostgres, topic_prefix: str
) -> None:
    """PostgreSQL goes away for several seconds while devices keep publishing at QoS 1: no
    batch commits (so nothing is acknowledged) while it is down, and afterwards every
    published reading is stored exactly once."""
    await run_migrations(private_pg.url)
    topics = Topics(topic_prefix)
    base = datetime.now(UTC) - timedelta(minutes=5)
    items = [
        (
            topics.device_telemetry(f"pg-{i % 11}"),
            orjson.dumps({"ts": (base + timedelta(milliseconds=i)).isoformat(), "v": i}),
        )
        for i in range(8000)
    ]
    peer = MqttPeer(broker.url)
    try:
        async with running_ingest(
            broker.url, private_pg.url, topics, batch_max_messages=250
        ) as service:
            first = await asyncio.to_thread(peer.publish_many, items[:2000])
            assert first == 2000

            async def some_stored() -> bool:
                return service.stats.readings_stored >= 2000

            await wait_until(some_stored, timeout=30)
            await asyncio.to_thread(private_pg.stop)
            publishing = asyncio.create_task(asyncio.to_thread(peer.publish_many, items[2000:]))
            await asyncio.sleep(3)  # an outage of a few seconds, under load
            batches_while_down = service.stats.batches
            stored_while_down = service.stats.readings_stored
            await asyncio.sleep(2)
            assert service.stats.batches == batches_while_down, "a batch committed while down"
            assert service.stats.readings_stored == stored_while_down
            await asyncio.to_thread(private_pg.start)
            assert await publishing == 6000  # the broker acknowledged every publish

            async def all_stored() -> bool:
                return service.stats.readings_stored >= len(items)

            await wait_until(all_stored, timeout=90)
            assert service.stats.db_retries > 0
        db = await asyncpg.connect(private_pg.url)
        try:
            assert await db.fetchval("SELECT count(*) FROM readings") == len(items)
            values = {r["value"] for r in await db.fetch("SELECT value FROM readings")}
            assert values == {float(i) for i in range(len(items))}
        finally:
            await db.close()
    finally:
        peer.close()
