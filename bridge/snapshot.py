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
from storage.device_scope import claim_condition, claim_values

SNAPSHOT_LIMIT = 10_000

Snapshot = Callable[[Selector, Principal], Awaitable[list[tuple[tuple[str, ...], dict[str, Any]]]]]

# $1/$2 the token's claim (storage.device_scope), $3 the subscription's devices, then the
# channel's filters, the LIMIT last.
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


def _listed(values: tuple[str, ...] | None) -> list[str] | None:
    return list(values) if values is not None else None


def make_snapshot(pool: asyncpg.Pool, topics: Topics, limit: int = SNAPSHOT_LIMIT) -> Snapshot:
    async def snapshot(
        sel: Selector, principal: Principal
    ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        out: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        exact, patterns = claim_values(principal.devices)
        devices = _listed(sel.devices)
        if sel.channel == "telemetry":
            rows = await pool.fetch(
                _LATEST,
                exact,
                patterns,
                devices,
                _listed(sel.metrics),
                sel.value_min,
                sel.value_max,
                limit,
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
            rows = await pool.fetch(
                _STATUSES, exact, patterns, devices, _listed(sel.statuses), limit
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
