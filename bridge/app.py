"""Composition of the services: what ``up``, ``ingest`` and ``migrate`` run."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from bridge import identities, preflight
from bridge.actions import FrontActions
from bridge.auth import AuthConfigError, JwtVerifier
from bridge.commands import Commands
from bridge.config import Settings
from bridge.dbprobe import DatabaseProbe
from bridge.device_sessions import DeviceSessions
from bridge.front_setup import ConfigError, front_config, jwt_verifier, state_secret, tls_context
from bridge.hub import Hub
from bridge.job_metrics import JobMetrics
from bridge.jobs import _exclusive, _scheduler
from bridge.metrics import serve_metrics
from bridge.server import Front
from bridge.snapshot import make_snapshot
from bridge.system import SystemSampler, component_name
from ingest.mapping_source import ConfiguredMappings
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from storage.migrate import ensure_partitions, migrate
from storage.pool import FRONT_APPLICATION_NAME, connect, create_pool

log = logging.getLogger(__name__)

# Moved into their own modules; imported from here by the CLI, tests and benchmarks.
__all__ = [
    "ConfigError",
    "_exclusive",
    "_scheduler",
    "front_config",
    "ingest_config",
    "jwt_verifier",
    "run_front",
    "run_migrations",
    "state_secret",
    "tls_context",
]


def ingest_config(settings: Settings, database_url: str, mqtt_url: str) -> IngestConfig:
    try:
        endpoint = MqttEndpoint.from_url(mqtt_url)
    except ValueError as exc:
        raise ConfigError(f"BRIDGE_MQTT_URL: {exc}") from None
    return IngestConfig(
        mqtt=endpoint,
        database_url=database_url,
        topics=Topics(settings.mqtt_topic_prefix),
        client_id=identities.ingest_ids(settings).session,
        shared_subscription=settings.ingest_shared,
        batch_max_messages=settings.ingest_batch_max_messages,
        batch_max_wait_s=settings.ingest_batch_max_wait_ms / 1000,
        writers=settings.ingest_writers,
        max_payload_bytes=settings.ingest_max_payload_bytes,
        max_future=timedelta(seconds=settings.ingest_max_future_s),
        # Never accept a reading that raw retention would drop (and the rollups skip).
        max_past=timedelta(
            days=min(settings.ingest_max_past_days, settings.retention_raw_days or 10**6)
        ),
        publish_stream=settings.ingest_publish_stream,
        stats_file=settings.ingest_stats_file,
        dead_letter_per_device_per_min=settings.dead_letter_per_device_per_min,
        dead_letter_max_payload_bytes=settings.dead_letter_max_payload_bytes,
        mappings=ConfiguredMappings(
            profiles=settings.mappings, file=settings.mappings_file, database_url=database_url
        ),
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


def front_verifier(settings: Settings) -> JwtVerifier | None:
    """The front's token verifier; ConfigError when the JWT settings are wrong or missing."""
    try:
        verifier = jwt_verifier(settings)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    if verifier is None and settings.auth_required:
        raise ConfigError(
            "the front needs BRIDGE_JWT_SECRET (or BRIDGE_JWT_PUBLIC_KEY), or "
            "BRIDGE_AUTH_REQUIRED=false for a closed development network"
        )
    return verifier


def check_front_settings(settings: Settings) -> None:
    """The front's own settings (JWT, TLS), before anything is started or connected."""
    front_verifier(settings)
    front_config(settings)


