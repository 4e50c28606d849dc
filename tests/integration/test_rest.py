"""REST: /api/v1/devices, /api/v1/devices/{id}, /api/v1/alerts with Bearer JWT."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest

from tests.helpers import wait_until
from tests.integration.frontkit import Stack

pytestmark = pytest.mark.integration


async def get(stack: Stack, path: str, token: str | None) -> tuple[int, Any]:
    host, port = stack.url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)


async def test_devices_and_alerts_endpoints(stack: Stack, database_url: str) -> None:
    for device in ("plant-a-1", "plant-b-1"):
        stack.reading(device, temperature=20.0)
    db = await asyncpg.connect(database_url)
    try:

        async def both() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM latest_values")) == 2

        await wait_until(both)
        await db.execute(
            "INSERT INTO alerts (alert_id, rule_id, device_id, metric, severity, title, message, "
            "state, created_at, updated_at) VALUES "
            "('al_1', 'r', 'plant-a-1', 'temperature', 'high', 't', 'm', 'active', now(), now()),"
            "('al_2', 'r', 'plant-b-1', 'temperature', 'info', 't', 'm', 'resolved', now(), now())"
        )
    finally:
        await db.close()
    token = stack.token(scope="devices:read alerts:read", devices=["plant-a-*"])

    status, body = await get(stack, "/api/v1/devices", token)
    assert status == 200 and [d["device_id"] for d in body["devices"]] == ["plant-a-1"]
    status, one = await get(stack, "/api/v1/devices/plant-a-1", token)
    assert status == 200 and one["status"] == "online"
    assert one["latest"]["temperature"]["value"] == 20.0
    assert (await get(stack, "/api/v1/devices/plant-b-1", token))[0] == 404  # outside the claim
    assert (await get(stack, "/api/v1/devices/nope", token))[0] == 404

    status, alerts = await get(stack, "/api/v1/alerts?state=open", token)
    assert status == 200 and [a["alert_id"] for a in alerts["alerts"]] == ["al_1"]
    admin = stack.token(scope="admin")
    _, all_alerts = await get(stack, "/api/v1/alerts?severity=info", admin)
    assert [a["alert_id"] for a in all_alerts["alerts"]] == ["al_2"]

    assert (await get(stack, "/api/v1/devices", None))[0] == 401
    assert (await get(stack, "/api/v1/devices", "garbage"))[0] == 401
    assert (await get(stack, "/api/v1/alerts", stack.token(scope="devices:read")))[0] == 403
    for bad in (
        "state=maybe",
        "severity=urgent",
        "device_id=a/b",
        "from=yesterday",
        "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    ):
        status, err = await get(stack, f"/api/v1/alerts?{bad}", admin)
        assert status == 422 and err["error"] == "validation_error", bad
