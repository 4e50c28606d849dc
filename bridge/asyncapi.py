"""The AsyncAPI 3.0.0 document of the wire contract, generated from ``bridge/contract``.

    python -m bridge.asyncapi > docs/asyncapi.json

Pure: the catalog and its models in, a JSON-ready dict out. Operations are the bridge's
side: it ``receive``s what devices publish and clients send, and ``send``s its stream, its
commands and its WebSocket frames. docs/protocol.md stays the prose; tests/contract checks
that the committed file is what this generates, that it is well formed, that real traffic
matches it and that the prose names the same message types.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from bridge import __version__
from bridge.contract.catalog import (
    MQTT_CHANNELS,
    WS_DIALECTS,
    Parameter,
    WsDialect,
    model_type,
)

SCHEMA_REF = "#/components/schemas/{model}"


def _summary(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


class _Schemas(GenerateJsonSchema):
    """pydantic's schemas without a title per field (the field's name says it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _closed_maps(node: Any) -> None:
    """A dict with constrained keys comes out as ``patternProperties``; a key matching no
    pattern is refused by the model, so say so (``additionalProperties: false``)."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _closed_maps(value)
    elif isinstance(node, list):
        for value in node:
            _closed_maps(value)


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template=SCHEMA_REF, schema_generator=_Schemas
    )
    defs = top.get("$defs", {})
    _closed_maps(defs)
    return dict(sorted(defs.items()))


def _parameters(params: dict[str, Parameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in params.items():
        # AsyncAPI 3 parameters are strings described by enum/description, not full schemas;
        # the pattern goes into the description (and the payloads carry it as a schema).
        text = p.description + (f"; pattern {p.pattern}" if p.pattern else "")
        out[name] = {"description": text, **({"enum": list(p.enum)} if p.enum else {})}
    return out


def _message(model: type[BaseModel], title: str) -> dict[str, Any]:
    return {
        "name": model.__name__,
        "title": title,
        "summary": _summary(model) or title,
        "contentType": "application/json",
        "payload": {"$ref": SCHEMA_REF.format(model=model.__name__)},
    }


def _ws_channel_key(dialect: WsDialect) -> str:
    return f"ws_{dialect.key}"


def document() -> dict[str, Any]:
    """The whole AsyncAPI document."""
    models: list[type[BaseModel]] = []
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def use(model: type[BaseModel], title: str) -> str:
        if model.__name__ not in messages:
            models.append(model)
            messages[model.__name__] = _message(model, title)
        return model.__name__

    for ch in MQTT_CHANNELS:
        name = use(ch.model, ch.summary)
        channels[ch.key] = {
            "address": ch.address,
            "title": ch.summary,
            "servers": [{"$ref": "#/servers/mqtt"}],
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            **({"parameters": _parameters(ch.parameters)} if ch.parameters else {}),
        }
        operations[f"{ch.key}.{ch.action}"] = {
            "action": ch.action,
            "channel": {"$ref": f"#/channels/{ch.key}"},
            "summary": ch.summary,
            "messages": [{"$ref": f"#/channels/{ch.key}/messages/{name}"}],
            "bindings": {"mqtt": {"qos": ch.qos, "retain": ch.retain, "bindingVersion": "0.2.0"}},
        }

    for d in WS_DIALECTS:
        key = _ws_channel_key(d)
        refs: dict[str, Any] = {}
        for model in (*d.receives, *d.sends):
            title = f"{'client' if model in d.receives else 'server'} {model_type(model)}"
            name = use(model, title)
            refs[name] = {"$ref": f"#/components/messages/{name}"}
        channels[key] = {
            "address": d.address,
            "title": d.title,
            "description": d.description,
            "servers": [{"$ref": "#/servers/ws"}],
            "messages": refs,
            **({"parameters": _parameters(d.parameters)} if d.parameters else {}),
            "bindings": {
                "ws": {
                    "method": "GET",
                    "query": {
                        "type": "object",
                        "properties": {"token": {"type": "string", "description": "a JWT"}},
                    },
                    "bindingVersion": "0.1.0",
                }
            },
        }
        for action, group in (("receive", d.receives), ("send", d.sends)):
            operations[f"{key}.{action}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": ("what the client sends" if action == "receive" else "what it gets")
                + f" on {d.address}",
                "messages": [{"$ref": f"#/channels/{key}/messages/{m.__name__}"} for m in group],
            }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "telemetry-bridge wire contract",
            "version": __version__,
            "description": (
                "Devices publish to Mosquitto; the bridge stores readings exactly once, "
                "republishes them on its validated stream and serves WebSocket dashboards in "
                "five dialects. The prose is docs/protocol.md; this document is generated "
                "from bridge/contract (python -m bridge.asyncapi). Every MQTT topic may carry "
                "a deployment prefix (BRIDGE_MQTT_TOPIC_PREFIX) before its first level."
            ),
        },
        "servers": {
            "mqtt": {
                "host": "localhost:1883",
                "protocol": "mqtt",
                "protocolVersion": "5.0",
                "description": "Mosquitto; MQTT 3.1.1 also works (?protocol=3.1.1)",
            },
            "ws": {
                "host": "localhost:8765",
                "protocol": "ws",
                "description": "The front: WebSocket and HTTP on one port (wss behind TLS)",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearer"},
                    {"$ref": "#/components/securitySchemes/queryToken"},
                ],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": _schemas(models),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Authorization: Bearer on the handshake (or an auth "
                    "message after it)",
                },
                "queryToken": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "?token=<jwt>, for browsers (never logged)",
                },
            },
        },
    }


def render() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
