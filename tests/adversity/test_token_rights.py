"""Hostile clients: no token reaches past its rights (its scopes and its `devices` claim).

Against a real front, Mosquitto and PostgreSQL. The front runs alone: the tests put messages
on the validated stream or rows in storage themselves, as the ingest would.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.auth import Principal
from storage.device_scope import claim_condition, claim_values
from tests.helpers import wait_until
from tests.integration.frontkit import http_json, recv, recv_type
from tests.stack import Stack, front_fixture

pytestmark = pytest.mark.integration


# A front alone (no ingest): the settings a test asks for come as indirect params.
front = pytest.fixture(front_fixture)


async def send(ws: ClientConnection, msg: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(msg).decode())


async def request(ws: ClientConnection, msg: dict[str, Any], reply: str) -> dict[str, Any]:
    await send(ws, msg)
    return await recv_type(ws, reply)


async def received_within(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Every message the client gets in the next ``seconds``."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(await recv(ws, left))
        except TimeoutError:
            break
    return out


def device_inbox(stack: Stack, device: str) -> str:
    """Listen as the device for session commands; returns the topic prefix they arrive on."""
    topic = stack.topics.device_command(device, "x").rsplit("/", 1)[0] + "/+"
    stack.peer.subscribe(topic)
    return topic[:-1]


def commands_seen(stack: Stack, inbox: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in stack.peer.messages(inbox)]


# -- 1. interactive device sessions obey the devices claim ------------------------------------


async def test_a_session_on_a_device_outside_the_claim_cannot_be_seen_or_driven(
    front: Stack,
) -> None:
    inbox = device_inbox(front, "dev-b1")
    wide = front.token(scope="commands:write", devices=["dev-a*", "dev-b*"])
    narrow = front.token(scope="commands:write", devices=["dev-a*"])  # same subject, alice
    reader = front.token(scope="telemetry:read", devices=["dev-b*"])
    async with (
        await front.client(wide) as owner,
        await front.client(narrow) as other,
        await front.client(reader) as viewer,
    ):
        for ws in (owner, other, viewer):
            await recv(ws)  # connected
        started = await request(
            owner, {"type": "start_session", "tool_name": "dev-b1"}, "session_started"
        )
        sid = started["session_id"]

        listed = await request(other, {"type": "list_sessions"}, "sessions_list")
        assert listed["count"] == 0 and listed["sessions"] == []
        for attempt in (
            {"type": "send_command", "session_id": sid, "command": "rm -rf /data"},
            {"type": "stop_session", "session_id": sid},
            {"type": "delete_session", "session_id": sid},
        ):
            err = await request(other, {**attempt, "id": attempt["type"]}, "error")
            # exactly what an unknown session id gets: nothing tells it the session exists
            assert (err["code"], err["error"], err["id"]) == (404, "not_found", attempt["type"])
        err = await request(other, {"type": "start_session", "tool_name": "dev-b1"}, "error")
        assert err["code"] == 403
        # seeing the device is not enough to drive it: that takes commands:write
        err = await request(
            viewer, {"type": "send_command", "session_id": sid, "command": "reboot"}, "error"
        )
        assert err["code"] == 403

        listed = await request(owner, {"type": "list_sessions"}, "sessions_list")
        assert [(s["session_id"], s["status"]) for s in listed["sessions"]] == [(sid, "running")]
        await request(
            owner, {"type": "send_command", "session_id": sid, "command": "uptime"}, "command_sent"
        )

        async def input_arrived() -> bool:
            return any(c["command"] == "session.input" for c in commands_seen(front, inbox))

        await wait_until(input_arrived, timeout=10)
        # the front publishes in order: a refused line would have come before this one
        seen = [(c["command"], c["parameters"]) for c in commands_seen(front, inbox)]
        assert seen == [("session.start", {"args": []}), ("session.input", {"line": "uptime"})]


# -- 2. a refreshed token keeps only what it allows -------------------------------------------


async def test_a_refresh_ends_what_the_new_token_does_not_allow(front: Stack) -> None:
    inbox = device_inbox(front, "dev-b1")
    before = front.token(
        scope="telemetry:read devices:read commands:write", devices=["dev-a*", "dev-b*"]
    )
    after = front.token(scope="telemetry:read", devices=["dev-a*"])
    async with await front.client(before) as ws:
        await recv(ws)
        ids = {}
        for name, msg in {
            "b1": {"channel": "telemetry", "device_id": "dev-b1"},
            "all": {"channel": "telemetry"},
            "sampled": {"channel": "telemetry", "filters": {"frequency": "2s"}},
            "status": {"channel": "devices"},
        }.items():
            ids[name] = (await request(ws, {"type": "subscribe", **msg}, "subscribed"))[
                "subscription_id"
            ]
        sid = (
            await request(ws, {"type": "start_session", "tool_name": "dev-b1"}, "session_started")
        )["session_id"]
        await asyncio.sleep(0.3)  # the sampled subscription's first (empty) flush is behind us
        front.stream("dev-b1", "temp", 1.0, qos=1)
        got = [await recv_type(ws, "telemetry_update") for _ in range(2)]  # "b1" and "all"
        # the same broker message reached the sampled subscription: it waits for its flush
        assert {m["device_id"] for m in got} == {"dev-b1"}

        await send(ws, {"type": "auth", "token": after, "id": "refresh"})
        while (reply := await recv(ws))["type"] != "auth_response":
            assert reply["type"] == "telemetry_update"  # sent before the refresh (a flush)
        assert reply["success"] is True
        seen: list[dict[str, Any]] = []  # every message after the auth_response

        async def ask(msg: dict[str, Any], reply: str) -> dict[str, Any]:
            await send(ws, msg)
            while (got := await recv(ws))["type"] != reply:
                seen.append(got)
            return got

        replies = await received_within(ws, 1.0)
        seen += replies
        ended = {m["subscription_id"]: m for m in replies if m["type"] == "subscription_ended"}
        assert set(ended) == {ids["b1"], ids["status"]}
        assert all((m["code"], m["error"]) == (403, "forbidden") for m in ended.values())
        assert "dev-b1" in ended[ids["b1"]]["message"]
        assert "devices:read" in ended[ids["status"]]["message"]
        [session_end] = [m for m in replies if m["type"] == "session_ended"]
        assert session_end["session_id"] == sid and session_end["code"] == 403

        async def stopped_at_the_device() -> bool:
            return any(c["command"] == "session.stop" for c in commands_seen(front, inbox))

        await wait_until(stopped_at_the_device, timeout=10)
        listed = await ask({"type": "list_subscriptions"}, "subscriptions_list")
        assert {s["subscription_id"] for s in listed["subscriptions"]} == {
            ids["all"],
            ids["sampled"],
        }
        assert (await ask({"type": "list_sessions"}, "sessions_list"))["count"] == 0

        # From now on: dev-a1 reaches both remaining subscriptions, dev-b1 nothing at all,
        # not its status, not the revoked session's output.
        front.stream("dev-b1", "temp", 2.0, qos=1)
        front.stream("dev-a1", "temp", 3.0, qos=1)
        front.peer.publish(
            front.topics.status("dev-a1"),
            orjson.dumps({"device_id": "dev-a1", "new_status": "online", "ts": "x"}),
        )
        front.peer.publish(
            front.topics.device_command_result("dev-b1", sid),
            b'{"output": "secret", "status": "running", "done": false}',
        )
        seen += await received_within(ws, 2.5)  # past the sampled subscription's next flush
        updates = [m for m in seen if m["type"] == "telemetry_update"]
        # nothing of dev-b1 since the refresh, not even what waited for a frequency flush
        assert {m["device_id"] for m in updates} == {"dev-a1"}, seen
        assert {m["subscription_id"] for m in updates} == {ids["all"], ids["sampled"]}
        assert not [m for m in seen if m["type"] in ("device_status_update", "output")]


async def test_a_refresh_with_another_exact_list_follows_it_at_once(front: Stack) -> None:
    async with await front.client(front.token(devices=["dev-a1"])) as ws:
        await recv(ws)
        sub = await request(ws, {"type": "subscribe", "channel": "telemetry"}, "subscribed")
        assert sub["mqtt_topics"] == [front.topics.telemetry_filter("dev-a1", None)]
        reply = await request(
            ws,
            {"type": "auth", "token": front.token(devices=["dev-a2"])},
            "auth_response",
        )
        assert reply["success"] is True
        front.stream("dev-a1", "temp", 1.0, qos=1)  # no longer allowed
        front.stream("dev-a2", "temp", 2.0, qos=1)  # newly allowed
        got = await recv_type(ws, "telemetry_update")
        assert got["device_id"] == "dev-a2"
        listed = await request(ws, {"type": "list_subscriptions"}, "subscriptions_list")
        [described] = listed["subscriptions"]
        assert described["mqtt_topics"] == [front.topics.telemetry_filter("dev-a2", None)]


# -- 3. the per-subject connection limit holds for auth by message ----------------------------


async def auth_by_message(
    stack: Stack, token: str, kind: str = "auth"
) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await stack.client()  # no token at the handshake
    await send(ws, {"type": kind, "token": token})
    return ws, await recv(ws)


async def closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code if closed.value.rcvd else None


@pytest.mark.parametrize("front", [{"ws_max_connections_per_sub": 2}], indirect=True)
async def test_connections_per_subject_hold_for_auth_by_message(front: Stack) -> None:
    alice = front.token()
    first = await front.client(alice)
    await recv(first)
    for _ in range(2):  # refreshing is not connecting: it must not count again
        reply = await request(first, {"type": "auth", "token": alice}, "auth_response")
        assert reply["success"] is True
    second, reply = await auth_by_message(front, alice)
    assert reply["type"] == "auth_response" and reply["success"] is True

    third, reply = await auth_by_message(front, alice)
    assert reply["type"] == "auth_response" and reply["success"] is False
    assert (reply["code"], reply["error"]) == (429, "rate_limit_exceeded")
    assert reply["message"] == "too many connections"
    assert await closed_with(third) == 4029
    legacy, reply = await auth_by_message(front, alice, "authenticate")
    assert (reply["type"], reply["code"], reply["error"]) == ("error", 429, "rate_limit_exceeded")
    assert await closed_with(legacy) == 4029
    with pytest.raises(InvalidStatus) as refused:
        await front.client(alice)
    assert refused.value.response.status_code == 429

    # another subject's token cannot take over a connection (nor escape its own count)
    err = await request(first, {"type": "auth", "token": front.token(sub="bob")}, "error")
    assert err["code"] == 403
    pong = await request(first, {"type": "ping"}, "pong")
    assert pong["type"] == "pong"
    bob, reply = await auth_by_message(front, front.token(sub="bob"))
    assert reply["success"] is True

    # Closing gives the places back, exactly: two fit again, and only two.
    for ws in (first, second, bob):
        await ws.close()

    async def all_closed() -> bool:
        return (await http_json(front, "/metrics"))["connections"]["current"] == 0

    await wait_until(all_closed, timeout=10)
    again = [await auth_by_message(front, alice) for _ in range(3)]
    assert [r["success"] for _, r in again] == [True, True, False]
    assert await closed_with(again[2][0]) == 4029
    for ws, _ in again[:2]:
        await ws.close()


# -- 4. capped reads filter by the token before they cap --------------------------------------

CROWD_DEVICES = 2000  # x 10 metrics = 20,000 readings
CAP = 100


async def seed_crowd(database_url: str) -> datetime:
    """dev-a1: five readings (values 1000..1004), a status change and an alert, all older than
    a crowd of other devices' 20,000 readings, 2,000 status changes and 150 alerts. The crowd's
    ids sort before dev-a1's too (snapshots are ordered by device). Returns a `since` before
    all of it."""
    now = datetime.now(UTC)
    own_at, crowd_at = now - timedelta(minutes=30), now - timedelta(minutes=10)
    crowd = [f"dev-{i:04d}" for i in range(CROWD_DEVICES)]  # not dev-a*, sorted before dev-a1
    own = [("dev-a1", f"m{i}", own_at + timedelta(seconds=i), 1000.0 + i) for i in range(5)]
    own.append(("dev_a1", "m0", own_at, 7.0))
    pairs = [(d, f"m{m}") for d in crowd for m in range(10)]
    others = [(d, m, crowd_at + timedelta(microseconds=n), 1.0) for n, (d, m) in enumerate(pairs)]
    # (device_id, metric, ts, value, unit, received_at): stored as they were received
    readings = [(d, m, ts, value, None, ts) for d, m, ts, value in own + others]
    db = await asyncpg.connect(database_url)
    try:
        await db.execute("SELECT ensure_readings_partitions(current_date - 1, current_date + 1)")
        columns = ["device_id", "metric", "ts", "value", "unit", "received_at"]
        await db.copy_records_to_table("readings", records=readings, columns=columns)
        await db.copy_records_to_table("latest_values", records=readings, columns=columns)
        await db.executemany(
            "INSERT INTO devices (device_id, status, last_seen) VALUES ($1, 'online', $2)",
            [(d, own_at) for d in ["dev-a1", "dev_a1", *crowd]],
        )
        await db.executemany(
            "INSERT INTO device_status_events (device_id, old_status, new_status, reason, ts) "
            "VALUES ($1, 'unknown', 'online', 'seen', $2)",
            [("dev-a1", own_at)] + [(d, crowd_at) for d in crowd],
        )
        await db.executemany(
            "INSERT INTO alerts (alert_id, rule_id, device_id, metric, severity, title, message, "
            "state, created_at, updated_at) "
            "VALUES ($1, 'r1', $2, 'm0', 'high', 't', 'm', 'active', $3, $3)",
            [("al-own", "dev-a1", own_at)] + [(f"al-{d}", d, crowd_at) for d in crowd[:150]],
        )
    finally:
        await db.close()
    return now - timedelta(hours=1)


async def collect(ws: ClientConnection, until: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages up to the one of type ``until``, and that one."""
    got = []
    while (msg := await recv(ws, 10))["type"] != until:
        got.append(msg)
    return got, msg


