"""o1 (seeds/o1-websocket-api-reference.txt) against the real stack.

/api/websocket with ``subscribe-metrics`` and ``subscribe-logs`` (``host`` = a device id),
``unsubscribe {subscriptionId}``, the ``metrics`` and ``log`` messages, the error shapes
(``retryAfter``), the three HTTP endpoints; then the document's JavaScript classes under node.
Its deployments have no counterpart on a telemetry bridge: a deployment subscription is
refused with 404 naming what is supported (docs/protocol.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conformance.kit import (
    Node,
    ask,
    authed,
    frames,
    js_block,
    log_line,
    seed_text,
    send,
    system_status,
)
from tests.integration.frontkit import Stack, http_json, nothing_more, recv, recv_type

pytestmark = pytest.mark.integration

PATH = "/api/websocket"


# -- subscriptions --------------------------------------------------------------------------------


async def test_deployment_subscription_is_refused_naming_what_is_supported(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    reply = await ask(ws, {"type": "subscribe", "deploymentId": "deploy-20240115-103000"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 404, "not_found")
    assert reply["details"] == {"deploymentId": "deploy-20240115-103000"}
    for supported in ("subscribe-metrics", "subscribe-logs", "host"):
        assert supported in reply["message"]
    await ws.close()


async def test_subscribed_reply(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    reply = await ask(ws, {"type": "subscribe-logs", "host": "o1-h", "id": 5})
    assert reply["type"] == "subscribed" and reply["subscriptionId"].startswith("sub_")
    assert reply["id"] == 5 and reply["timestamp"].endswith("Z")
    await ws.close()


# (the subscribe-logs message, log lines published, messages of those that arrive)
LOGS: list[tuple[dict[str, Any], list[dict[str, Any]], list[str]]] = [
    (
        {"host": "test-anvil-01"},
        [{"message": "a"}, {"message": "b", "application": "Anvil"}],
        ["a", "b"],
    ),
    (  # the document's subscription: application and search both apply
        {"host": "test-anvil-01", "application": "Anvil", "search": "error"},
        [
            {"message": "Error: disk", "application": "Anvil"},
            {"message": "error elsewhere", "application": "Forge"},
            {"message": "error, no application"},
            {"message": "fine", "application": "Anvil"},
        ],
        ["Error: disk"],
    ),
    (
        {"host": "test-anvil-01", "level": ["ERROR"]},
        [{"message": "x", "level": "INFO"}, {"message": "y", "level": "error"}],
        ["y"],
    ),
]


@pytest.mark.parametrize(("subscribe", "lines", "expected"), LOGS)
async def test_logs(
    stack: Stack, subscribe: dict[str, Any], lines: list[dict[str, Any]], expected: list[str]
) -> None:
    ws = await authed(stack, path=PATH)
    assert (await ask(ws, {"type": "subscribe-logs", **subscribe}))["type"] == "subscribed"
    log_line(stack, "other-host", message="error, other host", application="Anvil")
    for line in lines:
        log_line(stack, "test-anvil-01", **line)
    got = [f for f in await frames(ws) if f["type"] == "log"]
    assert [f["message"] for f in got] == expected
    await ws.close()


async def test_log_message_fields(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    await ask(ws, {"type": "subscribe-logs", "host": "test-anvil-01"})
    log_line(
        stack,
        "test-anvil-01",
        level="INFO",
        message="Application started successfully",
        application="Anvil",
        ts="2026-01-15T10:30:00Z",
    )
    log = await recv_type(ws, "log")
    assert {k: log[k] for k in ("host", "application", "level", "message")} == {
        "host": "test-anvil-01",
        "application": "Anvil",
        "level": "INFO",
        "message": "Application started successfully",
    }
    assert log["ts"] == "2026-01-15T10:30:00.000Z" and log["timestamp"].endswith("Z")
    await ws.close()


async def test_metrics_from_readings(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    reply = await ask(
        ws,
        {
            "type": "subscribe-metrics",
            "host": "test-anvil-01",
            "application": "Anvil",
            "metrics": ["cpu", "memory", "disk"],
        },
    )
    assert reply["type"] == "subscribed"
    stack.reading("test-anvil-01", cpu=45.2, memory=50.0, disk=25.5, network=3.0)
    stack.reading("other-host", cpu=1.0)
    got = [f for f in await frames(ws) if f["type"] == "metrics"]
    merged: dict[str, Any] = {}
    for frame in got:  # as the document's MetricsDisplay merges them
        assert (frame["host"], frame["application"]) == ("test-anvil-01", "Anvil")
        merged |= frame
    assert {k: merged[k] for k in ("cpu", "memory", "disk")} == {
        "cpu": 45.2,
        "memory": 50.0,
        "disk": 25.5,
    }
    assert "network" not in merged  # not asked for
    await ws.close()


SYSTEM: list[tuple[list[str] | None, dict[str, Any]]] = [
    (None, {"cpu": 12.5, "memory": 40.0, "disk": 70.1, "active_connections": 3}),
    (["cpu", "memory", "disk"], {"cpu": 12.5, "memory": 40.0, "disk": 70.1}),
    (["cpu", "active_connections", "network"], {"cpu": 12.5, "active_connections": 3}),
]


@pytest.mark.parametrize(("metrics", "fields"), SYSTEM)
async def test_metrics_from_the_bridges_own_status(
    stack: Stack, metrics: list[str] | None, fields: dict[str, Any]
) -> None:
    """o1's metrics are a host's CPU, memory and disk: the bridge's system status, for the
    component named by ``host``, showing the metrics named."""
    ws = await authed(stack, path=PATH)
    msg: dict[str, Any] = {"type": "subscribe-metrics", "host": "bridge-o1", "application": "A"}
    if metrics is not None:
        msg["metrics"] = metrics
    reply = await ask(ws, msg)
    assert len(reply["subscription_ids"]) == 2
    system_status(stack, "bridge-other")
    system_status(stack, "bridge-o1")
    frame = await recv_type(ws, "metrics")
    assert (frame["host"], frame["application"]) == ("bridge-o1", "A")
    assert {
        k: v for k, v in frame.items() if k not in ("type", "host", "application", "timestamp")
    } == fields
    await nothing_more(ws)
    await ws.close()


REFUSED: list[tuple[dict[str, Any], int, str]] = [
    ({"type": "subscribe-metrics", "search": "x"}, 422, "search"),
    ({"type": "subscribe-logs", "metrics": ["cpu"]}, 422, "metrics"),
    ({"type": "subscribe-logs", "host": "a/b"}, 422, "device id"),
    ({"type": "subscribe-logs", "application": 7}, 422, "application"),
    ({"type": "subscribe-metrics", "application": ""}, 422, "application"),
    ({"type": "subscribe-metrics", "metrics": ["cpu%"]}, 422, "metric"),
    ({"type": "subscribe-logs", "level": ["LOUD"]}, 422, "level"),
    ({"type": "subscribe", "deploymentId": "non-existent-deployment"}, 404, "deployment"),
    ({"type": "unsubscribe", "subscriptionId": "sub-123456"}, 404, "subscription"),
]


@pytest.mark.parametrize(("msg", "code", "named"), REFUSED)
async def test_refusals(stack: Stack, msg: dict[str, Any], code: int, named: str) -> None:
    ws = await authed(stack, path=PATH)
    reply = await ask(ws, msg)
    assert (reply["type"], reply["code"]) == ("error", code) and named in reply["message"]
    await ws.close()


async def test_forbidden_host(stack: Stack) -> None:
    ws = await authed(stack, path=PATH, devices=["plant-*"])
    reply = await ask(ws, {"type": "subscribe-metrics", "host": "test-anvil-01"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 403, "forbidden")
    await ws.close()


async def test_unsubscribe_ends_metrics_entirely(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    reply = await ask(ws, {"type": "subscribe-metrics", "host": "bridge-o1u"})
    gone = await ask(ws, {"type": "unsubscribe", "subscriptionId": reply["subscriptionId"]})
    assert gone["type"] == "unsubscribed"
    assert sorted(gone["subscription_ids"]) == sorted(reply["subscription_ids"])
    assert (await ask(ws, {"type": "list_subscriptions"}))["count"] == 0
    stack.reading("bridge-o1u", cpu=1.0)
    system_status(stack, "bridge-o1u")
    await nothing_more(ws, 1.0)
    await ws.close()


async def test_rate_limit_error_has_retry_after(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    for _ in range(260):
        await send(ws, {"type": "ping"})
    limited = [r for r in [await recv(ws) for _ in range(260)] if r["type"] == "error"]
    assert limited
    for error in limited:
        assert (error["code"], error["error"]) == (429, "rate_limit_exceeded")
        assert error["message"] and error["timestamp"].endswith("Z")
        assert 0 < error["retryAfter"] <= 1 and error["retryAfter"] == error["retry_after"]
    await ws.close()


# -- HTTP endpoints -------------------------------------------------------------------------------


async def test_health(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    health = await http_json(stack, "/api/websocket/health")
    assert health["status"] == "healthy" and health["connectionCount"] >= 1
    assert health["timestamp"].endswith("Z")
    await ws.close()


async def test_metrics_endpoint(stack: Stack) -> None:
    body = await http_json(stack, "/api/websocket/metrics")
    assert set(body["connections"]) >= {"current", "peak", "total"}
    assert set(body["messages"]) >= {"sent", "received", "dropped"}
    perf = body["performance"]
    assert perf["uptime"].endswith("m") and perf["memoryUsage"].endswith("MB")
    assert perf["cpuUsage"].endswith("%")


async def test_stats_endpoint_every_field_and_no_client_detail(stack: Stack) -> None:
    ws = await authed(stack, path=PATH)
    await ask(ws, {"type": "subscribe-metrics", "host": "secret-plant-7", "metrics": ["cpu"]})
    await ask(ws, {"type": "frobnicate"})  # an error reply
    idle = await authed(stack, path=PATH)
    stack.reading("secret-plant-7", cpu=1.0)
    await recv_type(ws, "metrics")
    raw = orjson.dumps(await http_json(stack, "/api/websocket/stats"))
    stats = orjson.loads(raw)
    assert stats["totalConnections"] == 2
    assert stats["poolStats"] == {"active": 1, "idle": 1, "total": 2}
    batcher = stats["batcherStats"]
    assert batcher["batchesProcessed"] >= 1 and batcher["messagesProcessed"] >= 1
    assert batcher["averageBatchSize"] == pytest.approx(
        batcher["messagesProcessed"] / batcher["batchesProcessed"], abs=0.01
    )
    processor = stats["processorStats"]
    assert processor["messagesProcessed"] >= 2 and processor["errors"] >= 1
    assert 0 <= processor["successRate"] < 100
    perf = stats["performanceMetrics"]
    assert 0 < perf["averageResponseTime"] and 0 < perf["p95"] <= perf["p99"]
    assert stats["brokerSubscriptionCount"] >= 1
    # another client's devices and filters are not the caller's business
    assert b"secret-plant-7" not in raw and b"/telemetry/" not in raw
    await ws.close()
    await idle.close()


# -- the document's JavaScript under node ---------------------------------------------------------

DOCUMENT_STUB = """
const WebSocket = require('ws');
const document = {
  getElementById: (id) => ({ set textContent(v) { console.log('RENDER ' + id + ' ' + v); } }),
};
"""


def adapt(code: str, stack: Stack) -> str:
    """A browser WebSocket sends no headers: the token goes in the URL."""
    return code.replace(
        "ws://localhost:3000/api/websocket", f"{stack.url}{PATH}?token={stack.token()}"
    )


async def test_metrics_display(stack: Stack, node_ws: Path) -> None:
    text = seed_text("o1-websocket-api-reference.txt")
    code = adapt(js_block(text, "class MetricsDisplay {", "For detailed schema"), stack)
    driver = DOCUMENT_STUB + code + "\nnew MetricsDisplay('test-anvil-01', 'Anvil');\n"
    node = await Node.run(node_ws, driver)
    try:
        for _ in range(50):  # until its subscription is in place
            stack.reading("test-anvil-01", cpu=45.2, memory=50.0)
            try:
                await node.wait_for("RENDER memory-usage 50%", timeout=0.3)
                break
            except pytest.fail.Exception:
                continue
        await node.wait_for("RENDER cpu-usage 45.2%")
    finally:
        await node.stop()


async def test_connection_example_and_deployment_monitor(stack: Stack, node_ws: Path) -> None:
    text = seed_text("o1-websocket-api-reference.txt")
    example = js_block(
        text, "const ws = new WebSocket('ws://localhost:3000/api/websocket');", "Message Types"
    )
    monitor = js_block(text, "class DeploymentMonitor {", "Live Metrics Display")
    driver = (
        "const WebSocket = require('ws');\n"
        + adapt(example, stack)
        + adapt(monitor, stack)
        + "\nconst m = new DeploymentMonitor('deploy-20240115-103000');\n"
        + "const orig = m.handleMessage.bind(m);\n"
        + "m.handleMessage = (d) => { console.log('MONITOR ' + JSON.stringify(d)); orig(d); };\n"
    )
    node = await Node.run(node_ws, driver)
    try:
        await node.wait_for("WebSocket connection established")
        await node.wait_for(r"Received: \{[^}]*type: 'error',\s+code: 404")
        await node.wait_for(r'MONITOR \{"type":"error","code":404,"error":"not_found"')
        assert "deployment" in node.out
    finally:
        await node.stop()
