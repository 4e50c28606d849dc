"""REST regressions the OpenAPI contract work found (issue 17): each one a request that got
an answer other than the documented one."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from tests.helpers import wait_until
from tests.integration.frontkit import Stack
from tests.integration.test_rest import get

pytestmark = pytest.mark.integration


async def test_an_unknown_alert_filter_is_refused_not_ignored(stack: Stack) -> None:
    # `sevrity=critical` used to answer every alert, as if no filter had been given
    token = stack.token(scope="alerts:read")
    status, err = await get(stack, "/api/v1/alerts?sevrity=critical", token)
    assert status == 422 and err["error"] == "validation_error"
    assert err["message"] == "unknown parameter sevrity"
    status, err = await get(stack, "/api/v1/alerts?from_=-1h", token)  # the model's own name
    assert status == 422 and err["message"] == "unknown parameter from_"
    status, body = await get(stack, "/api/v1/alerts?severity=critical&state=", token)
    assert status == 200 and body == {"alerts": [], "count": 0}  # an empty value: not given


async def test_a_percent_encoded_device_id_names_the_same_device(
    stack: Stack, database_url: str
) -> None:
    # encodeURIComponent("pump:7") is "pump%3A7": it used to be a 404
    stack.reading("pump:7", temperature=20.0)
    db = await asyncpg.connect(database_url)
    try:

        async def stored() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM latest_values"))

        await wait_until(stored)
    finally:
        await db.close()
    token = stack.token(scope="devices:read")
    for path in ("/api/v1/devices/pump:7", "/api/v1/devices/pump%3A7", "/api/v1/devices/%70ump:7"):
        status, body = await get(stack, path, token)
        assert status == 200 and body["device_id"] == "pump:7", (path, body)
    for path in ("/api/v1/devices/pump%2F7", "/api/v1/devices/pump%007", "/api/v1/devices/%ZZ"):
        status, body = await get(stack, path, token)
        assert status == 404 and body["error"] == "not_found", (path, body)


async def test_rest_answers_only_get(stack: Stack) -> None:
    # websockets hands over any method: a POST, DELETE or HEAD used to be answered as a GET
    token = stack.token(scope="admin")
    paths = (
        "/api/v1/devices",
        "/api/v1/devices/d1",
        "/api/v1/alerts",
        "/api/v1/telemetry?device_id=d1",
        "/api/v1/telemetry?device_id=d1&format=csv",
        "/api/openapi.json",
        "/health",
        "/status",
        "/metrics",
        "/api/websocket/health",
        "/api/websocket/stats",
        "/",
    )
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD"):
        for path in paths:
            reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            data = await reader.read()
            writer.close()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 405 "), (method, path, head)
            assert b"\r\nAllow: GET\r\n" in head, (method, path, head)
            assert orjson.loads(body)["error"] == "method_not_allowed", (method, path)


async def test_the_openapi_document_is_served_without_a_token(stack: Stack) -> None:
    document = await stack.http_json("/api/openapi.json")
    assert document["openapi"] == "3.1.0" and "/api/v1/telemetry" in document["paths"]
    assert orjson.dumps(document)  # plain JSON
