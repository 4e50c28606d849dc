"""A device crossing a threshold raises exactly one alert (database and MQTT) and resolves it
when it recovers; rules added while running take effect without a restart."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from ingest.topics import Topics
from storage.alerts import upsert_rule
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until

pytestmark = pytest.mark.integration

RULE = {
    "rule_id": "hot",
    "name": "too hot",
    "metric": "temperature",
    "devices": ["al-*"],
    "condition": "gt",
    "threshold": 50.0,
    "threshold_high": None,
    "clear_threshold": 45.0,
    "for_s": 0.0,
    "severity": "warning",
    "title": "{device_id} is hot",
    "message": "{metric} {value} > {threshold}",
    "enabled": True,
}


async def test_threshold_crossing_raises_one_alert_and_resolves(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    db = await asyncpg.connect(database_url)
    peer = MqttPeer(broker.url)
    peer.subscribe(f"{topic_prefix}/alerts/#")
    try:
        async with running_ingest(broker.url, database_url, topics, rules_reload_s=0.5) as service:
            await upsert_rule(db, RULE)  # while running: picked up without a restart

            async def loaded() -> bool:
                return "hot" in service._engine.rules

            await wait_until(loaded, timeout=10)
            for value in (40, 55, 60, 48, 52):  # 48 is above the clear threshold: no flap
                peer.publish(topics.device_telemetry("al-1"), orjson.dumps({"temperature": value}))
            peer.publish(topics.device_telemetry("other-1"), orjson.dumps({"temperature": 99}))

            async def one_open() -> bool:
                return int(await db.fetchval("SELECT count(*) FROM alerts")) >= 1

            await wait_until(one_open)
            peer.publish(topics.device_telemetry("al-1"), orjson.dumps({"temperature": 44}))

            async def resolved() -> bool:
                return await db.fetchval("SELECT state FROM alerts") == "resolved"

            await wait_until(resolved)
        rows = await db.fetch("SELECT * FROM alerts")
        assert len(rows) == 1  # one alert for the whole episode; other-1 matches no selector
        alert = rows[0]
        assert alert["device_id"] == "al-1" and alert["severity"] == "warning"
        assert alert["title"] == "al-1 is hot" and alert["actual_value"] == 44.0
        assert alert["resolved_at"] is not None

        async def published() -> bool:
            return len(peer.messages(f"{topic_prefix}/alerts/warning/al-1")) >= 2

        await wait_until(published)
        events = [orjson.loads(m.payload) for m in peer.messages(f"{topic_prefix}/alerts/")]
        assert [e["event"] for e in events] == ["created", "resolved"]
        assert events[0]["metadata"] == {"threshold_value": 50.0, "actual_value": 55.0}
    finally:
        peer.close()
        await db.close()
