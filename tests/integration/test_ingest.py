"""Readings published through a real Mosquitto end up in a real PostgreSQL, once each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.stack import RunningIngest, ingest_fixture

pytestmark = pytest.mark.integration

EPOCH = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
EPOCH_MS = int(EPOCH.timestamp() * 1000)


@pytest.fixture
async def ingest(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> AsyncIterator[RunningIngest]:
    # fixed dates in these tests must stay inside the accepted window for years
    async for running in ingest_fixture(
        broker, database_url, topic_prefix, batch_max_wait_s=0.02, max_past=timedelta(days=3650)
    ):
        yield running


@pytest.fixture
def peer(broker: BrokerInfo) -> Any:
    p = MqttPeer(broker.url)
    yield p
    p.close()


async def test_every_payload_form_is_stored_with_timestamps_units_and_values(
    ingest: RunningIngest, peer: MqttPeer
) -> None:
    t = ingest.topics
    before = datetime.now(UTC)
    peer.publish(t.device_telemetry("flat-1"), b'{"temperature": 23.5, "humidity": 45.2}')
    peer.publish(
        t.device_telemetry("iso-1"),
        b'{"ts": "2026-11-21T12:00:00.250Z", "values": {"temperature": 21.0}}',
    )
    peer.publish(
        t.device_telemetry("epoch-1"),
        orjson.dumps({"ts": EPOCH_MS, "values": {"t": {"value": 5, "unit": "°C"}}}),
    )
    peer.publish(
        t.device_telemetry("list-1"),
        b'[{"ts": "2026-11-21T12:00:00+02:00", "values": {"a": 1}},'
        b' {"ts": "2026-11-21T12:00:01+02:00", "values": {"a": true}}]',
    )
    await wait_until(lambda: _count_is(ingest, 6))
    rows = {
        (r["device_id"], r["metric"], r["ts"]): (r["value"], r["unit"], r["received_at"])
        for r in await ingest.db.fetch("SELECT * FROM readings")
    }
    flat = [(k, v) for k, v in rows.items() if k[0] == "flat-1"]
    assert {k[1] for k, _ in flat} == {"temperature", "humidity"}
    for (_, _, ts), (_value, unit, received_at) in flat:
        # no ts: the bridge's receive time; received_at is made unique per reading (resume
        # points), so it may sit a few microseconds later
        assert ts <= received_at <= ts + timedelta(milliseconds=1)
        assert before <= ts <= datetime.now(UTC)
        assert unit is None
    assert rows[("iso-1", "temperature", datetime(2026, 11, 21, 12, 0, 0, 250000, UTC))][:2] == (
        21.0,
        None,
    )
    assert rows[("epoch-1", "t", EPOCH)][:2] == (5.0, "°C")
    assert rows[("list-1", "a", datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC))][0] == 1.0
    assert rows[("list-1", "a", datetime(2026, 11, 21, 10, 0, 1, tzinfo=UTC))][0] == 1.0

    devices = await ingest.db.fetch("SELECT device_id, last_seen FROM devices ORDER BY 1")
    assert [d["device_id"] for d in devices] == ["epoch-1", "flat-1", "iso-1", "list-1"]
    latest = await ingest.db.fetchrow(
        "SELECT value, ts FROM latest_values WHERE device_id = 'list-1' AND metric = 'a'"
    )
    assert latest["ts"] == datetime(2026, 11, 21, 10, 0, 1, tzinfo=UTC)


async def _count_is(
    ingest: RunningIngest, n: int, sql: str = "SELECT count(*) FROM readings"
) -> bool:
    return await ingest.count(sql) >= n


async def test_duplicates_and_redeliveries_store_nothing_twice(
    ingest: RunningIngest, peer: MqttPeer
) -> None:
    topic = ingest.topics.device_telemetry("dup-1")
    payload = b'{"ts": "2026-11-21T08:00:00Z", "values": {"v": 1, "w": 2}}'
    for _ in range(5):
        peer.publish(topic, payload)
    # the same key with a different value is still the same reading: the first one wins
    peer.publish(topic, b'{"ts": "2026-11-21T08:00:00Z", "values": {"v": 99}}')
    marker = b'{"ts": "2026-11-21T08:00:01Z", "values": {"done": 1}}'
    peer.publish(topic, marker)
    await wait_until(lambda: _count_is(ingest, 3))
    await wait_until(lambda: _stats(ingest, "messages", 7))
    rows = await ingest.db.fetch("SELECT metric, value FROM readings ORDER BY metric")
    assert [(r["metric"], r["value"]) for r in rows] == [("done", 1.0), ("v", 1.0), ("w", 2.0)]
    assert ingest.service.stats.readings_duplicate == 9  # 4x2 repeats + the v=99 rewrite


async def _stats(ingest: RunningIngest, name: str, n: int) -> bool:
    return int(getattr(ingest.service.stats, name)) >= n


BAD = [
    (b"not json", "invalid_json"),
    (b'{"t": NaN}', "invalid_json"),
    (b'{"t": "hot"}', "validation_error"),
    (b'{"bad metric": 1}', "validation_error"),
    (orjson.dumps([{"values": {"t": 1}}] * 1001), "too_many_entries"),
    (orjson.dumps({"t": 1, "pad": "x" * 70_000}), "payload_too_large"),
    (b'{"ts": "1999-01-01T00:00:00Z", "t": 1}', "timestamp_out_of_range"),
]


async def test_bad_payloads_are_dead_lettered_reported_and_the_stream_keeps_flowing(
    ingest: RunningIngest, peer: MqttPeer
) -> None:
    t = ingest.topics
    peer.subscribe(f"{t.prefix}/devices/+/errors")
    for payload, _reason in BAD:
        peer.publish(t.device_telemetry("bad-1"), payload)
    # an id the bridge refuses: no errors topic can be built for it, but it is kept
    peer.publish(f"{t.prefix}/devices/bad$id/telemetry", b'{"t": 1}')
    peer.publish(t.device_telemetry("good-1"), b'{"t": 1}')

    await wait_until(lambda: _count_is(ingest, len(BAD) + 1, "SELECT count(*) FROM dead_letters"))
    await wait_until(lambda: _count_is(ingest, 1))
    dead = await ingest.db.fetch("SELECT * FROM dead_letters ORDER BY id")
    assert [d["reason"] for d in dead] == [r for _, r in BAD] + ["invalid_device_id"]
    assert [bytes(d["payload"]) for d in dead[:4]] == [p for p, _ in BAD[:4]]
    assert all(d["detail"] for d in dead)
    assert dead[-1]["device_id"] is None and dead[-1]["topic"].endswith("bad$id/telemetry")
    assert await ingest.count("SELECT count(*) FROM readings WHERE device_id = 'good-1'") == 1

    def errors() -> list[dict[str, Any]]:
        return [orjson.loads(m.payload) for m in peer.messages(f"{t.prefix}/devices/bad-1/errors")]

    async def all_errors() -> bool:
        return len(errors()) == len(BAD)

    await wait_until(all_errors)
    assert [e["error"] for e in errors()] == [r for _, r in BAD]
    assert all(e["message"] for e in errors())


async def test_validated_stream_is_published_retained_after_commit(
    ingest: RunningIngest, peer: MqttPeer, broker: BrokerInfo
) -> None:
    t = ingest.topics
    peer.subscribe(t.telemetry("s-1", "t"))
    peer.publish(
        t.device_telemetry("s-1"),
        b'{"ts": "2026-11-21T12:00:00Z", "values": {"t": {"value": 7.5, "unit": "C"}}}',
    )

    async def live() -> bool:
        return bool(peer.messages(t.telemetry("s-1", "t")))

    await wait_until(live)
    assert await ingest.count() == 1  # published only after the commit
    # a late subscriber gets the retained latest value
    late = MqttPeer(broker.url)
    try:
        late.subscribe(t.telemetry("s-1", "t"))

        async def got() -> bool:
            return bool(late.messages())

        await wait_until(got)
        msg = late.messages()[0]
        assert msg.retain
        body = orjson.loads(msg.payload)
        assert body["device_id"] == "s-1" and body["metric"] == "t"
        assert body["value"] == 7.5 and body["unit"] == "C"
        assert body["ts"] == "2026-11-21T12:00:00.000Z"
        assert body["received_at"].endswith("Z")
    finally:
        late.close()
