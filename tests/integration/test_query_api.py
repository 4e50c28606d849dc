"""GET /api/v1/telemetry (JSON and streamed CSV) and the WebSocket `query` message, through
the real ingest and front."""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
import pytest

from tests.helpers import wait_until
from tests.integration.frontkit import Stack, recv, recv_type
from tests.integration.test_rest import get

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
N = 150  # readings per metric, 1 s apart: 2.5 minutes


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


async def publish_history(stack: Stack, database_url: str) -> None:
    for i in range(N):
        body = {"ts": ms(T0 + timedelta(seconds=i)), "values": {"temp": i * 1.5, "hum": 100 - i}}
        stack.peer.publish(stack.topics.device_telemetry("q-1"), orjson.dumps(body))
    db = await asyncpg.connect(database_url)
    try:

        async def stored() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM readings")) == 2 * N

        await wait_until(stored, timeout=15)
    finally:
        await db.close()


def url(stack: Stack, **params: Any) -> str:
    return "/api/v1/telemetry?" + urlencode(params, doseq=True)


SPAN = {"from": T0.isoformat(), "to": (T0 + timedelta(minutes=5)).isoformat()}


def expected_bucket(values: list[float], agg: str) -> float:
    if agg == "avg":
        return statistics.fmean(values)
    if agg == "count":
        return len(values)
    if agg in ("first", "last"):
        return values[0] if agg == "first" else values[-1]
    if agg == "sum":
        return sum(values)
    return min(values) if agg == "min" else max(values)


async def test_http_json_raw_buckets_paging_and_errors(stack: Stack, database_url: str) -> None:
    await publish_history(stack, database_url)
    token = stack.token(scope="telemetry:read", devices=["q-*"])

    status, body = await get(stack, url(stack, device_id="q-1", metric="temp", **SPAN), token)
    assert status == 200 and body["truncated"] is False and body["count"] == N
    (series,) = body["series"]
    assert series["device_id"] == "q-1" and series["metric"] == "temp"
    assert series["points"][0] == ["2026-11-21T10:00:00.000Z", 0.0]
    assert series["points"][-1][1] == (N - 1) * 1.5

    # every aggregation over 1-minute buckets, checked against the readings themselves
    temps = [i * 1.5 for i in range(N)]
    by_minute = [temps[0:60], temps[60:120], temps[120:N]]
    for agg in ("avg", "min", "max", "sum", "count", "first", "last"):
        status, body = await get(
            stack, url(stack, device_id="q-1", metric="temp", bucket="1m", agg=agg, **SPAN), token
        )
        assert status == 200, body
        points = body["series"][0]["points"]
        assert [p[0] for p in points] == [
            "2026-11-21T10:00:00.000Z",
            "2026-11-21T10:01:00.000Z",
            "2026-11-21T10:02:00.000Z",
        ]
        assert [p[1] for p in points] == pytest.approx(
            [expected_bucket(v, agg) for v in by_minute]
        ), agg

    # gap filling over the five minutes asked for
    status, body = await get(
        stack,
        url(stack, device_id="q-1", metric="temp", bucket="1m", agg="count", fill="zero", **SPAN),
        token,
    )
    assert [p[1] for p in body["series"][0]["points"]] == [60, 60, 30, 0, 0]

    # both metrics, paged 100 at a time: every reading exactly once, in order
    seen: list[tuple[str, str]] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"device_id": "q-1", "limit": 100, **SPAN}
        if cursor:
            params["cursor"] = cursor
        status, body = await get(stack, url(stack, **params), token)
        assert status == 200
        seen += [(s["metric"], p[0]) for s in body["series"] for p in s["points"]]
        cursor = body["next_cursor"]
        assert body["truncated"] is (cursor is not None)
        if cursor is None:
            break
    assert len(seen) == 2 * N and len(set(seen)) == 2 * N

    # relative times: nothing was stored in the last hour
    status, body = await get(stack, url(stack, device_id="q-1", **{"from": "-1h"}), token)
    assert status == 200 and body["count"] == 0

    bad = {
        "agg=median&bucket=1m": "agg",
        "agg=avg": "agg needs a bucket",
        "from=2026-11-21T11:00:00Z&to=2026-11-21T10:00:00Z": "from must be before to",
        "bucket=1s&from=-2d": "bucket too small",
        "bucket=0s": "bucket",
        "bucket=2d": "bucket",
        "bucket=fast": "bucket",
        "limit=0": "limit",
        "limit=many": "limit",
        "cursor=garbage": "cursor",
        "fill=spline&bucket=1m": "fill",
        "format=xml": "format",
        "from=yesterday": "from",
        "metric=a/b": "metric",
        "colour=red": "unknown parameter",
    }
    for query, words in bad.items():
        status, err = await get(stack, f"/api/v1/telemetry?device_id=q-1&{query}", token)
        assert status == 422 and err["error"] == "validation_error", query
        assert words in err["message"], (query, err)
    for query in ("metric=temp", "device_id=q%2B1", "device_id=q-1%2F%23"):
        status, err = await get(stack, f"/api/v1/telemetry?{query}", token)
        assert status == 422, query

    assert (await get(stack, url(stack, device_id="q-1"), None))[0] == 401
    assert (await get(stack, url(stack, device_id="q-1"), "not-a-jwt"))[0] == 401
    no_scope = stack.token(scope="alerts:read")
    assert (await get(stack, url(stack, device_id="q-1"), no_scope))[0] == 403
    other = stack.token(scope="telemetry:read", devices=["plant-*"])
    status, err = await get(stack, url(stack, device_id="q-1"), other)
    assert status == 403 and err["error"] == "forbidden"


