"""Models of every MQTT payload (docs/protocol.md section 2, topics in ingest/topics.py).

Which are used by the code and which are schema only:

- Device telemetry is validated at run time by ``ingest/payload.py``: a hand-written fast
  path for the common forms and its pydantic ``_Entry`` for the rest. The models here are the
  schema of the same forms with the same limits (its constants), and
  tests/contract/test_payload_agreement.py feeds both a table of payloads and checks that they
  agree. Status and log lines (``ingest/status.py``, ``ingest/logs.py``) and command results
  (``bridge/commands.py``) are likewise checked by hand-written code; these are their schemas.
- Everything the bridge publishes is built by ``ingest/wire.py``, ``ingest/logs.py``,
  ``ingest/stream.py``, ``bridge/system.py``, ``bridge/commands.py`` and
  ``bridge/device_sessions.py`` (byte templates on the hot path); the models are the schema,
  and tests/contract/test_capture.py validates every publication a real stack makes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from bridge.contract.base import (
    DeviceId,
    DeviceStatus,
    InputTime,
    LogLevel,
    MetricName,
    Payload,
    Severity,
    SnakeCase,
    UtcTime,
)
from ingest.payload import MAX_ENTRIES, MAX_UNIT_LENGTH
from storage import names

# -- device to broker -----------------------------------------------------------------------


class ValueWithUnit(Payload):
    value: float | bool
    unit: Annotated[str, Field(max_length=MAX_UNIT_LENGTH)] | None = None


# A finite number (JSON has no NaN or Infinity), a boolean (stored as 1/0) or {value, unit}
MetricValue = float | bool | ValueWithUnit


class TelemetryEntry(Payload):
    """``{"ts": ..., "values": {...}}``: a missing ``ts`` means the time the bridge got it."""

    ts: InputTime | None = None
    values: Annotated[dict[MetricName, MetricValue], Field(min_length=1)]


class TelemetryFlat(BaseModel):
    """``{"temperature": 23.5, "humidity": 45.2}``, optionally with ``ts``: every other key
    is a metric name."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "minProperties": 1,
            "propertyNames": {"pattern": f"^{names.METRIC_PATTERN}$"},
            # with "values" it is the entry form; "ts" alone is no reading
            "not": {"anyOf": [{"required": ["values"]}, {"required": ["ts"], "maxProperties": 1}]},
        },
    )
    __pydantic_extra__: dict[MetricName, MetricValue] = Field(init=False)
    ts: InputTime | None = None


class DeviceTelemetry(
    RootModel[
        TelemetryEntry
        | Annotated[list[TelemetryEntry], Field(min_length=1, max_length=MAX_ENTRIES)]
        | TelemetryFlat
    ]
):
    """``devices/{deviceId}/telemetry``: one of the accepted forms, UTF-8 JSON, at most
    64 KiB. A rejected message goes to the dead letters and to ``devices/{id}/errors``."""


class StatusReport(Payload):
    status: DeviceStatus
    reason: Annotated[str, Field(max_length=200)] | None = None


class DeviceStatusReport(RootModel[DeviceStatus | StatusReport]):
    """``devices/{deviceId}/status`` (retained; the device's Last Will): ``"online"`` (a
    JSON string, or the bare word) or ``{"status", "reason"}``."""


class DeviceLogLine(BaseModel):
    """``devices/{deviceId}/logs``. ``level`` is read case-insensitively (``WARN`` is
    ``WARNING``; default ``INFO``); other keys are ignored."""

    model_config = ConfigDict(extra="allow")
    level: str | None = None
    message: Annotated[str, Field(max_length=8192)]
    ts: InputTime | None = None
    application: Annotated[str, Field(max_length=64)] | None = None


class DeviceCommandResult(BaseModel):
    """``devices/{deviceId}/commands/{commandId}/result``: ``running`` reports progress,
    ``ok``/``error`` (or ``done: true``) finish the command or the session's step."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "error", "running"]
    output: Any = None
    progress: Annotated[float, Field(ge=0, le=100)] | None = None
    done: bool | None = None
    data: dict[str, Any] | None = None


# -- bridge to device -----------------------------------------------------------------------


class DeviceCommand(Payload):
    """``devices/{deviceId}/commands/{commandId}`` (QoS 1). A WebSocket ``command`` sends
    ``{command, parameters, timeout_s}``; a device session (Zhineng) sends ``session.start``,
    ``session.input`` and ``session.stop`` with its ``session_id`` (the commandId level)."""

    command: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")]
    parameters: dict[str, Any]
    timeout_s: Annotated[float, Field(gt=0, le=600)] | None = None
    session_id: str | None = None


class DeviceErrorReport(Payload):
    """``devices/{deviceId}/errors``: why the bridge rejected a message of the device."""

    error: SnakeCase
    message: str
    topic: str
    received_at: UtcTime


# -- the validated stream (the bridge's own services publish it after commit) ---------------


class StreamReading(Payload):
    """``telemetry/{deviceId}/{metric}`` (retained: the latest value)."""

    device_id: DeviceId
    metric: MetricName
    value: float
    unit: str | None
    ts: UtcTime
    received_at: UtcTime


class StreamStatus(Payload):
    """``status/{deviceId}`` (retained): a device's status change. ``ts`` is exact (a resume
    point)."""

    device_id: DeviceId
    old_status: DeviceStatus | None
    new_status: DeviceStatus
    reason: str
    last_seen: UtcTime | None
    ts: UtcTime | None


class AlertMetadata(Payload):
    threshold_value: float | None
    actual_value: float | None


class StreamAlert(Payload):
    """``alerts/{severity}/{deviceId}``: the alert object (docs/protocol.md section 5) and
    which change this is."""

    event: Literal["created", "updated", "acknowledged", "resolved"]
    alert_id: str
    rule_id: str
    device_id: DeviceId
    metric: MetricName
    severity: Severity
    title: str
    message: str
    state: Literal["active", "acknowledged", "resolved"]
    created_at: UtcTime | None
    updated_at: UtcTime | None
    acknowledged_at: UtcTime | None
    acknowledged_by: str | None
    resolved_at: UtcTime | None
    metadata: AlertMetadata


class SystemStatus(BaseModel):
    """``system/{component}`` (retained), from ``bridge/system.py`` every
    ``BRIDGE_SYSTEM_STATUS_INTERVAL_S``. Usages are percentages; a measurement not taken yet
    is null. Other components may add fields of their own."""

    model_config = ConfigDict(extra="allow")
    component: DeviceId
    cpu_usage: float | None
    memory_usage: float | None
    disk_usage: float | None
    active_connections: int


class StreamLog(Payload):
    """``logs/{deviceId}``: a device's log line, validated."""

    device_id: DeviceId
    level: LogLevel
    message: str
    application: str | None
    ts: UtcTime
    received_at: UtcTime


class StreamResync(Payload):
    """``bridge/stream-resync``: a stream publisher dropped ``dropped`` messages while cut off
    from the broker (they are stored); fronts replay what their subscriptions missed."""

    dropped: Annotated[int, Field(ge=1)]
