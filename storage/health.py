"""Read-only checks of the database: the front's health probe, the ingest's rules listener
(a ping keeps an idle connection honest) and ``doctor``."""

from __future__ import annotations

import asyncpg


async def ping(conn: asyncpg.Connection, timeout_s: float | None = None) -> None:
    """A round trip that touches no table: raises when the database does not answer."""
    await conn.fetchval("SELECT 1", timeout=timeout_s)


async def server_version(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW server_version"))


async def applied_migrations(conn: asyncpg.Connection) -> set[int]:
    """Versions recorded in ``schema_migrations``; none when the table does not exist yet."""
    has_table = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not has_table:
        return set()
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def clock_epoch(conn: asyncpg.Connection) -> float:
    """The database's clock as epoch seconds (0 when it returns nothing)."""
    return float((await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())")) or 0)