def fetch(stack: Stack, path: str, token: str) -> tuple[int, str, bytes]:
    """A real HTTP client (urllib decodes the chunked CSV stream)."""
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 of the test stack
        stack.url.replace("ws://", "http://") + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def test_csv_export_streams_every_row(stack: Stack, database_url: str) -> None:
    await publish_history(stack, database_url)
    token = stack.token(scope="telemetry:read")
    status, ctype, body = await asyncio.to_thread(
        fetch, stack, url(stack, device_id="q-1", format="csv", **SPAN), token
    )
    assert status == 200 and ctype.startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["device_id", "metric", "ts", "value"]
    assert len(rows) == 1 + 2 * N
    assert rows[1] == ["q-1", "hum", "2026-11-21T10:00:00.000Z", "100.0"]
    _, json_body = await get(stack, url(stack, device_id="q-1", limit=10_000, **SPAN), token)
    from_json = [
        [s["device_id"], s["metric"], p[0], repr(float(p[1]))]
        for s in json_body["series"]
        for p in s["points"]
    ]
    assert rows[1:] == from_json

    # buckets in CSV, and a bad CSV request still gets a JSON 422 (never a broken stream)
    status, _, body = await asyncio.to_thread(
        fetch,
        stack,
        url(stack, device_id="q-1", format="csv", bucket="1m", agg="max", metric="temp", **SPAN),
        token,
    )
    assert status == 200 and body.decode().splitlines()[1:] == [
        "q-1,temp,2026-11-21T10:00:00.000Z,88.5",
        "q-1,temp,2026-11-21T10:01:00.000Z,178.5",
        "q-1,temp,2026-11-21T10:02:00.000Z,223.5",
    ]
    status, ctype, body = await asyncio.to_thread(
        fetch, stack, url(stack, device_id="q-1", format="csv", agg="mode", bucket="1m"), token
    )
    assert status == 422 and "json" in ctype and orjson.loads(body)["error"] == "validation_error"


async def test_websocket_query(stack: Stack, database_url: str) -> None:
    await publish_history(stack, database_url)
    ws = await stack.client(stack.token(scope="telemetry:read", devices=["q-1"]))
    try:
        await recv(ws)
        await ws.send(
            orjson.dumps(
                {
                    "type": "query",
                    "id": 7,
                    "device_id": "q-1",
                    "metrics": ["temp"],
                    "bucket": "1m",
                    "agg": "max",
                    **SPAN,
                }
            ).decode()
        )
        result = await recv_type(ws, "query_result")
        assert result["id"] == 7 and result["truncated"] is False
        assert [p[1] for p in result["series"][0]["points"]] == [88.5, 178.5, 223.5]
        for bad, code in (
            ({"device_id": "q-1", "agg": "median", "bucket": "1m"}, 422),
            ({"device_id": "q-1", "from": "2026-11-22", "to": "2026-11-21"}, 422),
            ({"device_id": "q-1", "format": "csv"}, 422),
            ({"device_id": "q-2"}, 403),
            ({"device_id": 5}, 422),
        ):
            await ws.send(orjson.dumps({"type": "query", "id": "b", **bad}).decode())
            err = await recv_type(ws, "error")
            assert err["code"] == code and err["id"] == "b", (bad, err)
    finally:
        await ws.close()
