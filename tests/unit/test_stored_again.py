"""Readings of a message the broker delivered again (MQTT DUP) that an earlier run had stored:
streamed again as stored, since that run may have died between its commit and its publish.
Readings of first deliveries, and duplicates a device sent itself, are not."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson

from ingest.mqtt import MqttEndpoint
from ingest.prepared import Inbound, IngestConfig, IngestStats, stored_again, stream_readings
from ingest.preparing import Preparer
from ingest.topics import Topics
from ingest.wire import ReadingTemplates
from storage.readings import WriteResult

TOPICS = Topics("")
TS = "2026-11-30T10:00:00.000Z"
EARLIER = datetime(2026, 11, 30, 10, 0, 1, 123456, tzinfo=UTC)


def _message(mid: int, device: str, dup: bool) -> Inbound:
    payload = orjson.dumps({"ts": TS, "values": {"t": mid, "h": -mid}})
    return Inbound(mid, 1, TOPICS.device_telemetry(device), payload, time.time(), 0, dup=dup)


def _prepared_batch() -> tuple[Preparer, list[Inbound]]:
    config = IngestConfig(
        MqttEndpoint.from_url("mqtt://127.0.0.1:1"), "postgresql://x/y", topics=TOPICS
    )
    batch = [_message(1, "first", False), _message(2, "again", True), _message(3, "own", False)]
    return Preparer(config, IngestStats()), batch


def test_only_readings_of_redelivered_messages_are_marked() -> None:
    preparer, batch = _prepared_batch()
    prep = preparer.prepare(batch)
    assert {(d, m) for d, m, _ in prep.redelivered} == {("again", "t"), ("again", "h")}
    # a part written on its own (the split after a refused batch) keeps what it needs
    assert prep.part(1, 2).redelivered >= prep.redelivered


def test_stored_rows_of_redelivered_messages_are_streamed_as_stored() -> None:
    preparer, batch = _prepared_batch()
    prep = preparer.prepare(batch)
    ts = datetime(2026, 11, 30, 10, tzinfo=UTC)
    before = (
        ("again", "t", ts, 2.0, None, EARLIER),  # stored by the run that died
        ("again", "h", ts, -2.0, None, EARLIER + timedelta(microseconds=1)),
        ("own", "t", ts, 3.0, None, EARLIER),  # the device sent it twice: streamed then
    )
    result = WriteResult(6, 2, frozenset({("first", "t", ts), ("first", "h", ts)}), (), before)
    again = stored_again(prep, result)
    assert again == list(before[:2])
    items = stream_readings(again, None, ReadingTemplates(TOPICS.telemetry))
    events = [orjson.loads(payload) for _, payload in items]
    assert [(e["device_id"], e["metric"], e["value"]) for e in events] == [
        ("again", "t", 2.0),
        ("again", "h", -2.0),
    ]
    assert events[0]["received_at"] == "2026-11-30T10:00:01.123456Z"  # the first delivery's


def test_nothing_again_without_a_redelivery_or_without_earlier_rows() -> None:
    preparer, batch = _prepared_batch()
    prep = preparer.prepare(batch[:1])
    ts = datetime(2026, 11, 30, 10, tzinfo=UTC)
    result = WriteResult(2, 1, frozenset(), (), (("first", "t", ts, 1.0, None, EARLIER),))
    assert stored_again(prep, result) == []
    assert stored_again(preparer.prepare(batch), WriteResult(6, 6, None)) == []
