"""Resume with `since`: stored messages first, then live, with no gap and no duplicate, while
readings keep arriving during the replay."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from bridge.auth import Principal
from bridge.history import History
from bridge.subscriptions import parse_channel_subscribe
from ingest.payload import parse_timestamp
from tests.helpers import wait_until
from tests.integration.frontkit import Stack, recv, recv_type

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


async def send(ws: ClientConnection, msg: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(msg).decode())


def seq_of(msg: dict[str, Any]) -> int:
    return int(msg["telemetry"]["seq"]["value"])


async def test_telemetry_resume_has_no_gap_and_no_duplicate(
    stack: Stack, database_url: str
) -> None:
    token = stack.token(scope="telemetry:read")
    published = 0
    running = True

    async def device() -> None:
        # One reading every 4 ms, explicit increasing ts, the sequence number as the value.
        nonlocal published
        while running:
            body = {"ts": int((T0 + timedelta(milliseconds=published)).timestamp() * 1000),
                    "values": {"seq": published}}  # fmt: skip
            stack.peer.publish(stack.topics.device_telemetry("rs-1"), orjson.dumps(body))
            published += 1
            await asyncio.sleep(0.004)

    first = await stack.client(token)
    await recv(first)
    await send(first, {"type": "subscribe", "channel": "telemetry", "device_id": "rs-1"})
    await recv_type(first, "subscribed")
    pub = asyncio.create_task(device())
    seen_first: list[dict[str, Any]] = []
    try:
        while len(seen_first) < 40:
            seen_first.append(await recv_type(first, "telemetry_update"))
        await first.close()  # whatever was still in flight is lost to this client
        await asyncio.sleep(0.5)  # readings arrive while nobody listens

        second = await stack.client(token)
        await recv(second)
        await send(
            second,
            {
                "type": "subscribe",
                "channel": "telemetry",
                "device_id": "rs-1",
                "since": seen_first[-1]["received_at"],
            },
        )
        await recv_type(second, "subscribed")
        replayed: list[dict[str, Any]] = []
        while (msg := await recv(second))["type"] != "replay_complete":
            assert msg["type"] == "telemetry_update"
            replayed.append(msg)
        # live messages held during the replay come before replay_complete too
        assert len(replayed) >= msg["count"] > 0 and msg["truncated"] is False
        live: list[dict[str, Any]] = []
        while len(live) < 40:  # readings kept coming during the replay; now live again
            live.append(await recv_type(second, "telemetry_update"))
        running = False
        await pub
        # drain: everything published must arrive
        while not live or seq_of(live[-1]) < published - 1:
            live.append(await recv_type(second, "telemetry_update"))
        await second.close()
    finally:
        running = False
        with contextlib.suppress(Exception):
            await pub

    got = [seq_of(m) for m in seen_first + replayed + live]
    assert got == list(range(published)), "gap or duplicate at a seam"
    db = await asyncpg.connect(database_url)
    try:
        assert (
            await db.fetchval("SELECT count(*) FROM readings WHERE device_id='rs-1'") == published
        )
    finally:
        await db.close()


async def test_replay_and_its_truncation(stack: Stack, database_url: str) -> None:
    token = stack.token(scope="telemetry:read")
    since = datetime.now(UTC).isoformat()
    for i in range(30):
        stack.reading("tr-1", v=float(i))
    ws = await stack.client(token)
    try:
        await recv(ws)

        async def stored() -> bool:
            await send(ws, {"type": "query", "device_id": "tr-1", "from": "-1h", "to": "+1h"})
            return (await recv_type(ws, "query_result"))["count"] == 30

        await wait_until(stored, timeout=10)
        await send(ws, {"type": "subscribe", "channel": "telemetry", "device_id": "tr-1",
                        "since": since})  # fmt: skip
        await recv_type(ws, "subscribed")
        values = []
        while (msg := await recv(ws))["type"] != "replay_complete":
            values.append(msg["telemetry"]["v"]["value"])
        assert values == [float(i) for i in range(30)] and msg["count"] == 30
        assert msg["truncated"] is False
        for bad in ("yesterday", True, {"ts": 1}):
            await send(ws, {"type": "subscribe", "channel": "telemetry", "device_id": "tr-2",
                            "since": bad, "id": "s"})  # fmt: skip
            err = await recv_type(ws, "error")
            assert err["code"] == 422 and err["id"] == "s"
        await send(ws, {"type": "subscribe", "channel": "system", "since": since, "id": "y"})
        assert (await recv_type(ws, "error"))["code"] == 422
    finally:
        await ws.close()
    # more missed than the maximum: the newest ones, oldest first, and truncated
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        selector = parse_channel_subscribe({"channel": "telemetry", "device_id": "tr-1"})
        events, truncated = await History(pool).replay(
            selector, Principal("alice", frozenset({"telemetry:read"})), parse_timestamp(since), 10
        )
        assert truncated and [e["value"] for _, e in events] == [float(i) for i in range(20, 30)]
        hidden = Principal("bob", frozenset({"telemetry:read"}), devices=("other-*",))
        events, _ = await History(pool).replay(selector, hidden, parse_timestamp(since), 100)
        assert events == []  # the token's device rules apply to replays too
    finally:
        await pool.close()


async def test_status_and_alerts_resume(stack: Stack, database_url: str) -> None:
    db = await asyncpg.connect(database_url)
    await db.execute(
        "INSERT INTO rules (rule_id, metric, devices, condition, threshold, severity) "
        "VALUES ('hot', 'temp', ARRAY['st-*'], 'gt', 50, 'high')"
    )
    token = stack.token(scope="telemetry:read alerts:read devices:read")
    ws = await stack.client(token)
    try:
        await recv(ws)
        await send(ws, {"type": "subscribe", "channel": "devices"})
        await send(ws, {"type": "subscribe", "channel": "alerts"})
        await recv_type(ws, "subscribed")
        await recv_type(ws, "subscribed")

        inbox: list[dict[str, Any]] = []

        async def first_of(type_: str) -> dict[str, Any]:
            for msg in inbox:
                if msg["type"] == type_:
                    return msg
            for _ in range(40):  # the ingest reloads rules every 0.5 s in this stack
                if type_ == "alert":
                    stack.reading("st-1", temp=60.0)
                with contextlib.suppress(TimeoutError):
                    while True:
                        inbox.append(await recv(ws, timeout=0.5))
                        if inbox[-1]["type"] == type_:
                            return inbox[-1]
            raise AssertionError(f"no {type_}")

        first_alert = await first_of("alert")
        first_status = await first_of("device_status_update")
        assert first_status["device_id"] == "st-1" and first_status["new_status"] == "online"
        await ws.close()

        # while away: a new device comes online and raises an alert
        stack.reading("st-2", temp=70.0)

        async def stored() -> bool:
            n = await db.fetchval("SELECT count(*) FROM alerts WHERE device_id = 'st-2'")
            return bool(n)

        for _ in range(40):
            if await stored():
                break
            stack.reading("st-2", temp=10.0)
            stack.reading("st-2", temp=70.0)
            await asyncio.sleep(0.25)
        await wait_until(stored, timeout=5)

        ws = await stack.client(token)
        await recv(ws)
        await send(ws, {"type": "subscribe", "channel": "devices",
                        "since": first_status["received_at"]})  # fmt: skip
        await recv_type(ws, "subscribed")
        statuses = []
        while (msg := await recv(ws))["type"] != "replay_complete":
            statuses.append((msg["device_id"], msg["new_status"]))
        assert statuses == [("st-2", "online")]
        await send(ws, {"type": "subscribe", "channel": "alerts",
                        "since": first_alert["received_at"]})  # fmt: skip
        await recv_type(ws, "subscribed")
        alerts = []
        while (msg := await recv(ws))["type"] != "replay_complete":
            if msg["type"] == "alert":
                alerts.append(msg["device_id"])
        assert alerts and set(alerts) == {"st-2"}
    finally:
        await ws.close()
        await db.close()


async def test_resume_from_a_snapshot_frame_neither_misses_nor_repeats(
    stack: Stack, database_url: str
) -> None:
    """A client resuming with `since` = the received_at of a snapshot frame gets exactly the
    readings stored after that one, even the next one received in the same millisecond."""
    first_at = datetime.now(UTC).replace(microsecond=123_456) - timedelta(minutes=1)
    columns = ["device_id", "metric", "ts", "value", "unit", "received_at"]
    first = ("sn-1", "m", first_at - timedelta(seconds=1), 1.0, None, first_at)
    # received 300 us later: the same millisecond as the first one
    second = ("sn-1", "m", first_at, 2.0, None, first_at + timedelta(microseconds=300))
    db = await asyncpg.connect(database_url)
    try:
        await db.execute("SELECT ensure_readings_partitions(current_date - 1, current_date + 1)")
        await db.copy_records_to_table("readings", records=[first], columns=columns)
        await db.copy_records_to_table("latest_values", records=[first], columns=columns)
        token = stack.token(scope="telemetry:read")
        ws = await stack.client(token)
        try:
            await recv(ws)
            await send(ws, {"type": "subscribe", "channel": "telemetry", "device_id": "sn-1",
                            "snapshot": True})  # fmt: skip
            await recv_type(ws, "subscribed")
            frame = await recv_type(ws, "telemetry_update")
            assert frame["telemetry"]["m"]["value"] == 1.0
            await recv_type(ws, "snapshot_complete")
        finally:
            await ws.close()
        await db.copy_records_to_table("readings", records=[second], columns=columns)
        ws = await stack.client(token)
        try:
            await recv(ws)
            await send(ws, {"type": "subscribe", "channel": "telemetry", "device_id": "sn-1",
                            "since": frame["received_at"]})  # fmt: skip
            await recv_type(ws, "subscribed")
            replayed = []
            while (msg := await recv(ws))["type"] != "replay_complete":
                assert msg["type"] == "telemetry_update"
                replayed.append(msg["telemetry"]["m"]["value"])
        finally:
            await ws.close()
        assert replayed == [2.0], "the snapshot's reading again, or the next one missed"
        assert parse_timestamp(frame["received_at"]) == first_at
    finally:
        await db.close()
