"""The periodic jobs (rollups, retention, partitions, offline devices, system status) on an
APScheduler, each behind a PostgreSQL advisory lock so that several processes (ingests, a
scheduler) never run one job at once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.config import Settings
from bridge.system import SystemSampler
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from ingest.wire import status_event
from storage.devices import mark_silent_offline
from storage.jobs import try_job_lock
from storage.migrate import ensure_partitions
from storage.pool import connect
from storage.retention import apply_retention, expire_dead_letters
from storage.rollups import refresh_rollups

log = logging.getLogger(__name__)


async def _exclusive(conn: Any, job: str) -> bool:
    """Whether this process may run ``job`` now: one PostgreSQL advisory lock per job, held
    by the job's own connection until it closes. With several ingests (or a scheduler and an
    ingest) each job still runs once at a time, not once per process."""
    locked = await try_job_lock(conn, job)
    if not locked:
        log.debug("%s: another process is running it", job)
    return locked


def _scheduler(
    database_url: str,
    settings: Settings,
    stream: StreamPublisher | None = None,
    sampler: SystemSampler | None = None,
    *,
    database_jobs: bool = True,
) -> AsyncIOScheduler:
    """Periodic work: partitions ahead of time, devices that went silent, rollups, retention
    (``database_jobs``) and this process's system status."""
    topics = Topics(settings.mqtt_topic_prefix)
    retention = settings.retention()
    dead_letter_retention = settings.dead_letter_retention()

    async def offline() -> None:
        try:
            conn = await connect(database_url)
            try:
                if not await _exclusive(conn, "offline"):
                    return
                changes = await mark_silent_offline(conn, settings.device_offline_after_s)
            finally:
                await conn.close()
        except Exception as exc:  # retried at the next run
            log.warning("offline detection failed: %s", exc)
            return
        if changes and stream is not None:
            stream.publish_many(
                [
                    (
                        topics.status(c.device_id),
                        status_event(
                            c.device_id, c.old_status, c.new_status, c.reason, c.last_seen, c.ts
                        ),
                    )
                    for c in changes
                ],
                retain=True,
            )
        if changes:
            log.info("%d device(s) went offline", len(changes))

    async def on_connection(work: Callable[[Any], Awaitable[object]], what: str) -> None:
        """One periodic database job on its own connection; a failure is logged and the next
        run tries again (the scheduler must never die)."""
        try:
            conn = await connect(database_url)
            try:
                if await _exclusive(conn, what):
                    await work(conn)
            finally:
                await conn.close()
        except Exception as exc:
            log.warning("%s failed: %s", what, exc)

    async def rollups() -> None:
        # the pending batches stay on failure; the next run takes them
        horizon = datetime.now(UTC) - (retention["raw"] or timedelta(days=365 * 1000))
        await on_connection(lambda conn: refresh_rollups(conn, horizon), "rollup refresh")

    async def expire() -> None:
        async def work(conn: Any) -> None:
            await apply_retention(conn, retention)
            await expire_dead_letters(conn, dead_letter_retention)

        await on_connection(work, "retention")

    async def partitions() -> None:
        try:
            conn = await connect(database_url)
            try:
                created = await ensure_partitions(conn) if await _exclusive(conn, "parts") else 0
            finally:
                await conn.close()
            if created:
                log.info("created %d readings partitions ahead of time", created)
        except Exception as exc:  # retried at the next run; never kills the scheduler
            log.warning("partition maintenance failed: %s", exc)

    scheduler = AsyncIOScheduler(timezone="UTC")

    async def system_status() -> None:
        if sampler is None or stream is None:
            return
        status = sampler.sample()
        stream.publish_many([(topics.system(sampler.component), orjson.dumps(status))], retain=True)

    scheduler.add_job(
        system_status,
        "interval",
        seconds=settings.system_status_interval_s,
        id="system",
        coalesce=True,
        max_instances=1,
    )
    if not database_jobs:
        return scheduler
    scheduler.add_job(partitions, "interval", hours=1, id="partitions", coalesce=True)
    scheduler.add_job(
        rollups,
        "interval",
        seconds=settings.rollup_interval_s,
        id="rollups",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        expire,
        "interval",
        seconds=settings.retention_interval_s,
        id="retention",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        offline,
        "interval",
        seconds=settings.device_check_interval_s,
        id="offline",
        coalesce=True,
        max_instances=1,
    )
    return scheduler
