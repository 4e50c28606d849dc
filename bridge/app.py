"""Composition of the services: what ``up``, ``ingest`` and ``migrate`` run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.config import Settings
from bridge.embedded import EmbeddedServices
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.topics import Topics
from storage.migrate import ensure_partitions, migrate
from storage.pool import connect

log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and how to fix it."""


def ingest_config(settings: Settings, database_url: str, mqtt_url: str) -> IngestConfig:
    try:
        endpoint = MqttEndpoint.from_url(mqtt_url)
    except ValueError as exc:
        raise ConfigError(f"BRIDGE_MQTT_URL: {exc}") from None
    return IngestConfig(
        mqtt=endpoint,
        database_url=database_url,
        topics=Topics(settings.mqtt_topic_prefix),
        client_id=settings.ingest_client_id,
        shared_subscription=settings.ingest_shared,
        batch_max_messages=settings.ingest_batch_max_messages,
        batch_max_wait_s=settings.ingest_batch_max_wait_ms / 1000,
        max_payload_bytes=settings.ingest_max_payload_bytes,
        max_future=timedelta(seconds=settings.ingest_max_future_s),
        max_past=timedelta(days=settings.ingest_max_past_days),
        publish_stream=settings.ingest_publish_stream,
        stats_file=settings.ingest_stats_file,
    )


async def run_migrations(database_url: str) -> list[str]:
    conn = await connect(database_url)
    try:
        applied = await migrate(conn)
        await ensure_partitions(conn)
    finally:
        await conn.close()
    return [f"{m.version:04d}_{m.name}" for m in applied]


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


def _scheduler(database_url: str) -> AsyncIOScheduler:
    """Periodic maintenance. Later issues add offline detection, rollups and retention."""

    async def partitions() -> None:
        try:
            conn = await connect(database_url)
            try:
                created = await ensure_partitions(conn)
            finally:
                await conn.close()
            if created:
                log.info("created %d readings partitions ahead of time", created)
        except Exception as exc:  # retried at the next run; never kills the scheduler
            log.warning("partition maintenance failed: %s", exc)

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(partitions, "interval", hours=1, id="partitions", coalesce=True)
    return scheduler


async def _serve(settings: Settings, database_url: str, mqtt_url: str) -> None:
    applied = await run_migrations(database_url)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    scheduler = _scheduler(database_url)
    scheduler.start()
    try:
        await IngestService(ingest_config(settings, database_url, mqtt_url)).run(stop)
    finally:
        scheduler.shutdown(wait=False)


def run_ingest(settings: Settings) -> None:
    if not settings.database_url or not settings.mqtt_url:
        raise ConfigError(
            "`ingest` needs BRIDGE_DATABASE_URL and BRIDGE_MQTT_URL "
            "(or use `telemetry-bridge up`, which starts embedded services)"
        )
    _run(_serve(settings, settings.database_url, settings.mqtt_url))


def run_up(settings: Settings, banner: Callable[[str], None] = print) -> None:
    embedded = EmbeddedServices(settings.state_dir)
    embedded.start(need_database=not settings.database_url, need_broker=not settings.mqtt_url)
    try:
        database_url = settings.database_url or embedded.database_url
        mqtt_url = settings.mqtt_url or embedded.mqtt_url
        assert database_url and mqtt_url
        embedded.write_runtime(database_url, mqtt_url)
        shown = MqttEndpoint.from_url(mqtt_url).redacted()
        banner(
            f"telemetry-bridge is up: broker {shown}, state in {settings.state_dir}\n"
            f"  send data:  telemetry-bridge simulate --devices 10 --rate 1\n"
            f"  stop:       Ctrl-C"
        )
        _run(_serve(settings, database_url, mqtt_url))
    finally:
        embedded.stop()


def _run(main: Awaitable[None]) -> None:
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        runner = asyncio.run  # type: ignore[assignment]
    runner(main)
