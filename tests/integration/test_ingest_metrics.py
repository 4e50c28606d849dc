"""The ingest's and the scheduler's /metrics on BRIDGE_METRICS_PORT, as Prometheus scrapes
them: counters that move with real messages through a real broker into a real database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from bridge.embedded import free_port
from ingest.topics import Topics
from storage.jobs import try_job_lock
from tests.helpers import BrokerInfo, MqttPeer, wait_until
from tests.integration.metrics_kit import (
    bridge_env,
    bridge_process,
    key,
    metric,
    promtool_check,
    samples,
    scrape,
    scrape_until,
    value,
    wait_scrapable,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(120)
async def test_ingest_counts_what_it_stores_skips_and_dead_letters(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = bridge_env(
        database_url, broker.url, topic_prefix, tmp_path, BRIDGE_METRICS_PORT=str(port)
    )
    url = f"http://127.0.0.1:{port}/metrics"
    topics = Topics(topic_prefix)
    peer = MqttPeer(broker.url)
    log = tmp_path / "ingest.log"
    try:
        with bridge_process("ingest", env, log) as proc:
            await wait_scrapable(url, proc, log)

            async def subscribed() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                return "ingest subscribed" in log.read_text()

            await wait_until(subscribed, timeout=30)
            ts = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
            good = orjson.dumps({"ts": ts, "values": {"t": 21.5, "h": 40}})
            peer.publish(topics.device_telemetry("met-1"), good)

            await scrape_until(url, {key("bridge_ingest_readings_stored_total"): 2})
            peer.publish(topics.device_telemetry("met-1"), good)  # the same readings again
            peer.publish(topics.device_telemetry("met-1"), b"{not json")
            peer.publish(f"{topic_prefix}/devices/-bad-id/telemetry", b'{"t": 1}')
            await scrape_until(url, {key("bridge_ingest_messages_committed_total"): 4})
            text = await scrape(url)
            found = samples(text)

            def v(name: str, **labels: str) -> float:
                return value(found, name, **labels)

            assert v("bridge_ingest_messages_received_total") == 4
            assert v("bridge_ingest_readings_received_total") == 4
            assert v("bridge_ingest_readings_stored_total") == 2
            assert v("bridge_ingest_readings_duplicate_total") == 2
            assert v("bridge_ingest_dead_letters_total", reason="invalid_json") == 1
            assert v("bridge_ingest_dead_letters_total", reason="invalid_device_id") == 1
            assert v("bridge_ingest_dead_letters_dropped_total") == 0
            assert v("bridge_ingest_inflight_messages") == 0
            batches = v("bridge_ingest_batch_messages_count")
            assert 2 <= batches <= 4 and v("bridge_ingest_batch_messages_sum") == 4
            assert v("bridge_ingest_commit_duration_seconds_count") >= batches
            assert v("bridge_ingest_reading_delay_seconds_count") == 2  # the telemetry ones
            assert v("bridge_ingest_database_up") == 1
            assert v("bridge_ingest_broker_connected") == 1
            assert v("bridge_ingest_last_commit_timestamp_seconds") > 0
            # the ingest also runs the scheduler's jobs (BRIDGE_INGEST_SCHEDULER defaults to true)
            assert v("bridge_scheduler_job_runs_total", task="rollups", outcome="failed") == 0
            promtool_check(text)

            # a second process on the same port says which setting to change, in one line
            second = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "bridge", "ingest"],
                env={**env, "BRIDGE_INGEST_CLIENT_ID": f"second-{topic_prefix}"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 2, second.stderr
            assert f"BRIDGE_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in second.stderr
            assert "Traceback" not in second.stderr
    finally:
        peer.close()


@pytest.mark.timeout(120)
async def test_scheduler_reports_runs_skips_and_rollup_lag(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = bridge_env(
        database_url,
        broker.url,
        topic_prefix,
        tmp_path,
        BRIDGE_METRICS_PORT=str(port),
        BRIDGE_ROLLUP_INTERVAL_S="0.3",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "scheduler.log"
    db = await asyncpg.connect(database_url)
    try:
        with bridge_process("scheduler", env, log) as proc:
            await wait_scrapable(url, proc, log)

            async def ran() -> bool:
                runs = await metric(
                    url, "bridge_scheduler_job_runs_total", task="rollups", outcome="ok"
                )
                return runs >= 1

            await wait_until(ran, timeout=30)
            found = samples(await scrape(url))
            rollups = {"task": "rollups"}
            assert value(found, "bridge_scheduler_job_duration_seconds_count", **rollups) >= 1
            last = value(found, "bridge_scheduler_job_last_success_timestamp_seconds", **rollups)
            assert last > datetime.now(UTC).timestamp() - 60
            assert value(found, "bridge_scheduler_rollup_lag_seconds", rollup="1m") == 0
            assert value(found, "bridge_scheduler_job_runs_total", task="retention", outcome="ok")
            promtool_check(await scrape(url))

            # another process holds the rollup lock: runs are skipped, and the lag is still
            # read from the database (an hour-old batch waits to be folded)
            assert await try_job_lock(db, "rollup refresh")
            received = datetime.now(UTC) - timedelta(hours=1)
            await db.execute(
                "INSERT INTO rollup_pending (min_ts, max_ts, received_lo, received_hi) "
                "VALUES ($1, $1, $1, $1)",
                received,
            )

            async def skipped_and_behind() -> bool:
                skips = await metric(
                    url, "bridge_scheduler_job_runs_total", task="rollups", outcome="skipped"
                )
                lag = await metric(url, "bridge_scheduler_rollup_lag_seconds", rollup="1h")
                return skips >= 1 and lag >= 3600

            await wait_until(skipped_and_behind, timeout=20)
            await db.execute("SELECT pg_advisory_unlock_all()")

            await scrape_until(url, {key("bridge_scheduler_rollup_lag_seconds", rollup="1m"): 0})
    finally:
        await db.close()
