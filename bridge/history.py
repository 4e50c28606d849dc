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
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bridge.auth import Principal
from bridge.protocol import ClientError
from bridge.rest_models import TelemetryPage, TelemetrySeries, telemetry_params
from bridge.subscriptions import Selector
from ingest.names import safe_excerpt
from ingest.wire import iso_ms, stored_alert, stored_reading, stored_status
from storage.history import alerts_since, clock, readings_since, status_events_since
from storage.query_spec import QueryError, TelemetryQuery
from storage.telemetry import Page, run_query, stream_rows

Event = tuple[tuple[str, ...], dict[str, Any]]


def checked_query(principal: Principal, params: Mapping[str, Any]) -> TelemetryQuery:
    """Parse (bridge.rest_models.TelemetryParams) and authorise; 422 for a bad parameter, 403
    for what the token does not allow."""
    try:
        query = telemetry_params(params)
    except QueryError as exc:
        raise ClientError(422, "validation_error", str(exc)) from None
    if not principal.has("telemetry:read"):
        raise ClientError(403, "forbidden", "the token lacks the scope telemetry:read")
    hidden = [d for d in query.devices if not principal.sees(d)]
    if hidden:
        raise ClientError(403, "forbidden", f"device {safe_excerpt(hidden[0])} is not allowed")
    return query


def page_body(query: TelemetryQuery, page: Page) -> dict[str, Any]:
    """One page as JSON-ready values, built through its model (bridge.rest_models)."""
    body = TelemetryPage.model_validate(
        {
            "series": [
                TelemetrySeries(
                    device_id=s.device_id,
                    metric=s.metric,
                    points=[(iso_ms(ts), value) for ts, value in s.points],
                )
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
    )
    return body.model_dump(mode="json", by_alias=True)


CSV_HEADER = ("device_id", "metric", "ts", "value")


def csv_chunk(rows: list[tuple[str, str, datetime, float | None]], header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_HEADER)
    writer.writerows((d, m, iso_ms(ts), "" if v is None else repr(v)) for d, m, ts, v in rows)
    return out.getvalue().encode()


QUERY_SLOT_WAIT_S = 5.0  # then 503: below the HTTP deadline (bridge/http_api.py)


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
            value = await clock(self.pool, timeout_s=2)
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
        rows = await _stored_since(self.pool, selector, principal, since, limit + 1)
        events = replay_events(selector.channel, rows)
        truncated = len(events) > limit
        # The WHERE clause already holds everything `accepts` checks; checking again costs
        # little and keeps a replay from ever showing more than the live stream would.
        visible = [
            (levels, event)
            for levels, event in reversed(events[:limit])
            if selector.accepts(principal, event.get("device_id"), event)
        ]
        return visible, truncated


async def _stored_since(
    pool: asyncpg.Pool, selector: Selector, principal: Principal, since: datetime, limit: int
) -> list[Any]:
    """The stored rows a replay of ``selector`` reads, newest first (storage.history puts the
    token's claim and every filter before the LIMIT)."""
    claim, devices = principal.devices, selector.devices
    if selector.channel == "telemetry":
        return await readings_since(
            pool,
            since,
            claim=claim,
            devices=devices,
            metrics=selector.metrics,
            value_min=selector.value_min,
            value_max=selector.value_max,
            limit=limit,
        )
    if selector.channel == "alerts":
        return await alerts_since(
            pool,
            since,
            claim=claim,
            devices=devices,
            severities=selector.severities,
            types=selector.alert_types,
            limit=limit,
        )
    if selector.channel == "devices":
        return await status_events_since(
            pool, since, claim=claim, devices=devices, statuses=selector.statuses, limit=limit
        )
    raise ClientError(
        422, "validation_error", "since: only telemetry, alerts and devices can resume"
    )


def replay_events(channel: str, rows: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Stored rows of a resumable channel as the stream events a live subscriber got (pure;
    the shapes are ingest.wire's, the same the ingest publishes)."""
    if channel == "telemetry":
        return [(("telemetry", r["device_id"], r["metric"]), stored_reading(r)) for r in rows]
    if channel == "alerts":
        return [(("alerts", r["severity"], r["device_id"]), stored_alert(r)) for r in rows]
    return [(("status", r["device_id"]), stored_status(r)) for r in rows]


def replay_key(levels: tuple[str, ...], event: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a message the same message whether it came from storage or live."""
    if levels[0] == "telemetry":
        return ("t", event.get("device_id"), event.get("metric"), event.get("ts"))
    if levels[0] == "alerts":
        return ("a", event.get("alert_id"), event.get("state"), event.get("updated_at"))
    return ("s", event.get("device_id"), event.get("new_status"), event.get("ts"))
