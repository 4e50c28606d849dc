"""Hostile frames at the WebSocket handler: every one gets an error or a close code, the
connection that sent a bad-but-legal frame keeps working, and other clients never notice."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.frontkit import Stack, recv, recv_type

pytestmark = pytest.mark.integration

KNOWN_TYPES = ["auth", "subscribe", "unsubscribe", "query", "command", "ack_alert", "batch",
               "telemetry", "ping", "list_subscriptions", "create_rule", "start_session",
               "send_command", "subscribe-metrics", "subscribe-logs", "list_rules"]  # fmt: skip


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, -1, 2**63, 2**64 + 1, 1e308, -0.0, rnd.randint(-1000, 1000)])
    if kind == 3:
        return rnd.choice(["", "+", "#", "a/b", "dev-1", "\u0000", "é" * 50, "x" * 2000])
    if kind == 4:
        return rnd.choice(KNOWN_TYPES)
    if kind == 5:
        return "".join(chr(rnd.randrange(32, 0x2FFF)) for _ in range(rnd.randrange(20)))
    if kind == 6:
        return [random_value(rnd, depth + 1) for _ in range(rnd.randrange(5))]
    keys = ["type", "id", "channel", "device_id", "filters", "metrics", "since", "token",
            "messages", "from", "to", "bucket", "agg", "rule", "alert_id", "topics"]  # fmt: skip
    return {rnd.choice(keys): random_value(rnd, depth + 1) for _ in range(rnd.randrange(6))}


def hostile_frames(rnd: random.Random, n: int) -> list[str | bytes]:
    frames: list[str | bytes] = [
        b"\xff\xfe\xfd",  # binary, not UTF-8
        "not json",
        "[]",
        "null",
        '{"type": 5}',
        '{"type": "subscribe", "channel": "telemetry", "device_id": "+"}',
        '{"type": "subscribe", "channel": "telemetry", "device_id": "a/#"}',
        "[" * 5000 + "]" * 5000,  # deeper than any JSON parser should follow
        '{"a":' * 3000 + "1" + "}" * 3000,
        '{"type": "batch", "messages": [' + ",".join(['{"type": "ping"}'] * 60) + "]}",
        '{"type": "batch", "messages": [{"type": "batch", "messages": []}]}',
        '{"type": "query", "device_id": "d", "bucket": "1s", "from": "-3650d"}',
        '{"type": "ping", "id": {"nested": true}}',
        '{"type": "ping", "id": "' + "i" * 500 + '"}',
    ]
    for _ in range(n):
        value = random_value(rnd)
        if rnd.random() < 0.7:
            value = {"type": rnd.choice(KNOWN_TYPES), **(value if isinstance(value, dict) else {})}
        frames.append(json.dumps(value, ensure_ascii=False))  # stdlib: big ints too
    return frames


async def test_random_and_malformed_frames_get_errors(stack: Stack) -> None:
    rnd = random.Random(20261122)
    bystander = await stack.client(stack.token())
    fuzzer = await stack.client(stack.token(scope="telemetry:read alerts:read"))
    try:
        await recv(bystander)
        await recv(fuzzer)
        await bystander.send('{"type": "subscribe", "channel": "telemetry", "device_id": "fz-1"}')
        await recv_type(bystander, "subscribed")
        frames = hostile_frames(rnd, 300)
        for i, frame in enumerate(frames):
            await fuzzer.send(frame)
            await fuzzer.send(orjson.dumps({"type": "ping", "id": f"probe-{i}"}).decode())
            # every frame is answered (or ignored) before the probe: the handler never hangs
            while True:
                try:
                    reply = await recv(fuzzer, timeout=5)
                except TimeoutError:
                    raise AssertionError(f"no answer after frame {i}: {frame[:300]!r}") from None
                assert reply["type"] != "error" or reply["code"] != 500, (frame[:200], reply)
                if reply.get("id") == f"probe-{i}" and reply["type"] == "pong":
                    break
                if reply["type"] == "error" and reply["code"] == 429:
                    # the flood limit (100/s, burst 200) is a valid answer too; probe again
                    await asyncio.sleep(reply["retry_after"])
                    await fuzzer.send(orjson.dumps({"type": "ping", "id": f"probe-{i}"}).decode())
                    continue
                if reply["type"] == "error":
                    assert reply["code"] in (400, 401, 403, 404, 409, 413, 422, 429, 503)
                    assert "Traceback" not in reply["message"]
        stack.reading("fz-1", temperature=1.0)
        update = await recv_type(bystander, "telemetry_update")
        assert update["device_id"] == "fz-1"
    finally:
        await fuzzer.close()
        await bystander.close()


async def test_oversized_frame_and_compression_bomb_close_only_the_sender(stack: Stack) -> None:
    bystander = await stack.client(stack.token())
    try:
        await recv(bystander)
        big = await stack.client(stack.token())
        await recv(big)
        await big.send("x" * (65 * 1024))  # over the 64 KiB limit
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(big.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

        # A compression bomb: the client negotiates permessage-deflate, so ~10 MiB of "0,"
        # travels as a few KiB; the limit applies to the inflated size.
        comp = await stack.client(stack.token())
        assert comp.response is not None
        assert "permessage-deflate" in comp.response.headers.get("Sec-WebSocket-Extensions", "")
        await recv(comp)
        await comp.send("[" + "0," * (5 * 1024 * 1024) + "0]")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(comp.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

        await bystander.send('{"type": "ping", "id": 1}')
        assert (await recv_type(bystander, "pong"))["id"] == 1
    finally:
        await bystander.close()
