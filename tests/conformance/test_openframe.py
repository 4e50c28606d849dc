"""OpenFrame (seeds/openframe-websocket-api.txt) against the real stack.

The topics form: Bearer header, ``subscribe {topics, filters}``, ``subscription_confirmed``,
``event {topic, data}`` with the document's data shapes per topic, ``unsubscribe {topics}``,
the error kinds; then the document's Python and JavaScript clients.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conformance.kit import (
    Node,
    ask,
    authed,
    device_status,
    frames,
    make_rule,
    raise_alert,
    seed_text,
    system_status,
)
from tests.integration.frontkit import Stack, recv, recv_type
from tests.integration.test_seed_clients import Output, _openframe_function

pytestmark = pytest.mark.integration


def topic_event(topic: str) -> Any:
    return lambda f: f["type"] == "event" and f["topic"] == topic


# -- connection -----------------------------------------------------------------------------------


async def test_bearer_header_connects_to_v1_ws(stack: Stack) -> None:
    ws = await stack.client(stack.token(), path="/v1/ws")
    hello = await recv(ws)
    assert hello["type"] == "connected" and hello["timestamp"].endswith("Z")
    await ws.close()


@pytest.mark.parametrize("token", ["garbage", "expired"])
async def test_auth_error_is_the_handshakes_401(stack: Stack, token: str) -> None:
    """The document's AUTH_ERROR: a bad token never gets a connection (HTTP 401)."""
    if token == "expired":
        token = stack.token(ttl_s=-5)
    with pytest.raises(InvalidStatus) as err:
        await connect(f"{stack.url}/v1/ws", additional_headers={"Authorization": f"Bearer {token}"})
    assert err.value.response.status_code == 401


async def test_without_a_token_nothing_is_served(stack: Stack) -> None:
    ws = await stack.client(path="/v1/ws")
    reply = await ask(ws, {"type": "subscribe", "topics": ["devices"]})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 401, "unauthorized")
    await ws.close()


# -- subscription management ----------------------------------------------------------------------


async def test_subscription_confirmed_fields(stack: Stack) -> None:
    ws = await authed(stack, path="/v1/ws")
    reply = await ask(
        ws,
        {
            "type": "subscribe",
            "topics": ["devices", "alerts"],
            "filters": {"severity": ["high", "critical"]},
        },
    )
    assert reply["type"] == "subscription_confirmed"
    assert reply["topics"] == ["devices", "alerts"] and reply["timestamp"].endswith("Z")
    assert len(reply["subscription_ids"]) == 2
    await ws.close()


async def test_unsubscribe_topics(stack: Stack) -> None:
    ws = await authed(stack, path="/v1/ws")
    await ask(ws, {"type": "subscribe", "topics": ["devices", "system"]})
    reply = await ask(ws, {"type": "unsubscribe", "topics": ["devices"]})
    assert reply["type"] == "unsubscription_confirmed" and reply["topics"] == ["devices"]
    device_status(stack, "of-u1", "online", "offline", "gone")  # no longer subscribed
    system_status(stack, "of-u-sys")
    got = [f for f in await frames(ws) if f["type"] == "event"]
    assert {f["topic"] for f in got} == {"system"}
    reply = await ask(ws, {"type": "unsubscribe", "topics": ["devices"]})
    assert (reply["type"], reply["code"]) == ("error", 404)
    await ws.close()


# -- the topics: every field of every event -------------------------------------------------------


async def test_devices_event(stack: Stack) -> None:
    ws = await authed(stack, path="/v1/ws")
    await ask(ws, {"type": "subscribe", "topics": ["devices"]})
    device_status(stack, "of-d1", "online", "offline", "silence")
    event = await recv_type(ws, "event")
    assert (event["topic"], event["event"]) == ("devices", "device_update")
    data = event["data"]
    assert (data["id"], data["status"], data["last_seen"]) == (
        "of-d1",
        "offline",
        "2026-01-01T11:45:00.000Z",
    )
    assert list(data)[:3] == ["id", "status", "last_seen"]  # the document's, then the bridge's
    assert event["timestamp"].endswith("Z")
    stack.reading("of-d2", t=1.0)  # the real path: a first reading brings a device online
    online = await recv_type(ws, "event")
    assert (online["data"]["id"], online["data"]["status"]) == ("of-d2", "online")
    assert online["data"]["last_seen"].endswith("Z")
    await ws.close()


