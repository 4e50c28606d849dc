"""The ingest: MQTT telemetry in, PostgreSQL exactly once, acknowledgement after commit.

Flow of one batch::

    on_message (loop thread) -> Batcher -> prepare (ingest/preparing.py)
    -> COPY + INSERT .. ON CONFLICT -> COMMIT (ingest/storing.py, two batches in flight on
       two connections: ingest/pipeline.py)
    -> PUBACK each message -> publish validated stream + device errors (ingest/after_commit.py),
       batch after batch in receive order

Nothing is acknowledged before its transaction commits. A database outage keeps the batch
and retries with jittered backoff; the broker holds everything else (QoS 1, persistent
session, receive maximum as the in-flight window). A connection loss drops the collected but
unwritten messages; the broker redelivers them and the idempotent insert absorbs repeats.

Hostile devices: validation refuses what PostgreSQL cannot store, so one device's bad message
costs a dead letter, not the batch. Should the database still refuse a batch for its content,
the batch is halved until the message at fault is found (ingest/bisect.py). Dead letters are
rationed per device (ingest/dead_letters.py), and a retained garbage message the broker
resends on a new subscription is not dead-lettered again (ingest/retained.py). Rules and
alerts run in their own loop (ingest/rules_loop.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time

from prometheus_client import CollectorRegistry

from ingest.after_commit import AfterCommit
from ingest.batcher import Batcher
from ingest.faults import Faults
from ingest.mapping_loop import MappingLoop
from ingest.metrics import IngestCollector
from ingest.mqtt import AsyncMqtt, Message
from ingest.pipeline import Pipeline
from ingest.prepared import Inbound, IngestConfig, IngestStats, stream_readings
from ingest.preparing import Preparer
from ingest.rules import RuleEngine
from ingest.rules_listener import RulesListener
from ingest.rules_loop import RulesLoop
from ingest.storing import BatchStore
from ingest.stream import StreamPublisher
from storage.readings import KnownDays, ReadingWriter

__all__ = ["Inbound", "IngestConfig", "IngestService", "IngestStats", "stream_readings"]

log = logging.getLogger(__name__)


class IngestService:
    """``registry``: the process's metrics registry; the service registers its collector
    (ingest/metrics.py) there."""

    def __init__(self, config: IngestConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.stats = IngestStats()
        self._batcher: Batcher[Inbound] = Batcher(
            config.batch_max_messages, config.batch_max_wait_s
        )
        self._wakeup = asyncio.Event()
        self._faults = Faults.from_env()
        self._accepting = True
        self._stopping = False  # ``stop`` was set: a batch may give up on a dead database
        self._mqtt: AsyncMqtt | None = None
        self._stream = StreamPublisher(
            config.mqtt, f"{config.client_id}-stream", resync_topic=config.topics.stream_resync()
        )
        self._rules = RulesLoop(config, self.stats, self._stream)
        self.rules_listener: RulesListener = self._rules.listener
        self._preparer = Preparer(config, self.stats)
        self.mappings: MappingLoop | None = None
        if config.mappings is not None:
            self.mappings = MappingLoop(config, self.stats, self._preparer, config.mappings)
        self._store = BatchStore(self.stats, self._preparer, self._giving_up)
        self._after = AfterCommit(
            config, self.stats, self._stream, self._preparer, self._rules, self._faults
        )
        known_days = KnownDays()  # partitions: one writer creates a new day's, others wait
        self._pipeline = Pipeline(
            self._store,
            self._after,
            [
                ReadingWriter(config.database_url, self._faults, known_days)
                for _ in range(config.writers)
            ],
        )
        # Set before the tasks are cancelled at shutdown: loops end on it even when Python
        # 3.11's wait_for swallows a cancellation (see RulesListener.close).
        self._closing = False
        self.collector = IngestCollector(self.stats, self._stream_dropped, self._broker_connected)
        if registry is not None:
            registry.register(self.collector)

    def _stream_dropped(self) -> int:
        return self._stream.dropped

    def _broker_connected(self) -> bool:
        return self._mqtt is not None and self._mqtt.connected.is_set()

    @property
    def _engine(self) -> RuleEngine:
        return self._rules.engine

    def _giving_up(self) -> bool:
        return self._stopping and not self._accepting

    # -- MQTT side ---------------------------------------------------------------------------
    def _on_message(self, message: Message) -> None:
        if not self._accepting:
            return  # not acknowledged: the broker keeps it for the next run
        assert self._mqtt is not None
        self.stats.messages_received += 1
        self._batcher.add(
            Inbound(
                message.mid,
                message.qos,
                message.topic,
                bytes(message.payload),
                time.time(),
                self._mqtt.generation,
                bool(message.retain),
                bool(message.dup),
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
        self.stats.messages_abandoned += len(dropped)
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
        # a firmware's own topics, read by the mappings (ingest/mapping_loop.py)
        mapped = await self.mappings.start() if self.mappings is not None else []
        self._mqtt = AsyncMqtt(
            cfg.mqtt,
            cfg.client_id,
            on_message=self._on_message,
            subscriptions=[
                (subscription, 1),
                (status_subscription, 1),
                (logs_subscription, 0),
                *((m, 1) for m in mapped),
            ],
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
        rules_task = asyncio.create_task(self._rules.run(), name="ingest-rules")
        tasks = [writer_task, stats_task, rules_task]
        if cfg.rules_listen:
            tasks.append(asyncio.create_task(self.rules_listener.run(), name="ingest-rules-listen"))
        if self.mappings is not None:
            tasks.append(asyncio.create_task(self.mappings.run(self._mqtt), name="ingest-mappings"))
            if self.mappings.listener is not None:
                tasks.append(
                    asyncio.create_task(self.mappings.listener.run(), name="ingest-mappings-listen")
                )
        try:
            await self._stream.start()
            await self._stream.connected.wait()
            await self._mqtt.start()
            log.info("ingest subscribed to %s at QoS 1 as %s", subscription, cfg.client_id)
            if self.mappings is not None:
                await self.mappings.drop_stale(self._mqtt)
            if ready is not None:
                ready.set()
            await stop.wait()
            self._stopping = True
            self._accepting = False
            self._wakeup.set()
            await asyncio.wait_for(asyncio.shield(writer_task), cfg.shutdown_timeout_s)
        except TimeoutError:
            log.warning("shutdown timed out; unacknowledged messages stay with the broker")
        finally:
            self._accepting = False
            self._closing = True
            self._rules.closing = True
            self.rules_listener.close()
            if self.mappings is not None:
                self.mappings.closing = True
                self.mappings.changed.set()
                if self.mappings.listener is not None:
                    self.mappings.listener.close()
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=10)
            if stuck:  # never expected; logged so a hang at exit has a name
                log.error("tasks still running at shutdown: %s", [t.get_name() for t in stuck])
            await self._rules.close()
            await self._mqtt.stop()
            await self._stream.stop()
            await self._pipeline.close()
            summary = self.summary()
            log.info("ingest stopped: %s", summary)
            if cfg.stats_file is not None:
                cfg.stats_file.write_text(json.dumps(summary, indent=2))

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
        """Cut, prepare and submit batches while earlier ones commit (ingest/pipeline.py);
        after ``stop``, flush what was collected and finish every batch in flight."""
        assert self._mqtt is not None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._pipeline.run(self._mqtt), name="ingest-finish")
            try:
                await self._cut_batches(stop)
            finally:
                self._pipeline.end()

    async def _cut_batches(self, stop: asyncio.Event) -> None:
        assert self._mqtt is not None
        while not self._closing:
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
            # Waiting for a free connection first lets the batch grow meanwhile, up to its
            # maximum: under load, batches are full and the two connections always busy.
            writer = await self._pipeline.writer()
            batch = self._batcher.take(time.monotonic())
            if self._mqtt.paused and len(self._batcher) < self.config.receive_maximum // 2:
                self._mqtt.resume_reading()
            generation = self._mqtt.generation
            taken = len(batch)
            batch = [m for m in batch if m.generation == generation]
            self.stats.messages_abandoned += taken - len(batch)
            if not batch:  # delivered by a connection since lost: the broker redelivers
                self._pipeline.release(writer)
                continue
            self._pipeline.submit(writer, generation, self._preparer.prepare(batch))
