"""Valtronics (seeds/valtronics-websocket-api.txt) against the real stack.

Every message type, reply and event field, filter, endpoint and limit the document shows, as
tables of cases; then its Python and JavaScript clients. Device ids are strings here (the
document's examples use ``1``; a number is refused with 422, see docs/protocol.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conformance.kit import (
    Node,
    ask,
    device_status,
    frames,
    js_block,
    make_rule,
    raise_alert,
    seed_text,
    send,
    system_status,
)
from tests.integration.frontkit import Stack, nothing_more, recv, recv_type
from tests.integration.test_seed_clients import Output
from tests.seeds.valtronics_client import ValtronicsWebSocketClient

pytestmark = pytest.mark.integration


async def by_message(stack: Stack, path: str = "/ws", scope: str | None = None) -> Any:
    """The document's connection process: connect, then authenticate with an auth message."""
    ws = await stack.client(path=path)
    token = stack.token() if scope is None else stack.token(scope=scope)
    reply = await ask(ws, {"type": "auth", "token": token})
    assert reply["type"] == "auth_response" and reply["success"] is True, reply
    return ws


# -- connection and authentication ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "channel"),
    [
        ("/ws", None),
        ("/ws/telemetry", "telemetry"),
        ("/ws/alerts", "alerts"),
        ("/ws/system", "system"),
        ("/ws/devices", "devices"),
    ],
)
async def test_endpoints_preset_the_channel(stack: Stack, path: str, channel: str | None) -> None:
    ws = await by_message(stack, path)
    try:
        reply = await ask(ws, {"type": "subscribe", **({} if channel else {"channel": "alerts"})})
        assert reply["type"] == "subscribed" and reply["channel"] == (channel or "alerts")
    finally:
        await ws.close()


async def test_auth_response_fields(stack: Stack) -> None:
    ws = await stack.client()
    reply = await ask(ws, {"type": "auth", "token": stack.token(sub="val")})
    assert reply["type"] == "auth_response" and reply["success"] is True
    assert reply["user"] == "val" and reply["client_id"] and reply["timestamp"].endswith("Z")
    await ws.close()


@pytest.mark.parametrize(
    ("token", "error"),
    [("not-a-jwt", "invalid_token"), ("expired", "token_expired"), (None, "invalid_token")],
)
async def test_auth_failure_fields_then_close_1008(
    stack: Stack, token: str | None, error: str
) -> None:
    if token == "expired":
        token = stack.token(ttl_s=-10)
    ws = await stack.client()
    reply = await ask(ws, {"type": "auth", "token": token})
    assert reply["type"] == "auth_response" and reply["success"] is False
    assert reply["error"] == error and reply["code"] == 401 and reply["message"]
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_nothing_but_auth_before_auth(stack: Stack) -> None:
    ws = await stack.client()
    reply = await ask(ws, {"type": "subscribe", "channel": "telemetry"})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 401, "unauthorized")
    await ws.close()


@pytest.mark.parametrize("stamp", ["2024-01-01T12:00:00Z", None])
async def test_ping_pong(stack: Stack, stamp: str | None) -> None:
    ws = await by_message(stack)
    pong = await ask(ws, {"type": "ping", **({"timestamp": stamp} if stamp else {})})
    assert pong["type"] == "pong"
    if stamp:
        assert pong["timestamp"] == stamp and pong["server_timestamp"].endswith("Z")
    await ws.close()


# -- the four channels: every field of every message ---------------------------------------------


async def test_telemetry_update_fields(stack: Stack) -> None:
    ws = await by_message(stack)
    await ask(ws, {"type": "subscribe", "channel": "telemetry", "device_id": "vt-1"})
    stack.peer.publish(
        stack.topics.device_telemetry("vt-1"),
        b'{"ts": "2024-01-01T12:00:00Z", '
        b'"values": {"temperature": {"value": 23.5, "unit": "\xc2\xb0C"}}}',
    )
    update = await recv_type(ws, "telemetry_update")
    assert update["channel"] == "telemetry" and update["device_id"] == "vt-1"
    assert update["telemetry"] == {
        "temperature": {"value": 23.5, "unit": "°C", "timestamp": "2024-01-01T12:00:00.000Z"}
    }
    assert update["timestamp"].endswith("Z")
    await ws.close()