async def test_alerts_event(stack: Stack) -> None:
    await make_rule(
        stack,
        rule_id="of-sec",
        title="Security Alert",
        metric="intrusions",
        condition="gt",
        threshold=0,
        severity="high",
        devices=["of-a1"],
    )
    ws = await authed(stack, path="/v1/ws")
    await ask(ws, {"type": "subscribe", "topics": ["alerts"]})
    event = await raise_alert(stack, ws, "of-a1", "intrusions", 3, 0, topic_event("alerts"))
    assert event["event"] == "alert_created"
    data = event["data"]
    assert data["id"] and data["id"] == data["alert_id"]
    assert (data["title"], data["severity"], data["device_id"]) == (
        "Security Alert",
        "high",
        "of-a1",
    )
    assert event["timestamp"].endswith("Z")
    stack.reading("of-a1", intrusions=0)  # cleared: the same alert, resolved
    resolved = await recv_type(ws, "event")
    assert resolved["event"] == "alert_resolved" and resolved["data"]["id"] == data["id"]
    await ws.close()


async def test_system_event(stack: Stack) -> None:
    ws = await authed(stack, path="/v1/ws")
    await ask(ws, {"type": "subscribe", "topics": ["system"], "filters": {"device_id": "of-s"}})
    system_status(stack, "of-s", cpu_usage=45, memory_usage=60)
    event = await recv_type(ws, "event")
    assert (event["topic"], event["event"]) == ("system", "system_status")
    assert event["data"]["status"] == "healthy"
    assert event["data"]["metrics"] == {
        "cpu_usage": 45,
        "memory_usage": 60,
        "disk_usage": 70.1,
        "active_connections": 3,
    }
    await ws.close()


async def test_telemetry_topic(stack: Stack) -> None:
    """Not in the document: the bridge's fourth topic, with the stream's reading."""
    ws = await authed(stack, path="/v1/ws")
    await ask(ws, {"type": "subscribe", "topics": ["telemetry"], "filters": {"device_id": "of-t"}})
    stack.reading("of-t", t=2.5)
    event = await recv_type(ws, "event")
    assert (event["topic"], event["event"]) == ("telemetry", "telemetry_update")
    assert {k: event["data"][k] for k in ("device_id", "metric", "value")} == {
        "device_id": "of-t",
        "metric": "t",
        "value": 2.5,
    }
    await ws.close()


# -- filters: one object for several topics -------------------------------------------------------


async def test_severity_filters_alerts_and_leaves_devices_alone(stack: Stack) -> None:
    """The document's own subscription: severity is an alert's field, so it selects alerts;
    the devices topic is not narrowed by it."""
    await make_rule(
        stack,
        rule_id="of-lo",
        metric="lo",
        condition="gt",
        threshold=0,
        severity="info",
        devices=["of-f1"],
    )
    await make_rule(
        stack,
        rule_id="of-hi",
        metric="hi",
        condition="gt",
        threshold=0,
        severity="critical",
        devices=["of-f1"],
    )
    ws = await authed(stack, path="/v1/ws")
    await ask(
        ws,
        {
            "type": "subscribe",
            "topics": ["devices", "alerts"],
            "filters": {"severity": ["high", "critical"]},
        },
    )
    probe = await authed(stack)
    await ask(probe, {"type": "subscribe", "channel": "alerts", "device_id": "of-f1"})
    await raise_alert(stack, probe, "of-f1", "lo", 1, 0)  # info: not for `ws`
    await raise_alert(stack, probe, "of-f1", "hi", 1, 0)  # critical
    got = await frames(ws)
    alerts = [f["data"]["severity"] for f in got if f.get("topic") == "alerts"]
    devices = [f["data"]["status"] for f in got if f.get("topic") == "devices"]
    assert alerts and set(alerts) == {"critical"}
    assert devices == ["online"]  # the device's first reading
    await ws.close()
    await probe.close()


