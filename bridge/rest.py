"""Read-only REST endpoints with Bearer JWT (PROTOCOL.md section 6): devices and alerts.

Same scope and ``devices`` rules as the WebSocket: ``devices:read`` for devices,
``alerts:read`` for alerts, and only devices the token may see. Parameters are validated and
answers built through the models of bridge/rest_models.py, which are also the published
schema (bridge/openapi.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import asyncpg
from pydantic import ValidationError

from bridge.auth import AuthError, JwtVerifier, Principal
from bridge.protocol import ClientError
from bridge.rest_models import (
    ALERT_PARAM_MESSAGES,
    Alert,
    AlertList,
    AlertsParams,
    DeviceDetail,
    DeviceList,
    DeviceSummary,
    LatestValue,
    validation_message,
)
from ingest import names
from storage.alerts import find_alerts
from storage.devices import device_latest, get_device, list_devices

MAX_ROWS = 1000


def authenticate(verifier: JwtVerifier | None, authorization: str | None, now: float) -> Principal:
    if verifier is None:
        raise ClientError(503, "unavailable", "authentication is not configured")
    if not authorization or not authorization.lower().startswith("bearer "):
        raise ClientError(401, "unauthorized", "send Authorization: Bearer <token>")
    try:
        return verifier.verify(authorization[7:].strip(), now=now)
    except AuthError as exc:
        raise ClientError(401, exc.error, exc.message) from None


def _query(raw: str) -> dict[str, str]:
    try:
        fields = parse_qs(raw, max_num_fields=20)
    except ValueError:
        raise ClientError(422, "validation_error", "too many query parameters") from None
    return {k: v[0] for k, v in fields.items()}


def query_params(raw: str) -> dict[str, Any]:
    """A query string; a repeated device_id or metric becomes a list (also accepted
    comma-separated)."""
    out: dict[str, Any] = {}
    try:
        fields = parse_qs(raw, max_num_fields=200)
    except ValueError:
        raise ClientError(422, "validation_error", "too many query parameters") from None
    for key, values in fields.items():
        out[key] = (
            values if key in ("device_id", "metric", "metrics") and len(values) > 1 else values[0]
        )
    return out


async def devices(
    pool: asyncpg.Pool, principal: Principal, device_id: str | None
) -> dict[str, Any]:
    if not principal.has("devices:read"):
        raise ClientError(403, "forbidden", "the token lacks the scope devices:read")
    if device_id is not None:
        if not names.is_device_id(device_id) or not principal.sees(device_id):
            raise ClientError(404, "not_found", "no such device")
        row = await get_device(pool, device_id)
        if row is None:
            raise ClientError(404, "not_found", "no such device")
        latest = await device_latest(pool, device_id)
        detail = DeviceDetail.model_validate(
            {
                **dict(row),
                "latest": {
                    r["metric"]: LatestValue(value=r["value"], unit=r["unit"], timestamp=r["ts"])
                    for r in latest
                },
            }
        )
        return detail.model_dump(mode="json")
    rows = await list_devices(pool, MAX_ROWS * 10)
    visible = [r for r in rows if principal.sees(r["device_id"])]
    shown = [DeviceSummary.model_validate(dict(r)) for r in visible[:MAX_ROWS]]
    body = DeviceList(devices=shown, count=len(shown), truncated=len(visible) > MAX_ROWS)
    return body.model_dump(mode="json")


def alerts_params(query: str) -> AlertsParams:
    """The alert filters of a query string; 422 with the words clients know."""
    try:
        return AlertsParams.model_validate(_query(query))
    except ValidationError as exc:
        message = validation_message(exc, ALERT_PARAM_MESSAGES)
        raise ClientError(422, "validation_error", message) from None


async def alerts(pool: asyncpg.Pool, principal: Principal, query: str) -> dict[str, Any]:
    if not principal.has("alerts:read"):
        raise ClientError(403, "forbidden", "the token lacks the scope alerts:read")
    params = alerts_params(query)
    rows = await find_alerts(
        pool,
        state=params.state,
        severity=params.severity,
        device_id=params.device_id,
        start=params.from_,
        end=params.to,
        limit=MAX_ROWS * 10,
    )
    visible = [r for r in rows if principal.sees(r["device_id"])][:MAX_ROWS]
    shown = [Alert.model_validate(dict(r)) for r in visible]
    return AlertList(alerts=shown, count=len(shown)).model_dump(mode="json")
