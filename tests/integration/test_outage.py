"""The database connection dies mid-stream: nothing acknowledged is lost, nothing doubled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from ingest.service import IngestService
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until

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
