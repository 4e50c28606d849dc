"""``snapshot: true``: the current latest values (or device statuses) from PostgreSQL.

The token's ``devices`` claim and the subscription's filters are applied in the WHERE clause,
before the LIMIT: filtered afterwards, other devices' rows could fill the cap and leave the
caller none of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bridge.auth import Principal
from bridge.subscriptions import Selector
from ingest.topics import Topics
from ingest.wire import iso_ms
from storage.history import device_statuses, latest_values

SNAPSHOT_LIMIT = 10_000

Snapshot = Callable[[Selector, Principal], Awaitable[list[tuple[tuple[str, ...], dict[str, Any]]]]]


def make_snapshot(pool: asyncpg.Pool, topics: Topics, limit: int = SNAPSHOT_LIMIT) -> Snapshot:
    async def snapshot(
        sel: Selector, principal: Principal
    ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        out: list[tuple[tuple[str, ...], dict[str, Any]]] = []
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
            for r in rows:
                event = {
                    "device_id": r["device_id"],
                    "metric": r["metric"],
                    "value": r["value"],
                    "unit": r["unit"],
                    "ts": iso_ms(r["ts"]),
                    "received_at": iso_ms(r["received_at"]),
                }
                # a second check with the live path's rules (the SQL already applied them)
                if sel.accepts(principal, r["device_id"], event):
                    out.append((("telemetry", r["device_id"], r["metric"]), event))
        elif sel.channel == "devices":
            rows = await device_statuses(
                pool, claim=claim, devices=devices, statuses=sel.statuses, limit=limit
            )
            for r in rows:
                event = {
                    "device_id": r["device_id"],
                    "old_status": None,
                    "new_status": r["status"],
                    "reason": "snapshot",
                    "last_seen": iso_ms(r["last_seen"]) if r["last_seen"] else None,
                }
                if sel.accepts(principal, r["device_id"], event):
                    out.append((("status", r["device_id"]), event))
        return out

    return snapshot
