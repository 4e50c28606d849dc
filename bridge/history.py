"""Stored data for clients: telemetry queries (HTTP, WebSocket, CLI) and `since` replays.

Both check the token first: ``telemetry:read`` and every device visible to it for queries;
replays read only rows the token's ``devices`` claim and the subscription's filters allow
(in SQL, before the cap) and then go through the same :meth:`Selector.accepts` as live
messages, so a client never sees more on resume than it would have seen live.
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
from storage.device_scope import claim_condition, claim_values
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


QUERY_SLOT_WAIT_S = 5.0  # then 503: below the HTTP deadline (bridge/server.py)


class History:
    def __init__(self, pool: asyncpg.Pool, heavy_at_once: int = 4) -> None:
        self.pool = pool
        # Queries and replays read many rows and can run for seconds. However many clients
        # ask at once, only this many hold pool connections together, so the rest of the
        # pool stays free for the short interactive requests (device lists, alert acks, new
        # subscriptions). After a broker reconnect every resumable subscription replays at
        # the same moment: they queue here too (live messages wait in their held lists).
        self._slots = asyncio.Semaphore(heavy_at_once)

    async def query(self, principal: Principal, params: Mapping[str, Any]) -> dict[str, Any]:
        query = checked_query(principal, params)
        try:
            async with asyncio.timeout(QUERY_SLOT_WAIT_S):
                await self._slots.acquire()
        except TimeoutError:
            raise ClientError(
                503,
                "unavailable",
                "too many queries running; try again shortly",
                retry_after=QUERY_SLOT_WAIT_S,
            ) from None
        try:
            async with self.pool.acquire() as conn:
                page = await run_query(conn, query)
        except asyncpg.QueryCanceledError:
            raise ClientError(
                422, "validation_error", "the query took too long; narrow the range or devices"
            ) from None
        finally:
            self._slots.release()
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
        async with self._slots:
            return await self._replay(selector, principal, since, limit)

    async def _replay(
        self, selector: Selector, principal: Principal, since: datetime, limit: int
    ) -> tuple[list[Event], bool]:
        sql, args = replay_sql(selector, principal, since, limit + 1)
        rows = await self.pool.fetch(sql, *args)
        events: list[Event]
        if selector.channel == "telemetry":
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
            events = [
                (("alerts", r["severity"], r["device_id"]), _alert_event(dict(r))) for r in rows
            ]
        else:
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
        truncated = len(events) > limit
        # The WHERE clause already holds everything `accepts` checks; checking again costs
        # little and keeps a replay from ever showing more than the live stream would.
        visible = [
            (levels, event)
            for levels, event in reversed(events[:limit])
            if selector.accepts(principal, event.get("device_id"), event)
        ]
        return visible, truncated


# What a replay reads, newest first. $1 since, $2/$3 the token's devices claim
# (storage.device_scope), $4 the subscription's devices, then the channel's own filters and
# the LIMIT last. Every filter of the subscription and the claim is in the WHERE clause, so
# the LIMIT counts only rows the subscriber may see: a busy device the token does not cover
# cannot push the caller's own rows out of the cap.
_REPLAY_COMMON = f"{claim_condition(2, 3)} AND ($4::text[] IS NULL OR device_id = ANY($4::text[]))"
_REPLAY_SQL = {
    "telemetry": (
        "SELECT device_id, metric, ts, value, unit, received_at FROM readings "
        f"WHERE received_at > $1 AND {_REPLAY_COMMON} "
        "AND ($5::text[] IS NULL OR metric = ANY($5::text[])) "
        "AND ($6::float8 IS NULL OR value >= $6) AND ($7::float8 IS NULL OR value <= $7) "
        "ORDER BY received_at DESC LIMIT $8"
    ),
    "alerts": (
        f"SELECT * FROM alerts WHERE updated_at > $1 AND {_REPLAY_COMMON} "
        "AND ($5::text[] IS NULL OR severity = ANY($5::text[])) "
        # an alert's type is its metric (stream alerts carry no other type)
        "AND ($6::text[] IS NULL OR metric = ANY($6::text[])) "
        "ORDER BY updated_at DESC LIMIT $7"
    ),
    "devices": (
        f"SELECT * FROM device_status_events WHERE ts > $1 AND {_REPLAY_COMMON} "
        "AND ($5::text[] IS NULL OR new_status = ANY($5::text[])) "
        "ORDER BY ts DESC LIMIT $6"
    ),
}


def _listed(values: tuple[str, ...] | None) -> list[str] | None:
    return list(values) if values is not None else None


def replay_sql(
    selector: Selector, principal: Principal, since: datetime, limit: int
) -> tuple[str, list[Any]]:
    """The statement and its arguments for :meth:`History.replay` (pure)."""
    sql = _REPLAY_SQL.get(selector.channel)
    if sql is None:
        raise ClientError(
            422, "validation_error", "since: only telemetry, alerts and devices can resume"
        )
    exact, patterns = claim_values(principal.devices)
    args: list[Any] = [since, exact, patterns, _listed(selector.devices)]
    if selector.channel == "telemetry":
        args += [_listed(selector.metrics), selector.value_min, selector.value_max]
    elif selector.channel == "alerts":
        args += [_listed(selector.severities), _listed(selector.alert_types)]
    else:
        args.append(_listed(selector.statuses))
    args.append(limit)
    return sql, args


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
