"""From received messages to a batch ready for storage (no I/O, no awaits).

Each message becomes rows (telemetry), a reported status, a log event, or a dead letter and
an error for its device. What the database later refuses on its own is dead-lettered here
too (:meth:`Preparer.refused_by_database`), so every rejection goes through one ladder: the
retained-repeat check, the per-device budget, then the dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from ingest.dead_letters import DeadLetterBudget, keep_payload
from ingest.logs import parse_log
from ingest.mapped import MappingRouter, NoMappings, checked_readings, checked_statuses
from ingest.mapping.api import Entries, Mapping
from ingest.payload import PayloadError, parse_entries
from ingest.prepared import _EPOCH, Inbound, IngestConfig, IngestStats, _Prepared
from ingest.retained import LastRetained, payload_digest
from ingest.status import parse_status
from ingest.storable import db_text
from ingest.wire import device_error
from storage import names

log = logging.getLogger(__name__)

# Offsets of a message's readings from its received_at, made once (a message rarely has more).
_STEPS = [timedelta(microseconds=k) for k in range(256)]
_NSTEPS = len(_STEPS)
_TOPICS_MAX = 100_000


class Preparer:
    """Turns batches of :class:`Inbound` into :class:`_Prepared` output.

    Holds what outlives one batch: the last received_at handed out (kept strictly
    increasing), the dead-letter budget and the last retained message per topic.
    """

    def __init__(self, config: IngestConfig, stats: IngestStats) -> None:
        self.config = config
        self.stats = stats
        self._last_received_us = 0
        self.budget = DeadLetterBudget(
            config.dead_letter_per_device_per_min, max_devices=config.dead_letter_tracked_devices
        )
        self.retained = LastRetained(config.retained_topics_max)
        # telemetry topic -> its device: parsed once per topic (a fleet reuses its topics)
        self._telemetry_devices: dict[str, str] = {}
        # topics found to be none of our own (a firmware's): routed without parsing them again
        self._mapped_topics: set[str] = set()
        # The enabled mappings; after a reload the previous set still routes a message the
        # new one does not know, so messages received before the reload are unaffected by it.
        self.mappings: MappingRouter = NoMappings()
        self._previous_mappings: MappingRouter = NoMappings()
        self._notes_logged = 0.0

    def use_mappings(self, mappings: MappingRouter) -> None:
        """Route messages with ``mappings`` from the next batch on."""
        self._previous_mappings, self.mappings = self.mappings, mappings

    def prepare(self, batch: list[Inbound]) -> _Prepared:
        prep = _Prepared(batch)
        for msg in batch:
            first = len(prep.rows)
            self._prepare_one(prep, msg)
            if msg.dup:
                prep.redelivered.update((r[0], r[1], r[2]) for r in prep.rows[first:])
            prep.mark()
        self.stats.readings_received += len(prep.rows)
        return prep

    def _prepare_one(self, prep: _Prepared, msg: Inbound) -> None:
        cfg = self.config
        repeat = self._retained_repeat(prep, msg)
        # One conversion for both the stand-in ts and received_at (below): a float
        # rounding here and a truncation there once made received_at 1 us before ts.
        base_us = int(msg.received_at * 1_000_000)
        # ... and unique: the receive time is the stand-in ts of a reading sent without one,
        # and two messages a device sends back to back can arrive within one microsecond;
        # the same (device, metric, ts) would store the second as a duplicate of the first.
        if base_us <= self._last_received_us:
            base_us = self._last_received_us + 1
        received = _EPOCH + timedelta(microseconds=base_us)
        device = self._telemetry_devices.get(msg.topic)
        mapped = device is None and msg.topic in self._mapped_topics
        if device is None and not mapped:
            device = cfg.topics.parse_device_topic(msg.topic, "telemetry")
            if device is not None and len(self._telemetry_devices) < _TOPICS_MAX:
                self._telemetry_devices[msg.topic] = device
        try:
            if mapped:  # a topic seen before that is none of our own: straight to its mapping
                self._prepare_mapped(prep, msg, received, base_us)
                return
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
            if device is None:
                if len(self._mapped_topics) < _TOPICS_MAX:
                    self._mapped_topics.add(msg.topic)
                self._prepare_mapped(prep, msg, received, base_us)
                return
            entries = parse_entries(
                device,
                msg.payload,
                received,
                max_bytes=cfg.max_payload_bytes,
                max_future=cfg.max_future,
                max_past=cfg.max_past,
            )
        except PayloadError as exc:
            self.reject(prep, msg, device or "", exc, received, repeat=repeat)
            return
        except Exception:
            # A parser failed in a way it should not: that costs one message a dead letter,
            # never the writer task (an exception here would stop the ingest for everyone).
            failed = PayloadError("unprocessable", "the bridge could not process this message")
            if self.reject(prep, msg, device or "", failed, received, repeat=repeat):
                log.exception(
                    "unexpected error parsing a message on %s", names.safe_excerpt(msg.topic)
                )
            return
        self._append_rows(prep, ((device, entries),), received, base_us)

    def _append_rows(
        self,
        prep: _Prepared,
        items: Iterable[tuple[str, Entries]],
        received: datetime,
        base_us: int,
    ) -> None:
        """The rows of one message's readings (of one device, or several for a mapping)."""
        # received_at: one no other reading of this process has, strictly increasing in
        # microseconds, so ``since=<received_at of the last message seen>`` resumes exactly
        # after it, even between two readings of one message.
        us = base_us if base_us > self._last_received_us else self._last_received_us + 1
        base = received if us == base_us else _EPOCH + timedelta(microseconds=us)
        append = prep.rows.append
        k = 0
        for device, entries in items:
            for at, values in entries:
                for name, (value, unit) in values.items():
                    step = _STEPS[k] if k < _NSTEPS else timedelta(microseconds=k)
                    append((device, name, at, value, unit, base + step))
                    k += 1
        if k:
            self._last_received_us = us + k - 1

    def _route(self, topic: str) -> tuple[Mapping | None, str]:
        """The mapping of ``topic`` and the topic without the deployment prefix (mappings
        see topics as the firmware publishes them)."""
        rest = self.config.topics.strip_prefix(topic)
        if rest is None:
            return None, topic
        return self.mappings.route(rest) or self._previous_mappings.route(rest), rest

    def _prepare_mapped(
        self, prep: _Prepared, msg: Inbound, received: datetime, base_us: int
    ) -> None:
        """A message on a firmware's own topic, read by the mapping its topic belongs to
        (ingest/mapped.py): stored exactly like one in the bridge's own format."""
        cfg = self.config
        mapping, topic = self._route(msg.topic)
        if mapping is None:
            raise PayloadError("no_mapping", "no enabled mapping covers this topic")
        try:
            if len(msg.payload) > cfg.max_payload_bytes:
                raise PayloadError(
                    "payload_too_large",
                    f"payload of {len(msg.payload)} bytes exceeds {cfg.max_payload_bytes} bytes",
                )
            extracted = mapping.extract(topic, msg.payload, received)
            readings, count = checked_readings(
                mapping, extracted, received, max_future=cfg.max_future, max_past=cfg.max_past
            )
            statuses = checked_statuses(extracted)
        except PayloadError as exc:
            # the mapping's name in the detail: the operator sees which one refused it
            raise PayloadError(exc.reason, f"mapping {mapping.name}: {exc.message}") from None
        for device, status, reason in statuses:
            prep.statuses.append((device, status, reason, received))
        if extracted.notes:
            self._note(mapping, extracted.notes)
        if count:
            self._append_rows(prep, ((r.device_id, r.entries) for r in readings), received, base_us)
            by_mapping = self.stats.mapped_readings
            by_mapping[mapping.name] = by_mapping.get(mapping.name, 0) + count

    def _note(self, mapping: Mapping, notes: Sequence[str]) -> None:
        """Count what a mapping noted (a Sparkplug sequence gap); log it at most once a
        minute so a chatty fleet cannot flood the log."""
        self.stats.mapping_notes += len(notes)
        now = time.monotonic()
        if now - self._notes_logged >= 60:
            self._notes_logged = now
            log.info(
                "mapping %s: %s (%d notes so far; logged at most once a minute)",
                mapping.name,
                names.safe_excerpt(notes[0], 200),
                self.stats.mapping_notes,
            )

    def _retained_repeat(self, prep: _Prepared, msg: Inbound) -> bool:
        """Whether ``msg`` is a copy of the last retained message handled on its topic
        (ingest/retained.py); it is remembered as the topic's last retained one either way."""
        if not msg.retain:
            return False
        digest = payload_digest(msg.payload)
        last = prep.retained.get(msg.topic) or self.retained.get(msg.topic)
        prep.retained[msg.topic] = digest
        return digest == last

    def reject(
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
        if not self.budget.allow(device if valid else None, time.monotonic()):
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

    def refused_by_database(self, prep: _Prepared, msg: Inbound, cause: BaseException) -> None:
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
        self.reject(prep, msg, device, exc, received)
