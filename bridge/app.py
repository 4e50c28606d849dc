"""Composition of the services: what ``up``, ``ingest`` and ``migrate`` run."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.actions import FrontActions
from bridge.auth import HMAC_ALGORITHMS, AuthConfigError, JwtVerifier
from bridge.commands import Commands
from bridge.config import Settings
from bridge.dbprobe import DatabaseProbe
from bridge.device_sessions import DeviceSessions
from bridge.embedded import EmbeddedServices
from bridge.hub import Hub
from bridge.limits import FrontLimits
from bridge.server import Front, FrontConfig
from bridge.snapshot import make_snapshot
from bridge.system import SystemSampler, component_name
from ingest import names
from ingest.mqtt import MqttEndpoint
from ingest.service import IngestConfig, IngestService
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from ingest.wire import status_event
from storage.devices import mark_silent_offline
from storage.jobs import try_job_lock
from storage.migrate import ensure_partitions, migrate
from storage.pool import connect, create_pool
from storage.retention import apply_retention, expire_dead_letters
from storage.rollups import refresh_rollups

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
        # Never accept a reading that raw retention would drop (and the rollups skip).
        max_past=timedelta(
            days=min(settings.ingest_max_past_days, settings.retention_raw_days or 10**6)
        ),
        publish_stream=settings.ingest_publish_stream,
        stats_file=settings.ingest_stats_file,
        dead_letter_per_device_per_min=settings.dead_letter_per_device_per_min,
        dead_letter_max_payload_bytes=settings.dead_letter_max_payload_bytes,
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


def jwt_verifier(settings: Settings) -> JwtVerifier | None:
    """From the settings; None when no key is configured (then only anonymous access works)."""
    alg = settings.jwt_algorithm
    if alg in HMAC_ALGORITHMS:
        secret = settings.jwt_secret or state_secret(settings, create=False)
        return (
            JwtVerifier(alg, secret, settings.jwt_audience, settings.jwt_issuer) if secret else None
        )
    key = settings.jwt_public_key
    if key and "BEGIN" not in key:
        path = Path(key).expanduser()
        if not path.is_file():
            raise ConfigError(f"BRIDGE_JWT_PUBLIC_KEY: {path} is not a file (give a PEM or a path)")
        key = path.read_text()
    if not key:
        raise ConfigError(f"BRIDGE_JWT_ALGORITHM={alg} needs BRIDGE_JWT_PUBLIC_KEY")
    return JwtVerifier(alg, key, settings.jwt_audience, settings.jwt_issuer)


def state_secret(settings: Settings, *, create: bool) -> str | None:
    """The embedded deployment's HMAC secret, kept in the state directory (mode 0600)."""
    path = settings.state_dir / "jwt_secret"
    if path.is_file():
        return path.read_text().strip()
    if not create:
        return None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The front's TLS context when a certificate and key are configured (both or neither)."""
    cert, key = settings.ws_tls_cert, settings.ws_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(
            "set both BRIDGE_WS_TLS_CERT and BRIDGE_WS_TLS_KEY to serve wss:// (or neither)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"BRIDGE_WS_TLS_CERT/KEY: no such file {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"BRIDGE_WS_TLS_CERT/KEY: cannot load {cert} with {key} ({exc}); both must be PEM "
            "and the key must belong to the certificate"
        ) from None
    return context


def front_config(settings: Settings) -> FrontConfig:
    return FrontConfig(
        host=settings.ws_host,
        port=settings.ws_port,
        auth_required=settings.auth_required,
        allowed_origins=tuple(o.strip() for o in settings.allowed_origins.split(",") if o.strip()),
        max_connections=settings.ws_max_connections,
        max_connections_per_sub=settings.ws_max_connections_per_sub,
        new_connections_per_ip_per_min=settings.ws_new_connections_per_ip_per_min,
        compression=settings.ws_compression,
        reuse_port=settings.ws_reuse_port,
        trusted_proxies=settings.trusted_networks(),
        tls=tls_context(settings),
        export_max_concurrent=settings.export_max_concurrent,
        export_max_per_subject=settings.export_max_per_subject,
        export_write_timeout_s=settings.export_write_timeout_s,
        limits=FrontLimits(
            messages_per_s=settings.ws_messages_per_s,
            burst=settings.ws_burst,
            max_subscriptions=settings.ws_max_subscriptions,
            queue_capacity=settings.ws_queue_size,
            max_behind_s=settings.ws_max_behind_s,
            max_frame_bytes=settings.ws_max_frame_bytes,
            replay_max=settings.replay_max_messages,
            heartbeat_s=settings.ws_heartbeat_s,
            queue_max_bytes=settings.ws_queue_max_bytes,
            room_bytes=settings.ws_queue_max_bytes // 4,
            frames_per_s=settings.ws_frames_per_s,
            frame_burst=2 * settings.ws_frames_per_s,
            auth_timeout_s=settings.ws_auth_timeout_s,
        ),
        queue_budget_bytes=settings.ws_queue_budget_bytes,
    )


async def run_front(
    settings: Settings,
    mqtt_url: str,
    database_url: str | None,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    on_front: Callable[[Front], None] | None = None,
) -> None:
    """The WebSocket/HTTP front until ``stop``; ordered shutdown afterwards."""
    try:
        verifier = jwt_verifier(settings)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    if verifier is None and settings.auth_required:
        raise ConfigError(
            "the front needs BRIDGE_JWT_SECRET (or BRIDGE_JWT_PUBLIC_KEY), or "
            "BRIDGE_AUTH_REQUIRED=false for a closed development network"
        )
    topics = Topics(settings.mqtt_topic_prefix)
    hub = Hub(MqttEndpoint.from_url(mqtt_url), topics, names.bridge_client_id("front"))
    pool = (
        await create_pool(database_url, min_size=1, max_size=settings.db_pool_size)
        if database_url
        else None
    )
    probe = DatabaseProbe(database_url) if database_url else None
    snapshot = (
        make_snapshot(pool, topics, settings.replay_max_messages) if pool is not None else None
    )
    stream = StreamPublisher(MqttEndpoint.from_url(mqtt_url), names.bridge_client_id("front-pub"))
    await stream.start()
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
    )
    hub_task = asyncio.create_task(hub.run(), name="front-hub")
    probe_task = asyncio.create_task(
        probe.run() if probe is not None else asyncio.sleep(0), name="front-db-probe"
    )
    if on_front is not None:
        on_front(front)
    try:
        # Accept clients once the broker connection is up (normally milliseconds), so a
        # subscription acknowledged to a client is already live at the broker. A broker that
        # is down does not keep the front from serving; it reconnects in the background.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.connected.wait(), 5)
        await front.start()
        # Frames and events are freed by reference counting; frequent cyclic GC passes over
        # thousands of connections' objects were the front's p99 (bench/fanout.py). Freeze
        # what start-up built and collect rarely, as the ingest does.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await front.stop()
        for task in (hub_task, probe_task):
            task.cancel()
        await asyncio.gather(hub_task, probe_task, return_exceptions=True)
        await stream.stop()
        if pool is not None:
            await pool.close()


