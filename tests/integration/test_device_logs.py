"""Device logs: validated, republished on logs/{id}, filtered by level and text for subscribers."""

from __future__ import annotations

import asyncpg
import pytest

from tests.helpers import wait_until
from tests.integration.frontkit import Stack, nothing_more, recv, recv_type

pytestmark = pytest.mark.integration


async def test_logs_reach_subscribers_with_level_and_search_filters(
    stack: Stack, database_url: str
) -> None:
    async with await stack.client(stack.token()) as ws, await stack.client(stack.token()) as o1:
        await recv(ws)
        await recv(o1)
        await ws.send(
            '{"type": "subscribe", "channel": "logs", "device_id": "gw-1", '
            '"filters": {"level": ["ERROR", "warning"], "search": "disk"}}'
        )
        assert (await recv(ws))["mqtt_topics"] == [stack.topics.logs_filter("gw-1")]
        await o1.send('{"type": "subscribe-logs", "host": "gw-1", "application": "Anvil"}')
        assert (await recv(o1))["type"] == "subscribed"
        topic = stack.topics.device_telemetry("gw-1").replace("/telemetry", "/logs")
        stack.peer.publish(topic, b'{"level": "INFO", "message": "disk fine"}', qos=0)
        stack.peer.publish(topic, b'{"level": "ERROR", "message": "cpu hot"}', qos=0)
        stack.peer.publish(
            topic, b'{"level": "warn", "message": "Disk 91% full", "application": "Anvil"}', qos=0
        )
        stack.peer.publish(topic, b'{"level": "LOUD", "message": "x"}', qos=0)
        log = await recv_type(ws, "log")
        assert (log["device_id"], log["level"], log["message"]) == (
            "gw-1",
            "WARNING",
            "Disk 91% full",
        )
        await nothing_more(ws)
        # o1's application filter: only the Anvil line (it was accepted and ignored)
        o1_log = await recv_type(o1, "log")
        assert (o1_log["host"], o1_log["application"]) == ("gw-1", "Anvil")
        assert o1_log["message"] == "Disk 91% full"
        await nothing_more(o1)
    db = await asyncpg.connect(database_url)
    try:

        async def dead() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) FROM dead_letters WHERE topic LIKE '%/logs'")
            )

        await wait_until(dead)
    finally:
        await db.close()
