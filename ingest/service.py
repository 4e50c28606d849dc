"""The ingest: MQTT telemetry in, PostgreSQL exactly once, acknowledgement after commit.

Flow of one batch::

    on_message (loop thread) -> Batcher -> parse (pydantic) -> COPY + INSERT .. ON CONFLICT
    -> COMMIT -> PUBACK each message -> publish validated stream + device errors

Nothing is acknowledged before its transaction commits. A database outage keeps the batch
and retries with jittered backoff; the broker holds everything else (QoS 1, persistent
session, receive maximum as the in-flight window). A connection loss drops the collected but
unwritten messages; the broker redelivers them and the idempotent insert absorbs repeats.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import asyncpg
import paho.mqtt.client as paho

from ingest import names
from ingest.batcher import Batcher
from ingest.faults import Faults
from ingest.logs import parse_log
from ingest.mqtt import AsyncMqtt, MqttEndpoint
from ingest.payload import MAX_PAYLOAD_BYTES, PayloadError, Reading, parse_telemetry
from ingest.rules import AlertEvent, Rule, RuleEngine, alert_from_row, rule_from_row
from ingest.status import parse_status
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from ingest.wire import (
    alert_event,
    device_error,
    iso_ms,
    iso_us,
    reading_event,
    status_event,
)
from storage.alerts import (
    acknowledged_open,
    last_readings,
    load_rules,
    open_alerts,
    save_alerts,
)
from storage.devices import StatusChange
from storage.errors import is_transient
from storage.pool import create_pool
from storage.readings import DeadLetterRow, ReadingRow, ReadingWriter, StatusRow, WriteResult

log = logging.getLogger(__name__)

# Dead letters keep at most this much of a payload: enough to debug, bounded for floods.
DEAD_LETTER_KEEP_BYTES = 64 * 1024


@dataclass(frozen=True)
class IngestConfig:
    mqtt: MqttEndpoint
    database_url: str
    topics: Topics = field(default_factory=Topics)
    client_id: str = "telemetry-bridge-ingest"
    shared_subscription: bool = False
    batch_max_messages: int = 5000
    batch_max_wait_s: float = 0.02
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_future: timedelta = timedelta(hours=1)
    max_past: timedelta = timedelta(days=30)
    publish_stream: bool = True
    # A persistent session outlives an ingest restart or a long outage by this much.
    session_expiry_s: int = 7 * 24 * 3600
    # The broker's in-flight window towards us (MQTT v5 Receive Maximum). A few batches' worth
    # keeps the writer busy; more only holds messages in Python memory (and costs GC time).
    receive_maximum: int = 10_000
    shutdown_timeout_s: float = 15.0
    # When set, the final counters and latency percentiles are written here as JSON on exit.
    stats_file: Path | None = None
    rules_reload_s: float = 10.0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Inbound(NamedTuple):
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float
    generation: int


@dataclass
class IngestStats:
    """Counters since start; ``latencies_ms`` samples device ts -> commit for the benchmark."""

    messages: int = 0
    readings_stored: int = 0
    readings_duplicate: int = 0
    dead_letters: int = 0
    batches: int = 0
    db_retries: int = 0
    alerts: int = 0
    started: float = field(default_factory=time.monotonic)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))

    def summary(self) -> dict[str, float | int]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else 0.0

        return {
            "messages": self.messages,
            "readings_stored": self.readings_stored,
            "readings_duplicate": self.readings_duplicate,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "db_retries": self.db_retries,
            "alert_events": self.alerts,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "latency_p50_ms": pct(0.50),
            "latency_p99_ms": pct(0.99),
        }


@dataclass
class _Prepared:
    messages: list[Inbound]
    rows: list[ReadingRow]
    readings: list[Reading]
    dead: list[DeadLetterRow]
    errors: list[tuple[str, bytes]]  # (topic, payload) for devices/{id}/errors
    statuses: list[StatusRow] = field(default_factory=list)
    logs: list[tuple[str, bytes]] = field(default_factory=list)  # (logs/{id} topic, event)


class IngestService:
    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.stats = IngestStats()
        self._batcher: Batcher[Inbound] = Batcher(
            config.batch_max_messages, config.batch_max_wait_s
        )
        self._wakeup = asyncio.Event()
        self._faults = Faults.from_env()
        self._writer = ReadingWriter(config.database_url, self._faults)
        self._accepting = True
        self._mqtt: AsyncMqtt | None = None
        self._stream = StreamPublisher(
            config.mqtt, f"{config.client_id}-stream", resync_topic=config.topics.stream_resync()
        )
        self._topic_cache: dict[tuple[str, str], str] = {}
        self._last_received_us = 0
        self._engine = RuleEngine()
        self._pool: asyncpg.Pool | None = None
        self._unsaved: list[AlertEvent] = []  # alert events whose write failed; retried

    # -- MQTT side ---------------------------------------------------------------------------
    def _on_message(self, message: paho.MQTTMessage) -> None:
        if not self._accepting:
            return  # not acknowledged: the broker keeps it for the next run
        assert self._mqtt is not None
        self._batcher.add(
            Inbound(
                message.mid,
                message.qos,
                message.topic,
                bytes(message.payload),
                time.time(),
                self._mqtt.generation,
            ),
            time.monotonic(),
        )
        pending = len(self._batcher)
        if pending == 1 or pending >= self.config.batch_max_messages:
            self._wakeup.set()
        if pending >= self.config.receive_maximum:
            self._mqtt.pause_reading()

    def _on_connection_lost(self) -> None:
        dropped = self._batcher.drop()
        if dropped:
            log.info("dropped %d unwritten messages; the broker will redeliver them", len(dropped))

    # -- run ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set, then flush, acknowledge and disconnect."""
        cfg = self.config
        subscription = cfg.topics.ingest_subscription(shared=cfg.shared_subscription)
        status_subscription = cfg.topics.ingest_subscription(
            shared=cfg.shared_subscription, kind="status"
        )
        logs_subscription = cfg.topics.ingest_subscription(
            shared=cfg.shared_subscription, kind="logs"
        )
        self._mqtt = AsyncMqtt(
            cfg.mqtt,
            cfg.client_id,
            on_message=self._on_message,
            subscriptions=[(subscription, 1), (status_subscription, 1), (logs_subscription, 0)],
            clean_start=False,
            session_expiry_s=cfg.session_expiry_s,
            receive_maximum=cfg.receive_maximum,
            manual_ack=True,
            on_connection_lost=self._on_connection_lost,
        )
        # Messages are freed by reference counting; the cyclic GC only rescans the thousands
        # of in-flight messages over and over. Freeze what start-up built and collect rarely.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        writer_task = asyncio.create_task(self._write_loop(stop), name="ingest-writer")
        stats_task = asyncio.create_task(self._stats_loop(), name="ingest-stats")
        rules_task = asyncio.create_task(self._rules_loop(), name="ingest-rules")
        try:
            await self._stream.start()
            await self._stream.connected.wait()
            await self._mqtt.start()
            log.info("ingest subscribed to %s at QoS 1 as %s", subscription, cfg.client_id)
            if ready is not None:
                ready.set()
            await stop.wait()
            self._accepting = False
            self._wakeup.set()
            await asyncio.wait_for(asyncio.shield(writer_task), cfg.shutdown_timeout_s)
        except TimeoutError:
            log.warning("shutdown timed out; unacknowledged messages stay with the broker")
        finally:
            self._accepting = False
            for task in (writer_task, stats_task, rules_task):
                task.cancel()
            await asyncio.gather(writer_task, stats_task, rules_task, return_exceptions=True)
            if self._pool is not None:
                await self._pool.close()
            await self._mqtt.stop()
            await self._stream.stop()
            await self._writer.close()
            summary = self.summary()
            log.info("ingest stopped: %s", summary)
            if cfg.stats_file is not None:
                cfg.stats_file.write_text(json.dumps(summary, indent=2))

    # -- rules and alerts ------------------------------------------------------------------------
    async def _rules_loop(self) -> None:
        """Keep the engine's rules current (changes apply without a restart) and tick it."""
        last_load = 0.0
        while True:
            try:
                if self._pool is None:
                    self._pool = await create_pool(self.config.database_url, min_size=1, max_size=2)
                    self._engine.set_rules(await self._fetch_rules())
                    silent_metrics = sorted(
                        {r.metric for r in self._engine.rules.values() if r.kind == "no_data"}
                    )
                    self._engine.restore(
                        [alert_from_row(r) for r in await open_alerts(self._pool)],
                        await last_readings(self._pool, silent_metrics),
                    )
                    last_load = time.monotonic()
                elif time.monotonic() - last_load >= self.config.rules_reload_s:
                    self._engine.set_rules(await self._fetch_rules())
                    acked = await acknowledged_open(self._pool)
                    self._engine.sync_acknowledged(
                        {
                            a["alert_id"]: (a["acknowledged_at"].timestamp(), a["acknowledged_by"])
                            for a in acked
                        }
                    )
                    last_load = time.monotonic()
                await self._handle_alerts(self._engine.tick(time.time()))
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("rule evaluation failed")
                else:
                    log.warning("rules/alerts storage unavailable: %s", exc)
            await asyncio.sleep(1.0)

    async def _fetch_rules(self) -> list[Rule]:
        assert self._pool is not None
        rules = []
        for row in await load_rules(self._pool):
            try:
                rules.append(rule_from_row(row))
            except ValueError as exc:
                log.error("ignoring rule %s: %s", names.safe_excerpt(row.get("rule_id")), exc)
        return rules

    def _feed_rules(self, prep: _Prepared, now: float) -> list[AlertEvent]:
        engine = self._engine
        watched = engine.metrics
        if not watched:
            return []
        events: list[AlertEvent] = []
        for r in sorted((r for r in prep.readings if r.metric in watched), key=lambda r: r.ts):
            events.extend(engine.feed(r.device_id, r.metric, r.value, now))
        return events

    async def _handle_alerts(self, events: list[AlertEvent]) -> None:
        """Store, then publish on alerts/{severity}/{device_id}. A failed write is retried."""
        events = self._unsaved + events
        self._unsaved = []
        if not events:
            return
        try:
            assert self._pool is not None
            async with self._pool.acquire() as conn:
                await save_alerts(
                    conn,
                    [(RuleEngine.kind_of(e.alert, self._engine.rules), e.alert) for e in events],
                )
        except Exception:
            self._unsaved = events[-10_000:]
            raise
        topics = self.config.topics
        self._stream.publish_many(
            [
                (topics.alert(e.alert.severity, e.alert.device_id), alert_event(e.event, e.alert))
                for e in events
            ],
            retain=False,
        )
        self.stats.alerts += len(events)

    def summary(self) -> dict[str, float | int]:
        return {
            **self.stats.summary(),
            "stream_published": self._stream.published,
            "stream_dropped": self._stream.dropped,
        }

    async def _stats_loop(self) -> None:
        last = 0
        while True:
            await asyncio.sleep(10)
            rate = (self.stats.readings_stored - last) / 10
            last = self.stats.readings_stored
            if rate:
                log.info(
                    "ingest: %.0f readings/s, %d messages waiting; totals %s",
                    rate,
                    len(self._batcher),
                    self.summary(),
                )

    async def _write_loop(self, stop: asyncio.Event) -> None:
        while True:
            due = self._batcher.due_in(time.monotonic())
            if due is None:
                if stop.is_set():
                    return  # flushed everything collected before the stop
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if due > 0 and not stop.is_set():
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), due)
                except TimeoutError:
                    pass
                continue
            batch = self._batcher.take(time.monotonic())
            if self._mqtt is not None and self._mqtt.paused:
                if len(self._batcher) < self.config.receive_maximum // 2:
                    self._mqtt.resume_reading()
            await self._handle_batch(batch, stop)

    # -- one batch ----------------------------------------------------------------------------
    def _prepare(self, batch: list[Inbound]) -> _Prepared:
        cfg = self.config
        prep = _Prepared(batch, [], [], [], [])
        for msg in batch:
            # One conversion for both the stand-in ts and received_at (below): a float
            # rounding here and a truncation there once made received_at 1 us before ts.
            base_us = int(msg.received_at * 1_000_000)
            received = _EPOCH + timedelta(microseconds=base_us)
            device = cfg.topics.parse_device_topic(msg.topic, "telemetry")
            if device is None and (reporter := cfg.topics.parse_device_topic(msg.topic, "status")):
                self._prepare_status(prep, msg, reporter, received)
                continue
            if device is None and (logger := cfg.topics.parse_device_topic(msg.topic, "logs")):
                try:
                    if not names.is_device_id(logger):
                        raise PayloadError("invalid_device_id", "invalid device id in the topic")
                    prep.logs.append(
                        (cfg.topics.logs(logger), parse_log(logger, msg.payload, received))
                    )
                except PayloadError as exc:
                    self._reject(prep, msg, logger, exc, received)
                continue
            device = device or ""
            try:
                readings = parse_telemetry(
                    device,
                    msg.payload,
                    received,
                    max_bytes=cfg.max_payload_bytes,
                    max_future=cfg.max_future,
                    max_past=cfg.max_past,
                )
            except PayloadError as exc:
                self._reject(prep, msg, device, exc, received)
                continue
            prep.readings.extend(readings)
            for r in readings:
                prep.rows.append(
                    (r.device_id, r.metric, r.ts, r.value, r.unit, self._received_at(base_us))
                )
        return prep

    def _received_at(self, at_us: int) -> datetime:
        """A received_at no other reading of this process has: strictly increasing in
        microseconds, so ``since=<received_at of the last message seen>`` resumes exactly
        after it, even between two readings of one message."""
        us = at_us if at_us > self._last_received_us else self._last_received_us + 1
        self._last_received_us = us
        return _EPOCH + timedelta(microseconds=us)

    def _prepare_status(
        self, prep: _Prepared, msg: Inbound, device: str, received: datetime
    ) -> None:
        try:
            if not names.is_device_id(device):
                raise PayloadError("invalid_device_id", "invalid device id in the topic")
            status, reason = parse_status(msg.payload)
        except PayloadError as exc:
            self._reject(prep, msg, device, exc, received)
            return
        prep.statuses.append((device, status, reason, received))

    def _reject(
        self, prep: _Prepared, msg: Inbound, device: str, exc: PayloadError, received: datetime
    ) -> None:
        """Dead-letter the message; tell the device why, when its id is safe to put in a topic."""
        valid = names.is_device_id(device)
        prep.dead.append(
            (
                msg.topic,
                device if valid else None,
                msg.payload[:DEAD_LETTER_KEEP_BYTES],
                exc.reason,
                exc.message,
                received,
            )
        )
        if valid:
            prep.errors.append(
                (
                    self.config.topics.device_errors(device),
                    device_error(exc.reason, exc.message, msg.topic, received),
                )
            )

    async def _handle_batch(self, batch: list[Inbound], stop: asyncio.Event) -> None:
        assert self._mqtt is not None
        generation = self._mqtt.generation
        batch = [m for m in batch if m.generation == generation]
        if not batch:
            return
        prep = self._prepare(batch)
        result = await self._store(prep, stop)
        if result is None:
            return  # gave up at shutdown: nothing acknowledged, the broker redelivers
        committed = time.time()
        self._faults.hit("after_commit")
        if self._mqtt.generation == generation:
            for msg in batch:
                if msg.qos:
                    self._mqtt.ack(msg.mid, msg.qos)
        self._account(prep, result, committed)
        self._publish(prep, result)
        if self._pool is not None:
            try:
                await self._handle_alerts(self._feed_rules(prep, committed))
            except Exception as exc:  # kept in _unsaved and retried with the next batch/tick
                log.warning("storing alerts failed (%s); will retry", exc)

    async def _store(self, prep: _Prepared, stop: asyncio.Event) -> WriteResult | None:
        """Write the batch, retrying transient failures with backoff until it commits.

        Returns None only when shutting down with the database still unavailable: nothing
        is acknowledged then, and the broker redelivers the batch to the next run.
        """
        delay = 0.1
        while True:
            try:
                try:
                    return await self._writer.write(prep.rows, prep.dead, prep.statuses)
                except Exception as exc:
                    self._writer.reset()
                    if is_transient(exc):
                        raise
                    return await self._store_split(prep, exc)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._writer.reset()
                if stop.is_set() and not self._accepting and delay > 2:
                    return None
                self.stats.db_retries += 1
                log.warning(
                    "database write failed (%s: %s); batch of %d messages kept, retry in %.1fs",
                    type(exc).__name__,
                    exc,
                    len(prep.messages),
                    delay,
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)

    async def _store_split(self, prep: _Prepared, exc: Exception) -> WriteResult | None:
        """A permanent error: store message by message; dead-letter the ones that fail.

        Without this, one message the database rejects would block the stream forever.
        """
        log.error("batch rejected by the database (%s); storing message by message", exc)
        staged = inserted = 0
        keys: set[tuple[str, str, datetime]] = set()
        changes: list[StatusChange] = []
        for msg in prep.messages:
            one = self._prepare([msg])
            try:
                res = await self._writer.write(one.rows, one.dead, one.statuses)
            except Exception as one_exc:
                if is_transient(one_exc):
                    raise
                self._writer.reset()
                received = datetime.fromtimestamp(msg.received_at, UTC)
                await self._writer.write(
                    [],
                    [
                        (
                            msg.topic,
                            None,
                            msg.payload[:DEAD_LETTER_KEEP_BYTES],
                            "storage_error",
                            type(one_exc).__name__,
                            received,
                        )
                    ],
                )
                continue
            staged += res.staged
            inserted += res.inserted
            changes.extend(res.status_changes)
            if res.inserted_keys is None:
                keys.update((r[0], r[1], r[2]) for r in one.rows)
            else:
                keys.update(res.inserted_keys)
        return WriteResult(staged, inserted, frozenset(keys), tuple(changes))

    def _account(self, prep: _Prepared, result: WriteResult, committed: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.messages += len(prep.messages)
        stats.readings_stored += result.inserted
        stats.readings_duplicate += result.staged - result.inserted
        stats.dead_letters += len(prep.dead)
        # Device timestamp -> commit; only meaningful for devices with a synced clock.
        seen_ts = None
        for r in prep.readings:
            if r.ts is not seen_ts:
                seen_ts = r.ts
                stats.latencies_ms.append((committed - r.ts.timestamp()) * 1000)

    def _publish(self, prep: _Prepared, result: WriteResult) -> None:
        """Device errors, then every newly stored reading on the validated stream."""
        stream = self._stream
        if prep.errors:
            stream.publish_many(prep.errors, retain=False)
        if prep.logs:
            stream.publish_many(prep.logs, retain=False)
        if result.status_changes:
            topics = self.config.topics
            stream.publish_many(
                [
                    (
                        topics.status(c.device_id),
                        status_event(
                            c.device_id, c.old_status, c.new_status, c.reason, c.last_seen, c.ts
                        ),
                    )
                    for c in result.status_changes
                ],
                retain=True,
            )
        if not self.config.publish_stream:
            return
        keys, cache, topics = result.inserted_keys, self._topic_cache, self.config.topics
        if len(cache) > 200_000:
            cache.clear()  # bound memory against fleets that churn through ids
        items: list[tuple[str, bytes]] = []
        last_ts = last_rx = None
        ts_text = rx_text = ""
        for r, row in zip(prep.readings, prep.rows, strict=True):
            if keys is not None and (r.device_id, r.metric, r.ts) not in keys:
                continue  # a redelivery: it was published when it was first stored
            if r.ts is not last_ts:
                last_ts, ts_text = r.ts, iso_ms(r.ts)
            if row[5] is not last_rx:
                last_rx, rx_text = row[5], iso_us(row[5])
            key = (r.device_id, r.metric)
            topic = cache.get(key)
            if topic is None:
                topic = cache[key] = topics.telemetry(r.device_id, r.metric)
            items.append(
                (topic, reading_event(r.device_id, r.metric, r.value, r.unit, ts_text, rx_text))
            )
        stream.publish_many(items, retain=True)