async def test_alert_fields(stack: Stack) -> None:
    await make_rule(
        stack,
        rule_id="vt-hot",
        name="High Temperature Alert",
        title="High Temperature Alert",
        message="Temperature exceeds safe threshold",
        metric="temperature",
        condition="gt",
        threshold=30.0,
        severity="critical",
        devices=["vt-a*"],
    )
    ws = await by_message(stack)
    await ask(ws, {"type": "subscribe", "channel": "alerts"})
    alert = await raise_alert(stack, ws, "vt-a1", "temperature", 32.5, 20.0)
    assert alert["channel"] == "alerts" and alert["device_id"] == "vt-a1"
    assert alert["alert_id"] and alert["severity"] == "critical"
    assert alert["title"] == "High Temperature Alert"
    assert alert["message"] == "Temperature exceeds safe threshold"
    assert alert["metadata"] == {"threshold_value": 30.0, "actual_value": 32.5}
    assert alert["timestamp"].endswith("Z")
    await ws.close()


async def test_device_status_update_fields(stack: Stack) -> None:
    ws = await by_message(stack)
    await ask(ws, {"type": "subscribe", "channel": "devices", "device_id": "vt-d1"})
    stack.reading("vt-d1", t=1.0)  # a device's first reading brings it online (the ingest)
    online = await recv_type(ws, "device_status_update")
    assert (online["old_status"], online["new_status"]) == (None, "online")
    assert online["metadata"]["last_seen"].endswith("Z") and online["reason"]
    device_status(stack, "vt-d1", "online", "offline", "Connection lost")
    update = await recv_type(ws, "device_status_update")
    assert update["channel"] == "devices" and update["device_id"] == "vt-d1"
    assert (update["old_status"], update["new_status"]) == ("online", "offline")
    assert update["reason"] == "Connection lost"
    assert update["metadata"] == {"last_seen": "2026-01-01T11:45:00.000Z"}
    assert update["timestamp"].endswith("Z")
    await ws.close()


async def test_system_status_update_fields(stack: Stack) -> None:
    ws = await by_message(stack)
    await ask(ws, {"type": "subscribe", "channel": "system", "device_id": "vt-sys"})
    system_status(stack, "vt-sys")
    update = await recv_type(ws, "system_status_update")
    assert update["channel"] == "system"
    assert update["metrics"] == {
        "cpu_usage": 12.5,
        "memory_usage": 40.0,
        "disk_usage": 70.1,
        "active_connections": 3,
    }
    assert update["timestamp"].endswith("Z")
    await ws.close()


# -- filters: each applied ------------------------------------------------------------------------

# (subscribe message, readings as (device, metric, value), the values that arrive)
TELEMETRY_FILTERS: list[tuple[dict[str, Any], list[tuple[str, str, float]], list[float]]] = [
    (  # device_id at the top level (the document's subscription message)
        {"device_id": "f-1"},
        [("f-1", "t", 1.0), ("f-2", "t", 2.0)],
        [1.0],
    ),
    (  # device_id among the filters (the Python client)
        {"filters": {"device_id": "f-1"}},
        [("f-1", "t", 1.0), ("f-2", "t", 2.0)],
        [1.0],
    ),
    (  # metrics (the document's subscription message)
        {"device_id": "f-1", "filters": {"metrics": ["temperature", "humidity"]}},
        [("f-1", "temperature", 1.0), ("f-1", "humidity", 2.0), ("f-1", "pressure", 3.0)],
        [1.0, 2.0],
    ),
    (  # metrics at the top level (the JavaScript client spreads its filters)
        {"device_id": "f-1", "metrics": ["humidity"]},
        [("f-1", "temperature", 1.0), ("f-1", "humidity", 2.0)],
        [2.0],
    ),
    (  # real-time frequency: every value
        {"device_id": "f-1", "filters": {"frequency": "real-time"}},
        [("f-1", "t", 1.0), ("f-1", "t", 2.0)],
        [1.0, 2.0],
    ),
]


@pytest.mark.parametrize(("extra", "readings", "expected"), TELEMETRY_FILTERS)
async def test_telemetry_filters(
    stack: Stack,
    extra: dict[str, Any],
    readings: list[tuple[str, str, float]],
    expected: list[float],
) -> None:
    ws = await by_message(stack)
    reply = await ask(ws, {"type": "subscribe", "channel": "telemetry", **extra})
    assert reply["type"] == "subscribed", reply
    for device, metric, value in readings:
        stack.reading(device, **{metric: value})
    got = [
        reading["value"] for update in await frames(ws) for reading in update["telemetry"].values()
    ]
    assert sorted(got) == expected
    await ws.close()


