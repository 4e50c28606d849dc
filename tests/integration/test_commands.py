"""Commands to devices (round trip, progress, timeout) and telemetry from WebSocket clients."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from tests.helpers import wait_until
from tests.integration.frontkit import Stack, recv, recv_type

pytestmark = pytest.mark.integration


async def test_command_round_trip_with_progress(stack: Stack, database_url: str) -> None:
    device_topic = stack.topics.device_command("pump-1", "x").rsplit("/", 1)[0] + "/+"
    stack.peer.subscribe(device_topic)
    async with await stack.client(stack.token(scope="commands:write")) as ws:
        await recv(ws)
        await ws.send(
            orjson.dumps(
                {
                    "type": "command",
                    "id": 9,
                    "agentId": "pump-1",
                    "command": "reboot",
                    "parameters": {"delay": 1},
                }
            ).decode()
        )

        async def delivered() -> bool:
            return bool(stack.peer.messages(device_topic[:-1]))

        await wait_until(delivered)
        sent = stack.peer.messages(device_topic[:-1])[0]
        assert orjson.loads(sent.payload) == {
            "command": "reboot",
            "parameters": {"delay": 1},
            "timeout_s": 10.0,
        }
        assert sent.qos == 1
        result_topic = sent.topic + "/result"
        stack.peer.publish(result_topic, b'{"status": "running", "progress": 50, "done": false}')
        progress = await recv_type(ws, "command_result")
        assert (
            progress["status"] == "running" and progress["progress"] == 50 and progress["id"] == 9
        )
        stack.peer.publish(result_topic, b'{"status": "ok", "output": "rebooted", "done": true}')
        final = await recv_type(ws, "command_result")
        assert final["status"] == "success" and final["data"]["output"] == "rebooted"
        assert final["commandId"] == final["command_id"] == sent.topic.rsplit("/", 1)[1]
    db = await asyncpg.connect(database_url)
    try:
        row = await db.fetchrow("SELECT status, requested_by FROM commands")
        assert (row["status"], row["requested_by"]) == ("success", "alice")
    finally:
        await db.close()


async def test_command_timeout_and_refusals(stack: Stack) -> None:
    async with await stack.client(stack.token(scope="commands:write", devices=["pump-*"])) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "command", "id": 1, "device_id": "pump-2", "command": "ping", '
            '"timeout_s": 0.5}'
        )
        timeout = await recv_type(ws, "command_result", timeout=5)
        assert timeout["status"] == "timeout" and timeout["code"] == 504
        for frame, code in [
            ('{"type": "command", "device_id": "valve-1", "command": "ping"}', 403),  # claim
            ('{"type": "command", "device_id": "pump-1/#", "command": "ping"}', 422),
            ('{"type": "command", "device_id": "pump-1", "command": "rm -rf"}', 422),
            ('{"type": "command", "device_id": "pump-1", "command": "x", "timeout_s": 9999}', 422),
        ]:
            await ws.send(frame)
            assert (await recv(ws))["code"] == code
    async with await stack.client(stack.token(scope="telemetry:read")) as ws:
        await recv(ws)
        await ws.send('{"type": "command", "device_id": "pump-1", "command": "ping"}')
        assert (await recv(ws))["code"] == 403


async def test_telemetry_from_a_client_flows_through_the_ingest(
    stack: Stack, database_url: str
) -> None:
    async with await stack.client(stack.token(scope="telemetry:write telemetry:read")) as ws:
        await recv(ws)
        await ws.send('{"type": "subscribe", "channel": "telemetry", "device_id": "agent-001"}')
        assert (await recv(ws))["type"] == "subscribed"
        await ws.send(
            '{"type": "telemetry", "id": "t1", "agentId": "agent-001", "metrics": {"cpu": 12.5}}'
        )
        ack = await recv_type(ws, "telemetry_ack")
        assert ack["id"] == "t1" and ack["readings"] == 1
        update = await recv_type(ws, "telemetry_update")  # stored, then streamed back
        assert update["telemetry"]["cpu"]["value"] == 12.5
        await ws.send('{"type": "telemetry", "agentId": "agent-001", "metrics": {"cpu": "high"}}')
        assert (await recv(ws))["code"] == 422
    db = await asyncpg.connect(database_url)
    try:
        assert await db.fetchval("SELECT value FROM readings WHERE device_id = 'agent-001'") == 12.5
    finally:
        await db.close()
