"""The ingest: MQTT telemetry in, PostgreSQL exactly once, acknowledgement after commit.

Flow of one batch::

    on_message (loop thread) -> Batcher -> parse (pydantic) -> COPY + INSERT .. ON CONFLICT
    -> COMMIT -> PUBACK each message -> publish validated stream + device errors

Nothing is acknowledged before its transaction commits. A database outage keeps the batch
and retries with jittered backoff; the broker holds everything else (QoS 1, persistent
session, receive maximum as the in-flight window). A connection loss drops the collected but
unwritten messages; the broker redelivers them and the idempotent insert absorbs repeats.

Hostile devices: validation refuses what PostgreSQL cannot store, so one device's bad message
costs a dead letter, not the batch. Should the database still refuse a batch for its content,
the batch is halved until the message at fault is found (ingest/bisect.py). Dead letters are
rationed per device (ingest/dead_letters.py), and a retained garbage message the broker
resends on a new subscription is not dead-lettered again (ingest/retained.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
import time
from datetime import datetime, timedelta

import asyncpg

from ingest.batcher import Batcher
from ingest.bisect import isolate
from ingest.dead_letters import DeadLetterBudget, keep_payload
from ingest.faults import Faults
from ingest.logs import parse_log
from ingest.mqtt import AsyncMqtt, Message
from ingest.payload import PayloadError, parse_telemetry
from ingest.prepared import (
    _EPOCH,
    Inbound,
    IngestConfig,
    IngestStats,
    _GaveUp,
    _merged,
    _Prepared,
    stream_readings,
)
from ingest.retained import LastRetained, payload_digest
from ingest.rules import AlertEvent, Rule, RuleEngine, alert_from_row, rule_from_row
from ingest.rules_listener import RulesListener
from ingest.status import parse_status
from ingest.storable import db_text
from ingest.stream import StreamPublisher
from ingest.wire import (
    alert_event,
    device_error,
    status_event,
)
from storage import names
from storage.alerts import (
    acknowledged_open,
    last_readings,
    load_rules,
    open_alerts,
    save_alerts,
)
from storage.errors import is_data_error, is_transient
from storage.pool import create_pool
from storage.readings import ReadingWriter, WriteResult

__all__ = ["Inbound", "IngestConfig", "IngestService", "IngestStats", "stream_readings"]

log = logging.getLogger(__name__)


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
        # Set before the background tasks are cancelled: their loops end on it even when
        # Python 3.11's wait_for swallows a cancellation (see RulesListener.close).
        self._closing = False
        self._mqtt: AsyncMqtt | None = None
        self._stream = StreamPublisher(
            config.mqtt, f"{config.client_id}-stream", resync_topic=config.topics.stream_resync()
        )
        self._topic_cache: dict[tuple[str, str], str] = {}
        self._last_received_us = 0
        self._engine = RuleEngine()
        self._rules_restored = False  # the first load (rules, open alerts) is done
        self._rules_changed = asyncio.Event()
        self.rules_listener = RulesListener(
            config.database_url, self._rules_changed, ping_s=config.rules_listen_ping_s
        )
        self._pool: asyncpg.Pool | None = None
        self._unsaved: list[AlertEvent] = []  # alert events whose write failed; retried
        self._budget = DeadLetterBudget(
            config.dead_letter_per_device_per_min, max_devices=config.dead_letter_tracked_devices
        )
        self._retained = LastRetained(config.retained_topics_max)

    # -- MQTT side ---------------------------------------------------------------------------
    def _on_message(self, message: Message) -> None:
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
                bool(message.retain),
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
            retained_on_resubscribe=False,
            retain_as_published=True,  # see ingest/retained.py
        )
        # Messages are freed by reference counting; the cyclic GC only rescans the thousands
        # of in-flight messages over and over. Freeze what start-up built and collect rarely.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        writer_task = asyncio.create_task(self._write_loop(stop), name="ingest-writer")
        stats_task = asyncio.create_task(self._stats_loop(), name="ingest-stats")
        rules_task = asyncio.create_task(self._rules_loop(), name="ingest-rules")
        tasks = [writer_task, stats_task, rules_task]
        if cfg.rules_listen:
            tasks.append(asyncio.create_task(self.rules_listener.run(), name="ingest-rules-listen"))
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
            self._closing = True
            self.rules_listener.close()
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=10)
            if stuck:  # never expected; logged so a hang at exit has a name
                log.error("tasks still running at shutdown: %s", [t.get_name() for t in stuck])
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
        """Keep the engine's rules current and tick it once a second.

        A change to the rules table reaches every ingest process within about
        ``rules_debounce_s`` plus one query: the listener (ingest/rules_listener.py) sets
        ``_rules_changed`` on each notification, and a burst of them (``rules load``) costs one
        reload. Every ``rules_reload_s`` the rules are read anyway, should a notification have
        been lost (the listening connection down, LISTEN impossible behind a proxy).
        """
        cfg = self.config
        changed = self._rules_changed
        last_load = 0.0
        next_tick = 0.0
        while not self._closing:
            try:
                if not self._rules_restored:
                    changed.clear()  # what this load reads needs no second reload
                    if self._pool is None:
                        self._pool = await create_pool(cfg.database_url, min_size=1, max_size=2)
                    self._set_rules(await self._fetch_rules())
                    silent_metrics = sorted(
                        {r.metric for r in self._engine.rules.values() if r.kind == "no_data"}
                    )
                    self._engine.restore(
                        [alert_from_row(r) for r in await open_alerts(self._pool)],
                        await last_readings(self._pool, silent_metrics),
                    )
                    self._rules_restored = True
                    last_load = time.monotonic()
                elif changed.is_set() or time.monotonic() - last_load >= cfg.rules_reload_s:
                    if changed.is_set():
                        # notifications arriving meanwhile fold into this one reload
                        await asyncio.sleep(cfg.rules_debounce_s)
                    # cleared before reading: a change committed during the read sets it again
                    changed.clear()
                    try:
                        await self._reload_rules()
                    except Exception:
                        changed.set()  # not read yet: try again after the pause below
                        raise
                    last_load = time.monotonic()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + 1.0
                    await self._handle_alerts(self._engine.tick(time.time()))
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("rule evaluation failed")
                else:
                    log.warning("rules/alerts storage unavailable: %s", exc)
                # a pause, also when a notification is pending: no busy loop while it is down
                await asyncio.sleep(1.0)
            wait = max(0.0, min(next_tick, last_load + cfg.rules_reload_s) - time.monotonic())
            if not changed.is_set() and wait > 0:
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    pass

    async def _reload_rules(self) -> None:
        assert self._pool is not None
        self._set_rules(await self._fetch_rules())
        self.stats.rules_reloads += 1
        acked = await acknowledged_open(self._pool)
        self._engine.sync_acknowledged(
            {a["alert_id"]: (a["acknowledged_at"].timestamp(), a["acknowledged_by"]) for a in acked}
        )

    def _set_rules(self, rules: list[Rule]) -> None:
        """Swap the whole rule set in one step (the engine replaces its mapping, it never edits
        it), between two batches: the writer evaluates a batch without awaiting, on this same
        event loop, so a batch sees either the old rules or the new ones, never a mix."""
        before = self._engine.rules
        self._engine.set_rules(rules)
        if set(before) != set(self._engine.rules) or any(
            before[k] != r for k, r in self._engine.rules.items()
        ):
            log.info("rules loaded: %d (%d enabled)", len(rules), sum(r.enabled for r in rules))

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
                    [(e.kind, e.alert) for e in events],
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
        prep = _Prepared(batch)
        for msg in batch:
            self._prepare_one(prep, msg)
            prep.mark()
        return prep

    def _prepare_one(self, prep: _Prepared, msg: Inbound) -> None:
        cfg = self.config
        repeat = self._retained_repeat(prep, msg)
        # One conversion for both the stand-in ts and received_at (below): a float
        # rounding here and a truncation there once made received_at 1 us before ts.
        base_us = int(msg.received_at * 1_000_000)
        received = _EPOCH + timedelta(microseconds=base_us)
        device = cfg.topics.parse_device_topic(msg.topic, "telemetry")
        try:
            if device is None and (reporter := cfg.topics.parse_device_topic(msg.topic, "status")):
                device = reporter
                if not names.is_device_id(device):
                    raise PayloadError("invalid_device_id", "invalid device id in the topic")
                status, reason = parse_status(msg.payload)
                prep.statuses.append((device, status, reason, received))
                return
            if device is None and (logger := cfg.topics.parse_device_topic(msg.topic, "logs")):
                device = logger
                if not names.is_device_id(device):
                    raise PayloadError("invalid_device_id", "invalid device id in the topic")
                prep.logs.append(
                    (cfg.topics.logs(device), parse_log(device, msg.payload, received))
                )
                return
            device = device or ""
            readings = parse_telemetry(
                device,
                msg.payload,
                received,
                max_bytes=cfg.max_payload_bytes,
                max_future=cfg.max_future,
                max_past=cfg.max_past,
            )
        except PayloadError as exc:
            self._reject(prep, msg, device or "", exc, received, repeat=repeat)
            return
        except Exception:
            # A parser failed in a way it should not: that costs one message a dead letter,
            # never the writer task (an exception here would stop the ingest for everyone).
            failed = PayloadError("unprocessable", "the bridge could not process this message")
            if self._reject(prep, msg, device or "", failed, received, repeat=repeat):
                log.exception(
                    "unexpected error parsing a message on %s", names.safe_excerpt(msg.topic)
                )
            return
        prep.readings.extend(readings)
        for r in readings:
            prep.rows.append(
                (r.device_id, r.metric, r.ts, r.value, r.unit, self._received_at(base_us))
            )

    def _retained_repeat(self, prep: _Prepared, msg: Inbound) -> bool:
        """Whether ``msg`` is a copy of the last retained message handled on its topic
        (ingest/retained.py); it is remembered as the topic's last retained one either way."""
        if not msg.retain:
            return False
        digest = payload_digest(msg.payload)
        last = prep.retained.get(msg.topic) or self._retained.get(msg.topic)
        prep.retained[msg.topic] = digest
        return digest == last

    def _received_at(self, at_us: int) -> datetime:
        """A received_at no other reading of this process has: strictly increasing in
        microseconds, so ``since=<received_at of the last message seen>`` resumes exactly
        after it, even between two readings of one message."""
        us = at_us if at_us > self._last_received_us else self._last_received_us + 1
        self._last_received_us = us
        return _EPOCH + timedelta(microseconds=us)

    def _reject(
        self,
        prep: _Prepared,
        msg: Inbound,
        device: str,
        exc: PayloadError,
        received: datetime,
        *,
        repeat: bool = False,
    ) -> bool:
        """Dead-letter the message and tell the device why (when its id is safe to put in a
        topic), unless it is a ``repeat`` of the retained message dead-lettered before or the
        device has used up its dead-letter budget. Whether it was kept."""
        if repeat:
            self.stats.retained_skipped += 1
            return False
        valid = names.is_device_id(device)
        if not self._budget.allow(device if valid else None, time.monotonic()):
            self.stats.dead_letters_dropped += 1
            return False
        payload, note = keep_payload(msg.payload, self.config.dead_letter_max_payload_bytes)
        # topic and detail carry untrusted text: a dead letter must never fail its transaction
        prep.dead.append(
            (
                db_text(msg.topic),
                device if valid else None,
                payload,
                exc.reason,
                db_text(exc.message + note),
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
        return True

    def _refused_by_database(self, prep: _Prepared, msg: Inbound, cause: BaseException) -> None:
        """Dead-letter a message the database refused on its own, naming its device."""
        topics = self.config.topics
        device = next(
            (
                d
                for kind in ("telemetry", "status", "logs")
                if (d := topics.parse_device_topic(msg.topic, kind)) is not None
            ),
            "",
        )
        detail = names.safe_excerpt(f"{type(cause).__name__}: {cause}", 300)
        exc = PayloadError("storage_error", f"the database refused this message ({detail})")
        received = _EPOCH + timedelta(microseconds=int(msg.received_at * 1_000_000))
        self._reject(prep, msg, device, exc, received)

    async def _handle_batch(self, batch: list[Inbound], stop: asyncio.Event) -> None:
        assert self._mqtt is not None
        generation = self._mqtt.generation
        batch = [m for m in batch if m.generation == generation]
        if not batch:
            return
        prep = self._prepare(batch)
        stored = await self._store(prep, stop)
        if stored is None:
            return  # gave up at shutdown: nothing acknowledged, the broker redelivers
        done, result = stored
        committed = time.time()
        self._faults.hit("after_commit")
        if self._mqtt.generation == generation:
            for msg in batch:
                if msg.qos:
                    self._mqtt.ack(msg.mid, msg.qos)
        for topic, digest in prep.retained.items():
            self._retained.remember(topic, digest)
        self._account(done, result, committed)
        self._publish(done, result)
        if report := self._budget.report(time.monotonic()):
            log.warning("%s", report)
        if self._rules_restored:  # not before the open alerts are known: no duplicates
            try:
                await self._handle_alerts(self._feed_rules(done, committed))
            except Exception as exc:  # kept in _unsaved and retried with the next batch/tick
                log.warning("storing alerts failed (%s); will retry", exc)

    async def _store(
        self, prep: _Prepared, stop: asyncio.Event
    ) -> tuple[_Prepared, WriteResult] | None:
        """Write the batch; returns what was stored (``prep`` itself, unless the database
        refused part of it) and the write's result.

        Returns None only when shutting down with the database still unavailable: nothing
        is acknowledged then, and the broker redelivers the batch to the next run.
        """
        try:
            result = await self._write(prep, stop)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            return await self._store_split(prep, stop, exc)
        return None if result is None else (prep, result)

    async def _write(self, prep: _Prepared, stop: asyncio.Event) -> WriteResult | None:
        """One transaction of ``prep``, retried with backoff until it commits.

        A data error (the database refuses the content) is raised at once: retrying the same
        rows cannot help. Any other error is retried, also a permanent-looking one (a missing
        table, a revoked grant): it is not the messages' fault, and dead-lettering them would
        lose good readings. Returns None when giving up at shutdown.
        """
        delay = 0.1
        while True:
            self.stats.db_writes += 1
            try:
                return await self._writer.write(prep.rows, prep.dead, prep.statuses)
            except Exception as exc:
                if is_data_error(exc):
                    # the transaction rolled back; the connection is still good
                    self.stats.db_refused += 1
                    raise
                self._writer.reset()
                if stop.is_set() and not self._accepting and delay > 2:
                    return None
                self.stats.db_retries += 1
                log.log(
                    logging.WARNING if is_transient(exc) else logging.ERROR,
                    "database write failed (%s: %s); batch of %d messages kept, retry in %.1fs",
                    type(exc).__name__,
                    exc,
                    len(prep.messages),
                    delay,
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)

    async def _store_split(
        self, prep: _Prepared, stop: asyncio.Event, exc: Exception
    ) -> tuple[_Prepared, WriteResult] | None:
        """The database refused the batch for its content: halve it until the messages at
        fault are found, storing the rest, and dead-letter those (ingest/bisect.py).

        Without this one message the database rejects would block the stream forever; going
        message by message instead costs one transaction per message of the batch.
        """
        log.warning(
            "the database refused a batch of %d messages (%s); halving it to find the culprit",
            len(prep.messages),
            names.safe_excerpt(str(exc), 200),
        )
        parts: list[tuple[_Prepared, WriteResult]] = []
        causes: dict[int, BaseException] = {}

        async def attempt(lo: int, hi: int) -> bool:
            part = prep.part(lo, hi)
            try:
                result = await self._write(part, stop)
            except Exception as part_exc:
                if not is_data_error(part_exc):
                    raise
                if hi - lo == 1:
                    causes[lo] = part_exc
                return False
            if result is None:
                raise _GaveUp
            parts.append((part, result))
            return True

        try:
            refused = await isolate(len(prep.messages), attempt)
        except _GaveUp:
            return None
        done = _Prepared(prep.messages)
        for part, _ in parts:
            done.extend(part)
        rejects = _Prepared([])
        for i in refused:
            self._refused_by_database(rejects, prep.messages[i], causes.get(i, exc))
        if rejects.dead:
            try:
                result = await self._write(rejects, stop)
            except Exception as dead_exc:
                if not is_data_error(dead_exc):
                    raise
                # cannot happen with db_text(); if it does, say so rather than stop the ingest
                log.error("could not store %d dead letter(s): %s", len(rejects.dead), dead_exc)
                rejects.dead.clear()
            else:
                if result is None:
                    return None
        done.extend(rejects)
        return done, _merged([r for _, r in parts], [p for p, _ in parts])

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
        items = stream_readings(
            prep.readings, prep.rows, result.inserted_keys, self.config.topics, self._topic_cache
        )
        stream.publish_many(items, retain=True)
