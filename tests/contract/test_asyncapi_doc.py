"""docs/asyncapi.json: what ``python -m bridge.asyncapi`` generates, and well formed.

No AsyncAPI 3.0 JSON Schema ships in a Python package, and tests download nothing, so the
document's structure is checked here: the required fields of AsyncAPI 3.0.0, every ``$ref``
resolves, every operation names an existing channel and only that channel's messages, every
channel's address parameters are declared, and every payload is a valid Draft 2020-12 schema.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bridge.asyncapi import render
from bridge.contract.catalog import MQTT_CHANNELS, WS_DIALECTS
from tests.contract.schemas import DOC_PATH, ROOT, doc, validator


def test_committed_document_is_the_generated_one() -> None:
    assert DOC_PATH.read_bytes() == render(), (
        "docs/asyncapi.json is stale: python -m bridge.asyncapi > docs/asyncapi.json"
    )


def test_the_module_writes_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bridge.asyncapi"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    assert out == DOC_PATH.read_bytes()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = doc()
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def test_asyncapi_3_shape() -> None:
    d = doc()
    assert d["asyncapi"] == "3.0.0"
    assert d["info"]["title"] and d["info"]["version"]
    assert set(d["servers"]) == {"mqtt", "ws"}
    for server in d["servers"].values():
        assert server["host"] and server["protocol"] in ("mqtt", "ws")
    for key, channel in d["channels"].items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", key), key
        declared = set(channel.get("parameters", {}))
        used = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert used == declared, f"{key}: address parameters {used} != declared {declared}"
        assert channel["messages"], key


def test_every_ref_resolves() -> None:
    refs = _refs(doc())
    assert len(refs) > 100
    for ref in refs:
        _resolve(ref)


def test_operations_use_their_channels_messages() -> None:
    d = doc()
    used: set[tuple[str, str]] = set()
    for key, op in d["operations"].items():
        assert op["action"] in ("send", "receive"), key
        channel_ref = op["channel"]["$ref"]
        channel_key = channel_ref.removeprefix("#/channels/")
        assert channel_key in d["channels"], key
        assert op["messages"], key
        for m in op["messages"]:
            prefix = f"{channel_ref}/messages/"
            assert m["$ref"].startswith(prefix), f"{key}: {m['$ref']} is not of its channel"
            used.add((channel_key, m["$ref"].removeprefix(prefix)))
    for key, channel in d["channels"].items():
        for name in channel["messages"]:
            assert (key, name) in used, f"{key}: message {name} is in no operation"


def test_every_payload_is_a_valid_schema() -> None:
    d = doc()
    Draft202012Validator.check_schema({"$defs": d["components"]["schemas"]})
    for name, message in d["components"]["messages"].items():
        assert message["contentType"] == "application/json"
        assert validator(name) is not None


def test_the_catalog_is_all_there() -> None:
    d = doc()
    for ch in MQTT_CHANNELS:
        assert d["channels"][ch.key]["address"] == ch.address
        assert f"{ch.key}.{ch.action}" in d["operations"]
    for dialect in WS_DIALECTS:
        assert d["channels"][f"ws_{dialect.key}"]["address"] == dialect.address


@pytest.mark.parametrize(
    ("message", "good", "bad"),
    [
        (
            "StreamReading",
            {
                "device_id": "d1",
                "metric": "t",
                "value": 1.5,
                "unit": None,
                "ts": "2026-01-01T12:00:00.000Z",
                "received_at": "2026-01-01T12:00:00.000001Z",
            },
            {
                "device_id": "d/1",
                "metric": "t",
                "value": 1.5,
                "unit": None,
                "ts": "2026-01-01T12:00:00.000Z",
                "received_at": "2026-01-01T12:00:00.000001Z",
            },
        ),
        ("DeviceStatusReport", "online", "sleeping"),
        (
            "Error",
            {
                "type": "error",
                "code": 422,
                "error": "validation_error",
                "message": "x",
                "timestamp": "2026-01-01T12:00:00.000Z",
            },
            {
                "type": "error",
                "code": "BAD",
                "error": "x",
                "message": "x",
                "timestamp": "2026-01-01T12:00:00.000Z",
            },
        ),
    ],
)
def test_schemas_can_fail(message: str, good: Any, bad: Any) -> None:
    assert not list(validator(message).iter_errors(good))
    assert list(validator(message).iter_errors(bad))