async def test_telemetry_frequency_sends_the_latest_value_per_interval(stack: Stack) -> None:
    ws = await by_message(stack)
    await ask(
        ws,
        {
            "type": "subscribe",
            "channel": "telemetry",
            "device_id": "fq-1",
            "filters": {"frequency": "1s"},
        },
    )
    stack.peer.publish(
        stack.topics.device_telemetry("fq-1"),
        b'[{"ts": 1767268800000, "values": {"t": 1}}, {"ts": 1767268801000, "values": {"t": 2}},'
        b' {"ts": 1767268802000, "values": {"t": 3}}]',
    )
    got = [u for u in await frames(ws, 2.5) if u["type"] == "telemetry_update"]
    assert 1 <= len(got) <= 2 and got[-1]["telemetry"]["t"]["value"] == 3.0
    await ws.close()


# (subscribe message, stream messages to publish, components that arrive)
async def test_system_metrics_and_frequency(stack: Stack) -> None:
    ws = await by_message(stack)
    reply = await ask(
        ws,
        {
            "type": "subscribe",
            "channel": "system",
            "filters": {
                "metrics": ["cpu_usage", "memory_usage", "active_connections"],
                "frequency": "1s",
            },
        },
    )
    assert reply["type"] == "subscribed", reply
    for cpu in (10.0, 20.0, 30.0):
        system_status(stack, "vt-sf", cpu_usage=cpu)
    got = [
        u
        for u in await frames(ws, 2.5)
        if u["type"] == "system_status_update" and u["component"] == "vt-sf"
    ]
    # sampled: the latest status once per interval; only the metrics asked for
    assert 1 <= len(got) <= 2
    assert got[-1]["metrics"] == {"cpu_usage": 30.0, "memory_usage": 40.0, "active_connections": 3}
    await ws.close()


ALERT_FILTERS: list[tuple[dict[str, Any], bool]] = [
    ({"filters": {"severity": ["critical", "warning"]}}, True),
    ({"filters": {"severity": ["info"]}}, False),
    ({"severity": ["critical", "warning"]}, True),  # the JavaScript client's spread
    ({"severity": ["high"]}, False),
    ({"filters": {"device_id": "al-1"}}, True),
    ({"filters": {"device_id": "al-2"}}, False),
    ({"filters": {"alert_type": "pressure"}}, True),  # alerts are typed by their metric
    ({"filters": {"alert_type": ["temperature"]}}, False),
    ({"filters": {"metrics": ["pressure"]}}, True),
    ({"filters": {"severity": ["critical"], "device_id": "al-1"}}, True),
]


async def test_alert_filters(stack: Stack) -> None:
    await make_rule(
        stack,
        rule_id="al-p",
        metric="pressure",
        condition="gt",
        threshold=5.0,
        severity="critical",
        devices=["al-1"],
    )
    clients = []
    for extra, _ in ALERT_FILTERS:
        ws = await by_message(stack)
        reply = await ask(ws, {"type": "subscribe", "channel": "alerts", **extra})
        assert reply["type"] == "subscribed", (extra, reply)
        clients.append(ws)
    probe = await by_message(stack)
    await ask(probe, {"type": "subscribe", "channel": "alerts"})
    alert = await raise_alert(stack, probe, "al-1", "pressure", 9.0, 1.0)
    assert alert["severity"] == "critical"
    for ws, (extra, delivered) in zip(clients, ALERT_FILTERS, strict=True):
        got = [f for f in await frames(ws, 0.3) if f["type"] == "alert"]
        assert bool(got) is delivered, extra
        await ws.close()
    await probe.close()


async def test_device_filters_list_and_status_types(stack: Stack) -> None:
    ws = await by_message(stack)
    reply = await ask(
        ws,
        {
            "type": "subscribe",
            "channel": "devices",
            "filters": {
                "device_id": ["dv-1", "dv-2", "dv-3"],
                "status_types": ["offline", "warning"],
            },
        },
    )
    assert reply["type"] == "subscribed"
    device_status(stack, "dv-1", "online", "offline", "gone")  # delivered
    device_status(stack, "dv-2", "offline", "online", "back")  # status not asked for
    device_status(stack, "dv-9", "online", "offline", "gone")  # device not asked for
    device_status(stack, "dv-3", "online", "warning", "hot")  # delivered
    got = [(u["device_id"], u["new_status"]) for u in await frames(ws)]
    assert got == [("dv-1", "offline"), ("dv-3", "warning")]
    await ws.close()


