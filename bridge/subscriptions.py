"""Dashboard subscriptions -> the narrowest MQTT filters over the validated stream (pure).

A subscription is validated into a :class:`Selector`, then translated into topic filters.
What a topic cannot express (globs in the token's ``devices`` claim, metric lists too long to
enumerate, value ranges, alert types, statuses) is checked in-process by
:meth:`Selector.accepts`. A client-supplied value never becomes a wildcard: every id is
validated against PROTOCOL.md section 1 before it reaches a filter, and ``+`` only appears
where the client asked for "all".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.auth import Principal
from ingest import names
from ingest.topics import Topics

CHANNELS = ("telemetry", "alerts", "devices", "system", "logs")
CHANNEL_SCOPES = {
    "telemetry": "telemetry:read",
    "alerts": "alerts:read",
    "devices": "devices:read",
    "system": "devices:read",
    "logs": "telemetry:read",
}
# Above this many filters for one subscription, use a wider filter and check in-process.
MAX_FILTERS = 32
MAX_LIST = 1000
_FREQ_RE = re.compile(r"^(\d{1,6})(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 3600.0


class SubscriptionError(Exception):
    """A subscription the bridge refuses: ``code`` 422 (invalid) or 403 (not allowed)."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.error = error
        self.message = message


def _invalid(message: str) -> SubscriptionError:
    return SubscriptionError(422, "validation_error", message)


def parse_frequency(value: Any) -> float:
    """``real-time`` -> 0; ``500ms``/``5s``/``1m`` -> seconds (0.1 s to 1 h)."""
    if value is None or value in ("real-time", "realtime", "real_time"):
        return 0.0
    if isinstance(value, str) and (m := _FREQ_RE.match(value)):
        seconds = int(m[1]) * _UNITS[m[2]]
        if MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
            return seconds
    raise _invalid("frequency must be 'real-time' or an interval from 100ms to 1h such as 5s")


