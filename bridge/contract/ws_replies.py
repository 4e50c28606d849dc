"""Models of the server's replies to requests other than subscriptions: queries, commands,
client telemetry, alerts, rules and device sessions (docs/protocol.md sections 3, 5, 8.3, 8.5).

Schema only (built in ``bridge/handlers.py``, ``bridge/commands.py``,
``bridge/device_sessions.py`` and ``bridge/session.py``); tests/contract/test_capture.py
validates what a real front sends.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from bridge.contract.base import DeviceId, JsonObject, MetricName, ServerMessage, UtcTime


class Series(BaseModel):
    device_id: DeviceId
    metric: MetricName
    points: list[Annotated[list[Any], Field(min_length=2, max_length=2)]]


class QueryResult(ServerMessage):
    type: Literal["query_result"]
    series: list[Series]
    count: int
    truncated: bool
    next_cursor: str | None
    from_: UtcTime = Field(alias="from")
    to: UtcTime
    bucket: float | None
    agg: str | None


class CommandResult(ServerMessage):
    """``running`` (with ``progress``) while the device works, then ``success``, ``error``,
    or ``timeout`` with ``code`` 504."""

    type: Literal["command_result"]
    commandId: str
    command_id: str
    device_id: DeviceId
    status: Literal["running", "success", "error", "timeout"]
    data: Any
    progress: float | None = None
    code: Literal[504] | None = None
    error: Literal["timeout"] | None = None
    message: str | None = None


class TelemetryAck(ServerMessage):
    type: Literal["telemetry_ack"]
    device_id: DeviceId
    agentId: DeviceId
    readings: Annotated[int, Field(ge=1)]


class AlertAcknowledged(ServerMessage):
    type: Literal["alert_acknowledged"]
    alert_id: str
    alert: JsonObject


class RulesList(ServerMessage):
    type: Literal["rules_list"]
    rules: list[JsonObject]
    count: int


class RuleCreated(ServerMessage):
    type: Literal["rule_created"]
    rule_id: str
    rule: JsonObject


class RuleUpdated(ServerMessage):
    type: Literal["rule_updated"]
    rule_id: str
    rule: JsonObject


class RuleDeleted(ServerMessage):
    type: Literal["rule_deleted"]
    rule_id: str


# -- device sessions (Zhineng) ---------------------------------------------------------------


class SessionsList(ServerMessage):
    type: Literal["sessions_list"]
    sessions: list[JsonObject]
    count: int


class SessionStarted(ServerMessage):
    type: Literal["session_started"]
    session_id: str
    tool_name: DeviceId
    status: str


class CommandSent(ServerMessage):
    type: Literal["command_sent"]
    session_id: str


class Output(ServerMessage):
    """The device's output of a session, as it comes (``.../{session_id}/result``)."""

    type: Literal["output"]
    session_id: str
    output: str | None
    status: str | None
    done: bool


class SessionStopped(ServerMessage):
    type: Literal["session_stopped"]
    session_id: str
    status: str


class SessionDeleted(ServerMessage):
    type: Literal["session_deleted"]
    session_id: str


class SessionEnded(ServerMessage):
    """A refreshed token no longer allows the session; it was stopped at the device."""

    type: Literal["session_ended"]
    session_id: str
    tool_name: DeviceId
    device_id: DeviceId
    code: Literal[403]
    error: Literal["forbidden"]
    message: str
