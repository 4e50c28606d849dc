"""The front's Prometheus metrics, each driven by what it counts, against a real front,
Mosquitto, PostgreSQL and ingest; the text parsed with prometheus_client and checked by
``promtool check metrics``."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from bridge.auth import mint
from tests.helpers import BrokerInfo, wait_until
from tests.integration.frontkit import Stack, http_json, recv, recv_type
from tests.integration.metrics_kit import Samples, promtool_check, samples, scrape_until, value
from tests.stack import running_stack

pytestmark = pytest.mark.integration


async def scrape(stack: Stack) -> str:
    """GET /metrics as Prometheus text."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    assert b"content-type: text/plain" in head.lower(), head
    return body.decode()


async def rest_status(stack: Stack, path: str, token: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1])


async def test_each_front_metric_counts_what_happened(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    settings = {"allowed_origins": "https://dash.example"}
    async with running_stack(broker.url, database_url, topic_prefix, settings=settings) as stack:
        text = await scrape(stack)
        promtool_check(text)
        fresh = samples(text)
        assert value(fresh, "bridge_broker_connected") == 1
        assert value(fresh, "bridge_database_up") == 1
        assert value(fresh, "bridge_connections_accepted_total") == 0

        # refused handshakes: a foreign origin, a token signed with another key
        with pytest.raises(InvalidStatus) as err:
            await connect(f"{stack.url}/ws", origin=Origin("https://evil.example"))
        assert err.value.response.status_code == 403
        forged = mint(key="k" * 48, algorithm="HS256", sub="mallory", scopes="admin")
        with pytest.raises(InvalidStatus) as err:
            await stack.client(forged)
        assert err.value.response.status_code == 401
        # a failed auth message (an expired token), and a REST request with a broken one
        expired = stack.token(ttl_s=-60)
        late = await connect(f"{stack.url}/ws")
        await late.send(f'{{"type": "auth", "token": "{expired}"}}')
        reply = await recv(late)
        assert reply["type"] == "auth_response" and reply["error"] == "token_expired"
        with pytest.raises(ConnectionClosed):
            await recv(late)
        assert await rest_status(stack, "/api/v1/devices", "not-a-jwt") == 401

        # a Valtronics client with two subscriptions and a ping; a Nexus client
        ws = await stack.client(stack.token())
        await recv(ws)
        for channel in ("telemetry", "alerts"):
            await ws.send(f'{{"type": "subscribe", "channel": "{channel}", "device_id": "m1"}}')
            assert (await recv(ws))["type"] == "subscribed"
        await ws.send('{"type": "ping"}')
        assert (await recv(ws))["type"] == "pong"
        nexus = await connect(f"{stack.url}/api/v1/events?token={stack.token(sub='bob')}")
        assert (await recv(nexus))["type"] == "connected"

        # a reading published by a device, stored by the ingest, delivered to the client
        stack.reading("m1", temperature=21.5)
        update = await recv_type(ws, "telemetry_update")
        assert update["telemetry"]["temperature"]["value"] == 21.5

        got = await scrape_until(
            lambda: scrape(stack),
            {
                ("bridge_connections", (("dialect", "valtronics"),)): 1,
                ("bridge_connections", (("dialect", "nexus"),)): 1,
            },
            timeout=10,
        )
        assert value(got, "bridge_connections", dialect="o1") == 0
        assert value(got, "bridge_connections_accepted_total") == 3
        assert value(got, "bridge_handshakes_refused_total", reason="origin") == 1
        assert value(got, "bridge_handshakes_refused_total", reason="auth") == 1
        assert value(got, "bridge_handshakes_refused_total", reason="ip_rate") == 0
        assert value(got, "bridge_auth_failures_total", reason="invalid_signature") == 1
        assert value(got, "bridge_auth_failures_total", reason="expired") == 1
        assert value(got, "bridge_auth_failures_total", reason="malformed") == 1
        assert value(got, "bridge_subscriptions", channel="telemetry") == 1
        assert value(got, "bridge_subscriptions", channel="alerts") == 1
        assert value(got, "bridge_subscriptions", channel="devices") == 0
        # the telemetry and alerts filters of m1 (alerts: every severity)
        assert value(got, "bridge_broker_subscriptions") >= 2
        assert value(got, "bridge_broker_messages_received_total") >= 1
        assert value(got, "bridge_deliveries_total") == 1  # the one reading, to the one client
        # connected x2, subscribed x2, pong, the update; the failed auth's reply
        assert value(got, "bridge_messages_sent_total") >= 7
        assert value(got, "bridge_messages_received_total") == 4  # auth, 2 subscribe, ping
        handled = "bridge_message_handling_seconds_count"
        assert value(got, handled, type="subscribe") == 2
        assert value(got, handled, type="ping") == 1
        assert value(got, handled, type="auth") == 1
        assert value(got, "bridge_message_handling_seconds_bucket", type="ping", le="+Inf") == 1
        assert value(got, "bridge_frames_dropped_total") == 0
        assert value(got, "bridge_slow_clients_closed_total") == 0

        # the JSON form reads the same numbers
        js = await http_json(stack, "/metrics")
        assert js["connections"]["by_dialect"]["nexus"] == 1
        assert js["auth_failures"]["expired"] == 1
        assert js["subscriptions"] == {"telemetry": 1, "alerts": 1}
        assert js["messages"]["delivered"] == 1

        await ws.close()
        await nexus.close()
        # what the front counts after a client closes happens after the client saw the close
        got = await scrape_until(
            lambda: scrape(stack),
            {
                ("bridge_connections", (("dialect", "valtronics"),)): 0,
                ("bridge_connections", (("dialect", "nexus"),)): 0,
                ("bridge_subscriptions", (("channel", "telemetry"),)): 0,
            },
            timeout=10,
        )
        # a closed session's counts stay in the totals
        assert value(got, "bridge_deliveries_total") == 1
        assert value(got, "bridge_messages_received_total") == 4
        promtool_check(await scrape(stack))


async def test_a_slow_client_drops_conflates_and_is_closed(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    settings = {
        "ws_queue_size": 10,
        "ws_max_behind_s": 1.0,
        "ws_new_connections_per_ip_per_min": 1,
    }
    async with running_stack(
        broker.url, database_url, topic_prefix, ingest=False, settings=settings
    ) as stack:
        # never reads after subscribing: the kernel's buffers fill, then its queue of 10
        slow = await connect(
            f"{stack.url}/ws",
            additional_headers={"Authorization": f"Bearer {stack.token()}"},
            max_queue=1,
            compression=None,
        )
        await recv(slow)
        await slow.send('{"type": "subscribe", "topics": ["telemetry"]}')
        assert (await recv(slow))["type"] == "subscription_confirmed"
        with pytest.raises(InvalidStatus) as err:  # the second handshake in a minute
            await stack.client(stack.token(sub="bob"))
        assert err.value.response.status_code == 429
        # new devices (dropped once the queue is full) and one reading over and over (a
        # queued value replaced by the newer one: conflated)
        for i in range(3000):
            stack.stream(f"behind-{i}", "t", float(i), pad=10_000)
            stack.stream("same", "t", float(i), pad=10_000)

        seen: list[Samples] = []

        async def closed_as_slow() -> bool:
            seen.append(samples(await scrape(stack)))
            return value(seen[-1], "bridge_slow_clients_closed_total") == 1

        await wait_until(closed_as_slow, timeout=20)
        got = await scrape_until(
            lambda: scrape(stack),
            {("bridge_connections", (("dialect", "valtronics"),)): 0},
            timeout=10,
        )
        seen.append(got)
        assert value(got, "bridge_handshakes_refused_total", reason="ip_rate") == 1
        assert value(got, "bridge_frames_dropped_total") > 0
        assert value(got, "bridge_frames_conflated_total") > 0
        assert value(got, "bridge_deliveries_total") > 0
        # counters never went back while the client was being closed
        for name in ("bridge_frames_dropped_total", "bridge_frames_conflated_total"):
            values = [value(s, name) for s in seen]
            assert values == sorted(values), (name, values)
        js = await http_json(stack, "/metrics")
        assert js["messages"]["dropped"] == value(got, "bridge_frames_dropped_total")
        with pytest.raises(ConnectionClosed):
            while True:  # what was already buffered, then the close (4008) or the abort
                await asyncio.wait_for(slow.recv(), 15)
        promtool_check(await scrape(stack))
