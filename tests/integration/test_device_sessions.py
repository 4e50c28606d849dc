"""Interactive sessions with a device (Zhineng form), including the seed's Python client."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import websockets

from tests.helpers import MqttPeer, wait_until
from tests.integration.frontkit import Stack, recv, recv_type
from tests.integration.test_seed_clients import Output, seed_text

pytestmark = pytest.mark.integration


def device_inbox(stack: Stack, device: str) -> str:
    topic = stack.topics.device_command(device, "x").rsplit("/", 1)[0] + "/+"
    stack.peer.subscribe(topic)
    return topic[:-1]


def commands_seen(peer: MqttPeer, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in peer.messages(prefix)]


async def test_session_lifecycle_with_streamed_output(stack: Stack) -> None:
    inbox = device_inbox(stack, "shell-1")
    async with (
        await stack.client(stack.token(scope="commands:write", sub="alice")) as ws,
        await stack.client(stack.token(scope="commands:write", sub="bob")) as other,
    ):
        await recv(ws)
        await recv(other)
        await ws.send('{"type": "start_session", "id": 1, "tool_name": "shell-1", "args": ["-l"]}')
        started = await recv_type(ws, "session_started")
        sid = started["session_id"]
        assert started["tool_name"] == "shell-1" and started["status"] == "running"
        await ws.send(
            orjson.dumps({"type": "send_command", "session_id": sid, "command": "uptime"}).decode()
        )
        assert (await recv_type(ws, "command_sent"))["session_id"] == sid

        async def got_input() -> bool:
            return len(commands_seen(stack.peer, inbox)) >= 2

        await wait_until(got_input)
        start, line = commands_seen(stack.peer, inbox)[:2]
        assert start == {
            "command": "session.start",
            "parameters": {"args": ["-l"]},
            "session_id": sid,
        }
        assert line["command"] == "session.input" and line["parameters"] == {"line": "uptime"}
        result = stack.topics.device_command_result("shell-1", sid)
        stack.peer.publish(
            result, b'{"output": " 10:00 up 3 days", "status": "running", "done": false}'
        )
        out = await recv_type(ws, "output")
        assert out["session_id"] == sid and out["output"] == " 10:00 up 3 days"

        await other.send('{"type": "list_sessions"}')
        assert (await recv(other))["count"] == 0  # bob sees only his own
        await other.send(orjson.dumps({"type": "stop_session", "session_id": sid}).decode())
        assert (await recv(other))["code"] == 404
        await ws.send('{"type": "list_sessions"}')
        listed = await recv_type(ws, "sessions_list")
        assert listed["count"] == 1 and listed["sessions"][0]["session_id"] == sid
        await ws.send(orjson.dumps({"type": "stop_session", "session_id": sid}).decode())
        assert (await recv_type(ws, "session_stopped"))["status"] == "stopped"
        await ws.send(
            orjson.dumps({"type": "send_command", "session_id": sid, "command": "x"}).decode()
        )
        assert (await recv(ws))["code"] == 409
        await ws.send(orjson.dumps({"type": "delete_session", "session_id": sid}).decode())
        assert (await recv_type(ws, "session_deleted"))["session_id"] == sid
        await ws.send('{"type": "start_session", "tool_name": "a/#"}')
        assert (await recv(ws))["code"] == 422


async def test_zhineng_session_client(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(capsys)
    inbox = device_inbox(stack, "crush")
    text = seed_text("zhineng-bridge-api-examples.txt")
    start = text.index("class ZhinengBridgeClient:")
    end = text.index("# Usage", start)
    namespace: dict[str, Any] = {
        "websockets": websockets,
        "asyncio": asyncio,
        "json": __import__("json"),
    }
    exec(compile(text[start:end], "zhineng-session-seed", "exec"), namespace)  # noqa: S102
    client = namespace["ZhinengBridgeClient"](
        f"{stack.url}/?token={stack.token(scope='commands:write')}"
    )
    await client.connect()
    try:
        sessions = await client.list_sessions()
        print(f"Active sessions: {sessions.get('count', 0)}")
        session = await client.start_session("crush", ["--help"])
        print(f"Session started: {session.get('session_id')}")
        assert session["type"] == "session_started"

        async def started() -> bool:
            return bool(commands_seen(stack.peer, inbox))

        await wait_until(started)
        listener = asyncio.create_task(client.listen())
        stack.peer.publish(
            stack.topics.device_command_result("crush", session["session_id"]),
            b'{"output": "Usage: crush [options]", "status": "ok", "done": true}',
        )
        await out.wait_for(
            r"Received: \{'type': 'output', 'session_id': 'ses_\w+', 'output': 'Usage: crush"
        )
        listener.cancel()
        assert "Active sessions: 0" in out.read()
    finally:
        await client.disconnect()
