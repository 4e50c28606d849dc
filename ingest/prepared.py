"""What the ingest works on, apart from the service that runs it: its configuration and
counters, a message as received, a batch prepared for storage (rows, dead letters, status
changes, what to acknowledge), and the pure step from stored rows to stream messages."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from ingest.buckets import BATCH_MESSAGES, COMMIT_SECONDS, DELAY_SECONDS, Buckets
from ingest.mapped import MappingSource
from ingest.mqtt import MqttEndpoint
from ingest.payload import MAX_PAYLOAD_BYTES
from ingest.topics import Topics
from ingest.wire import ReadingTemplates, UtcTimes, reading_payload
from storage.readings import DeadLetterRow, ReadingKey, ReadingRow, StatusRow, WriteResult


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
    # keeps both writers busy (two batches in flight and the next collecting); more only holds
    # messages in Python memory (and costs GC time).
    receive_maximum: int = 15_000
    shutdown_timeout_s: float = 15.0
    # Batches written at once, each on its own connection: while one commits, the next is
    # prepared and written (ingest/pipeline.py). 1 = one batch at a time.
    writers: int = 2
    # When set, the final counters and latency percentiles are written here as JSON on exit.
    stats_file: Path | None = None
    # Rule changes arrive by LISTEN/NOTIFY (ingest/rules_listener.py) and apply after this
    # quiet period, which folds a burst of changes into one reload; every ``rules_reload_s``
    # the rules are read regardless, in case a notification was missed.
    rules_reload_s: float = 10.0
    rules_debounce_s: float = 0.1
    rules_listen: bool = True
    rules_listen_ping_s: float = 15.0
    # Dead letters stored per device id (messages without a valid id share one budget);
    # beyond it they are counted and acknowledged, not stored.
    dead_letter_per_device_per_min: float = 60.0
    dead_letter_tracked_devices: int = 10_000
    # A dead letter keeps this much of its payload: enough to see what was wrong.
    dead_letter_max_payload_bytes: int = 4096
    # Topics whose last retained message is remembered (copies are not dead-lettered again).
    retained_topics_max: int = 100_000
    # Mappings of firmware topics and payloads (ingest/mapped.py); None: the bridge's own
    # format only. Reloaded on a NOTIFY, when the source's fingerprint (a file's mtime)
    # changes, checked every ``mappings_poll_s``, and every ``mappings_reload_s``.
    mappings: MappingSource | None = None
    mappings_poll_s: float = 2.0
    mappings_reload_s: float = 60.0
    mappings_listen: bool = True


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Inbound(NamedTuple):
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float
    generation: int
    retain: bool = False
    # MQTT DUP: the broker sent this message before, perhaps to a run of the ingest that
    # stored it and died before streaming it (ingest/after_commit.py streams it again)
    dup: bool = False


@dataclass
class IngestStats:
    """Counters since start; ``latencies_ms`` samples device ts -> commit for the benchmark.

    Plain numbers, changed on the event loop's thread only (per message at most an integer
    increment); ingest/metrics.py reads them at scrape time.
    """

    messages_received: int = 0  # accepted by on_message
    messages: int = 0  # committed (their batch's transaction)
    # received but never committed: dropped with a lost connection, or given up at shutdown;
    # the broker redelivers them (in flight = received - committed - abandoned)
    messages_abandoned: int = 0
    readings_received: int = 0  # found in received payloads (a redelivery counts again)
    readings_stored: int = 0
    readings_duplicate: int = 0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # committed, by reason
    dead_letters_dropped: int = 0  # over the per-device budget: counted, not stored
    # readings found in mapped messages, by mapping name (bounded by the mappings enabled)
    mapped_readings: dict[str, int] = field(default_factory=dict)
    mapping_notes: int = 0  # facts a mapping reported (a Sparkplug sequence gap)
    mapping_reloads: int = 0
    mapping_reload_errors: int = 0
    retained_skipped: int = 0  # copies of retained garbage dead-lettered before
    batches: int = 0
    db_writes: int = 0  # write transactions attempted
    db_refused: int = 0  # of which the database refused for their content
    db_retries: int = 0
    alerts: int = 0
    rules_evaluated: int = 0  # readings fed to the rule engine
    rules_reloads: int = 0  # after the first load: on a notification or the periodic timer
    database_up: bool = True  # false from a failed write (not refused for content) to a commit
    last_commit: float = 0.0  # unix time
    batch_messages: Buckets = field(default_factory=lambda: Buckets(BATCH_MESSAGES))
    commit_seconds: Buckets = field(default_factory=lambda: Buckets(COMMIT_SECONDS))
    delay_seconds: Buckets = field(default_factory=lambda: Buckets(DELAY_SECONDS))
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
            "dead_letters_dropped": self.dead_letters_dropped,
            "retained_skipped": self.retained_skipped,
            "batches": self.batches,
            "db_writes": self.db_writes,
            "db_refused": self.db_refused,
            "db_retries": self.db_retries,
            "alert_events": self.alerts,
            "rules_reloads": self.rules_reloads,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "latency_p50_ms": pct(0.50),
            "latency_p99_ms": pct(0.99),
        }


_Ends = tuple[int, int, int, int, int]


@dataclass
class _Prepared:
    messages: list[Inbound]
    rows: list[ReadingRow] = field(default_factory=list)
    dead: list[DeadLetterRow] = field(default_factory=list)
    errors: list[tuple[str, bytes]] = field(default_factory=list)  # for devices/{id}/errors
    statuses: list[StatusRow] = field(default_factory=list)
    logs: list[tuple[str, bytes]] = field(default_factory=list)  # (logs/{id} topic, event)
    # Where each message's output ends in (rows, dead, errors, statuses, logs): a range of
    # messages can then be written on its own without parsing it again (``part``).
    ends: list[_Ends] = field(default_factory=list)
    # topic -> digest of the retained messages handled in this batch (kept once it commits)
    retained: dict[str, bytes] = field(default_factory=dict)
    # keys of the readings of messages delivered again (``Inbound.dup``)
    redelivered: set[ReadingKey] = field(default_factory=set)

    def mark(self) -> None:
        """Close the output of the message just prepared."""
        self.ends.append(
            (len(self.rows), len(self.dead), len(self.errors), len(self.statuses), len(self.logs))
        )

    def part(self, lo: int, hi: int) -> _Prepared:
        """The output of messages ``[lo, hi)`` alone."""
        a = self.ends[lo - 1] if lo else (0, 0, 0, 0, 0)
        b = self.ends[hi - 1]
        return _Prepared(
            self.messages[lo:hi],
            self.rows[a[0] : b[0]],
            self.dead[a[1] : b[1]],
            self.errors[a[2] : b[2]],
            self.statuses[a[3] : b[3]],
            self.logs[a[4] : b[4]],
            redelivered=set(self.redelivered),
        )

    def extend(self, other: _Prepared) -> None:
        """Append another part's output (not its messages)."""
        self.rows += other.rows
        self.dead += other.dead
        self.errors += other.errors
        self.statuses += other.statuses
        self.logs += other.logs
        self.redelivered |= other.redelivered


