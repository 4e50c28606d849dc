"""asyncpg connections: one pool per process, plus dedicated connections for COPY writers."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

# Connection settings every bridge connection shares: UTC so timestamps print the same
# everywhere, and an application name so operators can find us in pg_stat_activity.
SERVER_SETTINGS = {"timezone": "UTC", "application_name": "telemetry-bridge"}
# The front's pool has a name of its own: its statements (client queries and replays) are
# told apart from the ingest's writes, e.g. to see how many a front runs at once.
FRONT_APPLICATION_NAME = "telemetry-bridge-front"


def _settings(application_name: str | None) -> dict[str, str]:
    if application_name is None:
        return SERVER_SETTINGS
    return {**SERVER_SETTINGS, "application_name": application_name}


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    application_name: str | None = None,
    **kw: Any,
) -> asyncpg.Pool:
    """A pool; ``application_name`` names its connections in pg_stat_activity."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init,
        server_settings=_settings(application_name),
        command_timeout=60,
        **kw,
    )
    assert pool is not None
    return pool


async def connect(
    dsn: str, *, connect_timeout: float = 10.0, application_name: str | None = None
) -> asyncpg.Connection:
    """One connection outside any pool; ``application_name`` names it in pg_stat_activity."""
    conn = await asyncpg.connect(
        dsn, timeout=connect_timeout, server_settings=_settings(application_name)
    )
    await _init(conn)
    return conn
