"""The bodies of the front's own HTTP endpoints (/health, /status, /metrics as JSON and the o1
seed's /api/websocket/...) as pydantic models, for the published schema (bridge/openapi.py).

bridge/http_api.py builds these answers itself; the schemathesis test
(tests/integration/test_openapi_live.py) checks every answer against these models, so a
change to either shows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class HealthChecks(_Model):
    mqtt: Literal["ok", "down"]
    database: Literal["ok", "down"] | None = Field(None, description="absent without a database")


class Health(_Model):
    """`GET /health`: 200 healthy or degraded, 503 unhealthy."""

    status: Literal["healthy", "degraded", "unhealthy"]
    checks: HealthChecks
    timestamp: str = Field(json_schema_extra={"format": "date-time"})


class Features(_Model):
    wss_enabled: bool
    auth_required: bool
    rate_limiting: bool
    compression: bool


class Status(_Model):
    """`GET /status`."""

    service: Literal["telemetry-bridge"]
    version: str
    uptime_s: float = Field(ge=0)
    connections: int = Field(ge=0)
    features: Features
    timestamp: str = Field(json_schema_extra={"format": "date-time"})


class _Open(BaseModel):
    """A body whose documented fields are a minimum: more may come."""

    model_config = ConfigDict(frozen=True, extra="allow")


class Connections(_Open):
    current: int = Field(ge=0)
    peak: int = Field(ge=0)
    total: int = Field(ge=0)


class FrontConnections(Connections):
    """The front's own /metrics: the counts of the o1 shape and more."""

    by_dialect: dict[str, int] = Field(description="clients connected now, by dialect")
    refused: dict[str, int] = Field(description="handshakes refused since start, by reason")
    closed_slow_consumer: int = Field(ge=0, description="clients closed for not reading")


class Messages(_Open):
    sent: int = Field(ge=0)
    received: int = Field(ge=0)
    dropped: int = Field(ge=0)


class FrontMessages(Messages):
    delivered: int = Field(ge=0, description="update frames delivered to clients")
    conflated: int = Field(ge=0, description="frames replaced by a newer one before sending")


class BrokerLink(_Open):
    connected: bool
    subscriptions: int = Field(ge=0, description="broker filters in use")
    received: int = Field(ge=0, description="broker messages received")


class RateLimiting(_Open):
    enabled: bool


class MetricsJson(_Open):
    """`GET /metrics` without an `Accept` asking for Prometheus text (which has the same
    numbers and more: README, "Metrics")."""

    rate_limiting: RateLimiting
    connections: FrontConnections
    auth_failures: dict[str, int] = Field(description="token checks that failed, by reason")
    subscriptions: dict[str, int] = Field(description="client subscriptions now, by channel")
    messages: FrontMessages
    broker: BrokerLink
    timestamp: str = Field(json_schema_extra={"format": "date-time"})


class O1Health(_Model):
    """`GET /api/websocket/health` (the o1 seed's shape): 503 when the broker link is down."""

    status: Literal["healthy", "unhealthy"]
    connectionCount: int = Field(ge=0)
    timestamp: str = Field(json_schema_extra={"format": "date-time"})


class O1Performance(_Model):
    uptime: str = Field(examples=["15d 6h 30m"])
    memoryUsage: str = Field(examples=["45.2MB"])
    cpuUsage: str = Field(examples=["12.5%"])


class O1Metrics(_Model):
    """`GET /api/websocket/metrics` (the o1 seed's shape)."""

    connections: Connections
    messages: Messages
    performance: O1Performance


class O1Pool(_Model):
    active: int = Field(ge=0, description="connections with a subscription")
    idle: int = Field(ge=0, description="connections without one")
    total: int = Field(ge=0)


class O1Batcher(_Model):
    batchesProcessed: int = Field(ge=0)
    messagesProcessed: int = Field(ge=0)
    averageBatchSize: float = Field(ge=0)
    queuedMessages: int = Field(ge=0)


class O1Processor(_Model):
    messagesProcessed: int = Field(ge=0)
    errors: int = Field(ge=0)
    successRate: float = Field(ge=0, le=100)
    dropped: int = Field(ge=0)


class O1Timing(_Model):
    averageResponseTime: float = Field(ge=0)
    p95: float = Field(ge=0)
    p99: float = Field(ge=0)
    unit: Literal["ms"]


class O1Stats(_Model):
    """`GET /api/websocket/stats` (the o1 seed's shape): counts only."""

    totalConnections: int = Field(ge=0)
    poolStats: O1Pool
    batcherStats: O1Batcher
    processorStats: O1Processor
    performanceMetrics: O1Timing
    brokerSubscriptionCount: int = Field(ge=0)
