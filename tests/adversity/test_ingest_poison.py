"""One device's poisoned message must not cost every other device.

A value PostgreSQL cannot store fails the whole batch transaction it travels in. The ingest
must refuse such values at validation (a dead letter naming the device, an error on its
errors topic, no failed transaction), and when the database still refuses a batch for its
content, find the message at fault in a logarithmic number of transactions, not one per message.

Transactions are counted by the database itself: statement triggers on ``readings`` bump a
sequence before every insert attempt (sequences ignore rollbacks) and add a row after every
successful one (rolled back with a failed transaction), so attempts - commits = failed attempts.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until

pytestmark = pytest.mark.integration

COUNT_INSERTS = """
CREATE SEQUENCE test_insert_attempts;
CREATE TABLE test_insert_commits (n integer);
CREATE FUNCTION test_count_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM nextval('test_insert_attempts'); RETURN NULL; END $$;
CREATE FUNCTION test_count_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO test_insert_commits VALUES (1); RETURN NULL; END $$;
CREATE TRIGGER test_attempt BEFORE INSERT ON readings
    FOR EACH STATEMENT EXECUTE FUNCTION test_count_attempt();
CREATE TRIGGER test_commit AFTER INSERT ON readings
    FOR EACH STATEMENT EXECUTE FUNCTION test_count_commit();
"""


async def insert_transactions(db: asyncpg.Connection) -> tuple[int, int]:
    """(attempted, committed) inserts into readings so far."""
    seq = await db.fetchrow("SELECT last_value, is_called FROM test_insert_attempts")
    attempted = int(seq["last_value"]) if seq["is_called"] else 0
    return attempted, int(await db.fetchval("SELECT count(*) FROM test_insert_commits"))


@pytest.fixture
async def db(db: asyncpg.Connection) -> asyncpg.Connection:
    """The shared fixture's connection (tests/adversity/conftest.py), counting inserts."""
    await db.execute(COUNT_INSERTS)
    return db


def errors_by_device(peer: MqttPeer, topics: Topics) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in peer.messages(f"{topics.prefix}/devices/"):
        if m.topic.endswith("/errors"):
            out.setdefault(m.topic.split("/")[-2], []).append(orjson.loads(m.payload)["error"])
    return out


# (device, topic kind, payload, reason): each is something JSON and Python accept that
# PostgreSQL (or Python's datetime) cannot take.
V, J = "validation_error", "invalid_json"
POISON = [
    ("p-nul-unit", "telemetry", orjson.dumps({"t": {"value": 1, "unit": "C\u0000"}}), V),
    ("p-surrogate", "telemetry", b'{"t": {"value": 1, "unit": "\\ud800"}}', J),
    ("p-infinity", "telemetry", b'{"t": 1e400}', J),
    ("p-huge-int", "telemetry", b'{"t": 1' + b"0" * 400 + b"}", J),
    ("p-year-1", "telemetry", b'{"ts": "0001-01-01T00:00:00+01:00", "t": 1}', V),
    ("p-year-9999", "telemetry", b'{"ts": "9999-12-31T23:59:59-01:00", "t": 1}', V),
    ("p-status-nul", "status", orjson.dumps({"status": "online", "reason": "x\u0000"}), V),
]


