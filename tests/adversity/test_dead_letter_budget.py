"""A device sending only garbage cannot fill the database with dead letters.

Each device id keeps at most its budget of dead letters (messages without a valid device id
share one budget); beyond it garbage is counted, logged at most once a minute and acknowledged.
Stored payloads are cut short with a note, and old dead letters expire with the retention job.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bridge.app import _scheduler, ingest_config
from bridge.config import load_settings
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until

pytestmark = pytest.mark.integration

# Dead letters a minute per device: the whole burst is stored, and the next token only comes
# after 12 s, longer than this test takes, so the counts below are exact.
BUDGET = 5
FLOOD = 40


async def dead_by_device(db: asyncpg.Connection) -> dict[str | None, int]:
    rows = await db.fetch("SELECT device_id, count(*) AS n FROM dead_letters GROUP BY 1")
    return {r["device_id"]: int(r["n"]) for r in rows}


@pytest.mark.timeout(90)
async def test_a_flooding_device_keeps_only_its_budget_and_everything_is_acknowledged(
    broker: BrokerInfo,
    database_url: str,
    topic_prefix: str,
    db: asyncpg.Connection,
    peer: MqttPeer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.service")
    topics = Topics(topic_prefix)
    client_id = f"budget-{uuid.uuid4().hex[:8]}"
    peer.subscribe(f"{topic_prefix}/devices/+/errors")
    garbage = [(topics.device_telemetry("flood-1"), b"\x00garbage %d" % i) for i in range(FLOOD)]
    # ids the bridge refuses: they cannot be told apart, so they share one budget
    invalid = ["bad$id", "-dash", "x" * 65, "sp ace"]
    garbage += [(f"{topic_prefix}/devices/{invalid[i % 4]}/telemetry", b"{}") for i in range(FLOOD)]
    garbage += [(topics.device_telemetry("calm-1"), b"oops")] * 3
    garbage.append((topics.device_telemetry("good-1"), b'{"t": 1}'))
    async with running_ingest(
        broker.url,
        database_url,
        topics,
        client_id=client_id,
        batch_max_messages=10,  # many batches: the report must still come once
        dead_letter_per_device_per_min=BUDGET,
    ) as service:
        assert peer.publish_many(garbage) == len(garbage)

        async def all_handled() -> bool:
            return service.stats.messages >= len(garbage)

        await wait_until(all_handled, timeout=30)
        assert await dead_by_device(db) == {"flood-1": BUDGET, None: BUDGET, "calm-1": 3}
        assert await db.fetchval("SELECT count(*) FROM readings WHERE device_id = 'good-1'") == 1
        assert service.stats.dead_letters_dropped == 2 * (FLOOD - BUDGET)
        assert service.summary()["dead_letters_dropped"] == 2 * (FLOOD - BUDGET)

        async def told() -> bool:
            return len(peer.messages(topics.device_errors("flood-1"))) >= BUDGET

        await wait_until(told, timeout=10)
        # the device is told about the stored ones only: no error flood on the broker either
        assert len(peer.messages(topics.device_errors("flood-1"))) == BUDGET
        reports = [r for r in caplog.records if "over the per-device budget" in r.getMessage()]
        assert len(reports) == 1, [r.getMessage() for r in reports]
        assert "flood-1" in reports[0].getMessage()

    # Acknowledged all the same: the persistent session holds nothing for the next run.
    async with running_ingest(broker.url, database_url, topics, client_id=client_id) as again:
        peer.publish(topics.device_telemetry("marker"), b'{"t": 2}')

        async def marker() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM readings WHERE device_id='marker'"))

        await wait_until(marker, timeout=20)
        assert again.stats.messages == 1


@pytest.mark.timeout(60)
async def test_a_dead_letter_keeps_a_bounded_payload_and_says_so(
    broker: BrokerInfo, database_url: str, topic_prefix: str, db: asyncpg.Connection, peer: MqttPeer
) -> None:
    topics = Topics(topic_prefix)
    big = b"[" + b"9," * 30_000 + b"oops]"  # 60,006 bytes, under the 64 KiB limit: invalid JSON
    too_big = b"x" * 70_000  # over the payload limit
    async with running_ingest(broker.url, database_url, topics) as service:
        peer.publish(topics.device_telemetry("big-1"), big)
        peer.publish(topics.device_telemetry("big-2"), too_big)
        peer.publish(topics.device_telemetry("small-1"), b"nope")

        async def handled() -> bool:
            return service.stats.messages >= 3

        await wait_until(handled, timeout=20)
    rows = {
        r["device_id"]: r
        for r in await db.fetch("SELECT device_id, payload, reason, detail FROM dead_letters")
    }
    assert bytes(rows["big-1"]["payload"]) == big[:4096]
    assert rows["big-1"]["reason"] == "invalid_json"
    assert rows["big-1"]["detail"].endswith(
        f"[payload truncated: first 4096 of {len(big)} bytes kept]"
    )
    assert bytes(rows["big-2"]["payload"]) == too_big[:4096]
    assert rows["big-2"]["reason"] == "payload_too_large"
    assert "truncated" in rows["big-2"]["detail"]
    assert bytes(rows["small-1"]["payload"]) == b"nope"
    assert "truncated" not in rows["small-1"]["detail"]


def test_the_settings_reach_the_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_DEAD_LETTER_PER_DEVICE_PER_MIN", "7")
    monkeypatch.setenv("BRIDGE_DEAD_LETTER_MAX_PAYLOAD_BYTES", "100")
    monkeypatch.setenv("BRIDGE_RETENTION_DEAD_LETTER_DAYS", "3")
    settings = load_settings()
    config = ingest_config(settings, "postgresql://x@127.0.0.1/db", "mqtt://127.0.0.1:1883")
    assert config.dead_letter_per_device_per_min == 7
    assert config.dead_letter_max_payload_bytes == 100
    assert settings.dead_letter_retention() == timedelta(days=3)
    monkeypatch.setenv("BRIDGE_RETENTION_DEAD_LETTER_DAYS", "0")
    assert load_settings().dead_letter_retention() is None  # 0 = forever, like the other tiers


async def insert_dead_letters(db: asyncpg.Connection, ages_days: list[float]) -> datetime:
    now = datetime.now(UTC)
    await db.executemany(
        "INSERT INTO dead_letters (topic, device_id, payload, reason, received_at) "
        "VALUES ('devices/d/telemetry', 'd', '\\x00'::bytea, 'invalid_json', $1)",
        [(now - timedelta(days=age),) for age in ages_days],
    )
    return now


@pytest.mark.timeout(60)
async def test_dead_letters_expire_with_the_retention_job(
    database_url: str, db: asyncpg.Connection
) -> None:
    await insert_dead_letters(db, [30, 8, 7.01, 6.9, 1, 0])
    settings = load_settings(retention_dead_letter_days=7)
    # the same job the scheduler runs every BRIDGE_RETENTION_INTERVAL_S
    job = _scheduler(database_url, settings).get_job("retention")
    assert job is not None
    await job.func()
    ages = await db.fetch("SELECT now() - received_at AS age FROM dead_letters ORDER BY 1")
    assert len(ages) == 3 and all(r["age"] < timedelta(days=7) for r in ages)

    # 0 keeps them forever
    await insert_dead_letters(db, [400])
    job = _scheduler(database_url, load_settings(retention_dead_letter_days=0)).get_job("retention")
    assert job is not None
    await job.func()
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 4


@pytest.mark.timeout(60)
async def test_expiry_deletes_a_long_backlog_chunk_by_chunk(db: asyncpg.Connection) -> None:
    from storage.retention import expire_dead_letters  # here: the module's other tests run alone

    now = await insert_dead_letters(db, [10] * 25 + [1] * 3)
    deleted = await expire_dead_letters(db, timedelta(days=7), now=now, chunk=4)
    assert deleted == 25
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 3
    assert await expire_dead_letters(db, timedelta(days=7), now=now, chunk=4) == 0
    assert await expire_dead_letters(db, None, now=now) == 0