async def _serve(settings: Settings, database_url: str, mqtt_url: str, *, front: bool) -> None:
    stop = asyncio.Event()
    _install_signal_handlers(stop)  # first: a SIGTERM during start-up is an orderly stop too
    applied = await run_migrations(database_url)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    stream = StreamPublisher(
        MqttEndpoint.from_url(mqtt_url),
        names.bridge_client_id("scheduler"),
        resync_topic=Topics(settings.mqtt_topic_prefix).stream_resync(),
    )
    await stream.start()
    ingest = IngestService(ingest_config(settings, database_url, mqtt_url))
    fronts: list[Front] = []
    sampler = SystemSampler(
        component_name(),
        ingest,
        lambda: sum(f.stats.current for f in fronts),
        settings.state_dir if settings.state_dir.exists() else Path("/"),
    )
    scheduler = _scheduler(
        database_url, settings, stream, sampler, database_jobs=settings.ingest_scheduler or front
    )
    scheduler.start()
    try:
        jobs = [ingest.run(stop)]
        if front:
            jobs.append(run_front(settings, mqtt_url, database_url, stop, on_front=fronts.append))
        await asyncio.gather(*jobs)
    finally:
        scheduler.shutdown(wait=False)
        await stream.stop()


def run_serve(settings: Settings) -> None:
    if not settings.mqtt_url:
        raise ConfigError("`serve` needs BRIDGE_MQTT_URL (or use `telemetry-bridge up`)")

    async def main() -> None:
        stop = asyncio.Event()
        _install_signal_handlers(stop)
        assert settings.mqtt_url
        await run_front(settings, settings.mqtt_url, settings.database_url, stop)

    _run(main())


def run_scheduler(settings: Settings) -> None:
    """The periodic database jobs alone (partitions, rollups, retention, offline devices),
    for deployments that run the ingest with BRIDGE_INGEST_SCHEDULER=false."""
    if not settings.database_url or not settings.mqtt_url:
        raise ConfigError("`scheduler` needs BRIDGE_DATABASE_URL and BRIDGE_MQTT_URL")
    database_url, mqtt_url = settings.database_url, settings.mqtt_url

    async def main() -> None:
        stop = asyncio.Event()
        _install_signal_handlers(stop)  # first: a SIGTERM during start-up is an orderly stop
        await run_migrations(database_url)
        stream = StreamPublisher(
            MqttEndpoint.from_url(mqtt_url),
            names.bridge_client_id("scheduler"),
            resync_topic=Topics(settings.mqtt_topic_prefix).stream_resync(),
        )
        await stream.start()
        scheduler = _scheduler(database_url, settings, stream)
        scheduler.start()
        log.info("scheduler running: rollups, retention, partitions, offline devices")
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)
            await stream.stop()

    _run(main())


def run_ingest(settings: Settings) -> None:
    if not settings.database_url or not settings.mqtt_url:
        raise ConfigError(
            "`ingest` needs BRIDGE_DATABASE_URL and BRIDGE_MQTT_URL "
            "(or use `telemetry-bridge up`, which starts embedded services)"
        )
    _run(_serve(settings, settings.database_url, settings.mqtt_url, front=False))


def run_up(settings: Settings, banner: Callable[[str], None] = print) -> None:
    if settings.jwt_algorithm in HMAC_ALGORITHMS and not settings.jwt_secret:
        state_secret(settings, create=True)  # so `telemetry-bridge token` works out of the box
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
            f"  websocket:  ws://{settings.ws_host}:{settings.ws_port}/ws  "
            f"(health: http://{settings.ws_host}:{settings.ws_port}/health)\n"
            f"  dashboard:  http://{settings.ws_host}:{settings.ws_port}/\n"
            f"  a token:    telemetry-bridge token --sub me "
            f"--scope 'telemetry:read alerts:read alerts:write devices:read'\n"
            f"  send data:  telemetry-bridge simulate --devices 10 --rate 1\n"
            f"  stop:       Ctrl-C"
        )
        _run(_serve(settings, database_url, mqtt_url, front=True))
    finally:
        embedded.stop()


def _run(main: Awaitable[None]) -> None:
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        runner = asyncio.run  # type: ignore[assignment]
    runner(main)
