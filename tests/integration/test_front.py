"""The WebSocket front against a real Mosquitto, PostgreSQL and the real ingest."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from bridge.auth import mint
from tests.helpers import BrokerInfo, wait_until
from tests.integration.frontkit import (
    SECRET,
    Stack,
    http_json,
    nothing_more,
    recv,
    recv_type,
)
from tests.stack import front_fixture, running_stack

pytestmark = pytest.mark.integration


async def test_reading_reaches_a_channel_subscriber_with_the_right_shape(stack: Stack) -> None:
    async with await stack.client(stack.token()) as ws:
        hello = await recv(ws)
        assert hello["type"] == "connected" and hello["protocol"] == 1 and hello["client_id"]
        await ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "id": 7,
                    "channel": "telemetry",
                    "device_id": "d1",
                    "filters": {"metrics": ["temperature"]},
                }
            ).decode()
        )
        sub = await recv(ws)
        assert sub["type"] == "subscribed" and sub["id"] == 7
        assert sub["mqtt_topics"] == [stack.topics.telemetry("d1", "temperature")]
        stack.reading("d2", temperature=1.0)  # other device: not delivered
        stack.reading("d1", humidity=2.0)  # other metric: not delivered
        stack.reading("d1", temperature=21.5)
        update = await recv_type(ws, "telemetry_update")
        assert update["channel"] == "telemetry" and update["device_id"] == "d1"
        assert update["subscription_id"] == sub["subscription_id"]
        assert update["telemetry"]["temperature"]["value"] == 21.5
        assert update["telemetry"]["temperature"]["timestamp"].endswith("Z")
        assert update["timestamp"].endswith("Z")
        await nothing_more(ws)


async def test_two_clients_share_one_broker_subscription_released_when_both_leave(
    stack: Stack,
) -> None:
    msg = orjson.dumps({"type": "subscribe", "channel": "devices", "device_id": "d7"}).decode()
    a = await stack.client(stack.token())
    b = await stack.client(stack.token(sub="bob"))
    for ws in (a, b):
        await recv(ws)
        await ws.send(msg)
        assert (await recv(ws))["mqtt_topics"] == [stack.topics.status_filter("d7")]
    stats = await http_json(stack, "/metrics")
    assert stats["broker"]["subscriptions"] == 1  # one filter, two clients
    await a.close()
    await b.close()

    async def released() -> bool:
        return (await http_json(stack, "/metrics"))["broker"]["subscriptions"] == 0

    await wait_until(released, timeout=5)


async def test_handshake_auth_failures_are_http_401(stack: Stack) -> None:
    bad = [
        "garbage",
        mint(key="y" * 48, algorithm="HS256", sub="alice", scopes="admin"),
        mint(key=SECRET, algorithm="HS256", sub="alice", scopes="admin", ttl_s=-10),
    ]
    for token in bad:
        with pytest.raises(InvalidStatus) as err:
            await stack.client(token)
        assert err.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as err:
        await connect(f"{stack.url}/ws?token=garbage", open_timeout=5)
    assert err.value.response.status_code == 401


async def test_auth_by_message_in_both_dialects(stack: Stack) -> None:
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "channel": "telemetry"}).decode())
        assert (await recv(ws))["code"] == 401
        await ws.send(orjson.dumps({"type": "auth", "token": stack.token()}).decode())
        reply = await recv(ws)
        assert reply["type"] == "auth_response" and reply["success"] is True
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "authenticate", "token": stack.token()}).decode())
        assert (await recv(ws))["type"] == "auth_success"
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "authenticate", "token": "bad"}).decode())
        err = await recv(ws)
        assert err["type"] == "error" and err["code"] == 401 and err["error"] == "invalid_token"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with await stack.client() as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": "bad"}).decode())
        reply = await recv(ws)
        assert reply["type"] == "auth_response" and reply["success"] is False
        assert reply["error"] == "invalid_token"


ERRORS = [
    ("not json", 400, "invalid_json"),
    ("[1, 2]", 400, "bad_request"),
    ('{"no": "type"}', 400, "bad_request"),
    ('{"type": "frobnicate"}', 400, "bad_request"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "+"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "a/b"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "$SYS"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "telemetry", "device_id": "#"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "nope"}', 422, "validation_error"),
    ('{"type": "subscribe", "channel": "alerts"}', 403, "forbidden"),
    ('{"type": "unsubscribe", "subscription_id": "sub_nope"}', 404, "not_found"),
]


@pytest.mark.parametrize(("frame", "code", "error"), ERRORS)
async def test_error_table(stack: Stack, frame: str, code: int, error: str) -> None:
    async with await stack.client(stack.token(scope="telemetry:read")) as ws:
        await recv(ws)
        await ws.send(frame)
        reply = await recv(ws)
        assert reply["type"] == "error" and reply["code"] == code and reply["error"] == error
        assert reply["message"] and "Traceback" not in reply["message"]
        await ws.send('{"type": "ping", "id": "p1"}')  # the connection keeps serving
        pong = await recv(ws)
        assert pong["type"] == "pong" and pong["id"] == "p1"


async def test_device_outside_the_claim_is_forbidden_and_never_delivered(stack: Stack) -> None:
    token = stack.token(devices=["plant-a-*"])
    async with await stack.client(token) as ws:
        await recv(ws)
        await ws.send('{"type": "subscribe", "channel": "telemetry", "device_id": "plant-b-1"}')
        assert (await recv(ws))["code"] == 403
        await ws.send('{"type": "subscribe", "channel": "telemetry"}')
        assert (await recv(ws))["type"] == "subscribed"
        stack.reading("plant-b-1", t=1.0)
        stack.reading("plant-a-1", t=2.0)
        update = await recv_type(ws, "telemetry_update")
        assert update["device_id"] == "plant-a-1"
        await nothing_more(ws)


async def test_topics_and_events_dialects(stack: Stack) -> None:
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "subscribe", "topics": ["telemetry"], "filters": {"device_id": "e1"}}'
        )
        conf = await recv(ws)
        assert conf["type"] == "subscription_confirmed" and conf["topics"] == ["telemetry"]
        await ws.send(
            '{"type": "subscribe", "events": ["telemetry.updated"], "filters": {"agentId": "e1"}}'
        )
        ev = await recv(ws)
        assert ev["type"] == "subscribed" and ev["events"] == ["telemetry.updated"]
        stack.reading("e1", v=3.0)
        got = [await recv_type(ws, "event"), await recv_type(ws, "event")]
        assert {("topic" in g, "eventType" in g) for g in got} == {(True, False), (False, True)}
        for g in got:
            assert g["data"]["device_id"] == "e1" and g["data"]["value"] == 3.0
        await ws.send('{"type": "list_subscriptions"}')
        listed = await recv(ws)
        assert listed["type"] == "subscriptions_list" and listed["count"] == 2
        await ws.send('{"type": "unsubscribe", "topics": ["telemetry"]}')
        assert (await recv(ws))["type"] == "unsubscription_confirmed"


async def test_health_status_and_metrics(stack: Stack) -> None:
    async def healthy() -> bool:  # the broker connection comes up just after the listener
        return (await http_json(stack, "/health"))["status"] == "healthy"

    await wait_until(healthy, timeout=10)
    health = await http_json(stack, "/health")
    assert health["checks"] == {"mqtt": "ok", "database": "ok"}
    status = await http_json(stack, "/status")
    assert status["service"] == "telemetry-bridge" and status["features"]["auth_required"] is True
    metrics = await http_json(stack, "/metrics")
    assert {"rate_limiting", "connections", "messages"} <= metrics.keys()


async def test_batch_in_order(stack: Stack) -> None:
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            orjson.dumps(
                {"type": "batch", "messages": [{"type": "ping", "id": i} for i in range(3)]}
            ).decode()
        )
        assert [(await recv(ws))["id"] for _ in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("small_stack", [{"ws_messages_per_s": 1, "ws_burst": 5}], indirect=True)
async def test_message_rate_limit(small_stack: Stack) -> None:
    stack = small_stack
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        for _ in range(10):  # burst 5, then 1/s: at least 4 of these are refused
            await ws.send('{"type": "ping"}')
        replies = [await recv(ws) for _ in range(10)]
        limited = [r for r in replies if r["type"] == "error"]
        assert len(limited) >= 4
        assert all(r["code"] == 429 and r["error"] == "rate_limit_exceeded" for r in limited)
        assert all(0 < r["retry_after"] <= 1 for r in limited)
        await asyncio.sleep(limited[-1]["retry_after"])  # honour it: served again
        await ws.send('{"type": "ping"}')
        assert (await recv(ws))["type"] == "pong"


async def test_snapshot_then_live(stack: Stack) -> None:
    stack.peer.subscribe(stack.topics.telemetry("s1", "t"))
    stack.reading("s1", t=1.5)

    async def committed() -> bool:  # the stream is published only after the commit
        return bool(stack.peer.messages(stack.topics.telemetry("s1", "t")))

    await wait_until(committed)
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "subscribe", "channel": "telemetry", "device_id": "s1", "snapshot": true}'
        )
        assert (await recv(ws))["type"] == "subscribed"
        snap = await recv_type(ws, "telemetry_update")
        assert snap["telemetry"]["t"]["value"] == 1.5
        assert (await recv(ws))["type"] == "snapshot_complete"
        stack.reading("s1", t=2.5)
        live = await recv_type(ws, "telemetry_update")
        assert live["telemetry"]["t"]["value"] == 2.5


# A front alone (no ingest) with the limits a test asks for via indirect params.
small_stack = pytest.fixture(front_fixture)


async def test_expiry_closes_4001_unless_refreshed(small_stack: Stack) -> None:
    stack = small_stack
    async with await stack.client(stack.token(ttl_s=2)) as ws:
        await recv(ws)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    async with await stack.client(stack.token(ttl_s=2)) as ws:
        await recv(ws)
        await ws.send(orjson.dumps({"type": "auth", "token": stack.token(ttl_s=60)}).decode())
        assert (await recv(ws))["success"] is True
        await asyncio.sleep(2.5)  # past the first token's expiry: still open
        await ws.send('{"type": "ping"}')
        assert (await recv(ws))["type"] == "pong"


async def test_frame_over_the_limit_closes_1009(small_stack: Stack) -> None:
    stack = small_stack
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send('{"type": "ping", "pad": "' + "x" * 70_000 + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


@pytest.mark.parametrize("small_stack", [{"ws_max_subscriptions": 2}], indirect=True)
async def test_subscriptions_per_connection(small_stack: Stack) -> None:
    stack = small_stack
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        for device in ("a1", "a2", "a3"):
            await ws.send(
                orjson.dumps(
                    {"type": "subscribe", "channel": "telemetry", "device_id": device}
                ).decode()
            )
        replies = [await recv(ws) for _ in range(3)]
        assert [r["type"] for r in replies] == ["subscribed", "subscribed", "error"]
        assert replies[2]["code"] == 429


@pytest.mark.parametrize("small_stack", [{"ws_new_connections_per_ip_per_min": 3}], indirect=True)
async def test_connection_storm_from_one_ip_gets_429(small_stack: Stack) -> None:
    stack = small_stack
    # the fixture's health probes are HTTP, not WebSocket handshakes: 3 are allowed
    conns = [await stack.client(stack.token()) for _ in range(3)]
    with pytest.raises(InvalidStatus) as err:
        await stack.client(stack.token())
    assert err.value.response.status_code == 429
    for c in conns:
        await c.close()


@pytest.mark.parametrize(
    "small_stack", [{"allowed_origins": "https://dash.example"}], indirect=True
)
async def test_foreign_origin_gets_403(small_stack: Stack) -> None:
    stack = small_stack
    ok = await connect(
        f"{stack.url}/ws",
        origin=Origin("https://dash.example"),
        additional_headers={"Authorization": f"Bearer {stack.token()}"},
    )
    await ok.close()
    with pytest.raises(InvalidStatus) as err:
        await connect(
            f"{stack.url}/ws",
            origin=Origin("https://evil.example"),
            additional_headers={"Authorization": f"Bearer {stack.token()}"},
        )
    assert err.value.response.status_code == 403


@pytest.mark.parametrize("small_stack", [{"ws_max_connections_per_sub": 2}], indirect=True)
async def test_connections_per_subject(small_stack: Stack) -> None:
    stack = small_stack
    a, b = await stack.client(stack.token()), await stack.client(stack.token())
    with pytest.raises(InvalidStatus) as err:
        await stack.client(stack.token())
    assert err.value.response.status_code == 429
    other = await stack.client(stack.token(sub="bob"))
    for c in (a, b, other):
        await c.close()


@pytest.mark.parametrize("small_stack", [{"ws_queue_size": 20}], indirect=True)
async def test_a_client_that_stops_reading_does_not_delay_another(
    small_stack: Stack,
) -> None:
    stack = small_stack
    # the topics form forwards the whole event, so padded events make big frames that fill
    # the kernel's socket buffers quickly
    sub = orjson.dumps({"type": "subscribe", "topics": ["telemetry"]}).decode()
    slow = await connect(
        f"{stack.url}/ws",
        additional_headers={"Authorization": f"Bearer {stack.token()}"},
        max_queue=1,
    )
    # the fast one reads all that arrives (no bound on its own queue): it runs in this process,
    # so a bounded queue would make it slower than the front it watches
    fast = await connect(
        f"{stack.url}/ws",
        additional_headers={"Authorization": f"Bearer {stack.token(sub='bob')}"},
        max_queue=None,
    )
    for ws in (slow, fast):
        await recv(ws)
        await ws.send(sub)
        assert (await recv(ws))["type"] == "subscription_confirmed"
    # the slow one never reads again; flood 3,000 x 10 kB (30 MB), then a marker
    for i in range(3000):
        stack.stream(f"flood-{i}", "t", float(i), pad=10_000)
    stack.stream("marker", "t", 1.0)
    started = time.monotonic()
    seen = 0
    while True:
        msg = await recv(fast, 10)
        seen += 1
        if msg.get("data", {}).get("device_id") == "marker":
            break
    assert seen >= 1 and time.monotonic() - started < 10
    metrics = await http_json(stack, "/metrics")
    assert metrics["messages"]["dropped"] > 0, (seen, metrics)  # the slow queue overflowed
    await fast.close()
    await slow.close()


async def test_shutdown_closes_clients_with_1001(broker: BrokerInfo, topic_prefix: str) -> None:
    async with running_stack(broker.url, None, topic_prefix, ingest=False) as stack:
        ws = await stack.client(stack.token(scope="admin", sub="a"))
        await recv(ws)
        stopping = asyncio.create_task(stack.stop_front())
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await asyncio.wait_for(stopping, 10)


async def test_frequency_sends_the_latest_value_once_per_interval(
    small_stack: Stack,
) -> None:
    stack = small_stack
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "subscribe", "channel": "telemetry", "device_id": "f1", '
            '"filters": {"frequency": "1s"}}'
        )
        assert (await recv(ws))["type"] == "subscribed"
        for v in range(5):
            stack.stream("f1", "t", float(v))
        values = []
        with pytest.raises(TimeoutError):
            while True:
                values.append((await recv(ws, 2.5))["telemetry"]["t"]["value"])
        # once per interval, the latest value: 5 readings within a few ms give one update
        # (two if an interval boundary fell between them), never five, never a stale last one
        assert 1 <= len(values) <= 2 and values[-1] == 4.0


async def test_o1_subscribe_metrics(small_stack: Stack) -> None:
    stack = small_stack
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "subscribe-metrics", "host": "anvil-01", "application": "Anvil", '
            '"metrics": ["cpu"]}'
        )
        reply = await recv(ws)
        assert reply["type"] == "subscribed" and reply["subscriptionId"].startswith("sub_")
        stack.stream("anvil-01", "cpu", 45.2)
        metrics = await recv_type(ws, "metrics")
        assert metrics["host"] == "anvil-01" and metrics["application"] == "Anvil"
        assert metrics["cpu"] == 45.2


async def test_tokens_and_query_strings_never_reach_the_logs(
    small_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = small_stack
    caplog.set_level("DEBUG")
    token = stack.token()
    ws = await connect(f"{stack.url}/ws?token={token}")
    await recv(ws)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    await recv(ws)
    await ws.close()
    with pytest.raises(InvalidStatus):
        await connect(f"{stack.url}/ws?token=bad-{token}")
    server_side = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client")
    )
    assert "GET /ws?token=***" in server_side  # the request line is logged, masked
    assert token not in server_side
    assert token.split(".")[1] not in server_side


async def test_o1_http_shapes(small_stack: Stack) -> None:
    stack = small_stack
    health = await http_json(stack, "/api/websocket/health")
    assert health["status"] == "healthy" and "connectionCount" in health
    metrics = await http_json(stack, "/api/websocket/metrics")
    assert {"connections", "messages", "performance"} <= metrics.keys()
    assert metrics["performance"]["memoryUsage"].endswith("MB")
    stats = await http_json(stack, "/api/websocket/stats")
    assert {"totalConnections", "poolStats", "batcherStats", "processorStats"} <= stats.keys()


async def test_server_batches_when_asked(small_stack: Stack) -> None:
    stack = small_stack
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send(
            '{"type": "subscribe", "channel": "telemetry", "device_id": "b1", "batch": true}'
        )
        assert (await recv(ws))["type"] == "subscribed"
        for v in range(30):
            stack.stream("b1", f"m{v}", float(v))
        got: list[dict[str, Any]] = []
        while len(got) < 30:
            msg = await recv(ws)
            got.extend(msg["messages"] if msg["type"] == "batch" else [msg])
        assert {m["type"] for m in got} == {"telemetry_update"}
        assert sorted(next(iter(m["telemetry"].values()))["value"] for m in got) == [
            float(v) for v in range(30)
        ]


@pytest.mark.parametrize("small_stack", [{"ws_max_connections": 2}], indirect=True)
async def test_total_connection_limit_is_503(small_stack: Stack) -> None:
    stack = small_stack
    a, b = await stack.client(stack.token()), await stack.client(stack.token(sub="b"))
    with pytest.raises(InvalidStatus) as err:
        await stack.client(stack.token(sub="c"))
    assert err.value.response.status_code == 503
    await a.close()
    await b.close()


async def test_alg_none_token_is_refused_at_the_handshake(
    small_stack: Stack,
) -> None:
    stack = small_stack
    import base64

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(d)).rstrip(b"=").decode()

    claims = {"sub": "alice", "exp": int(time.time()) + 600, "scope": "admin"}
    with pytest.raises(InvalidStatus) as err:
        await stack.client(f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.")
    assert err.value.response.status_code == 401


async def _flooded_client(stack: Stack) -> ClientConnection:
    ws = await connect(
        f"{stack.url}/ws",
        additional_headers={"Authorization": f"Bearer {stack.token()}"},
        max_queue=1,
        compression=None,
    )
    await recv(ws)
    await ws.send('{"type": "subscribe", "topics": ["telemetry"]}')
    assert (await recv(ws))["type"] == "subscription_confirmed"
    for i in range(3000):
        stack.stream(f"behind-{i}", "t", float(i), pad=10_000)
    return ws


@pytest.mark.parametrize(
    "small_stack", [{"ws_queue_size": 10, "ws_max_behind_s": 60}], indirect=True
)
async def test_a_client_that_falls_behind_is_warned(small_stack: Stack) -> None:
    stack = small_stack
    ws = await _flooded_client(stack)
    await asyncio.sleep(1.5)  # not reading while the flood arrives: the queue overflows
    seen: list[dict[str, Any]] = []
    with pytest.raises(TimeoutError):
        while True:  # catch up until the stream goes quiet
            seen.append(await recv(ws, 2))
    warnings = [f for f in seen if f["type"] == "warning"]
    assert warnings and warnings[0]["error"] == "slow_consumer" and warnings[0]["dropped"] > 0
    assert len(seen) < 3000  # dropped, not queued without bound
    stack.stream("after", "t", 1.0)  # caught up: live delivery resumes on the same connection
    assert (await recv_type(ws, "event"))["data"]["device_id"] == "after"
    await ws.close()


@pytest.mark.parametrize(
    "small_stack", [{"ws_queue_size": 10, "ws_max_behind_s": 1.0}], indirect=True
)
async def test_a_client_that_stays_behind_is_closed(small_stack: Stack) -> None:
    stack = small_stack
    ws = await _flooded_client(stack)  # and then never reads

    async def closed_by_server() -> bool:
        metrics = await http_json(stack, "/metrics")
        return metrics["connections"]["closed_slow_consumer"] == 1

    await wait_until(closed_by_server, timeout=15)
    with pytest.raises(ConnectionClosed):
        while True:  # what was already buffered, then the close (4008) or the abort after it
            await asyncio.wait_for(ws.recv(), 15)


async def test_o1_metrics_include_the_bridges_system_status(
    small_stack: Stack,
) -> None:
    stack = small_stack
    async with await stack.client(stack.token()) as ws:
        await recv(ws)
        await ws.send('{"type": "subscribe-metrics", "host": "bridge-h1", "application": "Anvil"}')
        reply = await recv(ws)
        assert reply["type"] == "subscribed" and len(reply["subscription_ids"]) == 2
        for component in ("bridge-h2", "bridge-h1"):  # only the named host is delivered
            stack.peer.publish(
                stack.topics.system(component),
                orjson.dumps(
                    {
                        "component": component,
                        "cpu_usage": 12.5,
                        "memory_usage": 40.0,
                        "disk_usage": 70.1,
                        "active_connections": 3,
                    }
                ),
                qos=0,
            )
        metrics = await recv_type(ws, "metrics")
        assert (metrics["host"], metrics["application"]) == ("bridge-h1", "Anvil")
        assert (metrics["cpu"], metrics["memory"], metrics["disk"]) == (12.5, 40.0, 70.1)
        await nothing_more(ws)


@pytest.mark.parametrize("small_stack", [{"ws_heartbeat_s": 0.5}], indirect=True)
async def test_keepalive_pings_and_drops_a_silent_client(
    small_stack: Stack,
) -> None:
    stack = small_stack
    live = await stack.client(stack.token())  # answers pings by itself
    host, port = stack.url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {stack.token()}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b" 101 " in head.split(b"\r\n")[0]
    # never answer: the server pings, waits one heartbeat, then closes 1011
    opcodes = []
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            first, second = await asyncio.wait_for(reader.readexactly(2), 5)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            payload = await reader.readexactly(length)
            opcodes.append(first & 0x0F)
            if first & 0x0F == 0x8:
                assert int.from_bytes(payload[:2], "big") == 1011
                break
    writer.close()
    assert 0x9 in opcodes and opcodes[-1] == 0x8  # a ping, then the close
    await asyncio.sleep(1.5)  # three heartbeats: the answering client is still there
    await live.send('{"type": "ping", "id": 1}')
    assert (await recv_type(live, "pong"))["id"] == 1
    await live.close()
