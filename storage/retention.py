"""Retention per tier by dropping whole partitions, never by deleting rows.

``readings`` and ``readings_1m`` have daily partitions (``<table>_YYYYMMDD``), ``readings_1h``
monthly ones (``<table>_YYYYMM``). A partition goes once all of its range is older than the
tier's horizon, so up to one partition's span more than the horizon is kept.

Dead letters are the exception: a small table (each device's are rationed by the ingest),
not partitioned, so old rows are deleted, a bounded number per transaction.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tier:
    table: str
    unit: str  # "day" or "month"


TIERS = {
    "raw": Tier("readings", "day"),
    "1m": Tier("readings_1m", "day"),
    "1h": Tier("readings_1h", "month"),
}

_CHILDREN = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = $1 AND p.relnamespace = c.relnamespace
  AND p.relnamespace = to_regnamespace(current_schema())
ORDER BY c.relname
"""


# Oldest first through the received_at index; ids, so each statement deletes a bounded number.
_EXPIRE_DEAD_LETTERS = """
DELETE FROM dead_letters WHERE id IN (
    SELECT id FROM dead_letters WHERE received_at < $1 ORDER BY received_at LIMIT $2
)
"""


def partition_end(table: str, unit: str, name: str) -> datetime | None:
    """The exclusive upper bound of a partition from its name; None for foreign names."""
    digits = 8 if unit == "day" else 6
    match = re.fullmatch(re.escape(table) + rf"_(\d{{{digits}}})", name)
    if not match:
        return None
    if unit == "day":
        start = datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC)
        return start + timedelta(days=1)
    start = datetime.strptime(match[1], "%Y%m").replace(tzinfo=UTC)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def expired(table: str, unit: str, partitions: list[str], horizon: datetime) -> list[str]:
    """The partitions whose whole range lies before ``horizon``."""
    out = []
    for name in partitions:
        end = partition_end(table, unit, name)
        if end is not None and end <= horizon:
            out.append(name)
    return out


async def apply_retention(
    conn: asyncpg.Connection, keep: dict[str, timedelta | None], now: datetime | None = None
) -> list[str]:
    """Drop the expired partitions of each tier (``keep[tier]`` None = keep forever)."""
    now = now or datetime.now(UTC)
    dropped: list[str] = []
    for tier_name, span in keep.items():
        if span is None:
            continue
        tier = TIERS[tier_name]
        children = [r[0] for r in await conn.fetch(_CHILDREN, tier.table)]
        for name in expired(tier.table, tier.unit, children, now - span):
            # A short lock timeout: DROP needs an exclusive lock on the parent, and waiting
            # behind a long analyst query would queue the ingest's inserts behind us too.
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '2s'")
                    await conn.execute(f'DROP TABLE "{name}"')  # name matched the pattern above
            except asyncpg.LockNotAvailableError:
                log.info("retention: %s is busy; trying again at the next run", name)
                continue
            dropped.append(name)
    if dropped:
        log.info("retention dropped %d partition(s): %s", len(dropped), ", ".join(dropped))
    return dropped


async def expire_dead_letters(
    conn: asyncpg.Connection,
    keep: timedelta | None,
    now: datetime | None = None,
    *,
    chunk: int = 10_000,
) -> int:
    """Delete dead letters received more than ``keep`` ago (None = keep forever).

    Chunk by chunk, each its own transaction: a long backlog never holds one huge transaction
    (and its locks and WAL) open next to the ingest's inserts.
    """
    if keep is None:
        return 0
    horizon = (now or datetime.now(UTC)) - keep
    deleted = 0
    while True:
        status = await conn.execute(_EXPIRE_DEAD_LETTERS, horizon, chunk)
        n = int(status.rsplit(" ", 1)[1])
        deleted += n
        if n < chunk:
            break
    if deleted:
        log.info("retention deleted %d dead letter(s) older than %s", deleted, keep)
    return deleted