async def run_front(
    settings: Settings,
    mqtt_url: str,
    database_url: str | None,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    on_front: Callable[[Front], None] | None = None,
    registry: CollectorRegistry | None = None,
) -> None:
    """The WebSocket/HTTP front until ``stop``; ordered shutdown afterwards. ``registry``:
    the process's metrics registry, when other components of the process report into it."""
    verifier = front_verifier(settings)
    topics = Topics(settings.mqtt_topic_prefix)
    ids = identities.front_ids(settings)
    hub = Hub(MqttEndpoint.from_url(mqtt_url), topics, ids.subscriptions)
    # Shutdown runs in the reverse order of start-up (ARCHITECTURE.md): stop accepting and
    # close clients with 1001, leave the broker, stop publishing, close the pool.
    async with contextlib.AsyncExitStack() as services:
        pool = None
        if database_url:
            size, name = settings.db_pool_size, FRONT_APPLICATION_NAME
            pool = await create_pool(database_url, max_size=size, application_name=name)
            services.push_async_callback(pool.close)
        probe = DatabaseProbe(database_url) if database_url else None
        snapshot = (
            make_snapshot(pool, topics, settings.replay_max_messages) if pool is not None else None
        )
        stream = StreamPublisher(MqttEndpoint.from_url(mqtt_url), ids.publisher)
        await stream.start()
        services.push_async_callback(stream.stop)
        front = Front(
            front_config(settings),
            hub,
            verifier,
            database_check=(lambda: probe.ok) if probe is not None else None,
            snapshot=snapshot,
            actions=FrontActions(pool, topics, stream) if pool is not None else None,
            commands=Commands(hub, pool),
            device_sessions=DeviceSessions(hub),
            pool=pool,
            registry=registry,
        )
        tasks = [asyncio.create_task(hub.run(), name="front-hub")]
        if probe is not None:
            tasks.append(asyncio.create_task(probe.run(), name="front-db-probe"))
        services.push_async_callback(_cancel, tasks)
        services.push_async_callback(front.stop)
        if on_front is not None:
            on_front(front)
        # Accept clients once the broker connection is up (normally milliseconds), so a
        # subscription acknowledged to a client is already live at the broker. A broker that
        # is down does not keep the front from serving; it reconnects in the background.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.connected.wait(), 5)
        try:
            await front.start()
        except OSError as exc:  # the port was taken after the start-up check
            raise ConfigError(
                preflight.listen_problem(settings.ws_host, settings.ws_port, "BRIDGE_WS_PORT", exc)
            ) from None
        # Frames and events are freed by reference counting; frequent cyclic GC passes over
        # thousands of connections' objects were the front's p99 (bench/fanout.py). Freeze
        # what start-up built and collect rarely, as the ingest does.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        if ready is not None:
            ready.set()
        await stop.wait()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _process_metrics(
    settings: Settings, services: contextlib.ExitStack
) -> tuple[CollectorRegistry, JobMetrics]:
    """This process's registry with the scheduler's metrics in it, served on
    BRIDGE_METRICS_PORT when that is set (closed with ``services``)."""
    registry = CollectorRegistry()
    jobs = JobMetrics()
    registry.register(jobs)
    server = serve_metrics(registry, settings)  # first: a port in use stops the start at once
    if server is not None:
        services.callback(server.close)
    return registry, jobs


async def run_services(
    settings: Settings,
    database_url: str,
    mqtt_url: str,
    *,
    front: bool,
    on_ready: Callable[[int | None], None] | None = None,
) -> None:
    """The ingest, the scheduler and (``front``) the front until SIGINT/SIGTERM;
    ``on_ready(front port)`` once the ingest is subscribed and the front listens."""
    stop = asyncio.Event()
    _install_signal_handlers(stop)  # first: a SIGTERM during start-up is an orderly stop too
    with contextlib.ExitStack() as services:
        # this process's metrics: ingest, scheduler and (under `up`) the front
        registry, job_metrics = _process_metrics(settings, services)
        await _serve_components(
            settings,
            database_url,
            mqtt_url,
            stop,
            registry,
            job_metrics,
            front=front,
            on_ready=on_ready,
        )


