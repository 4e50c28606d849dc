"""Stored data for clients: telemetry queries (HTTP, WebSocket, CLI) and `since` replays.

Both check the token first: ``telemetry:read`` and every device visible to it for queries;
replays go through the same :meth:`Selector.accepts` as live messages, so a client never
sees more on resume than it would have seen live.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from bridge.auth import Principal
from bridge.protocol import ClientError
from bridge.subscriptions import Selector
from ingest.names import safe_excerpt
from ingest.rules import alert_from_row
from ingest.wire import alert_event, iso_ms, iso_us
from storage.query_spec import QueryError, TelemetryQuery, parse_query
from storage.telemetry import Page, run_query, stream_rows

Event = tuple[tuple[str, ...], dict[str, Any]]


def checked_query(principal: Principal, params: Mapping[str, Any]) -> TelemetryQuery:
    """Parse and authorise; 422 for a bad parameter, 403 for what the token does not allow."""
    try:
        query = parse_query(params, datetime.now(UTC))
    except QueryError as exc:
        raise ClientError(422, "validation_error", str(exc)) from None
    if not principal.has("telemetry:read"):
        raise ClientError(403, "forbidden", "the token lacks the scope telemetry:read")
    hidden = [d for d in query.devices if not principal.sees(d)]
    if hidden:
        raise ClientError(403, "forbidden", f"device {safe_excerpt(hidden[0])} is not allowed")
    return query


def page_body(query: TelemetryQuery, page: Page) -> dict[str, Any]:
    return {
        "series": [
            {
                "device_id": s.device_id,
                "metric": s.metric,
                "points": [[iso_ms(ts), value] for ts, value in s.points],
            }
            for s in page.series
        ],
        "count": page.count,
        "truncated": page.next_cursor is not None,
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
        "from": iso_ms(query.start),
        "to": iso_ms(query.end),
        "bucket": query.bucket_s,
        "agg": query.agg if query.bucket is not None else None,
    }


CSV_HEADER = ("device_id", "metric", "ts", "value")


def csv_chunk(rows: list[tuple[str, str, datetime, float | None]], header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_HEADER)
    writer.writerows((d, m, iso_ms(ts), "" if v is None else repr(v)) for d, m, ts, v in rows)
    return out.getvalue().encode()


class History:
    def __init__(self, pool: asyncpg.Pool, replays_at_once: int = 4) -> None:
        self.pool = pool
        # After a broker reconnect every resumable subscription replays at the same moment:
        # a few at a time, so the pool and the database are not stormed (live messages
        # wait in each subscription's held list meanwhile).
        self._replay_slots = asyncio.Semaphore(replays_at_once)

    async def query(self, principal: Principal, params: Mapping[str, Any]) -> dict[str, Any]:
        query = checked_query(principal, params)
        try:
            async with self.pool.acquire() as conn:
                page = await run_query(conn, query)
        except asyncpg.QueryCanceledError:
            raise ClientError(
                422, "validation_error", "the query took too long; narrow the range or devices"
            ) from None
        return page_body(query, page)

    async def csv(self, query: TelemetryQuery) -> AsyncIterator[bytes]:
        """The whole answer as CSV chunks; one pool connection for as long as it streams."""
        async with self.pool.acquire() as conn:
            header = True
            async for rows in stream_rows(conn, query):
                yield csv_chunk(rows, header)
                header = False
            if header:
                yield csv_chunk([], True)

    async def now(self) -> datetime:
        """The database's clock, which stamps ``received_at``: a resume point taken from it
        cannot skip a reading because this host's clock runs ahead of the ingest's. This
        host's clock when the database cannot be asked."""
        try:
            value = await self.pool.fetchval("SELECT clock_timestamp()", timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return datetime.now(UTC)
        return value if isinstance(value, datetime) else datetime.now(UTC)

    async def replay(
        self, selector: Selector, principal: Principal, since: datetime, limit: int
    ) -> tuple[list[Event], bool]:
        """The stored messages after ``since`` this subscription would have received, oldest
        first; at most ``limit`` (the newest ones) and whether more were missed."""
        async with self._replay_slots:
            return await self._replay(selector, principal, since, limit)

    async def _replay(
        self, selector: Selector, principal: Principal, since: datetime, limit: int
    ) -> tuple[list[Event], bool]:
        devices = list(selector.devices) if selector.devices is not None else None
        events: list[Event]
        if selector.channel == "telemetry":
            rows = await self.pool.fetch(
                "SELECT device_id, metric, ts, value, unit, received_at FROM readings "
                "WHERE received_at > $1 AND ($2::text[] IS NULL OR device_id = ANY($2)) "
                "AND ($3::text[] IS NULL OR metric = ANY($3)) "
                "ORDER BY received_at DESC LIMIT $4",
                since,
                devices,
                list(selector.metrics) if selector.metrics is not None else None,
                limit + 1,
            )
            events = [
                (
                    ("telemetry", r["device_id"], r["metric"]),
                    {
                        "device_id": r["device_id"],
                        "metric": r["metric"],
                        "value": r["value"],
                        "unit": r["unit"],
                        "ts": iso_ms(r["ts"]),
                        "received_at": iso_us(r["received_at"]),
                    },
                )
                for r in rows
            ]
        elif selector.channel == "alerts":
            rows = await self.pool.fetch(
                "SELECT * FROM alerts WHERE updated_at > $1 "
                "AND ($2::text[] IS NULL OR device_id = ANY($2)) "
                "ORDER BY updated_at DESC LIMIT $3",
                since,
                devices,
                limit + 1,
            )
            events = [
                (("alerts", r["severity"], r["device_id"]), _alert_event(dict(r))) for r in rows
            ]
        elif selector.channel == "devices":
            rows = await self.pool.fetch(
                "SELECT * FROM device_status_events WHERE ts > $1 "
                "AND ($2::text[] IS NULL OR device_id = ANY($2)) ORDER BY ts DESC LIMIT $3",
                since,
                devices,
                limit + 1,
            )
            events = [
                (
                    ("status", r["device_id"]),
                    {
                        "device_id": r["device_id"],
                        "old_status": r["old_status"],
                        "new_status": r["new_status"],
                        "reason": r["reason"],
                        "last_seen": iso_ms(r["last_seen"]) if r["last_seen"] else None,
                        "ts": iso_us(r["ts"]),
                    },
                )
                for r in rows
            ]
        else:
            raise ClientError(
                422, "validation_error", "since: only telemetry, alerts and devices can resume"
            )
        truncated = len(events) > limit
        visible = [
            (levels, event)
            for levels, event in reversed(events[:limit])
            if selector.accepts(principal, event.get("device_id"), event)
        ]
        return visible, truncated


def _alert_event(row: dict[str, Any]) -> dict[str, Any]:
    state = row["state"]
    if state == "active":
        kind = "created" if row["created_at"] == row["updated_at"] else "updated"
    else:
        kind = state
    event: dict[str, Any] = orjson.loads(alert_event(kind, alert_from_row(row)))
    event["updated_at"] = iso_us(row["updated_at"])  # exact: it is the resume point
    return event


def replay_key(levels: tuple[str, ...], event: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a message the same message whether it came from storage or live."""
    if levels[0] == "telemetry":
        return ("t", event.get("device_id"), event.get("metric"), event.get("ts"))
    if levels[0] == "alerts":
        return ("a", event.get("alert_id"), event.get("state"), event.get("updated_at"))
    return ("s", event.get("device_id"), event.get("new_status"), event.get("ts"))
