"""``snapshot: true``: the current latest values (or device statuses) from PostgreSQL.

The token's ``devices`` claim and the subscription's filters are applied in the WHERE clause,
before the LIMIT: filtered afterwards, other devices' rows could fill the cap and leave the
caller none of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg

from bridge.auth import Principal
from bridge.subscriptions import Selector
from ingest.topics import Topics
from ingest.wire import snapshot_status, stored_reading
from storage.history import device_statuses, latest_values

SNAPSHOT_LIMIT = 10_000

Event = tuple[tuple[str, ...], dict[str, Any]]
Snapshot = Callable[[Selector, Principal], Awaitable[list[Event]]]


def snapshot_events(channel: str, rows: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Snapshot rows as stream events (pure; the shapes are ingest.wire's, the same the ingest
    publishes live): ``latest_values`` rows for telemetry, ``devices`` rows for devices."""
    if channel == "telemetry":
        return [(("telemetry", r["device_id"], r["metric"]), stored_reading(r)) for r in rows]
    return [
        (("status", r["device_id"]), snapshot_status(r["device_id"], r["status"], r["last_seen"]))
        for r in rows
    ]


def make_snapshot(pool: asyncpg.Pool, topics: Topics, limit: int = SNAPSHOT_LIMIT) -> Snapshot:
    async def snapshot(sel: Selector, principal: Principal) -> list[Event]:
        claim, devices = principal.devices, sel.devices
        if sel.channel == "telemetry":
            rows = await latest_values(
                pool,
                claim=claim,
                devices=devices,
                metrics=sel.metrics,
                value_min=sel.value_min,
                value_max=sel.value_max,
                limit=limit,
            )
        elif sel.channel == "devices":
            rows = await device_statuses(
                pool, claim=claim, devices=devices, statuses=sel.statuses, limit=limit
            )
        else:
            return []
        # a second check with the live path's rules (the SQL already applied them)
        return [
            (levels, event)
            for levels, event in snapshot_events(sel.channel, rows)
            if sel.accepts(principal, event["device_id"], event)
        ]

    return snapshot