FILTERS: list[tuple[list[str], dict[str, Any], str | None]] = [
    # (topics, filters, None if accepted else a word of the 422's message)
    (["devices", "alerts"], {"severity": ["high", "critical"]}, None),
    (["devices"], {"severity": ["high"]}, "severity"),  # fits none of them
    (["devices"], {"status_types": ["offline"]}, None),
    (["alerts"], {"device_id": "of-1", "alert_type": "temperature"}, None),
    (["system"], {"metrics": ["cpu_usage"], "frequency": "5s"}, None),
    (["alerts", "devices"], {"frequency": "5s"}, "frequency"),
    (["telemetry", "alerts"], {"metrics": ["t"], "min_value": 3}, None),
    (["devices"], {"colour": "red"}, "colour"),
    (["devices"], {"severity": ["urgent"]}, "severity"),
    (["weather"], {}, "topic"),  # the document's SUBSCRIPTION_ERROR "Invalid topic"
    ([], {}, "topics"),
]


@pytest.mark.parametrize(
    "extra", [{"channel": "telemetry"}, {"events": ["device.status"]}, {"snapshot": True}]
)
async def test_one_form_per_subscribe(stack: Stack, extra: dict[str, Any]) -> None:
    ws = await authed(stack, path="/v1/ws")
    reply = await ask(ws, {"type": "subscribe", "topics": ["devices"], **extra})
    assert (reply["type"], reply["code"]) == ("error", 422) and next(iter(extra)) in reply[
        "message"
    ]
    await ws.close()


@pytest.mark.parametrize(("topics", "filters", "refused"), FILTERS)
async def test_filters(
    stack: Stack, topics: list[str], filters: dict[str, Any], refused: str | None
) -> None:
    ws = await authed(stack, path="/v1/ws")
    reply = await ask(ws, {"type": "subscribe", "topics": topics, "filters": filters})
    if refused is None:
        assert reply["type"] == "subscription_confirmed", reply
    else:
        assert (reply["type"], reply["code"], reply["error"]) == ("error", 422, "validation_error")
        assert refused in reply["message"], reply
    await ws.close()


async def test_device_and_status_filters_apply(stack: Stack) -> None:
    ws = await authed(stack, path="/v1/ws")
    await ask(
        ws,
        {
            "type": "subscribe",
            "topics": ["devices"],
            "filters": {"device_id": ["of-x1", "of-x2"], "status_types": ["offline"]},
        },
    )
    device_status(stack, "of-x1", "online", "offline", "a")
    device_status(stack, "of-x2", "offline", "online", "b")  # status not asked for
    device_status(stack, "of-x3", "online", "offline", "c")  # device not asked for
    got = [(f["data"]["id"], f["data"]["status"]) for f in await frames(ws)]
    assert got == [("of-x1", "offline")]
    await ws.close()


# -- the document's clients -----------------------------------------------------------------------


async def test_python_client(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(capsys)
    run = _openframe_function(f"{stack.url}/v1/ws", stack.token())
    task = asyncio.create_task(run())
    try:
        await out.wait_for(r"'type': 'subscription_confirmed', 'topics': \['devices', 'alerts'\]")
        device_status(stack, "of-py", "online", "offline", "silence")
        await out.wait_for(
            r"'type': 'event', 'topic': 'devices', 'event': 'device_update', "
            r"'data': \{'id': 'of-py', 'status': 'offline'"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_javascript_client(stack: Stack, node_ws: Path) -> None:
    text = seed_text("openframe-websocket-api.txt")
    start = text.index("const ws = new WebSocket('wss://api.openframe.io/v1/ws');")
    end = text.index("```", start)
    # a browser WebSocket sends no headers: the token goes in the URL
    code = text[start:end].replace(
        "wss://api.openframe.io/v1/ws", f"{stack.url}/v1/ws?token={stack.token()}"
    )
    node = await Node.run(node_ws, "const WebSocket = require('ws');\n" + code)
    try:
        await node.wait_for(r"type: 'subscription_confirmed',\s+topics: \[ 'devices', 'alerts' \]")
        device_status(stack, "of-js", "online", "offline", "silence")
        await node.wait_for(r"topic: 'devices',\s+event: 'device_update',\s+data: \{\s+id: 'of-js'")
        assert "WebSocket error" not in node.out and "type: 'error'" not in node.out
    finally:
        await node.stop()
