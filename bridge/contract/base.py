"""Shared pieces of the wire contract's models: names, times and the two message bases.

The patterns are the ones the code validates with (``storage/names.py``), so the schema and
the code cannot drift apart on what a device id or a metric name is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from storage import names

DeviceId = Annotated[str, StringConstraints(pattern=f"^{names.DEVICE_ID_PATTERN}$")]
MetricName = Annotated[str, StringConstraints(pattern=f"^{names.METRIC_PATTERN}$")]
Severity = Literal["info", "warning", "high", "critical"]
DeviceStatus = Literal["online", "offline", "warning", "unknown"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Channel = Literal["telemetry", "alerts", "devices", "system", "logs"]

# Times the bridge writes: ISO-8601 UTC ending in Z, to the millisecond (device times, frame
# stamps) or to the microsecond (resume points: received_at, a status change's ts).
UtcTime = Annotated[
    str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})Z$")
]
# Times a client or a device may send: epoch milliseconds or ISO-8601 text (any offset; a time
# without one is UTC), as storage/timestamps.py parses them
InputTime = (
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^\d{4}-?\d{2}-?\d{2}")]
)
# A message id a client may attach; echoed as ``id`` in the direct reply
MessageId = Annotated[str, StringConstraints(max_length=128)] | int
SnakeCase = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


class Payload(BaseModel):
    """An MQTT payload whose fields are all listed: anything else is a contract change."""

    model_config = ConfigDict(extra="forbid")


class ClientMessage(BaseModel):
    """A WebSocket message a client sends. Fields the server ignores are allowed unless the
    code refuses unknown keys for that type (those models forbid them)."""

    model_config = ConfigDict(extra="allow")
    id: MessageId | None = None


class ServerMessage(BaseModel):
    """A WebSocket message the server sends: ``type`` and ``timestamp`` always, ``id`` on a
    direct reply to a message that had one. Every field is listed (a new one is a contract
    change, and the capture test fails until it is added here); only messages whose keys are
    data (o1's ``metrics``) allow more."""

    model_config = ConfigDict(extra="forbid")
    timestamp: UtcTime
    id: MessageId | None = None


JsonObject = dict[str, Any]
