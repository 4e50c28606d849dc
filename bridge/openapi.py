"""The HTTP API as an OpenAPI 3.1 document, generated from the models the handlers use
(bridge/rest_models.py, bridge/status_models.py).

Served without authentication at ``GET /api/openapi.json`` (it says nothing a client could
not learn from docs/protocol.md) and committed as docs/openapi.json:

    python -m bridge.openapi > docs/openapi.json

A unit test keeps the committed file equal to this output. Every operation lists every status
its handler, or the server in front of it (bridge/server.py, bridge/http_stream.py), can
answer with; the schemathesis test holds the running front to it.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bridge import __version__
from bridge.rest_models import (
    AlertList,
    AlertsParams,
    DeviceDetail,
    DeviceId,
    DeviceList,
    ErrorBody,
    RetryErrorBody,
    TelemetryPage,
    TelemetryParams,
)
from bridge.status_models import Health, MetricsJson, O1Health, O1Metrics, O1Stats, Status

REF = "#/components/schemas/{model}"
JSON = "application/json"

# Bodies of the document's answers, named after their models in components/schemas.
_BODIES: list[type[BaseModel]] = [
    ErrorBody,
    RetryErrorBody,
    DeviceList,
    DeviceDetail,
    AlertList,
    TelemetryPage,
    Health,
    Status,
    MetricsJson,
    O1Health,
    O1Metrics,
    O1Stats,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(model)}}}


def _error(description: str, *, retry: bool = False) -> dict[str, Any]:
    body = _json(RetryErrorBody if retry else ErrorBody, description)
    if retry:
        body["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return body


# Error answers, shared through components/responses.
_RESPONSES: dict[str, dict[str, Any]] = {
    "BadRequest": _error("`bad_request`: a header the front reads appears twice"),
    "Unauthorized": _error(
        "`unauthorized` (no Bearer token), `invalid_token` or `token_expired`; also a token "
        "over the 8 KiB header line limit"
    ),
    "Forbidden": _error(
        "`forbidden`: the token lacks the scope or may not see a device it names; or, "
        "without authentication (BRIDGE_AUTH_REQUIRED=false), an origin not allowed"
    ),
    "NotFound": _error("`not_found`"),
    "MethodNotAllowed": {
        **_error("`method_not_allowed`: only GET is answered here"),
        "headers": {"Allow": {"schema": {"type": "string", "const": "GET"}}},
    },
    "UriTooLong": _error("`uri_too_long`: the request line is longer than 8 KiB"),
    "ValidationError": _error(
        "`validation_error`: a parameter is wrong or unknown; the message names it"
    ),
    "HeaderTooLarge": _error("`header_too_large`: a header line over 8 KiB, or too many headers"),
    "InternalError": _error("`internal_error`: a bug or an outage; never any detail"),
    "Unavailable": _error(
        "`unavailable`: no database, authentication not configured, or every query slot "
        "busy (then with `Retry-After`)"
    ),
    "Timeout": _error("`timeout`: no answer within 8 s; narrow the range or retry"),
}
_BY_STATUS = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "405": "MethodNotAllowed",
    "414": "UriTooLong",
    "422": "ValidationError",
    "431": "HeaderTooLarge",
    "500": "InternalError",
    "503": "Unavailable",
    "504": "Timeout",
}
# What the server answers for any request before a handler sees it.
_ANY = ("400", "414", "431", "500")
_REST = (*_ANY, "401", "403", "405", "503", "504")


def _errors(*codes: str) -> dict[str, Any]:
    return {c: {"$ref": f"#/components/responses/{_BY_STATUS[c]}"} for c in sorted(codes)}


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Query parameters from a parameter model's fields (their public names, constraints and
    descriptions; a query parameter is never null, so the null branch goes)."""
    schema = model.model_json_schema(mode="validation", ref_template=REF)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
        description = prop.pop("description", None)
        options = prop.pop("anyOf", None)
        if options is not None:
            (prop_type,) = [o for o in options if o != {"type": "null"}]
            prop = {**prop_type, **prop}
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if description:
            param["description"] = description
        if name not in required:  # `?state=` is the same as no `state` (parse_qs drops it)
            param["allowEmptyValue"] = True
        if prop.get("type") == "array":
            param.update(style="form", explode=True)
        param["schema"] = prop
        out.append(param)
    return out


