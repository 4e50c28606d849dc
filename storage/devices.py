"""Device status: transitions from readings, from the devices' own status messages (and Last
Will), and from silence. Every transition is stored; the caller publishes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class StatusChange:
    device_id: str
    old_status: str | None
    new_status: str
    reason: str
    last_seen: datetime | None
    ts: datetime


_RECORD = """
INSERT INTO device_status_events (device_id, old_status, new_status, reason, last_seen, ts)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::timestamptz[])
"""


async def record(conn: asyncpg.Connection, changes: list[StatusChange]) -> None:
    if not changes:
        return
    await conn.execute(
        _RECORD,
        [c.device_id for c in changes],
        [c.old_status for c in changes],
        [c.new_status for c in changes],
        [c.reason for c in changes],
        [c.last_seen for c in changes],
        [c.ts for c in changes],
    )


async def mark_silent_offline(
    conn: asyncpg.Connection, default_offline_after_s: int
) -> list[StatusChange]:
    """Online devices silent for longer than their offline_after_s (or the default) go offline.

    The UPDATE ... RETURNING is atomic, so with several ingest processes each transition is
    reported exactly once.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            """
            UPDATE devices SET status = 'offline', status_reason = 'no data',
                   status_changed_at = now()
            WHERE status IN ('online', 'warning')
              AND last_seen < now() - make_interval(secs => coalesce(offline_after_s, $1))
            RETURNING device_id, last_seen, now() AS ts,
                      coalesce(offline_after_s, $1) AS after_s
            """,
            default_offline_after_s,
        )
        changes = [
            StatusChange(
                r["device_id"],
                "online",
                "offline",
                f"no data for {r['after_s']} s",
                r["last_seen"],
                r["ts"],
            )
            for r in rows
        ]
        await record(conn, changes)
    return changes


async def set_reported_status(
    conn: asyncpg.Connection, device_id: str, status: str, reason: str, ts: datetime
) -> StatusChange | None:
    """A status the device published itself (devices/{id}/status, also its Last Will)."""
    async with conn.transaction():
        old = await conn.fetchrow(
            "SELECT status, last_seen FROM devices WHERE device_id = $1 FOR UPDATE", device_id
        )
        if old is None:
            await conn.execute(
                "INSERT INTO devices (device_id, first_seen, status, status_reason, "
                "status_changed_at) VALUES ($1, $2, $3, $4, $2)",
                device_id,
                ts,
                status,
                reason,
            )
            change = StatusChange(device_id, None, status, reason, None, ts)
        elif old["status"] == status:
            return None
        else:
            await conn.execute(
                "UPDATE devices SET status = $2, status_reason = $3, status_changed_at = $4 "
                "WHERE device_id = $1",
                device_id,
                status,
                reason,
                ts,
            )
            change = StatusChange(device_id, old["status"], status, reason, old["last_seen"], ts)
        await record(conn, [change])
    return change


async def get_device(conn: asyncpg.Connection | asyncpg.Pool, device_id: str) -> Any:
    """The device's row, or None."""
    return await conn.fetchrow("SELECT * FROM devices WHERE device_id = $1", device_id)


async def device_latest(conn: asyncpg.Connection | asyncpg.Pool, device_id: str) -> list[Any]:
    """The latest value of each of the device's metrics, by metric."""
    return await conn.fetch(
        "SELECT metric, value, unit, ts, received_at FROM latest_values "
        "WHERE device_id = $1 ORDER BY metric",
        device_id,
    )


async def list_devices(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[Any]:
    """Devices by id, at most ``limit`` of them."""
    return await conn.fetch(
        "SELECT device_id, status, status_reason, first_seen, last_seen FROM devices "
        "ORDER BY device_id LIMIT $1",
        limit,
    )
