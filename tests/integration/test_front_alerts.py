"""Rules managed over the WebSocket (admin), alerts delivered live and acknowledged."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.integration.frontkit import Stack, recv, recv_type

pytestmark = pytest.mark.integration


async def send(ws: Any, msg: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(msg).decode())


async def test_rule_alert_ack_round_trip(stack: Stack) -> None:
    admin = await stack.client(stack.token(scope="admin", sub="root"))
    viewer = await stack.client(stack.token(scope="alerts:read alerts:write", sub="ops"))
    reader = await stack.client(stack.token(scope="alerts:read telemetry:read", sub="ro"))
    try:
        for ws in (admin, viewer, reader):
            await recv(ws)
        await send(reader, {"type": "create_rule", "id": 1, "rule": {"rule_id": "x"}})
        assert (await recv(reader))["code"] == 403
        rule = {
            "rule_id": "hot",
            "metric": "temperature",
            "condition": "gt",
            "threshold": 50,
            "clear_threshold": 45,
            "severity": "high",
            "devices": ["ws-*"],
        }
        await send(admin, {"type": "create_rule", "id": 2, "rule": rule})
        created = await recv(admin)
        assert created["type"] == "rule_created" and created["rule"]["severity"] == "high"
        await send(admin, {"type": "create_rule", "rule": rule})
        assert (await recv(admin))["code"] == 409
        await send(
            admin,
            {"type": "create_rule", "rule": {**rule, "rule_id": "r2", "condition": "between"}},
        )
        assert (await recv(admin))["code"] == 422
        await send(admin, {"type": "list_rules"})
        listed = await recv(admin)
        assert listed["type"] == "rules_list" and listed["count"] == 1

        await send(
            viewer, {"type": "subscribe", "channel": "alerts", "filters": {"severity": ["high"]}}
        )
        sub = await recv(viewer)
        assert sub["mqtt_topics"] == [stack.topics.alerts_filter("high", None)]
        # the ingest reloads rules every 0.5 s in this stack; keep crossing until it fires
        alert = None
        for _ in range(40):
            stack.reading("ws-1", temperature=60.0)
            try:
                alert = await recv_type(viewer, "alert", timeout=0.5)
                break
            except TimeoutError:
                stack.reading("ws-1", temperature=40.0)
        assert alert is not None, "no alert raised"
        assert (
            alert["device_id"] == "ws-1"
            and alert["severity"] == "high"
            and alert["state"] == "active"
        )
        assert alert["metadata"]["threshold_value"] == 50.0

        await send(reader, {"type": "ack_alert", "alert_id": alert["alert_id"]})
        assert (await recv(reader))["code"] == 403  # alerts:write missing
        await send(viewer, {"type": "ack_alert", "id": "a1", "alert_id": "al_nope"})
        assert (await recv(viewer))["code"] == 404
        await send(viewer, {"type": "ack_alert", "id": "a2", "alert_id": alert["alert_id"]})
        acked = await recv_type(viewer, "alert_acknowledged")
        assert acked["id"] == "a2" and acked["alert"]["acknowledged_by"] == "ops"
        update = await recv_type(viewer, "alert")
        assert update["state"] == "acknowledged" and update["event"] == "acknowledged"
        await send(viewer, {"type": "ack_alert", "alert_id": alert["alert_id"]})
        assert (await recv(viewer))["code"] == 409  # already acknowledged

        stack.reading("ws-1", temperature=40.0)
        resolved = await recv_type(viewer, "alert", timeout=5)
        assert resolved["state"] == "resolved" and resolved["event"] == "resolved"
        await send(admin, {"type": "delete_rule", "rule_id": "hot"})
        assert (await recv(admin))["type"] == "rule_deleted"
    finally:
        for ws in (admin, viewer, reader):
            await ws.close()
