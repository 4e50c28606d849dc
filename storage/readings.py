"""The ingest's write path: COPY into a staging table, then one idempotent INSERT.

One transaction per batch holds the readings, the latest value per (device, metric), the
devices' last_seen and the batch's dead letters, so an acknowledgement after commit covers
all of them. Inserts are idempotent on (device_id, metric, ts): a redelivered message after a
crash stores nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

import asyncpg

from storage.devices import StatusChange, set_reported_status
from storage.devices import record as record_status
from storage.pool import connect

# (device_id, metric, ts, value, unit, received_at)
ReadingRow = tuple[str, str, datetime, float, str | None, datetime]
# (topic, device_id or None, raw payload, reason, detail, received_at)
DeadLetterRow = tuple[str, str | None, bytes, str, str, datetime]
ReadingKey = tuple[str, str, datetime]
# (device_id, status, reason, received_at): a status the device reported itself
StatusRow = tuple[str, str, str, datetime]

READING_COLUMNS = ("device_id", "metric", "ts", "value", "unit", "received_at")
DEAD_LETTER_COLUMNS = ("topic", "device_id", "payload", "reason", "detail", "received_at")

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    device_id text, metric text, ts timestamptz, value double precision, unit text,
    received_at timestamptz
) ON COMMIT DELETE ROWS
"""

# No ORDER BY: with a shared subscription two ingests rarely touch the same keys (only on a
# redelivery), and a deadlock (40P01) is retried like any transient error; sorting every
# batch to prevent it cost more than it saved.
_INSERT = """
INSERT INTO readings (device_id, metric, ts, value, unit, received_at)
SELECT device_id, metric, ts, value, unit, received_at FROM ingest_staging
ON CONFLICT DO NOTHING
"""

_LATEST = """
INSERT INTO latest_values AS l (device_id, metric, ts, value, unit, received_at)
SELECT DISTINCT ON (device_id, metric) device_id, metric, ts, value, unit, received_at
FROM ingest_staging ORDER BY device_id, metric, ts DESC
ON CONFLICT (device_id, metric) DO UPDATE
SET ts = EXCLUDED.ts, value = EXCLUDED.value, unit = EXCLUDED.unit,
    received_at = EXCLUDED.received_at
WHERE l.ts < EXCLUDED.ts
"""

# Devices that were offline (or unknown) and now sent data: they come back online. Read
# before the upsert so the transition can name the old status; normally returns no rows.
_WAKING = """
SELECT device_id, status, last_seen FROM devices
WHERE device_id IN (SELECT DISTINCT device_id FROM ingest_staging)
  AND status IN ('offline', 'unknown')
ORDER BY device_id
FOR UPDATE
"""

# last_seen moves forward; offline/unknown devices come back online; new devices are returned.
_DEVICES = """
WITH up AS (
    INSERT INTO devices AS d (device_id, first_seen, last_seen, status, status_reason,
                              status_changed_at)
    SELECT device_id, min(received_at), max(received_at), 'online', 'first reading',
           min(received_at)
    FROM ingest_staging GROUP BY device_id ORDER BY device_id
    ON CONFLICT (device_id) DO UPDATE
    SET last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen),
        status = CASE WHEN d.status IN ('offline', 'unknown') THEN 'online' ELSE d.status END,
        status_reason = CASE WHEN d.status IN ('offline', 'unknown') THEN 'data received'
                             ELSE d.status_reason END,
        status_changed_at = CASE WHEN d.status IN ('offline', 'unknown')
                                 THEN EXCLUDED.last_seen ELSE d.status_changed_at END
    RETURNING device_id, last_seen, (xmax = 0) AS inserted
)
SELECT device_id, last_seen FROM up WHERE inserted
"""

# What the rollup job must fold in, committed with the readings themselves (storage/rollups.py).
_PENDING = """
INSERT INTO rollup_pending (min_ts, max_ts, received_lo, received_hi) VALUES ($1, $2, $3, $4)
"""

# The stored row of each staged one. Those whose stored received_at is the one we staged
# were inserted by this batch; the others were stored before (a redelivered reading keeps
# the received_at of its first delivery).
_STORED_ROWS = """
SELECT r.device_id, r.metric, r.ts, r.value, r.unit, r.received_at,
       r.received_at = s.received_at AS inserted
FROM ingest_staging s JOIN readings r USING (device_id, metric, ts)
"""


class FaultPoints(Protocol):
    """Crash points for the fault tests (``ingest.faults.Faults``): ``hit(point)`` may kill
    the process exactly there. Storage only says where its points are."""

    def hit(self, point: str) -> None: ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    staged: int
    inserted: int
    # None when every staged row was new; otherwise exactly the keys this batch inserted.
    inserted_keys: frozenset[ReadingKey] | None
    # Devices that appeared or came back online with this batch (stored in its transaction).
    status_changes: tuple[StatusChange, ...] = ()
    # Staged rows that were stored before this batch, as stored (their first received_at).
    stored_before: tuple[ReadingRow, ...] = ()


