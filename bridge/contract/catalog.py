"""Which message goes where: the MQTT topics and the WebSocket endpoints of each dialect.

The one table that ``bridge/asyncapi.py`` turns into docs/asyncapi.json, the capture test
checks real traffic against, and the docs test compares with docs/protocol.md (section 8's
table of message types per endpoint).

Every endpoint accepts every client message (the dispatch in ``bridge/session.py`` does not
depend on the path); a dialect lists what that seed's clients send and get, and ``/ws`` the
whole protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from bridge.contract import mqtt
from bridge.contract import ws_client as c
from bridge.contract import ws_replies as r
from bridge.contract import ws_server as s
from storage import names


@dataclass(frozen=True)
class Parameter:
    description: str
    pattern: str | None = None
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MqttChannel:
    key: str
    address: str
    model: type[BaseModel]
    action: Literal["send", "receive"]  # from the bridge's side
    qos: int
    retain: bool
    summary: str
    parameters: dict[str, Parameter] = field(default_factory=dict)


DEVICE = Parameter(
    "A device id (docs/protocol.md section 1)", pattern=f"^{names.DEVICE_ID_PATTERN}$"
)
METRIC = Parameter("A metric name", pattern=f"^{names.METRIC_PATTERN}$")
COMMAND = Parameter(
    "The command's id (cmd_...) or a device session's id (ses_...)",
    pattern=f"^{names.DEVICE_ID_PATTERN}$",
)

MQTT_CHANNELS: tuple[MqttChannel, ...] = (
    MqttChannel(
        "deviceTelemetry",
        "devices/{deviceId}/telemetry",
        mqtt.DeviceTelemetry,
        "receive",
        1,
        False,
        "A device's readings (QoS 0 accepted), stored exactly once",
        {"deviceId": DEVICE},
    ),
    MqttChannel(
        "deviceStatus",
        "devices/{deviceId}/status",
        mqtt.DeviceStatusReport,
        "receive",
        1,
        True,
        "A device's own status; devices set it as their Last Will",
        {"deviceId": DEVICE},
    ),
    MqttChannel(
        "deviceLogs",
        "devices/{deviceId}/logs",
        mqtt.DeviceLogLine,
        "receive",
        0,
        False,
        "A device's log line",
        {"deviceId": DEVICE},
    ),
    MqttChannel(
        "deviceCommandResult",
        "devices/{deviceId}/commands/{commandId}/result",
        mqtt.DeviceCommandResult,
        "receive",
        1,
        False,
        "A device's answer to a command or a session's input",
        {"deviceId": DEVICE, "commandId": COMMAND},
    ),
    MqttChannel(
        "deviceCommand",
        "devices/{deviceId}/commands/{commandId}",
        mqtt.DeviceCommand,
        "send",
        1,
        False,
        "A command (or device-session step) to a device",
        {"deviceId": DEVICE, "commandId": COMMAND},
    ),
    MqttChannel(
        "deviceErrors",
        "devices/{deviceId}/errors",
        mqtt.DeviceErrorReport,
        "send",
        1,
        False,
        "Why a device's message was rejected (it went to the dead letters)",
        {"deviceId": DEVICE},
    ),
    MqttChannel(
        "streamTelemetry",
        "telemetry/{deviceId}/{metric}",
        mqtt.StreamReading,
        "send",
        0,
        True,
        "A stored reading (validated stream; retained: the latest value)",
        {"deviceId": DEVICE, "metric": METRIC},
    ),
    MqttChannel(
        "streamStatus",
        "status/{deviceId}",
        mqtt.StreamStatus,
        "send",
        0,
        True,
        "A device's status change (validated stream)",
        {"deviceId": DEVICE},
    ),
    MqttChannel(
        "streamAlerts",
        "alerts/{severity}/{deviceId}",
        mqtt.StreamAlert,
        "send",
        0,
        False,
        "An alert created, updated, acknowledged or resolved (validated stream)",
        {"severity": Parameter("The alert's severity", enum=names.SEVERITIES), "deviceId": DEVICE},
    ),
    MqttChannel(
        "systemStatus",
        "system/{component}",
        mqtt.SystemStatus,
        "send",
        0,
        True,
        "A bridge process's status (validated stream)",
        {"component": Parameter("bridge-<host>", pattern=f"^{names.DEVICE_ID_PATTERN}$")},
    ),
    MqttChannel(
        "streamLogs",
        "logs/{deviceId}",
        mqtt.StreamLog,
        "send",
        0,
        False,
        "A device's log line, validated (validated stream)",
        {"deviceId": DEVICE},
    ),
    MqttChannel(
        "streamResync",
        "bridge/stream-resync",
        mqtt.StreamResync,
        "send",
        0,
        False,
        "A stream publisher dropped messages while cut off; fronts replay them from storage",
    ),
)


@dataclass(frozen=True)
class WsDialect:
    key: str
    address: str
    title: str
    description: str
    receives: tuple[type[BaseModel], ...]  # client to server
    sends: tuple[type[BaseModel], ...]  # server to client
    parameters: dict[str, Parameter] = field(default_factory=dict)

    def types(self, direction: Literal["receives", "sends"]) -> set[str]:
        return {model_type(m) for m in getattr(self, direction)}


def model_type(model: type[BaseModel]) -> str:
    """The ``type`` value of a WebSocket message model."""
    return str(model.model_fields["type"].annotation.__args__[0])  # type: ignore[union-attr]


COMMON_ERRORS = (s.Error,)

WS_DIALECTS: tuple[WsDialect, ...] = (
    WsDialect(
        "bridge",
        "/ws",
        "The whole protocol (docs/protocol.md sections 3-5, 7)",
        "Every channel and request; the Valtronics clients' main endpoint. Aliases with the "
        "same protocol: every other endpoint accepts every message listed here.",
        (
            c.Auth,
            c.Authenticate,
            c.SubscribeChannel,
            c.SubscribeTopics,
            c.SubscribeEvents,
            c.SubscribeMetrics,
            c.SubscribeLogs,
            c.Unsubscribe,
            c.ListSubscriptions,
            c.ClientPing,
            c.ClientPong,
            c.Query,
            c.Command,
            c.StartSession,
            c.SendCommand,
            c.StopSession,
            c.DeleteSession,
            c.ListSessions,
            c.Telemetry,
            c.AckAlert,
            c.ClientBatch,
            c.ListRules,
            c.CreateRule,
            c.UpdateRule,
            c.DeleteRule,
        ),
        (
            s.Connected,
            s.AuthResponse,
            s.AuthSuccess,
            *COMMON_ERRORS,
            s.Pong,
            s.SubscribedChannel,
            s.SubscribedEvents,
            s.SubscribedO1,
            s.SubscriptionConfirmed,
            s.Unsubscribed,
            s.UnsubscriptionConfirmed,
            s.SubscriptionsList,
            s.SnapshotComplete,
            s.ReplayComplete,
            s.SubscriptionEnded,
            s.SlowConsumerWarning,
            s.TelemetryUpdate,
            s.Alert,
            s.DeviceStatusUpdate,
            s.SystemStatusUpdate,
            s.ChannelLog,
            s.BatchFrame,
            s.TopicEvent,
            s.NexusEvent,
            s.O1Metrics,
            s.O1Log,
            r.QueryResult,
            r.CommandResult,
            r.TelemetryAck,
            r.AlertAcknowledged,
            r.RulesList,
            r.RuleCreated,
            r.RuleUpdated,
            r.RuleDeleted,
            r.SessionsList,
            r.SessionStarted,
            r.CommandSent,
            r.Output,
            r.SessionStopped,
            r.SessionDeleted,
            r.SessionEnded,
        ),
    ),
    WsDialect(
        "valtronics",
        "/ws/{channel}",
        "Valtronics (section 8.1): one channel per endpoint",
        "A subscribe that names no channel gets the endpoint's. Authenticates by an auth "
        "message (or at the handshake, then connected comes first).",
        (c.Auth, c.SubscribeChannel, c.Unsubscribe, c.ClientPing, c.ClientBatch),
        (
            s.Connected,
            s.AuthResponse,
            *COMMON_ERRORS,
            s.Pong,
            s.SubscribedChannel,
            s.Unsubscribed,
            s.ReplayComplete,  # after a broker-link gap, its subscriptions replay from storage
            s.TelemetryUpdate,
            s.Alert,
            s.DeviceStatusUpdate,
            s.SystemStatusUpdate,
        ),
        {
            "channel": Parameter(
                "The channel a subscribe names by default",
                enum=("telemetry", "alerts", "devices", "system"),
            )
        },
    ),
    WsDialect(
        "openframe",
        "/v1/ws",
        "OpenFrame (section 8.2): the topics form",
        "Bearer token at the handshake (or ?token=); events come as {type: event, topic, event, "
        "data}.",
        (c.SubscribeTopics, c.Unsubscribe),
        (
            s.Connected,
            *COMMON_ERRORS,
            s.SubscriptionConfirmed,
            s.UnsubscriptionConfirmed,
            s.TopicEvent,
        ),
    ),
    WsDialect(
        "nexus",
        "/api/v1/events",
        "Nexus (section 8.3): the events form, commands and client telemetry",
        "?token= (or Bearer); agents are devices (agentId = device id).",
        (c.SubscribeEvents, c.Unsubscribe, c.ClientPing, c.ClientPong, c.Command, c.Telemetry),
        (
            s.Connected,
            *COMMON_ERRORS,
            s.Pong,
            s.SubscribedEvents,
            s.Unsubscribed,
            s.NexusEvent,
            r.CommandResult,
            r.TelemetryAck,
        ),
    ),
    WsDialect(
        "o1",
        "/api/websocket",
        "o1 (section 8.4): subscribe-metrics and subscribe-logs",
        "host is a device id; a deployment subscribe is refused 404.",
        (c.SubscribeMetrics, c.SubscribeLogs, c.SubscribeDeployment, c.Unsubscribe),
        (s.Connected, *COMMON_ERRORS, s.SubscribedO1, s.Unsubscribed, s.O1Metrics, s.O1Log),
    ),
    WsDialect(
        "zhineng",
        "/",
        "Zhineng-bridge (section 8.5): strict request/response on the bare host",
        "No greeting; authenticate first. A session is a conversation with a device "
        "(tool_name = device id).",
        (
            c.Authenticate,
            c.ListSessions,
            c.StartSession,
            c.SendCommand,
            c.StopSession,
            c.DeleteSession,
        ),
        (
            s.AuthSuccess,
            *COMMON_ERRORS,
            r.SessionsList,
            r.SessionStarted,
            r.CommandSent,
            r.Output,
            r.SessionStopped,
            r.SessionDeleted,
        ),
    ),
)