@pytest.mark.parametrize("front", [{"replay_max_messages": CAP}], indirect=True)
async def test_snapshot_and_replay_filter_by_the_claim_before_the_cap(
    front: Stack, database_url: str
) -> None:
    since = (await seed_crowd(database_url)).isoformat()
    scopes = "telemetry:read alerts:read devices:read"
    async with await front.client(front.token(scope=scopes, devices=["dev-a*"])) as ws:
        await recv(ws)
        await send(ws, {"type": "subscribe", "channel": "telemetry", "snapshot": True})
        await recv_type(ws, "subscribed")
        values, _ = await collect(ws, "snapshot_complete")
        assert sorted((m["device_id"], *m["telemetry"]) for m in values) == [
            ("dev-a1", f"m{i}") for i in range(5)
        ]

        await send(ws, {"type": "subscribe", "channel": "telemetry", "since": since})
        await recv_type(ws, "subscribed")
        replayed, done = await collect(ws, "replay_complete")
        got = [
            (m["device_id"], metric, value["value"])
            for m in replayed
            for metric, value in m["telemetry"].items()
        ]
        assert got == [("dev-a1", f"m{i}", 1000.0 + i) for i in range(5)]  # oldest first
        assert (done["count"], done["truncated"]) == (5, False)

        await send(ws, {"type": "subscribe", "channel": "devices", "snapshot": True})
        await recv_type(ws, "subscribed")
        statuses, _ = await collect(ws, "snapshot_complete")
        assert [m["device_id"] for m in statuses] == ["dev-a1"]
        for channel in ("devices", "alerts"):
            await send(ws, {"type": "subscribe", "channel": channel, "since": since})
            await recv_type(ws, "subscribed")
            replayed, done = await collect(ws, "replay_complete")
            assert [m["device_id"] for m in replayed] == ["dev-a1"], channel
            assert (done["count"], done["truncated"]) == (1, False)

    # The subscription's own filters count before the cap too: an unrestricted token asking
    # for values >= 1000 gets dev-a1's five, though 20,000 newer readings are below it.
    async with await front.client(front.token(scope=scopes)) as ws:
        await recv(ws)
        await send(
            ws,
            {
                "type": "subscribe",
                "channel": "telemetry",
                "since": since,
                "filters": {"min_value": 1000},
            },
        )
        await recv_type(ws, "subscribed")
        replayed, done = await collect(ws, "replay_complete")
        assert {m["device_id"] for m in replayed} == {"dev-a1"} and done["count"] == 5

    # `_` in a claim is a literal underscore, not LIKE's any-character: dev-a1 stays out
    async with await front.client(front.token(scope=scopes, devices=["dev_a*"])) as ws:
        await recv(ws)
        await send(ws, {"type": "subscribe", "channel": "telemetry", "snapshot": True})
        await recv_type(ws, "subscribed")
        values, _ = await collect(ws, "snapshot_complete")
        assert [m["device_id"] for m in values] == ["dev_a1"]


@pytest.mark.parametrize(
    "claim",
    [
        None,
        ["*"],
        ["dev-a1"],
        ["dev_a*"],
        ["dev-a*", "plant-b"],
        ["%*"],
        ["d*v*1"],
        ["dev\\*"],
        ["p*-7", "x_*"],
        [],
    ],
)
async def test_the_sql_claim_matches_exactly_what_the_token_sees(
    database_url: str, claim: list[str] | None
) -> None:
    ids = [
        "dev-a1",
        "dev_a1",
        "devXa1",
        "dev-b1",
        "plant-b",
        "plant-b2",
        "p-7",
        "pump-7",
        "x_1",
        "xy1",
        "d1",
        "dv1",
        "dev",
        "a.b:c",
    ]
    principal = Principal("alice", frozenset(), devices=None if claim is None else tuple(claim))
    db = await asyncpg.connect(database_url)
    try:
        rows = await db.fetch(
            f"SELECT id FROM unnest($3::text[]) id WHERE {claim_condition(1, 2, 'id')}",
            *claim_values(principal.devices),
            ids,
        )
    finally:
        await db.close()
    assert sorted(r["id"] for r in rows) == sorted(i for i in ids if principal.sees(i))