# -- filters the bridge cannot apply are refused, never ignored -----------------------------------

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"channel": "alerts", "filters": {"frequency": "5s"}}, "frequency"),  # alerts never sampled
    ({"channel": "devices", "filters": {"frequency": "5s"}}, "frequency"),
    ({"channel": "alerts", "frequency": "5s"}, "frequency"),  # the JavaScript spread
    ({"channel": "devices", "filters": {"metrics": ["t"]}}, "metrics"),
    ({"channel": "telemetry", "filters": {"severity": ["critical"]}}, "severity"),
    ({"channel": "telemetry", "severity": ["critical"]}, "severity"),
    ({"channel": "system", "filters": {"status_types": ["online"]}}, "status_types"),
    ({"channel": "alerts", "filters": {"status_types": ["online"]}}, "status_types"),
    ({"channel": "devices", "filters": {"alert_type": "x"}}, "alert_type"),
    ({"channel": "telemetry", "filters": {"colour": "red"}}, "colour"),
    ({"channel": "telemetry", "colour": "red"}, "colour"),
    ({"channel": "telemetry", "device_id": 1}, "device_id"),  # ids are strings here
    ({"channel": "telemetry", "device_id": "a", "filters": {"device_id": "b"}}, "twice"),
    ({"channel": "telemetry", "filters": {"frequency": "sometimes"}}, "frequency"),
    ({"channel": "alerts", "filters": {"severity": ["urgent"]}}, "severity"),
    ({"channel": "devices", "filters": {"status_types": ["sleeping"]}}, "status"),
    ({"channel": "alerts", "snapshot": True}, "snapshot"),
    ({"channel": "weather"}, "channel"),
]


@pytest.mark.parametrize(("msg", "named"), REFUSED)
async def test_filters_that_cannot_apply_are_422(
    stack: Stack, msg: dict[str, Any], named: str
) -> None:
    ws = await by_message(stack)
    reply = await ask(ws, {"type": "subscribe", **msg})
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 422, "validation_error")
    assert named in reply["message"], reply["message"]
    await ws.close()


# -- unsubscribe by what was subscribed -----------------------------------------------------------

# (subscriptions made, the unsubscribe message, which of them end (by index) or the error)
UNSUBSCRIBE: list[tuple[list[dict[str, Any]], dict[str, Any], list[int] | int]] = [
    (  # the document's client: unsubscribe by channel after subscribing with a device filter
        [{"channel": "telemetry", "filters": {"device_id": "u-1"}}],
        {"channel": "telemetry"},
        [0],
    ),
    (  # by channel alone: every subscription of that channel, none of another
        [
            {"channel": "telemetry", "device_id": "u-1"},
            {"channel": "telemetry", "device_id": "u-2"},
            {"channel": "alerts", "device_id": "u-1"},
        ],
        {"channel": "telemetry"},
        [0, 1],
    ),
    (  # by channel + device (the document's unsubscription message): those naming it
        [
            {"channel": "telemetry", "device_id": "u-1"},
            {"channel": "telemetry", "device_id": "u-2"},
            {"channel": "telemetry"},
        ],
        {"channel": "telemetry", "device_id": "u-1"},
        [0],
    ),
    (  # device among the filters, as subscribed
        [{"channel": "telemetry", "filters": {"device_id": "u-1", "metrics": ["t"]}}],
        {"channel": "telemetry", "filters": {"device_id": "u-1"}},
        [0],
    ),
    (  # by id: that one
        [
            {"channel": "telemetry", "device_id": "u-1"},
            {"channel": "telemetry", "device_id": "u-2"},
        ],
        {"subscription_id": 1},
        [1],
    ),
    (  # a device list: all its devices named, or
        [{"channel": "devices", "device_id": ["u-1", "u-2"]}],
        {"channel": "devices", "device_id": ["u-2", "u-1"]},
        [0],
    ),
    (  # some of them only: refused (it would end the others' updates too)
        [{"channel": "devices", "device_id": ["u-1", "u-2"]}],
        {"channel": "devices", "device_id": "u-1"},
        422,
    ),
    (
        [{"channel": "telemetry", "device_id": "u-1"}],
        {"channel": "telemetry", "device_id": "u-3"},
        404,
    ),
    ([{"channel": "telemetry"}], {"channel": "alerts"}, 404),
    ([], {"subscription_id": "sub_nope"}, 404),
    ([], {"channel": "weather"}, 422),
    ([], {}, 422),
]