def _names(value: Any, check: Any, what: str) -> tuple[str, ...] | None:
    """None, one name or a list of names, each validated; [] and None both mean 'all'."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_LIST:
        raise _invalid(f"{what} must be a name or a list of at most {MAX_LIST} names")
    out = []
    for item in items:
        try:
            out.append(check(item))
        except names.InvalidName as exc:
            raise _invalid(str(exc)) from None
    return tuple(dict.fromkeys(out)) or None


def parse_devices(value: Any) -> tuple[str, ...] | None:
    """A ``device_id`` value (one id or a list), validated; None means every device."""
    return _names(value, names.device_id, "device_id")


def _severity(value: Any) -> str:
    if value not in names.SEVERITIES:
        raise names.InvalidName(f"invalid severity {names.safe_excerpt(value)}")
    return str(value)


def _status(value: Any) -> str:
    if value not in names.DEVICE_STATUSES:
        raise names.InvalidName(f"invalid status {names.safe_excerpt(value)}")
    return str(value)


def _level(value: Any) -> str:
    level = str(value).upper() if isinstance(value, str) else ""
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise names.InvalidName(f"invalid log level {names.safe_excerpt(value)}")
    return level


def _short_text(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise names.InvalidName("expected text of 1-64 characters")
    return value


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{what} must be a number")
    return float(value)


@dataclass(frozen=True)
class Selector:
    channel: str
    devices: tuple[str, ...] | None = None
    metrics: tuple[str, ...] | None = None
    severities: tuple[str, ...] | None = None
    alert_types: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    value_min: float | None = None
    value_max: float | None = None
    search: str | None = None
    levels: tuple[str, ...] | None = None
    applications: tuple[str, ...] | None = None
    interval_s: float = 0.0
    snapshot: bool = False

    # -- translation -----------------------------------------------------------------------
    def mqtt_filters(self, topics: Topics, principal: Principal) -> tuple[str, ...]:
        devices = self.devices
        if devices is None and not principal.all_devices and not principal.has_globs:
            devices = tuple(sorted(principal.exact_devices))  # the claim is the list
        dev_levels: list[str | None] = list(devices) if devices else [None]
        if self.channel == "telemetry":
            met_levels: list[str | None] = list(self.metrics) if self.metrics else [None]
            if len(dev_levels) * len(met_levels) > MAX_FILTERS:
                if len(dev_levels) <= MAX_FILTERS:
                    met_levels = [None]
                elif len(met_levels) <= MAX_FILTERS:
                    dev_levels = [None]
                else:
                    dev_levels, met_levels = [None], [None]
            return tuple(topics.telemetry_filter(d, m) for d in dev_levels for m in met_levels)
        if len(dev_levels) > MAX_FILTERS:
            dev_levels = [None]
        if self.channel == "alerts":
            sev_levels: list[str | None] = list(self.severities) if self.severities else [None]
            if len(sev_levels) * len(dev_levels) > MAX_FILTERS:
                dev_levels = [None]
            return tuple(topics.alerts_filter(s, d) for s in sev_levels for d in dev_levels)
        if self.channel == "devices":
            return tuple(topics.status_filter(d) for d in dev_levels)
        if self.channel == "logs":
            return tuple(topics.logs_filter(d) for d in dev_levels)
        return (topics.system_filter(),)

    # -- in-process checks -----------------------------------------------------------------
    def accepts(
        self, principal: Principal, device_id: str | None, event: Mapping[str, Any]
    ) -> bool:
        """Everything the topic filter could not express. ``event`` is the stream payload."""
        if device_id is not None:
            if not principal.sees(device_id):
                return False
            if self.devices is not None and device_id not in self.devices:
                return False
        if self.channel == "telemetry":
            if self.metrics is not None and event.get("metric") not in self.metrics:
                return False
            value = event.get("value")
            if self.value_min is not None and not (
                isinstance(value, int | float) and value >= self.value_min
            ):
                return False
            if self.value_max is not None and not (
                isinstance(value, int | float) and value <= self.value_max
            ):
                return False
        elif self.channel == "alerts":
            if self.severities is not None and event.get("severity") not in self.severities:
                return False
            if self.metrics is not None and event.get("metric") not in self.metrics:
                return False
            if (
                self.alert_types is not None
                and event.get("metric") not in self.alert_types
                and event.get("alert_type") not in self.alert_types
            ):
                return False
        elif self.channel == "devices":
            if self.statuses is not None and event.get("new_status") not in self.statuses:
                return False
        elif self.channel == "logs":
            if self.levels is not None and event.get("level") not in self.levels:
                return False
            if self.search and self.search.lower() not in str(event.get("message", "")).lower():
                return False
            if self.applications is not None and event.get("application") not in self.applications:
                return False
        return True


# Every filter a subscription may carry, and the channels it applies to. A filter is applied
# or refused (422): never accepted and ignored. Aliases name the same filter.
FILTER_CHANNELS: dict[str, tuple[str, ...]] = {
    "device_id": CHANNELS,  # system: the component (system/{component})
    "metrics": ("telemetry", "alerts", "system"),  # alerts: the alert's metric; system: fields
    "frequency": ("telemetry", "system"),  # sampled latest values; events are never sampled
    "severity": ("alerts",),
    "alert_type": ("alerts",),
    "status_types": ("devices",),
    "min_value": ("telemetry",),
    "max_value": ("telemetry",),
    "search": ("logs",),
    "level": ("logs",),
    "application": ("logs",),
}
FILTER_ALIASES = {
    "devices": "device_id",
    "agentId": "device_id",  # the Nexus name
    "value_min": "min_value",
    "value_max": "max_value",
}
# Keys of a channel-form subscribe besides its filters (which may also stand at the top level:
# the Valtronics JavaScript client spreads its filters into the message).
ENVELOPE_KEYS = ("type", "id", "channel", "filters", "snapshot", "since", "batch")
SNAPSHOT_CHANNELS = ("telemetry", "devices")


def filters_of(msg: Mapping[str, Any]) -> dict[str, Any]:
    """The filters of a subscribe message: its ``filters`` object and the filter names it
    carries at the top level, aliases resolved. Unknown names, or one filter given twice
    with different values, are refused."""
    raw = msg.get("filters")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _invalid("filters must be an object")
    out: dict[str, Any] = {}
    known = ", ".join(FILTER_CHANNELS)
    for where, items in (("filters", raw.items()), ("top", msg.items())):
        for key, value in items:
            if where == "top" and key in ENVELOPE_KEYS:
                continue
            name = FILTER_ALIASES.get(key, key)
            if name not in FILTER_CHANNELS:
                what = "filter" if where == "filters" else "field"
                raise _invalid(f"unknown {what} {names.safe_excerpt(key)}; filters: {known}")
            if value is None:
                continue
            if name in out and out[name] != value:
                raise _invalid(f"{name} is given twice with different values")
            out[name] = value
    return out


def inapplicable(channel: str, filters: Mapping[str, Any]) -> list[str]:
    """The filters that mean nothing on ``channel``. ``frequency: real-time`` fits every
    channel: it asks for every message, as an event channel delivers them anyway."""
    return [
        k
        for k, v in filters.items()
        if channel not in FILTER_CHANNELS[k]
        and not (k == "frequency" and v in ("real-time", "realtime", "real_time"))
    ]


def parse_channel_subscribe(
    msg: Mapping[str, Any],
    default_channel: str | None = None,
    filters: Mapping[str, Any] | None = None,
) -> Selector:
    """Validate a channel-form ``subscribe`` (PROTOCOL.md section 3). ``filters``: already
    collected ones (the topics and events forms pass those that apply to this channel)."""
    channel = msg.get("channel") or default_channel
    if channel not in CHANNELS:
        raise _invalid(f"channel must be one of {', '.join(CHANNELS)}")
    if filters is None:
        filters = filters_of(msg)
        wrong = inapplicable(str(channel), filters)
        if wrong:
            raise _invalid(_not_on(str(channel), wrong))
    device_value = filters.get("device_id")
    snapshot = msg.get("snapshot", False)
    if not isinstance(snapshot, bool):
        raise _invalid("snapshot must be true or false")
    if snapshot and channel not in SNAPSHOT_CHANNELS:
        raise _invalid(
            f"snapshot: only {' and '.join(SNAPSHOT_CHANNELS)} have stored latest values"
        )
    search = filters.get("search")
    if search is not None and (not isinstance(search, str) or len(search) > 200):
        raise _invalid("search must be text of at most 200 characters")
    value_min = _number(filters.get("min_value"), "min_value")
    value_max = _number(filters.get("max_value"), "max_value")
    return Selector(
        channel=str(channel),
        devices=_names(device_value, names.device_id, "device_id"),
        metrics=_names(filters.get("metrics"), names.metric, "metrics"),
        severities=_names(filters.get("severity"), _severity, "severity"),
        alert_types=_names(filters.get("alert_type"), _short_text, "alert_type"),
        statuses=_names(filters.get("status_types"), _status, "status_types"),
        value_min=value_min,
        value_max=value_max,
        search=search or None,
        levels=_names(filters.get("level"), _level, "level"),
        applications=_names(filters.get("application"), _short_text, "application"),
        interval_s=parse_frequency(filters.get("frequency")),
        snapshot=snapshot,
    )


def _not_on(channel: str, wrong: list[str]) -> str:
    where = "; ".join(f"{k} applies to {', '.join(FILTER_CHANNELS[k])}" for k in wrong)
    return f"filter {', '.join(wrong)} does not apply to the {channel} channel ({where})"


def authorize(selector: Selector, principal: Principal) -> None:
    """403 unless the token has the channel's scope and may see every named device."""
    scope = CHANNEL_SCOPES[selector.channel]
    if not principal.has(scope):
        raise SubscriptionError(403, "forbidden", f"the token lacks the scope {scope}")
    for device in selector.devices or ():
        if not principal.sees(device):
            raise SubscriptionError(403, "forbidden", f"the token does not allow device {device}")
