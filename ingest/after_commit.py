"""What follows a batch's commit, in this order: count it, publish device errors, logs,
status changes and the validated stream, acknowledge its messages, then feed the rules.

Nothing here runs before the batch's transaction committed, and batches pass through here in
the order their messages were received (MQTT wants QoS 1 acknowledgements in that order).
The stream goes out before the acknowledgements: a message acknowledged is never delivered
again, so its readings are on the stream by then. A run killed between its commit and its
acknowledgements gets the messages redelivered (MQTT DUP) to the next run, which finds their
readings stored and streams them again, as stored: the first run may not have streamed them.
"""

from __future__ import annotations

import logging
import time

from ingest.mqtt import AsyncMqtt
from ingest.prepared import IngestConfig, IngestStats, _Prepared, stored_again, stream_readings
from ingest.preparing import Preparer
from ingest.rules_loop import RulesLoop
from ingest.stream import StreamPublisher
from ingest.wire import ReadingTemplates, status_event
from storage.readings import FaultPoints, WriteResult

log = logging.getLogger(__name__)


class AfterCommit:
    def __init__(
        self,
        config: IngestConfig,
        stats: IngestStats,
        stream: StreamPublisher,
        preparer: Preparer,
        rules: RulesLoop,
        faults: FaultPoints,
    ) -> None:
        self.config = config
        self.stats = stats
        self._stream = stream
        self._preparer = preparer
        self._rules = rules
        self._faults = faults
        self._templates = ReadingTemplates(config.topics.telemetry)

    async def finish(
        self,
        mqtt: AsyncMqtt,
        batch_generation: int,
        done: _Prepared,
        result: WriteResult,
        *,
        ack: bool = True,
    ) -> None:
        """Everything after the commit of ``done`` (``ack=False``: store and publish only)."""
        committed = time.time()
        self._faults.hit("after_commit")
        for topic, digest in done.retained.items():
            self._preparer.retained.remember(topic, digest)
        self._account(done, result, committed)
        self._publish(done, result)
        if ack and mqtt.generation == batch_generation:
            for msg in done.messages:
                if msg.qos:
                    mqtt.ack(msg.mid, msg.qos)
        if report := self._preparer.budget.report(time.monotonic()):
            log.warning("%s", report)
        await self._rules.after_commit(done.rows, committed)

    def _account(self, prep: _Prepared, result: WriteResult, committed: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.messages += len(prep.messages)
        stats.batch_messages.observe(len(prep.messages))
        stats.last_commit = committed
        stats.readings_stored += result.inserted
        stats.readings_duplicate += result.staged - result.inserted
        stats.dead_letters += len(prep.dead)
        if prep.dead:
            reasons = stats.dead_letter_reasons
            for dead in prep.dead:
                reasons[dead[3]] = reasons.get(dead[3], 0) + 1
        # Device timestamp -> commit, once per message (its readings share one ts object);
        # only meaningful for devices with a synced clock.
        latencies = stats.latencies_ms.append
        delay = stats.delay_seconds.observe
        seen_ts = None
        for row in prep.rows:
            if row[2] is not seen_ts:
                seen_ts = row[2]
                seconds = committed - seen_ts.timestamp()
                latencies(seconds * 1000)
                delay(seconds)

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
        if again := stored_again(prep, result):
            # not retained: the retained value is the newest reading, which these may not be
            stream.publish_many(stream_readings(again, None, self._templates), retain=False)
        stream.publish_many(
            stream_readings(prep.rows, result.inserted_keys, self._templates), retain=True
        )
