"""``snapshot: true``: the current latest values (or device statuses) from PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bridge.auth import Principal
from bridge.subscriptions import Selector
from ingest.topics import Topics
from ingest.wire import iso_ms

SNAPSHOT_LIMIT = 10_000

Snapshot = Callable[[Selector, Principal], Awaitable[list[tuple[tuple[str, ...], dict[str, Any]]]]]


def make_snapshot(pool: asyncpg.Pool, topics: Topics) -> Snapshot:
    async def snapshot(
        sel: Selector, principal: Principal
    ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        out: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        devices = list(sel.devices) if sel.devices else None
        if sel.channel == "telemetry":
            rows = await pool.fetch(
                "SELECT device_id, metric, ts, value, unit, received_at FROM latest_values "
                "WHERE ($1::text[] IS NULL OR device_id = ANY($1)) "
                "AND ($2::text[] IS NULL OR metric = ANY($2)) ORDER BY device_id, metric LIMIT $3",
                devices,
                list(sel.metrics) if sel.metrics else None,
                SNAPSHOT_LIMIT,
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
                if sel.accepts(principal, r["device_id"], event):
                    out.append((("telemetry", r["device_id"], r["metric"]), event))
        elif sel.channel == "devices":
            rows = await pool.fetch(
                "SELECT device_id, status, last_seen FROM devices "
                "WHERE ($1::text[] IS NULL OR device_id = ANY($1)) ORDER BY device_id LIMIT $2",
                devices,
                SNAPSHOT_LIMIT,
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
