"""Models of every WebSocket message the server sends (docs/protocol.md sections 3-5, 8).

Schema only. Replies are built with ``bridge.protocol.message`` in the handlers; live frames
by ``bridge/dialects.py`` (encoded once per stream message and shared between clients, the
channel form through a byte template around its subscription id) and batches by
``bridge/connection.py``. tests/contract/test_capture.py validates every frame a real front
sends against these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.contract.base import (
    Channel,
    DeviceId,
    DeviceStatus,
    JsonObject,
    LogLevel,
    MetricName,
    ServerMessage,
    Severity,
    SnakeCase,
    UtcTime,
)

# -- connection and authentication -----------------------------------------------------------


class Connected(ServerMessage):
    """First frame of a connection authenticated at the handshake (not on the bare host)."""

    type: Literal["connected"]
    client_id: str
    clientId: str
    server: str
    protocol: int
    heartbeat_interval: float
    message: str


class AuthResponse(ServerMessage):
    """Reply to ``auth``; ``code``, ``error`` and ``message`` on failure."""

    type: Literal["auth_response"]
    success: bool
    client_id: str | None = None
    user: str | None = None
    code: int | None = None
    error: SnakeCase | None = None
    message: str | None = None


class AuthSuccess(ServerMessage):
    """Reply to ``authenticate`` (a failure is an ``error``)."""

    type: Literal["auth_success"]
    client_id: str
    user: str


class Error(ServerMessage):
    """Every error (section 3, Errors). ``retryAfter`` is o1's spelling of ``retry_after``."""

    type: Literal["error"]
    code: Annotated[int, Field(ge=400, le=599)]
    error: SnakeCase
    message: str
    details: Any = None
    retry_after: Annotated[float, Field(gt=0)] | None = None
    retryAfter: Annotated[float, Field(gt=0)] | None = None


class Pong(ServerMessage):
    """Reply to ``ping``: echoes the client's ``timestamp`` when it sent one (then the
    server's own time is ``server_timestamp``)."""

    type: Literal["pong"]
    timestamp: Any
    client_timestamp: Any = None
    server_timestamp: UtcTime | None = None


# -- subscriptions ---------------------------------------------------------------------------


class SubscribedChannel(ServerMessage):
    type: Literal["subscribed"]
    subscription_id: str
    channel: Channel
    mqtt_topics: list[str]
    existing: bool | None = None


class SubscribedEvents(ServerMessage):
    type: Literal["subscribed"]
    events: list[str]
    subscription_ids: list[str]


class SubscribedO1(ServerMessage):
    type: Literal["subscribed"]
    subscriptionId: str
    subscription_id: str
    subscription_ids: list[str]


class SubscriptionConfirmed(ServerMessage):
    type: Literal["subscription_confirmed"]
    topics: list[Channel]
    subscription_ids: list[str]


class Unsubscribed(ServerMessage):
    type: Literal["unsubscribed"]
    subscription_ids: Annotated[list[str], Field(min_length=1)]
    subscription_id: str
    channel: Channel | None = None
    events: list[str] | None = None


class UnsubscriptionConfirmed(ServerMessage):
    type: Literal["unsubscription_confirmed"]
    topics: list[str]
    subscription_ids: list[str]


class SubscriptionsList(ServerMessage):
    type: Literal["subscriptions_list"]
    subscriptions: list[JsonObject]
    count: int


class SnapshotComplete(ServerMessage):
    """After the stored latest values a ``snapshot: true`` asked for."""

    type: Literal["snapshot_complete"]
    subscription_id: str


class ReplayComplete(ServerMessage):
    """After the stored messages a ``since`` asked for (or a replay after a broker gap)."""

    type: Literal["replay_complete"]
    subscription_id: str
    count: int
    truncated: bool


class SubscriptionEnded(ServerMessage):
    type: Literal["subscription_ended"]
    subscription_id: str
    channel: Channel
    code: Literal[403]
    error: Literal["forbidden"]
    message: str


class SlowConsumerWarning(ServerMessage):
    """At most once a second while a client is behind: live frames dropped and telemetry
    values replaced by newer ones (conflated) since the last warning, at least one of them."""

    type: Literal["warning"]
    error: Literal["slow_consumer"]
    dropped: Annotated[int, Field(ge=0)]
    conflated: Annotated[int, Field(ge=0)] = 0


# -- live updates, channel form (Valtronics) --------------------------------------------------


class Reading(BaseModel):
    value: float
    unit: str | None
    timestamp: UtcTime


class TelemetryUpdate(ServerMessage):
    type: Literal["telemetry_update"]
    channel: Literal["telemetry"]
    subscription_id: str
    device_id: DeviceId
    telemetry: Annotated[dict[MetricName, Reading], Field(min_length=1, max_length=1)]
    received_at: UtcTime


class AlertMetadataView(BaseModel):
    threshold_value: float | None = None
    actual_value: float | None = None


class Alert(ServerMessage):
    type: Literal["alert"]
    channel: Literal["alerts"]
    subscription_id: str
    alert_id: str
    rule_id: str | None
    device_id: DeviceId
    metric: MetricName | None
    severity: Severity
    title: str
    message: str
    state: Literal["active", "acknowledged", "resolved"]
    event: Literal["created", "updated", "acknowledged", "resolved"] | None
    metadata: AlertMetadataView
    created_at: UtcTime | None
    updated_at: UtcTime | None
    received_at: UtcTime | None


class LastSeen(BaseModel):
    last_seen: UtcTime | None


class DeviceStatusUpdate(ServerMessage):
    type: Literal["device_status_update"]
    channel: Literal["devices"]
    subscription_id: str
    device_id: DeviceId
    old_status: DeviceStatus | None
    new_status: DeviceStatus
    reason: str | None
    metadata: LastSeen
    received_at: UtcTime | None


class SystemStatusUpdate(ServerMessage):
    type: Literal["system_status_update"]
    channel: Literal["system"]
    subscription_id: str
    component: DeviceId
    metrics: JsonObject


class ChannelLog(ServerMessage):
    """A device's log line on the ``logs`` channel."""

    type: Literal["log"]
    channel: Literal["logs"]
    subscription_id: str
    device_id: DeviceId
    level: LogLevel
    message: str
    application: str | None
    ts: UtcTime
    received_at: UtcTime


class BatchFrame(ServerMessage):
    """Live frames of subscriptions made with ``"batch": true``, gathered per write."""

    type: Literal["batch"]
    messages: Annotated[list[JsonObject], Field(min_length=1)]


# -- live updates of the other dialects --------------------------------------------------------


class TopicEvent(ServerMessage):
    """The topics form (OpenFrame): ``event`` is the kind, ``data`` has the document's
    fields first (section 8.2)."""

    type: Literal["event"]
    topic: Channel
    event: Literal[
        "device_update",
        "alert_created",
        "alert_updated",
        "alert_acknowledged",
        "alert_resolved",
        "system_status",
        "telemetry_update",
        "log",
    ]
    data: JsonObject


class NexusEvent(ServerMessage):
    """The events form (Nexus): the stream event plus ``agentId``, ``status``, ``metrics``."""

    type: Literal["event"]
    eventType: str
    data: JsonObject


class O1Metrics(ServerMessage):
    """subscribe-metrics: ``{host, application, <metric>: value...}`` (a reading, or the
    bridge's system status with o1's ``cpu``/``memory``/``disk``)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["metrics"]
    host: str
    application: str | None


class O1Log(ServerMessage):
    type: Literal["log"]
    host: DeviceId
    device_id: DeviceId
    level: LogLevel
    message: str
    application: str | None
    ts: UtcTime
    received_at: UtcTime
