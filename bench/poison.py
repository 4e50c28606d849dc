"""Drain time of a backlog with and without one poisoned message per batch.

    .venv/bin/python -m bench.poison                            # 20,000 messages, 3 runs each
    .venv/bin/python -m bench.poison --messages 20000 --runs 5 --cases clean,nul,refused

Cases, each run against its own fresh database and the same private mosquitto (the project's
mosquitto.conf on a free port), with the ingest as its own process (``python -m bridge
ingest``, default settings, batches of up to 5,000 messages):

- clean: N valid messages (1,000 devices x 5 metrics, each with its ts).
- nul: the same, but every 5,000th message (one per batch) carries a NUL in a unit, which
  PostgreSQL cannot store. Refused at validation now; before, the batch failed in the database
  and was rewritten message by message.
- refused: one message per batch that validation accepts but the database refuses (a CHECK
  constraint added to this database for the benchmark): the batch is halved until the
  message is found.

The backlog is published (QoS 1, every PUBACK awaited) while the ingest is stopped, then the
ingest starts; the drain time runs from the first message the ingest received to the moment
every good reading and every dead letter is stored. Reported: the median of ``--runs`` runs per
case, and each case's median over the clean median of the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.services import (
    DEFAULT_ADMIN,
    fresh_database,
    ingest_env,
    ingest_processes,
    mosquitto,
    wait_log,
)
from ingest.mqtt import MqttEndpoint
from ingest.topics import Topics

DEVICES = 1000
METRICS = 5
EVERY = 5000  # the ingest's default batch size: one poisoned message per batch
CASES = ("clean", "nul", "refused")


def backlog(topics: Topics, n: int, case: str) -> tuple[list[tuple[str, bytes]], int, int]:
    """(messages, good readings, poisoned messages)."""
    base = datetime.now(UTC) - timedelta(minutes=30)
    items: list[tuple[str, bytes]] = []
    poisoned = 0
    for i in range(n):
        device = f"bench-{i % DEVICES:04d}"
        unit = "C"
        if case != "clean" and i % EVERY == EVERY // 2:
            unit = "C\u0000" if case == "nul" else "poison"
            poisoned += 1
        values = {
            f"m{k}": {"value": i + k, "unit": unit if k == 0 else "C"} for k in range(METRICS)
        }
        ts = (base + timedelta(milliseconds=i)).isoformat()
        items.append((topics.device_telemetry(device), orjson.dumps({"ts": ts, "values": values})))
    return items, (n - poisoned) * METRICS, poisoned


def publish(mqtt_url: str, items: list[tuple[str, bytes]]) -> None:
    ep = MqttEndpoint.from_url(mqtt_url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"poison-pub-{uuid.uuid4().hex[:6]}"
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(ep.host, ep.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise RuntimeError("a message was not acknowledged by the broker")
    finally:
        client.disconnect()
        client.loop_stop()


async def drain_once(args: argparse.Namespace, mqtt_url: str, tmp: Path, case: str) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    log = tmp / f"{case}-{uuid.uuid4().hex[:6]}.log"
    async with fresh_database(args.admin_url) as url:
        env = ingest_env(url, mqtt_url, prefix, ingest_scheduler="false")
        conn = await asyncpg.connect(url)
        try:
            if case == "refused":
                await conn.execute(
                    "ALTER TABLE readings ADD CONSTRAINT bench_poison CHECK (unit <> 'poison')"
                )
            items, good, poisoned = backlog(Topics(prefix), args.messages, case)
            with ingest_processes(env, log):
                wait_log(log, "ingest subscribed")
            # stopped: the persistent session now queues the backlog
            await asyncio.to_thread(publish, mqtt_url, items)
            with ingest_processes(env, log):
                deadline = time.monotonic() + 600
                while True:
                    readings = int(await conn.fetchval("SELECT count(*) FROM readings"))
                    dead = int(await conn.fetchval("SELECT count(*) FROM dead_letters"))
                    if readings >= good and dead >= poisoned:
                        done = time.time()
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{case}: {readings}/{good} readings, {dead}/{poisoned} dead"
                        )
                    await asyncio.sleep(0.05)
            first = await conn.fetchval(
                "SELECT extract(epoch FROM least((SELECT min(received_at) FROM readings),"
                " (SELECT min(received_at) FROM dead_letters)))"
            )
            if readings != good or dead != poisoned:
                raise RuntimeError(f"{case}: {readings}/{good} readings, {dead}/{poisoned} dead")
        finally:
            await conn.close()
    return done - float(first)


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--admin-url", default=DEFAULT_ADMIN)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    args = p.parse_args()
    cases = args.cases.split(",")
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; choose from {CASES}")

    seconds: dict[str, list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmpdir, mosquitto(Path(tmpdir) / "mosquitto") as broker:
        for run in range(args.runs):
            for case in cases:  # interleaved, so drift on a shared machine hits all cases
                s = await drain_once(args, broker.url, Path(tmpdir), case)
                seconds[case].append(round(s, 2))
                print(f"run {run + 1} {case}: {s:.2f}s", flush=True)
    results: dict[str, Any] = {
        case: {
            "messages": args.messages,
            "poisoned": 0 if case == "clean" else len(range(EVERY // 2, args.messages, EVERY)),
            "seconds": runs,
            "median_s": statistics.median(runs),
        }
        for case, runs in seconds.items()
    }
    if "clean" in results:
        clean = results["clean"]["median_s"]
        for case in results:
            results[case]["over_clean"] = round(results[case]["median_s"] / clean, 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
