"""Device-reported status (``devices/{id}/status``, also the device's Last Will): validation."""

from __future__ import annotations

from typing import Any

import orjson

from ingest.payload import PayloadError
from ingest.storable import text_problem
from storage import names

MAX_REASON = 200


def parse_status(payload: bytes) -> tuple[str, str]:
    """``"online"``/``"offline"`` (JSON string or bare text) or ``{"status", "reason"}``."""
    if len(payload) > 4096:
        raise PayloadError("payload_too_large", "a status message is at most 4096 bytes")
    text = payload.strip()
    doc: Any
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = text.decode("utf-8", "replace")  # bare `online` as many devices send it
    reason = ""
    if isinstance(doc, dict):
        status, reason = doc.get("status"), doc.get("reason") or ""
        if not isinstance(reason, str):
            raise PayloadError("validation_error", "reason must be text")
        if problem := text_problem(reason):
            raise PayloadError("validation_error", f"reason {problem}")
    else:
        status = doc
    if status not in names.DEVICE_STATUSES:
        raise PayloadError(
            "validation_error", f"status must be one of {', '.join(names.DEVICE_STATUSES)}"
        )
    return str(status), reason[:MAX_REASON] or "reported by device"