@pytest.mark.parametrize(("made", "unsubscribe", "ends"), UNSUBSCRIBE)
async def test_unsubscribe(
    stack: Stack,
    made: list[dict[str, Any]],
    unsubscribe: dict[str, Any],
    ends: list[int] | int,
) -> None:
    ws = await by_message(stack)
    ids = []
    for msg in made:
        reply = await ask(ws, {"type": "subscribe", **msg})
        assert reply["type"] == "subscribed", reply
        ids.append(reply["subscription_id"])
    if isinstance(unsubscribe.get("subscription_id"), int):
        unsubscribe = {"subscription_id": ids[unsubscribe["subscription_id"]]}
    reply = await ask(ws, {"type": "unsubscribe", **unsubscribe})
    listed = await ask(ws, {"type": "list_subscriptions"})
    left = {s["subscription_id"] for s in listed["subscriptions"]}
    if isinstance(ends, int):
        assert (reply["type"], reply["code"]) == ("error", ends), reply
        assert left == set(ids)
    else:
        assert reply["type"] == "unsubscribed", reply
        assert sorted(reply["subscription_ids"]) == sorted(ids[i] for i in ends)
        assert left == {sid for i, sid in enumerate(ids) if i not in ends}
    await ws.close()


async def test_after_unsubscribe_by_channel_no_update_comes(stack: Stack) -> None:
    ws = await by_message(stack)
    await ask(ws, {"type": "subscribe", "channel": "telemetry", "filters": {"device_id": "uc-1"}})
    stack.reading("uc-1", t=1.0)
    await recv_type(ws, "telemetry_update")
    reply = await ask(ws, {"type": "unsubscribe", "channel": "telemetry"})
    assert reply["type"] == "unsubscribed" and reply["channel"] == "telemetry"
    stack.reading("uc-1", t=2.0)
    await nothing_more(ws, 1.0)
    await ws.close()


# -- batches and limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "answer"), [(1, "pong"), (50, "pong"), (51, "error")])
async def test_batch_of_at_most_50(stack: Stack, size: int, answer: str) -> None:
    ws = await by_message(stack)
    await send(ws, {"type": "batch", "messages": [{"type": "ping", "id": i} for i in range(size)]})
    if answer == "error":
        reply = await recv(ws)
        assert (reply["code"], reply["error"]) == (422, "validation_error")
    else:
        assert [(await recv(ws))["id"] for _ in range(size)] == list(range(size))
    await ws.close()


async def test_message_rate_limit_is_429_with_retry_after(stack: Stack) -> None:
    ws = await by_message(stack)
    for _ in range(260):  # 100/s with a burst of 200: the last ones are refused
        await send(ws, {"type": "ping"})
    replies = [await recv(ws) for _ in range(260)]
    limited = [r for r in replies if r["type"] == "error"]
    assert limited and all(
        r["code"] == 429 and r["error"] == "rate_limit_exceeded" for r in limited
    )
    assert all(0 < r["retry_after"] <= 1 for r in limited)
    await ws.close()


async def test_frame_over_the_limit_closes_1009(stack: Stack) -> None:
    ws = await by_message(stack)
    await ws.send('{"type": "ping", "pad": "' + "x" * 70_000 + '"}')
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_normal_close_is_1000(stack: Stack) -> None:
    ws = await by_message(stack)
    await ws.close()
    assert ws.close_code == 1000


# -- the document's own clients -------------------------------------------------------------------


