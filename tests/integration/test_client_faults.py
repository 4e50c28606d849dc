"""bridge.client against a scripted bridge: a real WebSocket server on localhost whose every
reply the test decides, to send what the real front never would (malformed frames, no reply,
a connection cut at the wrong moment). No broker or database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bridge.client import BridgeClient, BridgeError, Subscription, TelemetryUpdate
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(30)
Msg = dict[str, Any]


def reading(device: str, value: int, sub_id: str = "sub-1") -> Msg:
    return {
        "type": "telemetry_update",
        "subscription_id": sub_id,
        "device_id": device,
        "received_at": f"2026-01-01T00:00:{value:02d}Z",
        "telemetry": {"v": {"value": value, "timestamp": f"ts{value}"}},
    }


async def answer(msg: Msg) -> list[Msg]:
    """What the scripted bridge replies by default: subscriptions are granted."""
    if msg.get("type") == "subscribe":
        return [{"type": "subscribed", "id": msg["id"], "subscription_id": "sub-1"}]
    if msg.get("type") == "unsubscribe":
        return [{"type": "unsubscribed", "id": msg["id"]}]
    return []


@dataclass
class ScriptedBridge:
    server: Server | None = None
    hello: bytes | None = b'{"type": "connected", "client_id": "c_1"}'
    script: Callable[[Msg], Awaitable[list[Msg]]] = answer
    received: list[Msg] = field(default_factory=list)
    connections: list[ServerConnection] = field(default_factory=list)
    closed: list[ServerConnection] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    async def handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        try:
            if self.hello is not None:
                await ws.send(self.hello.decode())
            async for frame in ws:
                msg = orjson.loads(frame)
                self.received.append(msg)
                for out in await self.script(msg):
                    await ws.send(orjson.dumps(out).decode())
        except ConnectionClosed:
            pass  # the test cut it (1012), or the client went away
        finally:
            self.closed.append(ws)

    async def push(self, *msgs: Msg | str) -> None:
        """Frames to the newest connection (a string is sent as it is)."""
        for msg in msgs:
            await self.connections[-1].send(msg if isinstance(msg, str) else orjson.dumps(msg))

    def sent(self, kind: str) -> list[Msg]:
        return [m for m in self.received if m.get("type") == kind]


@pytest.fixture
async def bridge() -> AsyncIterator[ScriptedBridge]:
    scripted = ScriptedBridge()
    async with serve(scripted.handler, "127.0.0.1", 0) as server:
        scripted.server = server
        yield scripted


async def values(sub: Subscription, count: int) -> list[int]:
    out: list[int] = []
    async with asyncio.timeout(10):
        while len(out) < count:
            update = await anext(sub)
            assert isinstance(update, TelemetryUpdate)
            out.append(update.value)
    return out


async def test_malformed_messages_are_skipped_one_by_one(bridge: ScriptedBridge) -> None:
    async with (
        BridgeClient(bridge.url, "token") as client,
        client.subscribe("telemetry", device_id="d1") as sub,
    ):
        batch = {
            "type": "batch",
            "messages": [
                reading("d1", 1),
                {**reading("d1", 90), "device_id": None, "telemetry": {"v": 7}},  # not a reading
                {"type": "telemetry_update", "subscription_id": "sub-1"},  # no device_id
                reading("d1", 2),
            ],
        }
        await bridge.push(
            {**reading("d1", 91), "telemetry": [1, 2]},  # a list where an object belongs
            {**reading("d1", 92), "telemetry": {"v": "hot"}},
            "{not json",
            batch,
            {"type": "device_status_update", "subscription_id": "sub-1"},  # no device_id
            {"type": "batch", "messages": 3},
            reading("d1", 3),
        )
        assert await values(sub, 3) == [1, 2, 3]
        assert client.connected and client.connections == 1


async def answer_commands(msg: Msg) -> list[Msg]:
    if msg.get("type") == "command":
        result = {"type": "command_result", "id": msg["id"], "command_id": "cmd-1"}
        return [{**result, "status": "running"}, {**result, "status": "success"}]
    if msg.get("type") == "query":
        return [{"type": "query_result", "id": msg["id"], "series": []}]
    return await answer(msg)


async def test_an_error_in_on_progress_ends_that_command_not_the_client(
    bridge: ScriptedBridge,
) -> None:
    bridge.script = answer_commands

    def on_progress(reply: Msg) -> None:
        raise RuntimeError("dashboard bug")

    async with (
        BridgeClient(bridge.url, "token") as client,
        client.subscribe("telemetry", device_id="d1") as sub,
    ):
        with pytest.raises(RuntimeError, match="dashboard bug"):
            await client.command("d1", "reboot", on_progress=on_progress)
        # the reader carries on: replies and live messages still arrive
        assert (await client.query(device_id="d1"))["type"] == "query_result"
        await bridge.push(reading("d1", 1))
        assert await values(sub, 1) == [1]
        assert client.connections == 1


async def test_a_connection_without_hello_in_time_is_closed(bridge: ScriptedBridge) -> None:
    bridge.hello = None
    client = BridgeClient(bridge.url, "token", open_timeout_s=0.3)
    with pytest.raises(TimeoutError):
        await client.connect()

    async def closed() -> bool:
        return len(bridge.closed) == 1

    await wait_until(closed, timeout=5)  # it stayed open, on both sides, at every attempt


@pytest.mark.parametrize("hello", [b"[1]", b"not json", b'"connected"'])
async def test_a_garbled_hello_is_a_bridge_error_and_the_connection_is_closed(
    bridge: ScriptedBridge, hello: bytes
) -> None:
    bridge.hello = hello
    client = BridgeClient(bridge.url, "token")
    with pytest.raises(BridgeError) as refused:  # was AttributeError or JSONDecodeError
        await client.connect()
    assert refused.value.code == 502

    async def closed() -> bool:
        return len(bridge.closed) == 1

    await wait_until(closed, timeout=5)


async def test_a_token_provider_failing_during_a_reconnection_is_retried(
    bridge: ScriptedBridge,
) -> None:
    calls: list[int] = []

    async def provider() -> str:
        calls.append(len(calls))
        if len(calls) in (2, 3):
            raise RuntimeError("auth service down")
        return "token"

    async with (
        BridgeClient(bridge.url, token_provider=provider, backoff_initial_s=0.01) as client,
        client.subscribe("telemetry", device_id="d1") as sub,
    ):
        await bridge.connections[0].close(1012)  # the front restarts

        async def resubscribed() -> bool:
            return client.connections == 2 and "sub-1" in client._by_id

        await wait_until(resubscribed, timeout=10)
        await bridge.push(reading("d1", 1))
        assert await values(sub, 1) == [1]  # was: 500 client_error, the client stopped
        assert len(calls) == 4


async def test_a_resubscription_without_reply_ends_the_iteration_with_504(
    bridge: ScriptedBridge,
) -> None:
    async def first_subscription_only(msg: Msg) -> list[Msg]:
        return [] if len(bridge.sent("subscribe")) > 1 else await answer(msg)

    bridge.script = first_subscription_only
    async with (
        BridgeClient(bridge.url, "token", backoff_initial_s=0.01, request_timeout_s=0.5) as client,
        client.subscribe("telemetry", device_id="d1") as sub,
    ):
        await bridge.connections[0].close(1012)
        with pytest.raises(BridgeError) as timed_out:  # was: waiting for ever
            await asyncio.wait_for(anext(sub), 10)
        assert timed_out.value.code == 504
        assert client.connections == 2 and not client._tasks


async def test_close_ends_the_resubscriptions_under_way(bridge: ScriptedBridge) -> None:
    release = asyncio.Event()

    async def hold_resubscriptions(msg: Msg) -> list[Msg]:
        if len(bridge.sent("subscribe")) > 1:
            await release.wait()
        return await answer(msg)

    bridge.script = hold_resubscriptions
    client = BridgeClient(bridge.url, "token", backoff_initial_s=0.01)
    await client.connect()
    sub = await client.subscribe("telemetry", device_id="d1")
    await bridge.connections[0].close(1012)

    async def resubscribing() -> bool:
        return len(bridge.sent("subscribe")) == 2

    await wait_until(resubscribing)
    tasks = set(client._tasks)
    assert len(tasks) == 1
    await client.close()
    assert all(task.done() for task in tasks) and not client._tasks  # none left behind
    with pytest.raises(StopAsyncIteration):
        await anext(sub)
    release.set()  # let the server's handler end


async def test_a_cancelled_close_is_cancelled(bridge: ScriptedBridge) -> None:
    client = BridgeClient(bridge.url, "token")
    await client.connect()
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0)  # one step: close() now waits for the reader to stop
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):  # was swallowed: close() returned normally
        await closing
    await client.close()


async def test_a_subscription_closed_while_resubscribing_is_ended_on_the_bridge(
    bridge: ScriptedBridge,
) -> None:
    release = asyncio.Event()

    async def hold_resubscriptions(msg: Msg) -> list[Msg]:
        if msg.get("type") == "subscribe" and len(bridge.sent("subscribe")) > 1:
            await release.wait()
        return await answer(msg)

    bridge.script = hold_resubscriptions
    async with BridgeClient(bridge.url, "token", backoff_initial_s=0.01) as client:
        sub = await client.subscribe("telemetry", device_id="d1")
        await bridge.connections[0].close(1012)

        async def resubscribing() -> bool:
            return len(bridge.sent("subscribe")) == 2

        await wait_until(resubscribing)
        await sub.close()  # the reply to the resubscription is still to come
        release.set()

        async def unsubscribed() -> bool:
            return [m["subscription_id"] for m in bridge.sent("unsubscribe")] == ["sub-1"]

        await wait_until(unsubscribed, timeout=5)  # was: never, and the bridge kept sending
        assert client._by_id == {}
