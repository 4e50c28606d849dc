"""The REST API's parameters and bodies as pydantic models: what the handlers validate their
query strings with and build their answers through, and what bridge/openapi.py turns into the
published schema, so the two cannot drift apart.

Parameter models keep the error words clients already see: a failed check becomes the
``422 validation_error`` message of :func:`validation_message`. The telemetry parameters are
also the WebSocket ``query`` message's and the CLI's, so their rules stay in
storage/query_spec.py (one set of words for all three); :class:`TelemetryParams` runs them and
adds only the shape checks the schema states.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ingest.wire import iso_ms
from storage import names
from storage import query_spec as spec
from storage.query_spec import QueryError, TelemetryQuery, parse_query, parse_time

# -- shared pieces -------------------------------------------------------------------------------
_DATE_TIME = {"type": "string", "format": "date-time", "examples": ["2026-11-21T10:00:00.000Z"]}


# A stored time, sent as ISO-8601 UTC with milliseconds and a Z (every timestamp of the API).
Timestamp = Annotated[
    datetime, PlainSerializer(iso_ms, return_type=str), WithJsonSchema(_DATE_TIME)
]
DeviceId = Annotated[
    str, Field(pattern=f"^{names.DEVICE_ID_PATTERN}$", min_length=1, max_length=64)
]
Metric = Annotated[str, Field(pattern=f"^{names.METRIC_PATTERN}$", min_length=1, max_length=64)]
Severity = Literal["info", "warning", "high", "critical"]  # storage.names.SEVERITIES
DeviceStatus = Literal["online", "offline", "warning", "unknown"]  # names.DEVICE_STATUSES
AlertState = Literal["active", "acknowledged", "resolved"]

TIME_HELP = (
    "epoch milliseconds, ISO-8601 (UTC when no offset is given), `now`, or a time relative to "
    "now such as `-1h` or `now-15m`; from 1970-01-01 to 2200-01-01 UTC"
)
TIME_EXAMPLES = ["-1h", "now", "2026-11-21T10:00:00Z", "1795255200000"]
TIME_SCHEMA = {"type": "string", "examples": TIME_EXAMPLES}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


# -- errors ----------------------------------------------------------------------------------------
class ErrorBody(_Model):
    """Every error answer of the port (docs/protocol.md, Errors)."""

    error: str = Field(
        description="snake_case code, e.g. `validation_error`", examples=["forbidden"]
    )
    message: str = Field(description="what went wrong, for a human; never internal detail")


class RetryErrorBody(ErrorBody):
    """A refusal that says when to try again (also in the `Retry-After` header)."""

    retry_after: int = Field(ge=1, description="seconds to wait before trying again")


def validation_message(exc: ValidationError, fixed: Mapping[str, str] | None = None) -> str:
    """The one message a client gets for a failed parameter model: a rule's own words (a
    ``QueryError`` raised in a validator), else the field's fixed message, else the field
    named with pydantic's description."""
    first = exc.errors(include_url=False)[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)
    field = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "extra_forbidden":  # storage.query_spec's words for the same mistake
        return f"unknown parameter {names.safe_excerpt(field)}"
    if fixed and field in fixed:
        return fixed[field]
    return f"{names.safe_excerpt(field)}: {first['msg']}" if field else first["msg"]


def _time_param(value: Any, info: ValidationInfo) -> datetime:
    """A time parameter by storage.query_spec's rules (its QueryError is the message)."""
    now = (info.context or {}).get("now") or datetime.now(UTC)
    return parse_time(value, (info.field_name or "time").rstrip("_"), now)


TimeParam = Annotated[datetime, BeforeValidator(_time_param), WithJsonSchema(TIME_SCHEMA)]


# -- devices ---------------------------------------------------------------------------------------
class DeviceSummary(_Model):
    device_id: DeviceId
    status: DeviceStatus
    status_reason: str = Field(description="why the status is what it is, e.g. `no data for 60 s`")
    first_seen: Timestamp
    last_seen: Timestamp | None = Field(description="the latest reading's arrival; null: none yet")