async def test_python_client_unsubscribe_by_channel_stops_updates(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_text("valtronics-websocket-api.txt")  # tests/seeds/valtronics_client.py is its copy
    out = Output(capsys)
    client = ValtronicsWebSocketClient(f"{stack.url}/ws", stack.token())
    await client.connect()
    await client.subscribe("telemetry", {"device_id": "py-1"})
    await client.subscribe("alerts", {"severity": ["critical", "warning"]})
    await client.subscribe("devices")
    await client.subscribe("system", {"metrics": ["cpu_usage"], "frequency": "30s"})
    listener = asyncio.create_task(client.listen())
    stack.reading("py-1", pressure=3.25)
    await out.wait_for(r"Telemetry update for device py-1: \{'pressure': \{'value': 3\.25")
    await out.wait_for(r"Device py-1 status changed: None -> online")
    await client.ping()
    await client.unsubscribe("telemetry")
    await out.wait_for(r"Unknown message type: unsubscribed")  # the reply: not a 404 error
    assert "Unknown message type: error" not in out.read()
    stack.reading("py-1", pressure=4.5)
    await asyncio.sleep(1.0)
    assert "'value': 4.5" not in out.read()  # no update after the unsubscribe
    await client.disconnect()
    await asyncio.wait_for(listener, 5)


# The document's usage subscribes right after connect(), before the socket is open (its send()
# drops such messages), and leaves handleAuthResponse outside the class: the driver gives the
# class the document's own handleAuthResponse and makes the same subscribe calls once
# authenticated. After the first update it unsubscribes as the document's client does.
JS_DRIVER = """
const WebSocket = require('ws');
{client_code}
{auth_handler}
function showNotification(data) {{ console.log('NOTIFY ' + data.severity + ' ' + data.title); }}
ValtronicsWebSocket.prototype.handleAuthResponse = function (data) {{
    handleAuthResponse(data);
    if (data.success) {{
        console.log('AUTHENTICATED');
        this.subscribe('telemetry', {{ device_id: 'js-1' }});
        this.subscribe('alerts', {{ severity: ['critical', 'warning'] }});
    }}
}};
const handle = ValtronicsWebSocket.prototype.handleMessage;
ValtronicsWebSocket.prototype.handleMessage = function (data) {{
    if (['subscribed', 'unsubscribed', 'error'].includes(data.type)) {{
        console.log('REPLY ' + JSON.stringify(data));
    }}
    return handle.call(this, data);
}};
{usage}
const onTelemetry = wsClient.onTelemetryUpdate;
wsClient.onTelemetryUpdate = (data) => {{
    onTelemetry(data);
    wsClient.unsubscribe('telemetry');
}};
wsClient.connect();
"""


def js_function(text: str, head: str) -> str:
    """A top-level function of the document: from its head to the closing brace."""
    start = text.index(head)
    return text[start : text.index("\n}\n", start) + 3]


async def test_javascript_client(stack: Stack, node_ws: Path) -> None:
    text = seed_text("valtronics-websocket-api.txt")
    client_code = js_block(text, "class ValtronicsWebSocket {", "// Usage example")
    usage = js_block(text, "const wsClient = new ValtronicsWebSocket(", "wsClient.connect();")
    usage = usage.replace("ws://localhost:8000/ws", f"{stack.url}/ws")
    usage = usage.replace("'jwt-token'", repr(stack.token()))
    auth_handler = js_function(text, "function handleAuthResponse(data) {")
    auth_handler = auth_handler.replace("refreshToken();", "console.log('REFRESH');")
    await make_rule(
        stack,
        rule_id="js-hot",
        title="Hot",
        metric="t",
        condition="gt",
        threshold=50.0,
        severity="critical",
        devices=["js-1"],
    )
    node = await Node.run(
        node_ws, JS_DRIVER.format(client_code=client_code, auth_handler=auth_handler, usage=usage)
    )
    try:
        await node.wait_for("AUTHENTICATED")
        await node.wait_for(r'REPLY \{"type":"subscribed".*"channel":"alerts"')
        stack.reading("js-2", t=1.0)  # not subscribed
        stack.reading("js-1", t=21.5)
        await node.wait_for(r"New telemetry data: \{\s+t: \{ value: 21\.5")
        await node.wait_for(r'REPLY \{"type":"unsubscribed"')
        for _ in range(40):  # the alert: the severity the client spread at the top level
            stack.reading("js-1", t=60.0)
            try:
                await node.wait_for("New alert: Hot", timeout=0.5)
                break
            except pytest.fail.Exception:
                stack.reading("js-1", t=20.0)
        await node.wait_for("NOTIFY critical Hot")
        assert node.out.count("New telemetry data") == 1  # none after the unsubscribe
        assert "js-2" not in node.out and '"type":"error"' not in node.out
    finally:
        await node.stop()
