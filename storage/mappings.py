"""Mappings kept in PostgreSQL (storage/migrations/0008_mappings.sql): one row per mapping,
a built-in profile with options or a declarative spec. Every change notifies the ingests."""

from __future__ import annotations

from typing import Any

import asyncpg

MAPPING_COLUMNS = ("name", "profile", "options", "spec", "enabled", "created_at", "updated_at")


async def load_mappings(
    conn: asyncpg.Connection | asyncpg.Pool, *, enabled_only: bool = False
) -> list[dict[str, Any]]:
    where = " WHERE enabled" if enabled_only else ""
    rows = await conn.fetch(
        f"SELECT {', '.join(MAPPING_COLUMNS)} FROM mappings{where} ORDER BY name"
    )
    return [dict(r) for r in rows]


async def upsert_mapping(
    conn: asyncpg.Connection | asyncpg.Pool,
    name: str,
    *,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    enabled: bool = True,
) -> None:
    """Add the mapping or replace the one of that name."""
    await conn.execute(
        "INSERT INTO mappings (name, profile, options, spec, enabled) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (name) DO UPDATE SET profile = EXCLUDED.profile, "
        "options = EXCLUDED.options, spec = EXCLUDED.spec, enabled = EXCLUDED.enabled, "
        "updated_at = now()",
        name,
        profile,
        options or {},
        spec,
        enabled,
    )


async def set_mapping_enabled(
    conn: asyncpg.Connection | asyncpg.Pool, name: str, enabled: bool
) -> bool:
    """Whether a mapping of that name exists."""
    status = await conn.execute(
        "UPDATE mappings SET enabled = $2, updated_at = now() WHERE name = $1", name, enabled
    )
    return bool(status.endswith(" 1"))


async def delete_mapping(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> bool:
    status = await conn.execute("DELETE FROM mappings WHERE name = $1", name)
    return bool(status.endswith(" 1"))


async def held_subscriptions(conn: asyncpg.Connection, client_id: str) -> list[str]:
    """The mapped subscriptions the ingest ``client_id`` last said it holds
    (storage/migrations/0009_mapped_subscriptions.sql)."""
    rows = await conn.fetch(
        "SELECT subscription FROM ingest_mapped_subscriptions WHERE client_id = $1 "
        "ORDER BY subscription",
        client_id,
    )
    return [r["subscription"] for r in rows]


async def remember_subscriptions(
    conn: asyncpg.Connection, client_id: str, subscriptions: list[str]
) -> None:
    """Record what the ingest ``client_id`` holds now (replacing what it held)."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM ingest_mapped_subscriptions WHERE client_id = $1", client_id
        )
        await conn.executemany(
            "INSERT INTO ingest_mapped_subscriptions (client_id, subscription) VALUES ($1, $2)",
            [(client_id, s) for s in dict.fromkeys(subscriptions)],
        )