class DeviceList(_Model):
    """`GET /api/v1/devices`: the devices the token may see, by id."""

    devices: list[DeviceSummary]
    count: int = Field(ge=0)
    truncated: bool = Field(description="more devices than one answer holds (1,000)")


class LatestValue(_Model):
    value: float
    unit: str | None
    timestamp: Timestamp = Field(description="the reading's own time")


class DeviceDetail(DeviceSummary):
    """`GET /api/v1/devices/{device_id}`: the device and its latest value per metric."""

    status_changed_at: Timestamp | None
    offline_after_s: int | None = Field(
        ge=1, description="silence after which it goes offline; null: the bridge's default"
    )
    metadata: dict[str, Any]
    latest: dict[str, LatestValue] = Field(description="by metric name")


# -- alerts ----------------------------------------------------------------------------------------
ALERT_PARAM_MESSAGES = {
    "state": "state: active, acknowledged, resolved or open",
    "severity": f"severity: one of {', '.join(names.SEVERITIES)}",
    "device_id": "device_id: not a valid device id",
}


class AlertsParams(_Model):
    """`GET /api/v1/alerts` query parameters; each filter applies when given. An unknown one
    is refused, as on /api/v1/telemetry: a misspelt filter must not widen the answer."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)

    state: Literal["active", "acknowledged", "resolved", "open"] | None = Field(
        None, description="`open`: every alert not resolved"
    )
    severity: Severity | None = None
    device_id: DeviceId | None = None
    from_: TimeParam | None = Field(
        None, alias="from", description=f"created at or after: {TIME_HELP}"
    )
    to: TimeParam | None = Field(None, description=f"created at or before: {TIME_HELP}")

    @model_validator(mode="after")
    def _ordered(self) -> AlertsParams:
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise QueryError("from is after to")
        return self


class Alert(_Model):
    """A stored alert (docs/protocol.md section 5), with its threshold and the value that
    crossed it."""

    alert_id: str
    rule_id: str
    device_id: str
    metric: str
    kind: Literal["value", "no_data"]
    severity: str
    title: str
    message: str
    state: AlertState
    threshold_value: float | None
    actual_value: float | None
    created_at: Timestamp
    updated_at: Timestamp
    acknowledged_at: Timestamp | None
    acknowledged_by: str | None
    acknowledged_note: str | None = Field(
        default=None, description="the note given with the acknowledgement, if any"
    )
    resolved_at: Timestamp | None


class AlertList(_Model):
    """`GET /api/v1/alerts`: newest first, at most 1,000."""

    alerts: list[Alert]
    count: int = Field(ge=0)


# -- telemetry -------------------------------------------------------------------------------------
def _listed(value: Any) -> Any:
    """One name, a comma-separated list or repeated parameters, as storage.query_spec reads
    them (items stripped)."""
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, list | tuple):
        return [item.strip() if isinstance(item, str) else item for item in items]
    return items


_LIST_HELP = "one name, a comma-separated list, or the parameter repeated"


class TelemetryParams(_Model):
    """``GET /api/v1/telemetry`` query parameters (also the WebSocket ``query`` message's).

    Validation runs storage.query_spec's :func:`parse_query` first, whose words every
    interface shares, and then the model's own checks, which state no rule it does not also
    apply; the parsed :class:`TelemetryQuery` is :attr:`query`. Alternative names the
    dialects use (``devices``/``agentId``, ``metrics``, ``start``/``end``, ``interval``,
    ``aggregation``) are accepted too.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    device_id: Annotated[
        list[DeviceId],
        BeforeValidator(_listed),
        Field(
            min_length=1,
            max_length=spec.MAX_DEVICES,
            validation_alias=AliasChoices("device_id", "devices", "agentId"),
            description=f"the devices; {_LIST_HELP}",
        ),
    ]
    metric: Annotated[
        Annotated[list[Metric], Field(min_length=1, max_length=spec.MAX_METRICS)] | None,
        BeforeValidator(_listed),
        Field(
            None,
            validation_alias=AliasChoices("metric", "metrics"),
            description=f"the metrics (default: every metric of the devices); {_LIST_HELP}",
        ),
    ]
    from_: Annotated[
        str | int | None,  # int: epoch milliseconds in a WebSocket message
        WithJsonSchema(TIME_SCHEMA),
        Field(
            None,
            alias="from",
            validation_alias=AliasChoices("from", "start"),
            description=f"start, inclusive (default: one hour before `to`): {TIME_HELP}",
        ),
    ]
    to: Annotated[
        str | int | None,  # int: epoch milliseconds in a WebSocket message
        WithJsonSchema(TIME_SCHEMA),
        Field(
            None,
            validation_alias=AliasChoices("to", "end"),
            description=f"end, exclusive (default: now): {TIME_HELP}",
        ),
    ]
    bucket: Annotated[
        str | None,
        Field(
            None,
            validation_alias=AliasChoices("bucket", "interval"),
            description=(
                "aggregate into buckets of this width, whole seconds from 1s to 1d, at most "
                f"{spec.MAX_BUCKETS:,} per series (units ms s m h d w)"
            ),
            examples=["1m", "15m", "1h"],
        ),
    ]
    agg: Annotated[
        Literal["avg", "min", "max", "sum", "count", "first", "last"] | None,
        Field(
            None,
            validation_alias=AliasChoices("agg", "aggregation"),
            description="the bucket aggregate (needs `bucket`); default `avg`",
        ),
    ]
    fill: Literal["none", "null", "previous", "zero"] | None = Field(
        None, description="empty buckets (needs `bucket` unless `none`); default `none`"
    )
    limit: int | None = Field(
        None,
        ge=1,
        le=spec.MAX_LIMIT,
        description=(
            f"points per page, default {spec.DEFAULT_LIMIT:,} (CSV: everything unless given)"
        ),
    )
    cursor: str | None = Field(None, description="`next_cursor` of the previous page")
    source: Literal["auto", "raw", "rollup"] | None = Field(
        None, description="`rollup` needs a bucket of whole minutes; default `auto`"
    )
    format: Literal["json", "csv"] | None = Field(
        None, description="`csv` streams every point as text/csv; default `json`"
    )

    _query: TelemetryQuery = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _spec(cls, data: Any, handler: Any, info: ValidationInfo) -> TelemetryParams:
        if not isinstance(data, Mapping):
            raise PydanticCustomError("model_type", "query parameters must be a mapping")
        now = (info.context or {}).get("now") or datetime.now(UTC)
        query = parse_query(data, now)  # a QueryError is the message (validation_message)
        # parse_query reads an empty value as "not given"; the model's checks must agree
        model: TelemetryParams = handler({k: v for k, v in data.items() if v not in (None, "")})
        model._query = query
        return model

    @property
    def query(self) -> TelemetryQuery:
        return self._query


def telemetry_params(params: Mapping[str, Any], now: datetime | None = None) -> TelemetryQuery:
    """The validated query of ``params``; :class:`QueryError` with the client's message."""
    try:
        return TelemetryParams.model_validate(params, context={"now": now}).query
    except ValidationError as exc:
        raise QueryError(validation_message(exc)) from None


class TelemetrySeries(_Model):
    device_id: str
    metric: str
    points: list[tuple[str, float | None]] = Field(
        description="[time, value] pairs in time order; value null in an empty filled bucket"
    )


class TelemetryPage(_Model):
    """`GET /api/v1/telemetry` (JSON) and the WebSocket `query_result`: one page."""

    series: list[TelemetrySeries]
    count: int = Field(ge=0, description="points in this page")
    truncated: bool = Field(description="the limit cut this page short: ask for next_cursor")
    next_cursor: str | None
    from_: str = Field(alias="from", description="the range's start (bucket-aligned)")
    to: str = Field(description="the range's end, exclusive (bucket-aligned)")
    bucket: int | None = Field(description="bucket width in seconds; null: raw readings")
    agg: str | None = Field(description="the bucket aggregate; null: raw readings")
