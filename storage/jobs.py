"""Periodic database jobs that must run once at a time across every process."""

from __future__ import annotations

import asyncpg


async def try_job_lock(conn: asyncpg.Connection, job: str) -> bool:
    """Take ``job``'s session-level advisory lock on ``conn`` if nobody holds it. It is held
    until ``conn`` closes (or unlocks it), so the job's own connection is the one to pass."""
    locked = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"tb-job:{job}")
    return bool(locked)
