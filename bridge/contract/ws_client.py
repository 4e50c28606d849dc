"""Models of every WebSocket message a client sends (docs/protocol.md sections 3, 5, 7, 8).

The front's message registry (``bridge/registry.py``) validates every client message against
these models before its handler runs; each handler still checks its own fields
(``bridge/subscriptions.py`` for subscriptions, with the filter table ``FILTER_CHANNELS`` these
models mirror), because its errors name the field and the rule in the words docs/protocol.md
uses. So a model may be looser than its handler, never stricter (the registry logs a message a
model refused and its handler accepted). tests/contract/test_capture.py validates every message
it sends against these models, and the real server answering each one as documented is what
shows that they describe what the server accepts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bridge.contract.base import (
    Channel,
    ClientMessage,
    DeviceId,
    InputTime,
    LogLevel,
    MessageId,
    MetricName,
    Severity,
)

# A query's from/to: InputTime, or "now", "now-1h" or "-1h" (relative to now), as
# storage/query_spec.py parses them
QueryTime = InputTime | Annotated[str, StringConstraints(pattern=r"^\s*(now|[+-])")]
OneOrMany = DeviceId | Annotated[list[DeviceId], Field(min_length=1)]
Names = str | list[str]


class Filters(BaseModel):
    """Subscription filters (section 7; aliases in the same object). Each one is applied or
    refused with 422: never accepted and ignored."""

    model_config = ConfigDict(extra="forbid")
    device_id: OneOrMany | None = None
    devices: OneOrMany | None = None
    agentId: OneOrMany | None = None
    metrics: MetricName | list[MetricName] | None = None
    frequency: str | None = Field(default=None, description="real-time, or 100ms..1h")
    severity: Severity | list[Severity] | None = None
    alert_type: Names | None = None
    status_types: Names | None = None
    min_value: float | None = None
    value_min: float | None = None
    max_value: float | None = None
    value_max: float | None = None
    search: Annotated[str, Field(max_length=200)] | None = None
    level: LogLevel | list[LogLevel] | None = None
    application: Names | None = None


class Auth(ClientMessage):
    type: Literal["auth"]
    token: str


class Authenticate(ClientMessage):
    type: Literal["authenticate"]
    token: str


class SubscribeChannel(Filters):
    """The channel form; the filters may also stand at the top level (the Valtronics
    JavaScript client spreads them into the message). On /ws/{channel} ``channel`` may be left
    out."""

    type: Literal["subscribe"]
    id: MessageId | None = None
    channel: Channel | None = None
    filters: Filters | None = None
    snapshot: bool | None = None
    since: InputTime | None = None
    batch: bool | None = None


class SubscribeTopics(ClientMessage):
    """The topics form (OpenFrame); each filter applies to the topics that have its field."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["subscribe"]
    topics: Annotated[list[Channel], Field(min_length=1, max_length=20)]
    filters: Filters | None = None
    batch: bool | None = None


EventType = Literal[
    "telemetry.updated",
    "alert.created",
    "alert.updated",
    "alert.acknowledged",
    "alert.resolved",
    "device.status",
    "system.status",
    "log.entry",
    "agent.status",
    "telemetry.received",
]


class SubscribeEvents(ClientMessage):
    """The events form (Nexus, section 4)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["subscribe"]
    events: Annotated[list[EventType], Field(min_length=1, max_length=20)]
    filters: Filters | None = None
    batch: bool | None = None


class SubscribeDeployment(ClientMessage):
    """o1's deployment subscription: there are none here, so it is always answered
    ``error`` 404 ``not_found`` with ``details.deploymentId``."""

    type: Literal["subscribe"]
    deploymentId: Any


class SubscribeMetrics(ClientMessage):
    model_config = ConfigDict(extra="forbid")
    type: Literal["subscribe-metrics"]
    host: DeviceId | None = None
    application: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    metrics: list[str] | str | None = None


class SubscribeLogs(ClientMessage):
    model_config = ConfigDict(extra="forbid")
    type: Literal["subscribe-logs"]
    host: DeviceId | None = None
    application: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    search: Annotated[str, Field(max_length=200)] | None = None
    level: LogLevel | list[LogLevel] | None = None


class Unsubscribe(ClientMessage):
    """One of: ``subscription_id``/``subscriptionId``; ``channel`` (+ ``device_id``);
    ``topics``; ``events``."""

    type: Literal["unsubscribe"]
    subscription_id: str | None = None
    subscriptionId: str | None = None
    channel: Channel | None = None
    device_id: OneOrMany | None = None
    topics: list[str] | None = None
    events: list[str] | None = None


class ListSubscriptions(ClientMessage):
    type: Literal["list_subscriptions"]


class ClientPing(ClientMessage):
    type: Literal["ping"]
    timestamp: Any = None


class ClientPong(ClientMessage):
    type: Literal["pong"]


class Query(ClientMessage):
    type: Literal["query"]
    device_id: OneOrMany | None = None
    metric: MetricName | None = None
    metrics: list[MetricName] | MetricName | None = None
    from_: QueryTime | None = Field(default=None, alias="from")
    to: QueryTime | None = None
    bucket: str | None = None
    agg: Literal["avg", "min", "max", "sum", "count", "last"] | None = None
    limit: Annotated[int, Field(ge=1)] | None = None


class Command(ClientMessage):
    """Needs ``commands:write``; the device is ``device_id``, ``agentId`` or
    ``parameters.agentId``/``device_id``/``target``."""

    type: Literal["command"]
    device_id: DeviceId | None = None
    agentId: DeviceId | None = None
    command: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")]
    parameters: dict[str, Any] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=600)] | None = None


class StartSession(ClientMessage):
    type: Literal["start_session"]
    tool_name: DeviceId
    args: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=64)] | None = (
        None
    )


class SendCommand(ClientMessage):
    type: Literal["send_command"]
    session_id: str
    command: str


class StopSession(ClientMessage):
    type: Literal["stop_session"]
    session_id: str


class DeleteSession(ClientMessage):
    type: Literal["delete_session"]
    session_id: str


class ListSessions(ClientMessage):
    type: Literal["list_sessions"]
    data: Annotated[dict[str, Any], Field(max_length=0)] | None = None


class Telemetry(ClientMessage):
    """Needs ``telemetry:write``: stored like a device's reading."""

    type: Literal["telemetry"]
    device_id: DeviceId | None = None
    agentId: DeviceId | None = None
    metrics: dict[MetricName, Any]
    timestamp: InputTime | None = None


class AckAlert(ClientMessage):
    type: Literal["ack_alert"]
    alert_id: str


class ClientBatch(ClientMessage):
    type: Literal["batch"]
    messages: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=50)]


class ListRules(ClientMessage):
    type: Literal["list_rules"]


class CreateRule(ClientMessage):
    type: Literal["create_rule"]
    rule: dict[str, Any]


class UpdateRule(ClientMessage):
    type: Literal["update_rule"]
    rule: dict[str, Any]


class DeleteRule(ClientMessage):
    type: Literal["delete_rule"]
    rule_id: str