async def _serve_components(
    settings: Settings,
    database_url: str,
    mqtt_url: str,
    stop: asyncio.Event,
    registry: CollectorRegistry,
    job_metrics: JobMetrics,
    *,
    front: bool,
    on_ready: Callable[[int | None], None] | None = None,
) -> None:
    applied = await run_migrations(database_url)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    stream = StreamPublisher(
        MqttEndpoint.from_url(mqtt_url),
        identities.ingest_ids(settings).scheduler,
        resync_topic=Topics(settings.mqtt_topic_prefix).stream_resync(),
    )
    await stream.start()
    ingest = IngestService(ingest_config(settings, database_url, mqtt_url), registry)
    fronts: list[Front] = []
    sampler = SystemSampler(
        component_name(),
        ingest,
        lambda: sum(f.stats.current for f in fronts),
        settings.state_dir if settings.state_dir.exists() else Path("/"),
    )
    scheduler = _scheduler(
        database_url,
        settings,
        stream,
        sampler,
        database_jobs=settings.ingest_scheduler or front,
        metrics=job_metrics,
    )
    ready = [asyncio.Event() for _ in range(2 if front else 1)]

    async def started() -> None:
        for event in ready:
            await event.wait()
        # The periodic jobs begin once everything is up: a start that fails then has no job
        # half-way through a database call to cancel (that printed tracebacks).
        scheduler.start()
        if on_ready is not None:
            on_ready(fronts[0].port if fronts else None)

    announce = asyncio.create_task(started(), name="started")
    try:
        jobs = [ingest.run(stop, ready[0])]
        if front:
            jobs.append(
                run_front(
                    settings,
                    mqtt_url,
                    database_url,
                    stop,
                    ready=ready[1],
                    on_front=fronts.append,
                    registry=registry,
                )
            )
        await asyncio.gather(*jobs)
    finally:
        announce.cancel()
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await stream.stop()


def run_serve(settings: Settings) -> None:
    if not settings.mqtt_url:
        raise ConfigError("`serve` needs BRIDGE_MQTT_URL (or use `telemetry-bridge up`)")
    check_front_settings(settings)
    if not settings.ws_reuse_port:  # `serve --processes N` shares the port on purpose
        preflight.check_listen(settings.ws_host, settings.ws_port, "BRIDGE_WS_PORT")
    preflight.check_metrics_port(settings)
    preflight.check_services(settings, identities.front_ids(settings).publisher)

    async def main() -> None:
        stop = asyncio.Event()
        _install_signal_handlers(stop)
        assert settings.mqtt_url
        # The front answers /metrics on its WebSocket port; BRIDGE_METRICS_PORT adds a port
        # of its own, which is how each of `serve --processes N` is scraped on its own
        # (they share the WebSocket port, bridge/supervisor.py).
        registry = CollectorRegistry()
        server = serve_metrics(registry, settings)
        try:
            await run_front(
                settings, settings.mqtt_url, settings.database_url, stop, registry=registry
            )
        finally:
            if server is not None:
                server.close()

    run_loop(main())


def run_scheduler(settings: Settings) -> None:
    """The periodic database jobs alone (partitions, rollups, retention, offline devices),
    for deployments that run the ingest with BRIDGE_INGEST_SCHEDULER=false."""
    if not settings.database_url or not settings.mqtt_url:
        raise ConfigError("`scheduler` needs BRIDGE_DATABASE_URL and BRIDGE_MQTT_URL")
    database_url, mqtt_url = settings.database_url, settings.mqtt_url
    preflight.check_metrics_port(settings)
    client_id = identities.scheduler_id(settings)
    preflight.check(database_url=database_url, mqtt_url=mqtt_url, mqtt_client_id=client_id)

    async def main() -> None:
        stop = asyncio.Event()
        _install_signal_handlers(stop)  # first: a SIGTERM during start-up is an orderly stop
        with contextlib.ExitStack() as services:
            _, job_metrics = _process_metrics(settings, services)
            await run_migrations(database_url)
            stream = StreamPublisher(
                MqttEndpoint.from_url(mqtt_url),
                client_id,
                resync_topic=Topics(settings.mqtt_topic_prefix).stream_resync(),
            )
            await stream.start()
            scheduler = _scheduler(database_url, settings, stream, metrics=job_metrics)
            scheduler.start()
            log.info("scheduler running: rollups, retention, partitions, offline devices")
            try:
                await stop.wait()
            finally:
                scheduler.shutdown(wait=False)
                await stream.stop()

    run_loop(main())


def run_ingest(settings: Settings) -> None:
    if not settings.database_url or not settings.mqtt_url:
        raise ConfigError(
            "`ingest` needs BRIDGE_DATABASE_URL and BRIDGE_MQTT_URL "
            "(or use `telemetry-bridge up`, which starts embedded services)"
        )
    preflight.check_metrics_port(settings)
    preflight.check_services(settings, identities.ingest_ids(settings).stream)
    run_loop(run_services(settings, settings.database_url, settings.mqtt_url, front=False))


def run_loop(main: Awaitable[None]) -> None:
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        runner = asyncio.run  # type: ignore[assignment]
    runner(main)