def _get(
    summary: str,
    responses: dict[str, Any],
    *,
    tags: list[str],
    secured: bool = False,
    parameters: list[dict[str, Any]] | None = None,
    operation_id: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": operation_id, "tags": tags}
    if parameters:
        op["parameters"] = parameters
    op["responses"] = dict(sorted(responses.items()))
    op["security"] = [{"bearerAuth": []}] if secured else []
    return {"get": op}


def _paths() -> dict[str, Any]:
    path_param = {
        "name": "device_id",
        "in": "path",
        "required": True,
        "schema": TypeAdapter(DeviceId).json_schema(),
    }
    csv = {
        "schema": {"type": "string"},
        "example": "device_id,metric,ts,value\nd1,temp,2026-11-21T10:00:00.000Z,21.5\n",
    }
    telemetry_ok = {
        "description": (
            "one page (JSON), or with `format=csv` every point as CSV, streamed (chunked) as "
            "an attachment `telemetry.csv`; an empty filled bucket's value is empty"
        ),
        "content": {JSON: {"schema": _ref(TelemetryPage)}, "text/csv": csv},
    }
    export_refused = _error(
        "`rate_limit_exceeded`: the token's subject runs as many CSV exports as it may",
        retry=True,
    )
    text = {"schema": {"type": "string"}}
    return {
        "/api/v1/devices": _get(
            "Devices the token may see, with status and last_seen",
            {"200": _json(DeviceList, "the devices, by id"), **_errors(*_REST)},
            tags=["rest"],
            secured=True,
            operation_id="listDevices",
        ),
        "/api/v1/devices/{device_id}": {
            "parameters": [path_param],
            **_get(
                "One device and the latest value of each of its metrics",
                {"200": _json(DeviceDetail, "the device"), **_errors(*_REST, "404")},
                tags=["rest"],
                secured=True,
                operation_id="getDevice",
            ),
        },
        "/api/v1/alerts": _get(
            "Stored alerts, newest first (at most 1,000)",
            {"200": _json(AlertList, "the alerts"), **_errors(*_REST, "422")},
            tags=["rest"],
            secured=True,
            parameters=_parameters(AlertsParams),
            operation_id="listAlerts",
        ),
        "/api/v1/telemetry": _get(
            "Stored readings or bucket aggregates of some devices",
            {
                "200": telemetry_ok,
                **_errors(*_REST, "422"),
                "429": export_refused,
                "503": {
                    "description": (
                        "`unavailable`: see components/responses/Unavailable; a CSV export "
                        "refused because the server runs its maximum of exports carries "
                        "`retry_after`"
                    ),
                    "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                    "content": {
                        JSON: {"schema": {"anyOf": [_ref(ErrorBody), _ref(RetryErrorBody)]}}
                    },
                },
            },
            tags=["rest"],
            secured=True,
            parameters=_parameters(TelemetryParams),
            operation_id="queryTelemetry",
        ),
        "/health": _get(
            "Broker and database links",
            {
                "200": _json(Health, "healthy or degraded"),
                "503": _json(Health, "unhealthy: neither link is up"),
                **_errors(*_ANY),
            },
            tags=["operations"],
            operation_id="health",
        ),
        "/status": _get(
            "Version, uptime and features",
            {"200": _json(Status, "the front"), **_errors(*_ANY)},
            tags=["operations"],
            operation_id="status",
        ),
        "/metrics": _get(
            "Counters: JSON, or Prometheus text when `Accept` asks for text/plain or OpenMetrics",
            {
                "200": {
                    "description": "the front's counters",
                    "content": {
                        JSON: {"schema": _ref(MetricsJson)},
                        "text/plain": text,
                        "application/openmetrics-text": text,
                    },
                },
                **_errors(*_ANY),
            },
            tags=["operations"],
            operation_id="metrics",
        ),
        "/api/websocket/health": _get(
            "Health in the o1 seed's shape",
            {
                "200": _json(O1Health, "the broker link is up"),
                "503": _json(O1Health, "the broker link is down"),
                **_errors(*_ANY),
            },
            tags=["o1"],
            operation_id="o1Health",
        ),
        "/api/websocket/metrics": _get(
            "Metrics in the o1 seed's shape",
            {"200": _json(O1Metrics, "connections, messages, process"), **_errors(*_ANY)},
            tags=["o1"],
            operation_id="o1Metrics",
        ),
        "/api/websocket/stats": _get(
            "Statistics in the o1 seed's shape: counts only",
            {"200": _json(O1Stats, "the counts"), **_errors(*_ANY)},
            tags=["o1"],
            operation_id="o1Stats",
        ),
        "/api/openapi.json": _get(
            "This document",
            {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                **_errors(*_ANY, "405"),
            },
            tags=["operations"],
            operation_id="openapi",
        ),
    }


def _schemas() -> dict[str, Any]:
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "serialization") for m in _BODIES]
    _, top = models_json_schema(modes, ref_template=REF)
    return dict(sorted(top["$defs"].items()))


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once per process; treat it as read-only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telemetry-bridge HTTP API",
            "version": __version__,
            "description": (
                "The plain-HTTP side of the front (same port as the WebSocket): REST with "
                "Bearer JWT, health, status and metrics. Errors are "
                '`{"error": code, "message": text}`. Without authentication '
                "(BRIDGE_AUTH_REQUIRED=false) the REST endpoints also answer requests without "
                "a token from the bridge's own pages and listed origins. The wire contract, "
                "WebSocket included, is docs/protocol.md."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "rest", "description": "stored data; Bearer JWT with the matching scope"},
            {"name": "operations", "description": "no authentication"},
            {"name": "o1", "description": "the o1 seed's endpoints (protocol.md 8.4)"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": _RESPONSES,
            "headers": {
                "RetryAfter": {
                    "description": "whole seconds to wait, at least 1",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "scopes: `devices:read`, `alerts:read`, `telemetry:read` (or `admin`); "
                        "a `devices` claim limits the devices"
                    ),
                }
            },
        },
    }


def render() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