class _GaveUp(Exception):
    """Shutting down with the database unavailable: nothing of the batch is acknowledged."""


def stream_readings(
    rows: Sequence[ReadingRow],
    keys: frozenset[tuple[str, str, datetime]] | None,
    templates: ReadingTemplates,
) -> list[tuple[str, bytes]]:
    """(topic, payload) of every newly stored reading on the validated stream (pure).

    ``rows`` are the stored rows; ``keys`` those the batch inserted (None: all of them).
    The readings of one message share their ``ts`` object, so it is formatted once per
    message; each reading has a received_at of its own (see ingest/preparing.py).
    """
    items: list[tuple[str, bytes]] = []
    append = items.append
    pieces = templates.pieces
    received = UtcTimes(6).text
    device_ts = UtcTimes(3).text
    last_ts = None
    ts_text = ""
    for device_id, metric, ts, value, unit, received_at in rows:
        if keys is not None and (device_id, metric, ts) not in keys:
            continue  # stored before: streamed then, or by ``stored_again`` now
        if ts is not last_ts:
            last_ts, ts_text = ts, device_ts(ts)
        topic, head, tail = pieces(device_id, metric, unit)
        append((topic, reading_payload(head, value, tail, ts_text, received(received_at))))
    return items


def stored_again(prep: _Prepared, result: WriteResult) -> list[ReadingRow]:
    """The readings of messages delivered again that an earlier delivery had stored, as
    stored (pure). That delivery's run may have died between its commit and its stream
    publish; the broker only redelivers, and nothing else would ever stream them."""
    if not prep.redelivered or not result.stored_before:
        return []
    again = prep.redelivered
    return [row for row in result.stored_before if (row[0], row[1], row[2]) in again]


def _merged(results: list[WriteResult], parts: list[_Prepared]) -> WriteResult:
    """One result for the parts of a batch written in separate transactions."""
    keys: set[tuple[str, str, datetime]] = set()
    for result, part in zip(results, parts, strict=True):
        if result.inserted_keys is None:  # every staged row was new
            keys.update((r[0], r[1], r[2]) for r in part.rows)
        else:
            keys.update(result.inserted_keys)
    return WriteResult(
        staged=sum(r.staged for r in results),
        inserted=sum(r.inserted for r in results),
        inserted_keys=frozenset(keys),
        status_changes=tuple(c for r in results for c in r.status_changes),
        stored_before=tuple(row for r in results for row in r.stored_before),
    )
