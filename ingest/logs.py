"""Device log lines (``devices/{id}/logs``): validated, then republished on ``logs/{id}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ingest.payload import PayloadError
from ingest.wire import iso_ms
from storage.timestamps import parse_timestamp

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_MESSAGE = 8192


def parse_log(device_id: str, payload: bytes, received_at: datetime) -> bytes:
    """The republished event, or :class:`PayloadError`."""
    if len(payload) > 16_384:
        raise PayloadError("payload_too_large", "a log line is at most 16 KiB")
    try:
        doc: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise PayloadError("invalid_json", "a log line is a JSON object") from None
    if not isinstance(doc, dict):
        raise PayloadError("invalid_shape", "a log line is a JSON object")
    level = str(doc.get("level", "INFO")).upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LEVELS:
        raise PayloadError("validation_error", f"level must be one of {', '.join(LEVELS)}")
    text = doc.get("message")
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        raise PayloadError(
            "validation_error", f"message must be text of at most {MAX_MESSAGE} characters"
        )
    application = doc.get("application")
    if application is not None and not (isinstance(application, str) and len(application) <= 64):
        raise PayloadError("validation_error", "application must be text of at most 64 characters")
    try:
        ts = parse_timestamp(doc["ts"]) if doc.get("ts") is not None else received_at
    except ValueError as exc:
        raise PayloadError("validation_error", f"ts: {exc}") from None
    return orjson.dumps(
        {
            "device_id": device_id,
            "level": level,
            "message": text,
            "application": application,
            "ts": iso_ms(ts),
            "received_at": iso_ms(received_at),
        }
    )
