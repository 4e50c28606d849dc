"""WebSocket message shapes (PROTOCOL.md section 3): pure builders and the error ladder.

Live messages are encoded once with :func:`encode` and the same bytes go to every client
that shares them. Every server message carries ``type`` and ``timestamp``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

PROTOCOL_VERSION = 1
SERVER_NAME = "telemetry-bridge"


_last_ms = -1
_last_iso = ""


def now_iso() -> str:
    """The current time, ISO 8601 UTC to the millisecond. Every live frame carries one; the
    formatting (2.6 us) cost more than the rest of building the frame, so it is done once
    per millisecond."""
    global _last_ms, _last_iso
    ms = time.time_ns() // 1_000_000
    if ms != _last_ms:
        stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        _last_ms, _last_iso = ms, stamp.replace("+00:00", "Z")
    return _last_iso


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def message(type_: str, *, id_: Any = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, **fields, "timestamp": now_iso()}
    if id_ is not None:
        out["id"] = id_
    return out


class ClientError(Exception):
    """An error the client caused or must know about; mapped 1:1 onto the error format."""

    def __init__(
        self,
        code: int,
        error: str,
        message: str,
        *,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.error = error
        self.message = message
        self.details = details
        self.retry_after = retry_after


def error_message(exc: ClientError, id_: Any = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"code": exc.code, "error": exc.error, "message": exc.message}
    if exc.details is not None:
        fields["details"] = exc.details
    if exc.retry_after is not None:
        # at least a millisecond: a wait rounded to 0 would say "retry now", and be refused
        fields["retry_after"] = max(0.001, round(exc.retry_after, 3))
        fields["retryAfter"] = fields["retry_after"]  # the o1 spelling
    return message("error", id_=id_, **fields)


def internal_error(id_: Any = None) -> dict[str, Any]:
    """Never a traceback or internal detail."""
    return error_message(ClientError(500, "internal_error", "internal error"), id_)


def bad_request(text: str) -> ClientError:
    return ClientError(400, "bad_request", text)


def connected(client_id: str, heartbeat_interval: float) -> dict[str, Any]:
    return message(
        "connected",
        client_id=client_id,
        clientId=client_id,  # the Nexus clients' spelling
        server=SERVER_NAME,
        protocol=PROTOCOL_VERSION,
        heartbeat_interval=heartbeat_interval,
        message=f"Connected to {SERVER_NAME}",  # as the Nexus server says hello
    )


def epoch_ms_to_iso(ms: float) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def monotonic() -> float:
    return time.monotonic()
