"""Commands sent to devices: one row per command, from ``sent`` to its final status."""

from __future__ import annotations

from typing import Any

import asyncpg


async def record_command(
    conn: asyncpg.Connection | asyncpg.Pool,
    command_id: str,
    device_id: str,
    command: str,
    parameters: dict[str, Any],
    timeout_s: float,
    requested_by: str,
) -> None:
    await conn.execute(
        "INSERT INTO commands (command_id, device_id, command, parameters, timeout_s, status, "
        "requested_by) VALUES ($1, $2, $3, $4, $5, 'sent', $6)",
        command_id,
        device_id,
        command,
        parameters,
        timeout_s,
        requested_by,
    )


async def finish_command(
    conn: asyncpg.Connection | asyncpg.Pool, command_id: str, status: str, result: Any
) -> None:
    await conn.execute(
        "UPDATE commands SET status = $2, result = $3, updated_at = now() WHERE command_id = $1",
        command_id,
        status,
        result,
    )
