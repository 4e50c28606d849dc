"""Reading the dead letters (messages that could never be stored) for an operator."""

from __future__ import annotations

from typing import Any

import asyncpg


async def latest_dead_letters(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    limit: int,
    device_id: str | None = None,
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """The newest first, each filter applying when given. Walks the index on received_at (or
    on (device_id, received_at)) backwards, so the table's size does not matter."""
    rows = await conn.fetch(
        "SELECT id, received_at, device_id, topic, reason, detail, payload FROM dead_letters "
        "WHERE ($1::text IS NULL OR device_id = $1) AND ($2::text IS NULL OR reason = $2) "
        "ORDER BY received_at DESC, id DESC LIMIT $3",
        device_id,
        reason,
        limit,
    )
    return [dict(r) for r in rows]
