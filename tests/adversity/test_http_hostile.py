"""Hostile HTTP clients against a real front, PostgreSQL and Mosquitto: stalled CSV exports,
extreme and oversized query parameters, foreign origins in anonymous mode, secrets in DEBUG
logs, and what unauthenticated endpoints reveal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.adversity.httpkit import (
    bearer,
    http,
    peek_head,
    raw_http,
    read_rest,
    stalled_request,
)
from tests.helpers import wait_until
from tests.integration.frontkit import recv, recv_type
from tests.stack import Stack, front_fixture

pytestmark = pytest.mark.integration

front = pytest.fixture(front_fixture)

EXPORT_ROWS = 100_000  # ~4 MB of CSV: far more than the socket buffers of a stalled client
EXPORT = "/api/v1/telemetry?" + urlencode(
    {"device_id": "exp-1", "metric": "temp", "from": "-3h", "format": "csv"}
)


async def seed_export_rows(database_url: str, rows: int = EXPORT_ROWS) -> None:
    db = await asyncpg.connect(database_url)
    try:
        await db.execute(
            "INSERT INTO devices (device_id, status, last_seen) VALUES ('exp-1', 'online', now())"
        )
        await db.execute(
            "INSERT INTO readings (device_id, metric, ts, value, unit, received_at) "
            "SELECT 'exp-1', 'temp', now() - interval '1 hour' + g * interval '1 ms', g, NULL, "
            "now() FROM generate_series(1, $1) g",
            rows,
        )
    finally:
        await db.close()


async def exports_in_flight(database_url: str) -> int:
    """Front connections holding an export's transaction open (its cursor waits on the
    client): what a stalled export costs the pool."""
    db = await asyncpg.connect(database_url)
    try:
        return int(
            await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'telemetry-bridge-front' AND state = 'idle in transaction'"
            )
        )
    finally:
        await db.close()


# -- 1. stalled CSV exports -----------------------------------------------------------------


@pytest.mark.parametrize("front", [{"export_write_timeout_s": 3}], indirect=True)
async def test_stalled_exports_neither_starve_the_pool_nor_live_forever(
    front: Stack, database_url: str
) -> None:
    await seed_export_rows(database_url)
    stack, port = front, front.port
    # eight clients (the pool's size), each its own subject, open an export and never read
    socks = [
        await asyncio.to_thread(
            stalled_request, port, EXPORT, bearer(stack.token(scope="admin", sub=f"u{i}"))
        )
        for i in range(8)
    ]
    started = time.monotonic()
    try:
        heads = [await asyncio.to_thread(peek_head, s) for s in socks]
        statuses = sorted(int(h.split(b" ")[1]) for h in heads)
        assert statuses == [200, 200] + [503] * 6, heads  # BRIDGE_EXPORT_MAX_CONCURRENT=2
        refused = next(h for h in heads if b" 503 " in h.split(b"\r\n")[0])
        assert b"Retry-After: 10" in refused

        # interactive requests and the health check answer at once meanwhile
        devices = await http(port, "/api/v1/devices", bearer(stack.token(scope="admin")), 3)
        assert devices.status == 200 and devices.json()["devices"][0]["device_id"] == "exp-1"
        health = await http(port, "/health", timeout=3)
        assert health.status == 200 and health.json()["checks"]["database"] == "ok"
        async with await stack.client(stack.token(scope="admin")) as ws:
            await recv(ws)
            await ws.send(
                '{"type": "subscribe", "channel": "devices", "device_id": "exp-1", '
                '"snapshot": true}'
            )
            assert (await recv(ws, 3))["type"] == "subscribed"
            await recv_type(ws, "snapshot_complete", 3)

        # the two stalled exports hold a connection each (the 200 head goes out before the
        # query runs), until they are aborted after the write timeout
        async def stalled(count: int) -> bool:
            return await exports_in_flight(database_url) == count

        await wait_until(lambda: stalled(2), timeout=3, interval=0.1)
        await wait_until(lambda: stalled(0), timeout=10, interval=0.2)
        assert time.monotonic() - started < 3 + 5
        for sock, head in zip(socks, heads, strict=True):
            if b" 200 " in head.split(b"\r\n")[0]:
                rest = await asyncio.to_thread(read_rest, sock)
                assert not rest.endswith(b"0\r\n\r\n")  # cut short, not completed
    finally:
        for sock in socks:
            sock.close()

    # a client that reads gets the whole export now that the slots are free again
    done = await asyncio.to_thread(_read_export, port, stack.token(scope="admin"))
    assert done.count(b"\n") == EXPORT_ROWS + 1


def _trickle(sock: socket.socket, per_read: int, pause_s: float, give_up_s: float) -> bytes:
    """Read ``per_read`` bytes every ``pause_s``: always just in time for the next write,
    never fast. Until the server ends the response or ``give_up_s`` have passed."""
    sock.settimeout(give_up_s)
    out = bytearray()
    end = time.monotonic() + give_up_s
    try:
        while time.monotonic() < end and (chunk := sock.recv(per_read)):
            out += chunk
            time.sleep(pause_s)
    except (ConnectionResetError, TimeoutError):
        pass
    return bytes(out)


@pytest.mark.parametrize("front", [{"export_max_duration_s": 3}], indirect=True)
async def test_a_trickling_export_client_is_cut_off_at_the_export_time_limit(
    front: Stack, database_url: str
) -> None:
    """8 KiB every 0.1 s never trips the write timeout, and would keep a 16 MB export (more
    than the kernel buffers on both ends), its database connection and its subject's export
    slot for over three minutes."""
    await seed_export_rows(database_url, rows=4 * EXPORT_ROWS)
    token = front.token(scope="admin")
    sock = await asyncio.to_thread(stalled_request, front.port, EXPORT, bearer(token))
    trickling = asyncio.create_task(asyncio.to_thread(_trickle, sock, 8192, 0.1, 15))
    try:
        # the same subject's next export: refused (429) while the first holds the subject's
        # slot; answered in full once the first was cut off at its 3 s
        await asyncio.sleep(3 + 2)
        assert not trickling.done(), "the trickling client stopped by itself"
        recent = EXPORT.replace("from=-3h", "from=-10m")  # none: the rows are an hour old
        done = await asyncio.to_thread(_read_export, front.port, token, recent)
        assert done.count(b"\n") == 1  # the header: a 200, not the 429 of a held slot
    finally:
        body = await trickling  # what the kernel had buffered still reaches it, then the end
        sock.close()
    assert b" 200 " in body.split(b"\r\n", 1)[0]
    assert not body.endswith(b"0\r\n\r\n"), "the trickled export ran to its end"


def _read_export(port: int, token: str, target: str = EXPORT) -> bytes:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{target}", headers=bearer(token))
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        assert resp.status == 200
        body: bytes = resp.read()
        return body


async def test_one_export_at_a_time_per_subject(front: Stack, database_url: str) -> None:
    await seed_export_rows(database_url)
    token = front.token(scope="telemetry:read")
    sock = await asyncio.to_thread(stalled_request, front.port, EXPORT, bearer(token))
    try:
        assert b" 200 " in await asyncio.to_thread(peek_head, sock)
        second = await http(front.port, EXPORT, bearer(token))
        assert second.status == 429 and second.headers["retry-after"] == "10"
        assert second.json()["error"] == "rate_limit_exceeded"
        assert "per token subject" in second.json()["message"]
        other = front.token(scope="telemetry:read", sub="bob")
        sock2 = await asyncio.to_thread(stalled_request, front.port, EXPORT, bearer(other))
        try:
            assert b" 200 " in await asyncio.to_thread(peek_head, sock2)
        finally:
            sock2.close()
    finally:
        sock.close()


async def test_health_does_not_need_a_free_pool_connection(front: Stack) -> None:
    pool = front.front.pool
    held = [await pool.acquire() for _ in range(front.settings.db_pool_size)]
    try:
        await asyncio.sleep(6.5)  # past the next run of the five-second database check
        started = time.monotonic()
        health = await http(front.port, "/health", timeout=3)
        assert time.monotonic() - started < 1
        assert health.status == 200 and health.json()["status"] == "healthy"
        assert health.json()["checks"] == {"mqtt": "ok", "database": "ok"}
    finally:
        for conn in held:
            await pool.release(conn)


async def test_database_probe_reports_an_unreachable_database() -> None:
    from bridge.dbprobe import DatabaseProbe

    probe = DatabaseProbe("postgresql://nobody@127.0.0.1:1/none", timeout_s=1)
    assert await probe.check() is False


# -- 2. extreme dates and oversized requests ----------------------------------------------

EXTREMES = [
    ({"to": "0001-01-01"}, "to"),
    ({"from": "-999999w"}, "from"),
    ({"to": "now+999999w"}, "to"),
    ({"to": "9999-12-31T23:59:59Z"}, "to"),
    ({"from": "0001-01-01T00:00:00+14:00"}, "from"),
    ({"to": "9" * 30}, "to"),
    ({"from": "1" * 5000}, "from"),
    ({"to": "²"}, "to"),
    ({"limit": "9" * 5000}, "limit"),
    ({"bucket": "999999w"}, "bucket"),
]


@pytest.mark.parametrize(("extra", "named"), EXTREMES)
async def test_extreme_query_parameters_are_422_over_rest(
    front: Stack, extra: dict[str, str], named: str
) -> None:
    token = front.token(scope="admin")
    for fmt in ("json", "csv"):
        target = "/api/v1/telemetry?" + urlencode({"device_id": "d1", "format": fmt, **extra})
        answer = await http(front.port, target, bearer(token))
        assert answer.status == 422, (fmt, answer)
        body = answer.json()
        assert body["error"] == "validation_error" and body["message"].startswith(f"{named}:")


async def test_oversized_requests_get_an_answer_not_a_dropped_connection(
    front: Stack,
) -> None:
    token = front.token(scope="admin")
    many = "&".join(f"x{i}=1" for i in range(250))  # past parse_qs's max_num_fields
    for target in (f"/api/v1/telemetry?device_id=d1&{many}", f"/api/v1/telemetry?{many}"):
        for fmt in ("json", "csv"):
            answer = await http(front.port, f"{target}&format={fmt}", bearer(token))
            assert answer.status == 422 and "too many" in answer.json()["message"], answer
    alerts = await http(front.port, f"/api/v1/alerts?{many}", bearer(token))
    assert alerts.status == 422 and alerts.json()["error"] == "validation_error"
    for bad in ("from=0001-01-01", "to=" + "9" * 5000, "from=-999999w"):
        alerts = await http(front.port, f"/api/v1/alerts?{bad}", bearer(token))
        assert alerts.status == 422 and alerts.json()["error"] == "validation_error", bad

    # past websockets' 8 KiB line limit: a JSON 414 / 431, never a silent close
    long_url = "/api/v1/telemetry?device_id=" + "d" * 9000
    too_long = await http(front.port, long_url, bearer(token))
    assert too_long.status == 414 and too_long.json()["error"] == "uri_too_long"
    too_long = await http(front.port, "/ws?x=" + "y" * 9000)
    assert too_long.status == 414
    header = await http(front.port, "/health", {"X-Padding": "p" * 9000})
    assert header.status == 431 and header.json()["error"] == "header_too_large"
    # a header that appears twice is a 400, not a failed handshake
    twice = b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b\r\n"
    twice += b"\r\n"
    assert (await raw_http(front.port, twice)).status == 400
    twice = twice.replace(b"devices", b"telemetry?device_id=d1&format=csv")
    assert (await raw_http(front.port, twice)).status == 400


async def test_extreme_query_parameters_are_422_over_websocket(front: Stack) -> None:
    async with await front.client(front.token(scope="admin")) as ws:
        await recv(ws)
        cases: list[tuple[dict[str, Any], str]] = [
            *EXTREMES,
            ({"to": 10**17}, "to"),
            ({"from": -(10**17)}, "from"),
            ({"to": 1e300}, "to"),
            ({"device_id": "d" * 60_000}, "device_id"),
        ]
        for extra, named in cases:
            await ws.send(orjson.dumps({"type": "query", "id": "q", "device_id": "d1", **extra}))
            reply = await recv_type(ws, "error")
            assert reply["code"] == 422 and reply["id"] == "q", (extra, reply)
            assert reply["message"].startswith(f"{named}:"), (extra, reply)


def test_extreme_query_parameters_are_a_clear_cli_error(database_url: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for option, value in (("--to", "0001-01-01"), ("--from", "-999999w"), ("--to", "9" * 5000)):
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "query", "--device", "d1", option, value],
            env={**base, "BRIDGE_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"telemetry-bridge: {option[2:]}:"), lines
        assert "Traceback" not in done.stderr


# -- 3. foreign origins when authentication is off ------------------------------------------

OPEN = {"auth_required": False}


async def _ws_status(url: str, origin: str | None, **kw: Any) -> int:
    try:
        ws = await connect(url, origin=Origin(origin) if origin else None, open_timeout=5, **kw)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


@pytest.mark.parametrize("front", [OPEN], indirect=True)
async def test_anonymous_mode_admits_only_the_bridges_own_origin(front: Stack) -> None:
    port, url = front.port, f"{front.url}/ws"
    expected = {
        None: 101,  # not a browser
        f"http://127.0.0.1:{port}": 101,  # the dashboard the bridge serves
        f"http://localhost:{port}": 101,  # the same, opened by another loopback name
        f"http://127.0.0.1:{port + 1}": 403,  # another local web app
        "https://evil.example": 403,
        "null": 403,  # sandboxed frames, file:// pages
    }
    for origin, status in expected.items():
        assert await _ws_status(url, origin) == status, origin
        headers = {"Origin": origin} if origin else {}
        devices = await http(port, "/api/v1/devices", headers)
        assert devices.status == (200 if status == 101 else 403), (origin, devices)
        export = await http(port, EXPORT, headers)
        assert export.status == (200 if status == 101 else 403), (origin, export)
    # a token is its own authority, whatever page sent it (and browsers do not send custom
    # headers cross-origin without a CORS preflight the bridge never grants)
    token = bearer(front.token(scope="devices:read"))
    evil = {"Origin": "https://evil.example"}
    assert (await http(port, "/api/v1/devices", {**evil, **token})).status == 200


@pytest.mark.parametrize(
    "front", [{**OPEN, "allowed_origins": "https://dash.example"}], indirect=True
)
async def test_anonymous_mode_also_admits_listed_origins(front: Stack) -> None:
    url = f"{front.url}/ws"
    assert await _ws_status(url, "https://dash.example") == 101
    assert await _ws_status(url, f"http://127.0.0.1:{front.port}") == 101
    assert await _ws_status(url, "https://evil.example") == 403
    listed = await http(front.port, "/api/v1/devices", {"Origin": "https://dash.example"})
    assert listed.status == 200


# -- 4. secrets in DEBUG logs ---------------------------------------------------------------


async def test_debug_logs_never_show_credentials(
    front: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = front.token()
    secrets = {
        "cookie": "cookie-secret-8f2a",
        "x-token": "x-token-secret-77c1",
        "x-api-key": "api-key-secret-51d0",
        "proxy": "proxy-secret-e93b",
        "set-cookie": "set-cookie-secret-0b4e",
        "bad-line": "bad-line-secret-c4a8",
        "bad-value": "bad-value-secret-6d1f",
    }
    headers = {
        "Cookie": f"sid={secrets['cookie']}",
        "X-Token": secrets["x-token"],
        "X-Api-Key": secrets["x-api-key"],
        "Proxy-Authorization": f"Basic {secrets['proxy']}",
        "Set-Cookie": f"s={secrets['set-cookie']}",
    }
    # `tok%65n` is read as `token`: the handshake succeeds with it
    ws = await connect(f"{front.url}/ws?tok%65n={token}", additional_headers=headers)
    assert (await recv(ws))["type"] == "connected"
    await ws.close()
    await http(front.port, f"/api/v1/devices?%74oken={token}", {**bearer(token), **headers})
    # malformed requests: websockets puts the request line / header value in its exception
    bad_line = f"GET /ws?token={secrets['bad-line']} HTTP/2.0\r\nHost: x\r\n\r\n".encode()
    bad_value = f"GET /ws HTTP/1.1\r\nHost: x\r\nCookie: a\x01{secrets['bad-value']}\r\n\r\n"
    for data in (bad_line, bad_value.encode()):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
    await asyncio.sleep(0.2)

    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "tok%65n=***" in logged and "Cookie: ***" in logged  # the lines are there, masked
    assert "no valid HTTP request" in logged
    for secret in [token, token.split(".")[1], *secrets.values()]:
        assert secret not in logged, secret


# -- 6. what unauthenticated endpoints reveal -----------------------------------------------


async def test_unauthenticated_endpoints_do_not_reveal_other_clients_devices(
    front: Stack,
) -> None:
    secret = "secret-dev-1"
    token = front.token(scope="admin", devices=[secret])
    async with await front.client(token) as ws:
        await recv(ws)
        for msg in (
            {"type": "subscribe", "channel": "telemetry", "device_id": secret},
            {"type": "subscribe", "channel": "devices", "device_id": secret},
            {"type": "subscribe-logs", "host": secret},
            {"type": "start_session", "device_id": secret},
        ):
            await ws.send(orjson.dumps(msg))
            reply = await recv(ws)
            assert reply["type"] in ("subscribed", "session_started"), reply
        for target, headers in (
            ("/health", {}),
            ("/status", {}),
            ("/metrics", {}),
            ("/metrics", {"Accept": "text/plain"}),
            ("/api/websocket/health", {}),
            ("/api/websocket/metrics", {}),
            ("/api/websocket/stats", {}),
            ("/api/websocket/subscriptions", {}),
            ("/api/v1/devices", {}),
            (f"/api/v1/devices/{secret}", {}),
            ("/", {}),
            ("/nothing-here", {}),
        ):
            answer = await http(front.port, target, headers)
            assert secret.encode() not in answer.body, (target, answer.body[:300])
        stats = (await http(front.port, "/api/websocket/stats")).json()
        assert stats["brokerSubscriptionCount"] >= 3


async def test_slow_queries_leave_the_pool_to_interactive_requests(
    front: Stack, database_url: str
) -> None:
    """Twelve queries that cannot finish (the readings table is locked) hold at most the
    query budget of the pool: device lists, health and new subscriptions still answer, and
    a query that waits too long for a slot gets 503 with Retry-After instead of hanging."""
    await seed_export_rows(database_url)
    stack, port = front, front.port
    token = stack.token(scope="admin")
    query = "/api/v1/telemetry?" + urlencode(
        {"device_id": "exp-1", "metric": "temp", "from": "-3h", "limit": 10}
    )
    locker = await asyncpg.connect(database_url)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
    slow = [asyncio.create_task(http(port, query, bearer(token), 30)) for _ in range(12)]
    try:
        await asyncio.sleep(1.0)  # every query has asked for its slot by now
        devices = await http(port, "/api/v1/devices", bearer(token), 3)
        assert devices.status == 200 and devices.json()["devices"][0]["device_id"] == "exp-1"
        async with await stack.client(token) as ws:
            await recv(ws)
            await ws.send('{"type": "subscribe", "channel": "devices", "snapshot": true}')
            assert (await recv(ws, 3))["type"] == "subscribed"
            await recv_type(ws, "snapshot_complete", 3)
        # queries beyond the budget give up waiting for a slot (503, Retry-After); those
        # holding one answer 504 at the HTTP deadline instead of a dropped connection
        answers = [await t for t in slow]
        statuses = sorted(a.status for a in answers)
        assert statuses == [503] * 8 + [504] * 4, statuses
        refused = next(a for a in answers if a.status == 503)
        assert refused.headers.get("retry-after") == "5"
        assert "queries" in refused.json()["message"]
    finally:
        await tx.rollback()
        await locker.close()
    after = await http(port, query, bearer(token), 5)
    assert after.status == 200 and after.json()["count"] == 10, after
