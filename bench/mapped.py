"""The drain rate of a mapped firmware format (Tasmota SENSOR JSON) next to the bridge's own
format, in one run, measured the same way for both (``bench.ingest --phases mapped``).

For each format: a fresh database, an ingest on the benchmark's event loop subscribes once (its
persistent session then queues what arrives), stops; a backlog of N messages of 5 readings each
is published at QoS 1 (every PUBACK awaited); the ingest starts again and the rate is readings
stored over the time from its first receive to the last commit. Tasmota's payloads go through
the mapping engine's ``tasmota`` profile when it is installed (``ingest.mapping.engine``), else
through tests/mapped_kit.py's Tasmota-like mapping (named in the result).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from bench.services import fresh_database
from ingest.mapped import MappingRouter, MappingSource
from ingest.mapping_source import ConfiguredMappings, MappingError, engine
from ingest.topics import Topics
from tests.helpers import MqttPeer, ServiceTask, ingest_service
from tests.mapped_kit import ListSource, Router, TeleSensor

DEVICES = 1000


def own_message(i: int, at: datetime) -> tuple[str, bytes]:
    values = {"power": i % 100, "voltage": 230.5, "current": 0.19, "temperature": 21.5,
              "humidity": 45 + i % 10}  # fmt: skip
    return f"devices/bench-{i % DEVICES}/telemetry", orjson.dumps(
        {"ts": at.isoformat(), "values": values}
    )


def tasmota_message(i: int, at: datetime) -> tuple[str, bytes]:
    """The shape of Tasmota's tele/<topic>/SENSOR (a plug with energy metering and an AM2301)."""
    doc = {
        "Time": at.replace(tzinfo=None).isoformat(timespec="seconds"),
        "ENERGY": {"Power": i % 100, "Voltage": 230, "Current": 0.19},
        "AM2301": {"Temperature": 21.5, "Humidity": 45 + i % 10},
        "TempUnit": "C",
    }
    return f"tele/bench-{i % DEVICES}/SENSOR", orjson.dumps(doc)


def tasmota_source() -> tuple[MappingSource, str]:
    try:
        engine().profiles()
    except MappingError:
        return ListSource(Router([TeleSensor("tasmota")])), "tests/mapped_kit.py TeleSensor"
    return ConfiguredMappings(profiles="tasmota"), "the engine's tasmota profile"


class _Own:
    uses_database = False

    async def load(self) -> MappingRouter:
        return Router([])

    def fingerprint(self) -> object:
        return None


async def drain_one(
    admin_url: str, mqtt_url: str, messages: int, fmt: str, publishers: int = 3
) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    topics = Topics(prefix)
    source, via = tasmota_source() if fmt == "tasmota" else (_Own(), "own format")
    make = tasmota_message if fmt == "tasmota" else own_message
    client_id = f"bench-mapped-{uuid.uuid4().hex[:6]}"
    async with fresh_database(admin_url) as url:

        def service() -> Any:
            return ingest_service(mqtt_url, url, topics, client_id=client_id, mappings=source,
                                  max_past=timedelta(days=3650))  # fmt: skip

        first = ServiceTask(service().run)
        await first.start()
        await first.stop()  # the persistent session now queues the backlog
        # ts spread over the past: every message a (device, ts) of its own
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
        items = [
            (f"{prefix}/{t}", p)
            for t, p in (make(i, start + timedelta(seconds=i // DEVICES)) for i in range(messages))
        ]
        t0 = time.monotonic()
        acked = await asyncio.gather(
            *(
                asyncio.to_thread(_publish, mqtt_url, items[k::publishers])
                for k in range(publishers)
            )
        )
        published_s = time.monotonic() - t0
        expected = sum(acked) * 5
        svc = service()
        task = ServiceTask(svc.run)
        await task.start()
        deadline = time.monotonic() + messages / 500 + 120
        try:
            while svc.stats.readings_stored + svc.stats.readings_duplicate < expected:
                if time.monotonic() > deadline:
                    break  # reported as lost
                await asyncio.sleep(0.05)
            all_stored_at = time.time()
        finally:
            await task.stop(timeout=60)
        conn = await asyncpg.connect(url)
        try:
            stored = int(await conn.fetchval("SELECT count(*) FROM readings"))
            began = float(
                await conn.fetchval("SELECT extract(epoch FROM min(received_at)) FROM readings")
            )
        finally:
            await conn.close()
    span = all_stored_at - began
    return {
        "format": fmt,
        "read_by": via,
        "messages": messages,
        "readings": stored,
        "lost": expected - stored,
        "publish_s": round(published_s, 1),
        "seconds": round(span, 2),
        "readings_per_s": round(stored / span),
    }


def _publish(mqtt_url: str, items: list[tuple[str, bytes]]) -> int:
    peer = MqttPeer(mqtt_url)
    try:
        return peer.publish_many(items)
    finally:
        peer.close()


async def phase_mapped(admin_url: str, mqtt_url: str, messages: int) -> dict[str, Any]:
    """Own format and Tasmota JSON drained one after the other in the same run."""
    own = await drain_one(admin_url, mqtt_url, messages, "own")
    tasmota = await drain_one(admin_url, mqtt_url, messages, "tasmota")
    return {
        "own": own,
        "tasmota": tasmota,
        "tasmota_over_own": round(tasmota["readings_per_s"] / own["readings_per_s"], 2),
    }