@pytest.mark.timeout(90)
async def test_unstorable_values_are_refused_at_validation_not_by_the_database(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    topics = Topics(topic_prefix)
    peer.subscribe(f"{topic_prefix}/devices/+/errors")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    sent: set[tuple[str, datetime]] = set()
    items: list[tuple[str, bytes]] = []
    for i in range(200):  # good readings of other devices all around the poisoned messages
        ts = base + timedelta(seconds=i)
        sent.add((f"good-{i % 5}", ts))
        items.append((topics.device_telemetry(f"good-{i % 5}"), orjson.dumps({"ts": ts, "t": i})))
        if i % 25 == 12 and (k := i // 25) < len(POISON):
            device, kind, payload, _ = POISON[k]
            items.append((f"{topic_prefix}/devices/{device}/{kind}", payload))
    async with running_ingest(broker.url, database_url, topics, batch_max_wait_s=0.2) as service:
        assert peer.publish_many(items) == len(items)

        async def all_handled() -> bool:
            return service.stats.messages >= len(items)

        await wait_until(all_handled, timeout=30)
        rows = await db.fetch("SELECT device_id, ts FROM readings")
        assert {(r["device_id"], r["ts"]) for r in rows} == sent and len(rows) == len(sent)
        dead = await db.fetch("SELECT device_id, reason, detail, topic FROM dead_letters")
        assert sorted((d["device_id"], d["reason"]) for d in dead) == sorted(
            (device, reason) for device, _, _, reason in POISON
        )
        assert all(d["detail"] for d in dead)
        by_device = {d["device_id"]: d["detail"] for d in dead}
        assert "NUL" in by_device["p-nul-unit"] and "NUL" in by_device["p-status-nul"]

        async def all_told() -> bool:
            return len(errors_by_device(peer, topics)) == len(POISON)

        await wait_until(all_told, timeout=10)
        assert errors_by_device(peer, topics) == {device: [r] for device, _, _, r in POISON}
        attempted, committed = await insert_transactions(db)
        assert attempted == committed, f"{attempted - committed} insert transaction(s) failed"
        assert service.stats.db_refused == 0


N = 2000


@pytest.mark.timeout(120)
async def test_a_message_the_database_refuses_costs_logarithmic_transactions(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    # A rule only the database knows, standing in for whatever validation cannot foresee.
    await db.execute(
        "ALTER TABLE readings ADD CONSTRAINT test_no_poison CHECK (unit IS DISTINCT FROM 'poison')"
    )
    topics = Topics(topic_prefix)
    client_id = f"poison-{uuid.uuid4().hex[:8]}"
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    sent: set[tuple[str, datetime]] = set()
    items: list[tuple[str, bytes]] = []
    for i in range(N):
        device, ts = f"dev-{i % 20:02d}", base + timedelta(milliseconds=i)
        sent.add((device, ts))
        items.append((topics.device_telemetry(device), orjson.dumps({"ts": ts, "v": i})))
    poison = orjson.dumps({"ts": base, "values": {"v": {"value": 1, "unit": "poison"}}})
    items.insert(N // 3, (topics.device_telemetry("culprit-1"), poison))
    config: dict[str, Any] = {"batch_max_messages": 5000, "batch_max_wait_s": 0.5}

    # The backlog builds while the ingest is away, so it arrives in as few batches as can be.
    async with running_ingest(broker.url, database_url, topics, client_id=client_id, **config):
        pass
    assert peer.publish_many(items) == len(items)
    peer.subscribe(topics.device_errors("culprit-1"))
    async with running_ingest(
        broker.url, database_url, topics, client_id=client_id, **config
    ) as service:

        async def all_handled() -> bool:
            return service.stats.messages >= len(items)

        await wait_until(all_handled, timeout=60)
        rows = await db.fetch("SELECT device_id, ts FROM readings")
        assert len(rows) == N and {(r["device_id"], r["ts"]) for r in rows} == sent
        attempted, committed = await insert_transactions(db)
        depth = math.ceil(math.log2(len(items)))
        # every clean batch: one insert; the poisoned one: the failed whole, then at most two
        # attempts per level of halving and one for the single message (message by message
        # would be ~2,000)
        limit = service.stats.batches + 2 * depth + 1
        assert attempted <= limit, (attempted, committed, service.stats.batches)
        assert attempted - committed <= depth + 2
        dead = await db.fetch("SELECT device_id, reason, detail, payload FROM dead_letters")
        assert [(d["device_id"], d["reason"], bytes(d["payload"])) for d in dead] == [
            ("culprit-1", "storage_error", poison)
        ]
        assert "test_no_poison" in dead[0]["detail"]

        async def told() -> bool:
            return bool(errors_by_device(peer, topics))

        await wait_until(told, timeout=10)
        assert errors_by_device(peer, topics) == {"culprit-1": ["storage_error"]}

        batches = service.stats.batches

    # everything was acknowledged: the same session holds nothing for the next run
    async with running_ingest(
        broker.url, database_url, topics, client_id=client_id, **config
    ) as again:
        marker_ts = base + timedelta(seconds=10)
        peer.publish(topics.device_telemetry("marker"), orjson.dumps({"ts": marker_ts, "v": 1}))

        async def marker_stored() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) FROM readings WHERE device_id = 'marker'")
            )

        await wait_until(marker_stored, timeout=20)
        assert again.stats.messages == 1
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 1
    print(f"{len(items)} messages in {batches} batch(es): {attempted} insert attempts")


@pytest.mark.timeout(90)
async def test_an_error_that_is_not_the_messages_fault_loses_nothing(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    # A permanent-looking error unrelated to the content (here: permission denied while a flag
    # row exists, as after a mistaken REVOKE) must not turn good readings into dead letters.
    await db.execute(
        """
        CREATE TABLE test_block (x int);
        INSERT INTO test_block VALUES (1);
        CREATE FUNCTION test_deny() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM test_block) THEN
                RAISE EXCEPTION 'permission denied for table readings' USING ERRCODE = '42501';
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_deny BEFORE INSERT ON readings
            FOR EACH STATEMENT EXECUTE FUNCTION test_deny();
        """
    )
    topics = Topics(topic_prefix)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    items = [
        (
            topics.device_telemetry(f"d-{i % 3}"),
            orjson.dumps({"ts": base + timedelta(seconds=i), "v": i}),
        )
        for i in range(50)
    ]
    async with running_ingest(broker.url, database_url, topics) as service:
        assert peer.publish_many(items) == len(items)

        async def retrying_or_given_up() -> bool:
            dead = await db.fetchval("SELECT count(*) FROM dead_letters")
            return service.stats.db_retries >= 3 or dead > 0

        await wait_until(retrying_or_given_up, timeout=30)
        assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
        assert await db.fetchval("SELECT count(*) FROM readings") == 0
        await db.execute("DELETE FROM test_block")  # the operator fixes the grant

        async def stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) >= len(items)

        await wait_until(stored, timeout=30)
    assert await db.fetchval("SELECT count(*) FROM readings") == len(items)
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
