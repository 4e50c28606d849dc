"""Nexus (seeds/nexus-websocket-bidirectional.txt) against the real stack.

The events form: token in the URL (or a Bearer header) on /api/v1/events, ``connected``,
``subscribe``/``unsubscribe`` by event type with ``filters``, ``event {eventType, data}``,
``ping``/``pong``, ``command``/``command_result``, ``telemetry``/``telemetry_ack``, errors;
then the document's Node.js and browser clients under node. Its agents are devices
(``agentId`` = device id); its task events have no counterpart here and are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conformance.kit import (
    EVERY_SCOPE,
    Node,
    ask,
    device_status,
    frames,
    log_line,
    make_rule,
    raise_alert,
    seed_text,
    send,
    system_status,
)
from tests.helpers import wait_until
from tests.integration.frontkit import Stack, nothing_more, recv, recv_type

pytestmark = pytest.mark.integration

URL_PATH = "/api/v1/events"


async def nexus(stack: Stack, scope: str = EVERY_SCOPE) -> Any:
    ws = await connect(f"{stack.url}{URL_PATH}?token={stack.token(scope=scope)}", open_timeout=5)
    hello = await recv(ws)
    assert hello["type"] == "connected"
    return ws


# -- connection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["url", "header"])
async def test_connected_fields(stack: Stack, how: str) -> None:
    token = stack.token()
    if how == "url":
        ws = await connect(f"{stack.url}{URL_PATH}?token={token}", open_timeout=5)
    else:
        ws = await stack.client(token, path=URL_PATH)
    hello = await recv(ws)
    assert hello["type"] == "connected" and hello["clientId"].startswith("c_")
    assert hello["timestamp"].endswith("Z") and hello["message"]
    await ws.close()


async def test_ping_pong(stack: Stack) -> None:
    ws = await nexus(stack)
    pong = await ask(ws, {"type": "ping"})
    assert pong["type"] == "pong" and pong["timestamp"].endswith("Z")
    await send(ws, {"type": "pong"})  # the client's answer to a ping: nothing comes back
    await nothing_more(ws)
    await ws.close()


ERRORS: list[tuple[str, int]] = [
    ('{"type": "frobnicate"}', 400),  # "Unknown message type"
    ("{not json", 400),  # "Invalid JSON message"
    ('{"type": "subscribe", "events": "telemetry.updated"}', 422),
    ('{"type": "subscribe", "events": ["task.updated"]}', 422),
    ('{"type": "subscribe", "events": ["command.result"]}', 422),
    ('{"type": "unsubscribe", "events": ["device.status"]}', 404),
    ('{"type": "command", "command": "deploy", "parameters": {"version": "1"}}', 422),
    ('{"type": "command", "command": "deploy", "agentId": "a/b"}', 422),
    ('{"type": "telemetry", "agentId": "agent-1", "metrics": {"cpu": "high"}}', 422),
    ('{"type": "telemetry", "metrics": {"cpu": 1}}', 422),
]


@pytest.mark.parametrize(("frame", "code"), ERRORS)
async def test_error_fields(stack: Stack, frame: str, code: int) -> None:
    ws = await nexus(stack)
    reply = await ask(ws, frame)
    assert reply["type"] == "error" and reply["code"] == code
    assert reply["message"] and reply["timestamp"].endswith("Z")
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "scope"),
    [
        ('{"type": "command", "command": "deploy", "agentId": "agent-1"}', "telemetry:read"),
        ('{"type": "telemetry", "agentId": "agent-1", "metrics": {"cpu": 1}}', "telemetry:read"),
        ('{"type": "subscribe", "events": ["agent.status"]}', "telemetry:read"),
    ],
)
async def test_forbidden_without_the_scope(stack: Stack, frame: str, scope: str) -> None:
    ws = await nexus(stack, scope=scope)
    reply = await ask(ws, frame)
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 403, "forbidden")
    await ws.close()


# -- events: every event type, its data ------------------------------------------------------------

Feed = Callable[[Stack], None]

EVENTS: list[tuple[str, Feed, dict[str, Any]]] = [
    (
        "telemetry.updated",
        lambda s: s.reading("agent-t", cpu=45.2),
        {"device_id": "agent-t", "agentId": "agent-t", "metric": "cpu", "value": 45.2},
    ),
    (  # the document's server republishes the telemetry it receives under this name
        "telemetry.received",
        lambda s: s.reading("agent-t", memory=62.8),
        {"agentId": "agent-t", "metrics": {"memory": 62.8}},
    ),
    (
        "device.status",
        lambda s: device_status(s, "agent-s", "online", "offline", "heartbeat lost"),
        {"device_id": "agent-s", "new_status": "offline", "reason": "heartbeat lost"},
    ),
    (  # the document's agents are devices
        "agent.status",
        lambda s: device_status(s, "agent-s", "offline", "online", "back"),
        {"agentId": "agent-s", "status": "online", "old_status": "offline"},
    ),
    (
        "system.status",
        lambda s: system_status(s, "bridge-nx", cpu_usage=5.0),
        {"component": "bridge-nx", "cpu_usage": 5.0},
    ),
    (
        "log.entry",
        lambda s: log_line(s, "agent-l", level="error", message="disk full", application="x"),
        {"device_id": "agent-l", "agentId": "agent-l", "level": "ERROR", "message": "disk full"},
    ),
]


@pytest.mark.parametrize(("event_type", "feed", "data"), EVENTS)
async def test_event(stack: Stack, event_type: str, feed: Feed, data: dict[str, Any]) -> None:
    ws = await nexus(stack)
    reply = await ask(ws, {"type": "subscribe", "events": [event_type]})
    assert reply["type"] == "subscribed" and reply["events"] == [event_type]
    assert reply["timestamp"].endswith("Z")
    feed(stack)
    event = await recv_type(ws, "event")
    assert event["eventType"] == event_type
    assert {k: event["data"].get(k) for k in data} == data
    await ws.close()


async def test_alert_events(stack: Stack) -> None:
    await make_rule(
        stack,
        rule_id="nx-hot",
        metric="cpu",
        condition="gt",
        threshold=90,
        severity="high",
        devices=["agent-a"],
    )
    ws = await nexus(stack)
    names = ["alert.created", "alert.acknowledged", "alert.resolved"]
    await ask(ws, {"type": "subscribe", "events": names, "filters": {"agentId": "agent-a"}})
    created = await raise_alert(stack, ws, "agent-a", "cpu", 95, 10, lambda f: f["type"] == "event")
    assert created["eventType"] == "alert.created"
    alert_id = created["data"]["alert_id"]
    assert created["data"]["agentId"] == "agent-a" and created["data"]["state"] == "active"
    acker = await nexus(stack)
    assert (await ask(acker, {"type": "ack_alert", "alert_id": alert_id}))["type"] == (
        "alert_acknowledged"
    )
    await acker.close()
    acked = await recv_type(ws, "event")
    assert (acked["eventType"], acked["data"]["alert_id"]) == ("alert.acknowledged", alert_id)
    stack.reading("agent-a", cpu=10)
    resolved = await recv_type(ws, "event")
    assert (resolved["eventType"], resolved["data"]["state"]) == ("alert.resolved", "resolved")
    await ws.close()


# -- filters: field equality, agentId = device_id --------------------------------------------------

FILTERS: list[tuple[dict[str, Any], list[str] | str]] = [
    ({"agentId": "agent-f1"}, ["agent-f1"]),
    ({"device_id": "agent-f1"}, ["agent-f1"]),
    ({"agentId": ["agent-f1", "agent-f2"]}, ["agent-f1", "agent-f2"]),
    ({"metrics": ["cpu"]}, ["agent-f1", "agent-f2", "agent-f3"]),
    ({"agentId": "agent-f1", "device_id": "agent-f2"}, "twice"),
    ({"taskId": "task-789"}, "taskId"),  # no tasks here: refused, not ignored
    ({"severity": "high"}, "severity"),  # not a field of telemetry
]


@pytest.mark.parametrize(("filters", "expected"), FILTERS)
async def test_filters(stack: Stack, filters: dict[str, Any], expected: list[str] | str) -> None:
    ws = await nexus(stack)
    reply = await ask(
        ws, {"type": "subscribe", "events": ["telemetry.updated"], "filters": filters}
    )
    if isinstance(expected, str):
        assert (reply["type"], reply["code"]) == ("error", 422) and expected in reply["message"]
        await ws.close()
        return
    assert reply["type"] == "subscribed", reply
    for device in ("agent-f1", "agent-f2", "agent-f3"):
        stack.reading(device, cpu=1.0)
    got = sorted(f["data"]["agentId"] for f in await frames(ws) if f["type"] == "event")
    assert got == expected
    await ws.close()


async def test_unsubscribe_lists_the_events(stack: Stack) -> None:
    ws = await nexus(stack)
    await ask(ws, {"type": "subscribe", "events": ["telemetry.updated", "agent.status"]})
    reply = await ask(ws, {"type": "unsubscribe", "events": ["telemetry.updated"]})
    assert reply["type"] == "unsubscribed" and reply["events"] == ["telemetry.updated"]
    assert reply["timestamp"].endswith("Z")
    stack.reading("agent-u", cpu=1.0)  # a first reading: no telemetry event, a status event
    got = [f["eventType"] for f in await frames(ws) if f["type"] == "event"]
    assert got == ["agent.status"]
    await ws.close()


# -- commands and telemetry from the client --------------------------------------------------------


async def test_command_and_result(stack: Stack) -> None:
    inbox = stack.topics.device_command("agent-c", "x").rsplit("/", 1)[0] + "/"
    stack.peer.subscribe(inbox + "+")
    ws = await nexus(stack)
    await send(
        ws,
        {
            "type": "command",
            "id": "c1",
            "command": "deploy",
            "parameters": {"version": "1.2.3", "target": "agent-c"},
        },
    )

    async def sent() -> bool:
        return bool(stack.peer.messages(inbox))

    await wait_until(sent)
    message = stack.peer.messages(inbox)[0]
    assert orjson.loads(message.payload)["parameters"]["version"] == "1.2.3"
    stack.peer.publish(message.topic + "/result", b'{"status": "ok", "output": "deployed"}')
    result = await recv_type(ws, "command_result")
    assert result["commandId"] and result["status"] == "success" and result["id"] == "c1"
    assert result["data"]["output"] == "deployed"
    await ws.close()


async def test_command_timeout_is_504(stack: Stack) -> None:
    ws = await nexus(stack)
    await send(ws, {"type": "command", "command": "reboot", "agentId": "agent-q", "timeout_s": 0.3})
    result = await recv_type(ws, "command_result")
    assert (result["status"], result["code"], result["error"]) == ("timeout", 504, "timeout")
    await ws.close()


async def test_telemetry_ack_and_stored(stack: Stack) -> None:
    watcher = await nexus(stack)
    await ask(watcher, {"type": "subscribe", "events": ["telemetry.updated"]})
    ws = await nexus(stack)
    ack = await ask(
        ws,
        {
            "type": "telemetry",
            "agentId": "agent-001",
            "metrics": {"cpu": 45.2, "memory": 62.8},
            # as the document's client sends it: new Date().toISOString()
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
        },
    )
    assert ack["type"] == "telemetry_ack" and ack["timestamp"].endswith("Z"), ack
    assert ack["agentId"] == "agent-001" and ack["readings"] == 2
    got = {(f["data"]["metric"], f["data"]["value"]) for f in await frames(watcher)}
    assert got == {("cpu", 45.2), ("memory", 62.8)}
    await ws.close()
    await watcher.close()


# -- the document's clients under node -------------------------------------------------------------


async def test_node_client_usage(stack: Stack, node_ws: Path) -> None:
    """client.js with its own main(): a subscribe to task.updated + agent.status (refused:
    no tasks here, and the error says what is supported), telemetry every 5 s, a deploy
    command to the agent named by its target."""
    text = seed_text("nexus-websocket-bidirectional.txt")
    start = text.index("const WebSocket = require('ws');\n\nclass NexusWebSocketClient")
    end = text.index("module.exports = NexusWebSocketClient;", start)
    code = text[start:end].replace("ws://localhost:3000/api/v1/events", f"{stack.url}{URL_PATH}")
    code = code.replace("your_api_token_here", stack.token(scope=EVERY_SCOPE))
    inbox = stack.topics.device_command("production", "x").rsplit("/", 1)[0] + "/"
    stack.peer.subscribe(inbox + "+")
    node = await Node.run(node_ws, code)
    try:
        await node.wait_for("Connection established")
        await node.wait_for(r"Server error: unknown event task\.updated; one of .*agent\.status")

        async def sent() -> bool:
            return bool(stack.peer.messages(inbox))

        await wait_until(sent)
        command = stack.peer.messages(inbox)[0]
        stack.peer.publish(command.topic + "/result", b'{"status": "ok", "done": true}')
        await node.wait_for(r"Command result: \{[^}]*status: 'success'")
        await node.wait_for("Telemetry acknowledged", timeout=15)
    finally:
        await node.stop()


BROWSER_DRIVER = """
const WebSocket = require('ws');
function updateUI(data) {{ console.log('UI ' + JSON.stringify(data)); }}
{code}
"""


async def test_browser_client_usage(stack: Stack, node_ws: Path) -> None:
    """client-browser.js with its usage: task.updated is refused, agent.status delivered."""
    text = seed_text("nexus-websocket-bidirectional.txt")
    start = text.index("class NexusWebSocketClient", text.index("client-browser.js"))
    end = text.index("```", start)
    code = text[start:end].replace(
        "wss://your-api.example.com/api/v1/events", f"{stack.url}{URL_PATH}"
    )
    code = code.replace("your_api_token", stack.token(scope=EVERY_SCOPE))
    node = await Node.run(node_ws, BROWSER_DRIVER.format(code=code))
    try:
        await node.wait_for("Connected to Nexus API")
        for _ in range(50):  # its subscribe messages follow the connection
            device_status(stack, "agent-b", "online", "offline", "lost")
            try:
                await node.wait_for(r"Agent status: \{", timeout=0.3)
                break
            except pytest.fail.Exception:
                continue
        await node.wait_for(r"agentId: 'agent-b'")
        assert "Task updated" not in node.out
    finally:
        await node.stop()
