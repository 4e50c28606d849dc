"""Stored stream messages for clients: ``since`` replays and ``snapshot: true`` reads.

Every read here is capped. The token's ``devices`` claim (:mod:`storage.device_scope`) and the
subscription's filters are all in the WHERE clause, before the LIMIT: filtered afterwards,
other devices' rows could fill the cap and leave the caller none of its own. Rows come back
as asyncpg records; the caller shapes them into stream events (``ingest.wire``) and checks
them once more with the live path's rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from storage.device_scope import claim_condition, claim_values


def _listed(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values is not None else None


# What a replay reads, newest first. $1 since, $2/$3 the token's devices claim
# (storage.device_scope), $4 the subscription's devices, then the channel's own filters and
# the LIMIT last. Every filter of the subscription and the claim is in the WHERE clause, so
# the LIMIT counts only rows the subscriber may see: a busy device the token does not cover
# cannot push the caller's own rows out of the cap.
_REPLAY_COMMON = f"{claim_condition(2, 3)} AND ($4::text[] IS NULL OR device_id = ANY($4::text[]))"
_READINGS_SINCE = (
    "SELECT device_id, metric, ts, value, unit, received_at FROM readings "
    f"WHERE received_at > $1 AND {_REPLAY_COMMON} "
    "AND ($5::text[] IS NULL OR metric = ANY($5::text[])) "
    "AND ($6::float8 IS NULL OR value >= $6) AND ($7::float8 IS NULL OR value <= $7) "
    "ORDER BY received_at DESC LIMIT $8"
)
_ALERTS_SINCE = (
    f"SELECT * FROM alerts WHERE updated_at > $1 AND {_REPLAY_COMMON} "
    "AND ($5::text[] IS NULL OR severity = ANY($5::text[])) "
    # an alert's type is its metric (stream alerts carry no other type)
    "AND ($6::text[] IS NULL OR metric = ANY($6::text[])) "
    "ORDER BY updated_at DESC LIMIT $7"
)
_STATUS_EVENTS_SINCE = (
    f"SELECT * FROM device_status_events WHERE ts > $1 AND {_REPLAY_COMMON} "
    "AND ($5::text[] IS NULL OR new_status = ANY($5::text[])) "
    "ORDER BY ts DESC LIMIT $6"
)


async def readings_since(
    conn: asyncpg.Connection | asyncpg.Pool,
    since: datetime,
    *,
    claim: Sequence[str] | None,
    devices: Sequence[str] | None,
    metrics: Sequence[str] | None,
    value_min: float | None,
    value_max: float | None,
    limit: int,
) -> list[Any]:
    """Readings received after ``since``, newest first (``received_at`` is the resume point)."""
    exact, patterns = claim_values(claim)
    return await conn.fetch(
        _READINGS_SINCE,
        since,
        exact,
        patterns,
        _listed(devices),
        _listed(metrics),
        value_min,
        value_max,
        limit,
    )


async def alerts_since(
    conn: asyncpg.Connection | asyncpg.Pool,
    since: datetime,
    *,
    claim: Sequence[str] | None,
    devices: Sequence[str] | None,
    severities: Sequence[str] | None,
    types: Sequence[str] | None,
    limit: int,
) -> list[Any]:
    """Alerts changed after ``since``, newest first (``updated_at`` is the resume point)."""
    exact, patterns = claim_values(claim)
    return await conn.fetch(
        _ALERTS_SINCE,
        since,
        exact,
        patterns,
        _listed(devices),
        _listed(severities),
        _listed(types),
        limit,
    )


async def status_events_since(
    conn: asyncpg.Connection | asyncpg.Pool,
    since: datetime,
    *,
    claim: Sequence[str] | None,
    devices: Sequence[str] | None,
    statuses: Sequence[str] | None,
    limit: int,
) -> list[Any]:
    """Device status changes after ``since``, newest first (``ts`` is the resume point)."""
    exact, patterns = claim_values(claim)
    return await conn.fetch(
        _STATUS_EVENTS_SINCE, since, exact, patterns, _listed(devices), _listed(statuses), limit
    )


# Snapshots: $1/$2 the token's claim (storage.device_scope), $3 the subscription's devices,
# then the channel's filters, the LIMIT last.
_LATEST = (
    "SELECT device_id, metric, ts, value, unit, received_at FROM latest_values "
    f"WHERE {claim_condition(1, 2)} AND ($3::text[] IS NULL OR device_id = ANY($3::text[])) "
    "AND ($4::text[] IS NULL OR metric = ANY($4::text[])) "
    "AND ($5::float8 IS NULL OR value >= $5) AND ($6::float8 IS NULL OR value <= $6) "
    "ORDER BY device_id, metric LIMIT $7"
)
_STATUSES = (
    "SELECT device_id, status, last_seen FROM devices "
    f"WHERE {claim_condition(1, 2)} AND ($3::text[] IS NULL OR device_id = ANY($3::text[])) "
    "AND ($4::text[] IS NULL OR status = ANY($4::text[])) "
    "ORDER BY device_id LIMIT $5"
)


async def latest_values(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    claim: Sequence[str] | None,
    devices: Sequence[str] | None,
    metrics: Sequence[str] | None,
    value_min: float | None,
    value_max: float | None,
    limit: int,
) -> list[Any]:
    """The latest reading of each (device, metric), by device and metric."""
    exact, patterns = claim_values(claim)
    return await conn.fetch(
        _LATEST,
        exact,
        patterns,
        _listed(devices),
        _listed(metrics),
        value_min,
        value_max,
        limit,
    )


async def device_statuses(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    claim: Sequence[str] | None,
    devices: Sequence[str] | None,
    statuses: Sequence[str] | None,
    limit: int,
) -> list[Any]:
    """Each device's current status and last_seen, by device."""
    exact, patterns = claim_values(claim)
    return await conn.fetch(_STATUSES, exact, patterns, _listed(devices), _listed(statuses), limit)


async def clock(conn: asyncpg.Connection | asyncpg.Pool, timeout_s: float) -> Any:
    """The database's clock (``clock_timestamp()``), which stamps ``received_at``."""
    return await conn.fetchval("SELECT clock_timestamp()", timeout=timeout_s)