class KnownDays:
    """The days whose readings partition exists, shared by the writers of one process: one of
    them creates a new day's partition while the others wait. Two sessions creating the same
    partition at once can fail on the catalog's unique index (a data-class error, which would
    send a good batch through the split), so this process never races itself at midnight."""

    def __init__(self) -> None:
        self.days: set[date] = set()
        self.lock = asyncio.Lock()


class ReadingWriter:
    """Owns one dedicated connection (the staging table is per session); the partitions it
    has seen are in ``known_days``, shared with the process's other writers when given."""

    def __init__(
        self, dsn: str, faults: FaultPoints | None = None, known_days: KnownDays | None = None
    ) -> None:
        self._dsn = dsn
        self._faults = faults
        self._conn: asyncpg.Connection | None = None
        self._known = known_days or KnownDays()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close(timeout=5)

    def reset(self) -> None:
        """Forget the connection after an error; the next write reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(self._dsn)
            await conn.execute(_STAGING)
            self._conn = conn
        return self._conn

    async def _ensure_days(self, conn: asyncpg.Connection, rows: Sequence[ReadingRow]) -> None:
        known = self._known
        days = {row[2].date() for row in rows} - known.days
        if days:
            async with known.lock:
                days -= known.days  # another writer may have created them meanwhile
                if days:
                    # Day by day: one late reading must not create every partition in between.
                    await conn.executemany(
                        "SELECT ensure_readings_partitions($1, $1)",
                        [(day,) for day in sorted(days)],
                    )
                    known.days |= days

    async def write(
        self,
        rows: Sequence[ReadingRow],
        dead_letters: Sequence[DeadLetterRow] = (),
        statuses: Sequence[StatusRow] = (),
    ) -> WriteResult:
        conn = await self._connection()
        if rows:
            await self._ensure_days(conn, rows)
        try:
            return await self._write(conn, rows, dead_letters, statuses)
        except asyncpg.CheckViolationError as exc:
            # "no partition of relation found": a partition we cached was dropped by retention.
            # Any other CHECK failure is the rows' fault: retrying would only fail again.
            if "no partition" not in str(exc):
                raise
            self._known.days.clear()
            await self._ensure_days(conn, rows)
            return await self._write(conn, rows, dead_letters, statuses)

    async def _write(
        self,
        conn: asyncpg.Connection,
        rows: Sequence[ReadingRow],
        dead_letters: Sequence[DeadLetterRow],
        statuses: Sequence[StatusRow],
    ) -> WriteResult:
        inserted = 0
        keys: frozenset[ReadingKey] | None = None
        before: dict[ReadingKey, ReadingRow] = {}
        changes: list[StatusChange] = []
        async with conn.transaction():
            if rows:
                await conn.copy_records_to_table(
                    "ingest_staging", records=rows, columns=READING_COLUMNS
                )
                status = await conn.execute(_INSERT)
                inserted = int(status.rsplit(" ", 1)[1])
                if self._faults is not None:
                    self._faults.hit("in_insert")
                if inserted:
                    await conn.execute(
                        _PENDING,
                        min(r[2] for r in rows),
                        max(r[2] for r in rows),
                        min(r[5] for r in rows),
                        max(r[5] for r in rows),
                    )
                await conn.execute(_LATEST)
                waking = await conn.fetch(_WAKING)
                new = await conn.fetch(_DEVICES)
                now = datetime.now(UTC)
                changes = [
                    StatusChange(
                        r["device_id"], r["status"], "online", "data received", r["last_seen"], now
                    )
                    for r in waking
                ] + [
                    StatusChange(
                        r["device_id"], None, "online", "first reading", r["last_seen"], now
                    )
                    for r in new
                ]
                await record_status(conn, changes)
                if inserted != len(rows):
                    found = await conn.fetch(_STORED_ROWS)
                    keys = frozenset((r[0], r[1], r[2]) for r in found if r["inserted"])
                    before = {
                        (r[0], r[1], r[2]): (r[0], r[1], r[2], r[3], r[4], r[5])
                        for r in found
                        if (r[0], r[1], r[2]) not in keys  # not staged twice in this batch
                    }
            if dead_letters:
                await conn.copy_records_to_table(
                    "dead_letters", records=dead_letters, columns=DEAD_LETTER_COLUMNS
                )
            for device_id, status, reason, at in statuses:
                change = await set_reported_status(conn, device_id, status, reason, at)
                if change is not None:
                    changes.append(change)
        return WriteResult(
            staged=len(rows),
            inserted=inserted,
            inserted_keys=keys,
            status_changes=tuple(changes),
            stored_before=tuple(before.values()),
        )
