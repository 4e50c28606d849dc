"""Read-only REST endpoints with Bearer JWT (PROTOCOL.md section 6): devices and alerts.

Same scope and ``devices`` rules as the WebSocket: ``devices:read`` for devices,
``alerts:read`` for alerts, and only devices the token may see.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import asyncpg

from bridge.auth import AuthError, JwtVerifier, Principal
from bridge.protocol import ClientError
from ingest import names
from ingest.wire import iso_ms
from storage.alerts import find_alerts
from storage.devices import device_latest, get_device, list_devices
from storage.query_spec import QueryError, parse_time

MAX_ROWS = 1000


def _iso(value: Any) -> Any:
    return iso_ms(value) if isinstance(value, datetime) else value


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


def _time(params: dict[str, str], key: str) -> datetime | None:
    """The telemetry query's time rules and bounds, so a year-1 or 5,000-digit time is a 422
    here too."""
    if key not in params:
        return None
    try:
        return parse_time(params[key], key, datetime.now(UTC))
    except QueryError as exc:
        raise ClientError(422, "validation_error", str(exc)) from None


async def devices(pool: asyncpg.Pool, principal: Principal, device_id: str | None) -> Any:
    if not principal.has("devices:read"):
        raise ClientError(403, "forbidden", "the token lacks the scope devices:read")
    if device_id is not None:
        if not names.is_device_id(device_id) or not principal.sees(device_id):
            raise ClientError(404, "not_found", "no such device")
        row = await get_device(pool, device_id)
        if row is None:
            raise ClientError(404, "not_found", "no such device")
        latest = await device_latest(pool, device_id)
        out = {k: _iso(v) for k, v in dict(row).items()}
        out["latest"] = {
            r["metric"]: {"value": r["value"], "unit": r["unit"], "timestamp": _iso(r["ts"])}
            for r in latest
        }
        return out
    rows = await list_devices(pool, MAX_ROWS * 10)
    visible = [
        {k: _iso(v) for k, v in dict(r).items()} for r in rows if principal.sees(r["device_id"])
    ]
    return {
        "devices": visible[:MAX_ROWS],
        "count": len(visible[:MAX_ROWS]),
        "truncated": len(visible) > MAX_ROWS,
    }


async def alerts(pool: asyncpg.Pool, principal: Principal, query: str) -> Any:
    if not principal.has("alerts:read"):
        raise ClientError(403, "forbidden", "the token lacks the scope alerts:read")
    params = _query(query)
    state, severity, device = params.get("state"), params.get("severity"), params.get("device_id")
    if state is not None and state not in ("active", "acknowledged", "resolved", "open"):
        raise ClientError(422, "validation_error", "state: active, acknowledged, resolved or open")
    if severity is not None and severity not in names.SEVERITIES:
        raise ClientError(
            422, "validation_error", f"severity: one of {', '.join(names.SEVERITIES)}"
        )
    if device is not None and not names.is_device_id(device):
        raise ClientError(422, "validation_error", "device_id: not a valid device id")
    start, end = _time(params, "from"), _time(params, "to")
    if start and end and start > end:
        raise ClientError(422, "validation_error", "from is after to")
    rows = await find_alerts(
        pool,
        state=state,
        severity=severity,
        device_id=device,
        start=start,
        end=end,
        limit=MAX_ROWS * 10,
    )
    visible = [
        {k: _iso(v) for k, v in dict(r).items()} for r in rows if principal.sees(r["device_id"])
    ][:MAX_ROWS]
    return {"alerts": visible, "count": len(visible)}
