"""Readings sent without a timestamp take their receive time: two messages of one device that
arrive within the same microsecond must still be two readings, not one and a duplicate."""

from __future__ import annotations

import time

from ingest.mqtt import MqttEndpoint
from ingest.prepared import Inbound, IngestConfig, IngestStats
from ingest.preparing import Preparer
from ingest.topics import Topics


def test_back_to_back_messages_without_ts_get_distinct_stand_in_times() -> None:
    topics = Topics("")
    config = IngestConfig(
        MqttEndpoint.from_url("mqtt://127.0.0.1:1"), "postgresql://x/y", topics=topics
    )
    preparer = Preparer(config, IngestStats())
    same_instant = time.time()
    batch = [
        Inbound(i + 1, 1, topics.device_telemetry("d1"), b'{"v": %d}' % i, same_instant, 0)
        for i in range(3)
    ]
    prep = preparer.prepare(batch)
    keys = [(row[0], row[1], row[2]) for row in prep.rows]
    assert len(keys) == 3 and len(set(keys)) == 3, keys  # (device, metric, ts) all distinct
    assert [row[3] for row in prep.rows] == [0.0, 1.0, 2.0]
    received = [row[5] for row in prep.rows]
    assert received == sorted(received) and len(set(received)) == 3
