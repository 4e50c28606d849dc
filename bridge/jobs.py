"""The periodic jobs (rollups, retention, partitions, offline devices, system status) on an
APScheduler, each behind a PostgreSQL advisory lock so that several processes (ingests, a
scheduler) never run one job at once. Each run is timed and counted by outcome
(bridge/job_metrics.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.config import Settings
from bridge.job_metrics import JobMetrics
from bridge.system import SystemSampler
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from ingest.wire import status_event
from storage.devices import mark_silent_offline
from storage.jobs import try_job_lock
from storage.migrate import ensure_partitions
from storage.pool import connect
from storage.retention import apply_retention, expire_dead_letters
from storage.rollups import refresh_rollups, rollup_backlog_seconds

log = logging.getLogger(__name__)


async def _exclusive(conn: Any, job: str) -> bool:
    """Whether this process may run ``job`` now: one PostgreSQL advisory lock per job, held
    by the job's own connection until it closes. With several ingests (or a scheduler and an
    ingest) each job still runs once at a time, not once per process."""
    locked = await try_job_lock(conn, job)
    if not locked:
        log.debug("%s: another process is running it", job)
    return locked


Outcome = str  # ok | skipped (another process holds the job's lock); failed is an exception


def _measured(
    job: str, what: str, work: Callable[[], Awaitable[Outcome]], metrics: JobMetrics
) -> Callable[[], Awaitable[None]]:
    """``work`` as the scheduler runs it: timed, its outcome counted, a failure logged (the
    next run tries again: the scheduler must never die)."""
    metrics.add(job)

    async def run() -> None:
        started = time.perf_counter()
        try:
            outcome = await work()
        except Exception as exc:
            log.warning("%s failed: %s", what, exc)
            outcome = "failed"
        metrics.record(job, outcome, time.perf_counter() - started)

    return run


def _scheduler(
    database_url: str,
    settings: Settings,
    stream: StreamPublisher | None = None,
    sampler: SystemSampler | None = None,
    *,
    database_jobs: bool = True,
    metrics: JobMetrics | None = None,
) -> AsyncIOScheduler:
    """Periodic work: partitions ahead of time, devices that went silent, rollups, retention
    (``database_jobs``) and this process's system status. ``metrics`` records every run
    (bridge/job_metrics.py)."""
    topics = Topics(settings.mqtt_topic_prefix)
    retention = settings.retention()
    dead_letter_retention = settings.dead_letter_retention()
    recorder = metrics if metrics is not None else JobMetrics()

    async def on_connection(work: Callable[[Any], Awaitable[object]], lock: str) -> Outcome:
        """One database job on its own connection, behind its advisory lock."""
        conn = await connect(database_url)
        try:
            if not await _exclusive(conn, lock):
                return "skipped"
            await work(conn)
            return "ok"
        finally:
            await conn.close()

    async def offline() -> Outcome:
        changes = []

        async def work(conn: Any) -> None:
            changes.extend(await mark_silent_offline(conn, settings.device_offline_after_s))

        outcome = await on_connection(work, "offline")
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
        return outcome

    async def rollups() -> Outcome:
        # the pending batches stay on failure; the next run takes them
        horizon = datetime.now(UTC) - (retention["raw"] or timedelta(days=365 * 1000))
        conn = await connect(database_url)
        try:
            outcome = "skipped"
            if await _exclusive(conn, "rollup refresh"):
                await refresh_rollups(conn, horizon)
                outcome = "ok"
            # also when another process holds the lock: the backlog is the database's
            recorder.rollup_lag(await rollup_backlog_seconds(conn))
            return outcome
        finally:
            await conn.close()

    async def expire() -> Outcome:
        async def work(conn: Any) -> None:
            await apply_retention(conn, retention)
            await expire_dead_letters(conn, dead_letter_retention)

        return await on_connection(work, "retention")

    async def partitions() -> Outcome:
        created = 0

        async def work(conn: Any) -> None:
            nonlocal created
            created = await ensure_partitions(conn)

        outcome = await on_connection(work, "parts")
        if created:
            log.info("created %d readings partitions ahead of time", created)
        return outcome

    scheduler = AsyncIOScheduler(timezone="UTC")

    if sampler is not None and stream is not None:
        status_topic = topics.system(sampler.component)

        async def system_status() -> Outcome:
            status = sampler.sample()
            stream.publish_many([(status_topic, orjson.dumps(status))], retain=True)
            return "ok"

        scheduler.add_job(
            _measured("system", "system status", system_status, recorder),
            "interval",
            seconds=settings.system_status_interval_s,
            id="system",
            coalesce=True,
            max_instances=1,
        )
    if not database_jobs:
        return scheduler
    scheduler.add_job(
        _measured("partitions", "partition maintenance", partitions, recorder),
        "interval",
        hours=1,
        id="partitions",
        coalesce=True,
    )
    scheduler.add_job(
        _measured("rollups", "rollup refresh", rollups, recorder),
        "interval",
        seconds=settings.rollup_interval_s,
        id="rollups",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        _measured("retention", "retention", expire, recorder),
        "interval",
        seconds=settings.retention_interval_s,
        id="retention",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        _measured("offline", "offline detection", offline, recorder),
        "interval",
        seconds=settings.device_check_interval_s,
        id="offline",
        coalesce=True,
        max_instances=1,
    )
    return scheduler
