"""The committed AsyncAPI document as validators: which messages a channel carries and a
Draft 2020-12 validator per message, failing with the message and the schema path."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "asyncapi.json"


@cache
def doc() -> dict[str, Any]:
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def operation_messages(channel: str, action: str) -> list[str]:
    """Names of the messages of ``channel``'s ``action`` operation (the bridge's side)."""
    op = doc()["operations"].get(f"{channel}.{action}")
    return [] if op is None else [_name(m["$ref"]) for m in op["messages"]]


@cache
def validator(message: str) -> Draft202012Validator:
    payload = doc()["components"]["messages"][message]["payload"]
    root = {"$ref": payload["$ref"], "components": {"schemas": doc()["components"]["schemas"]}}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


@cache
def message_type(message: str) -> str | None:
    """The ``type`` constant of a WebSocket message's schema."""
    schema = doc()["components"]["schemas"][message]
    kind = schema.get("properties", {}).get("type", {})
    return kind.get("const")  # type: ignore[no-any-return]


def problems(message: str, instance: Any) -> list[str]:
    """Each way ``instance`` fails ``message``'s schema, with both paths."""
    return [
        f"{message}: {e.message} (at {e.json_path}; schema {'/'.join(map(str, e.schema_path))})"
        for e in validator(message).iter_errors(instance)
    ]


def check_frame(channel: str, action: str, frame: Any) -> str:
    """The name of the message of ``channel``'s ``action`` that ``frame`` is (by its
    ``type``, then its schema); AssertionError with the frame and every schema path if none."""
    names = operation_messages(channel, action)
    kind = frame.get("type") if isinstance(frame, dict) else None
    candidates = [n for n in names if message_type(n) == kind] if kind else names
    if not candidates:
        raise AssertionError(f"{channel} {action}: type {kind!r} is not in the document: {frame}")
    found: list[str] = []
    for name in candidates:
        issues = problems(name, frame)
        if not issues:
            return name
        found += issues
    raise AssertionError(
        f"{channel} {action}: no message schema fits\n  frame: {json.dumps(frame)[:2000]}\n  "
        + "\n  ".join(found[:20])
    )


__all__ = ["DOC_PATH", "check_frame", "doc", "message_type", "problems"]
