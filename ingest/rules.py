"""Threshold rules and the alert lifecycle: a pure engine (readings and the time in, events out).

``RuleEngine.feed(device, metric, value, now)`` is called by the ingest after each commit and
``tick(now)`` by a scheduler; neither does I/O, so every behaviour is a table-driven unit test.

- Conditions: ``gt gte lt lte`` (threshold), ``outside inside`` (threshold..threshold_high),
  ``no_data`` (no reading of the metric for ``threshold`` seconds).
- ``for_s``: the condition must hold that long before an alert is raised.
- Hysteresis: an alert clears only when the value is back past ``clear_threshold`` (default:
  the threshold itself), so a value hovering at the limit does not flap.
- One open alert per (device, metric) and kind (value rules / no_data): when a higher
  severity's condition holds, the open alert is escalated (``updated``) instead of a second one;
  when that condition clears while a lower one still holds, it steps back down (``updated``).
- Lifecycle ``active -> acknowledged -> resolved``; state can be rebuilt after a restart from
  the open alerts stored in the database (``restore``).
"""

from __future__ import annotations

import fnmatch
import uuid
from dataclasses import dataclass, field, replace
from typing import Literal

from storage import names

Condition = Literal["gt", "gte", "lt", "lte", "outside", "inside", "no_data"]
CONDITIONS: tuple[str, ...] = ("gt", "gte", "lt", "lte", "outside", "inside", "no_data")
SEVERITY_RANK = {s: i for i, s in enumerate(names.SEVERITIES)}


class RuleError(ValueError):
    """A rule that cannot work; the message says which field and why."""


@dataclass(frozen=True)
class Rule:
    rule_id: str
    metric: str
    condition: Condition
    threshold: float
    severity: str = "warning"
    devices: tuple[str, ...] = ("*",)
    threshold_high: float | None = None
    clear_threshold: float | None = None
    for_s: float = 0.0
    name: str = ""
    title: str = "{metric} on {device_id}"
    message: str = "{metric} is {value} ({condition} {threshold})"
    enabled: bool = True

    def __post_init__(self) -> None:
        names.metric(self.metric)
        if self.condition not in CONDITIONS:
            raise RuleError(f"condition must be one of {', '.join(CONDITIONS)}")
        if self.severity not in SEVERITY_RANK:
            raise RuleError(f"severity must be one of {', '.join(names.SEVERITIES)}")
        if self.condition in ("outside", "inside"):
            if self.threshold_high is None or self.threshold_high < self.threshold:
                raise RuleError("outside/inside need threshold <= threshold_high")
        if self.condition == "no_data" and self.threshold <= 0:
            raise RuleError("no_data needs threshold > 0 (seconds without data)")
        if self.for_s < 0:
            raise RuleError("for_s must be >= 0")
        for pattern in self.devices:
            if pattern != "*" and not names.is_device_id(pattern.replace("*", "x")):
                raise RuleError(f"invalid device selector {names.safe_excerpt(pattern)}")

    @property
    def kind(self) -> str:
        return "no_data" if self.condition == "no_data" else "value"

    def applies_to(self, device_id: str) -> bool:
        return any(p == "*" or fnmatch.fnmatchcase(device_id, p) for p in self.devices)

    def breached(self, value: float) -> bool:
        t, hi = self.threshold, self.threshold_high
        match self.condition:
            case "gt":
                return value > t
            case "gte":
                return value >= t
            case "lt":
                return value < t
            case "lte":
                return value <= t
            case "outside":
                return value < t or value > (hi if hi is not None else t)
            case "inside":
                return t <= value <= (hi if hi is not None else t)
        return False

    def cleared(self, value: float) -> bool:
        """Back within the clear threshold (hysteresis), not merely below the trigger."""
        c = self.clear_threshold
        match self.condition:
            case "gt" | "gte":
                return value < (c if c is not None else self.threshold) or (
                    c is None and not self.breached(value)
                )
            case "lt" | "lte":
                return value > (c if c is not None else self.threshold) or (
                    c is None and not self.breached(value)
                )
        return not self.breached(value)


@dataclass
class Alert:
    alert_id: str
    rule_id: str
    device_id: str
    metric: str
    severity: str
    title: str
    message: str
    state: str  # active | acknowledged | resolved
    created_at: float
    updated_at: float
    threshold_value: float
    actual_value: float | None
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None


@dataclass(frozen=True)
class AlertEvent:
    event: str  # created | updated | acknowledged | resolved
    alert: Alert
    # value | no_data, fixed when the event is made: the rule may be gone by the time it is stored
    kind: str = "value"


@dataclass
class _Track:
    """Per (rule, device, metric): since when the condition holds (None: it does not)."""

    since: float | None = None


@dataclass
class RuleEngine:
    rules: dict[str, Rule] = field(default_factory=dict)
    _open: dict[tuple[str, str, str], Alert] = field(default_factory=dict)  # (device, metric, kind)
    _tracks: dict[tuple[str, str, str], _Track] = field(default_factory=dict)
    _last_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    _last_value: dict[tuple[str, str], float] = field(default_factory=dict)

    # -- configuration and restart -------------------------------------------------------------
    def set_rules(self, rules: list[Rule]) -> None:
        """Replace the rule set in one assignment. The mapping is never edited in place, so
        whoever holds the previous one (an evaluation under way) keeps a consistent set."""
        self.rules = new = {r.rule_id: r for r in rules}
        if self._tracks:  # forget the timers of rules that are gone
            self._tracks = {k: t for k, t in self._tracks.items() if k[0] in new}

    @property
    def metrics(self) -> frozenset[str]:
        """Metrics any enabled rule looks at: the ingest feeds only these."""
        return frozenset(r.metric for r in self.rules.values() if r.enabled)

    @staticmethod
    def kind_of(alert: Alert, rules: dict[str, Rule]) -> str:
        rule = rules.get(alert.rule_id)
        return rule.kind if rule else "value"

    def restore(self, open_alerts: list[Alert], last_seen: dict[tuple[str, str], float]) -> None:
        """Rebuild after a restart: open alerts from the database, last reading times."""
        for alert in open_alerts:
            rule = self.rules.get(alert.rule_id)
            kind = rule.kind if rule else "value"
            self._open[(alert.device_id, alert.metric, kind)] = alert
        self._last_seen.update(last_seen)

    def open_alerts(self) -> list[Alert]:
        return list(self._open.values())

    # -- inputs ----------------------------------------------------------------------------------
    def feed(self, device_id: str, metric: str, value: float, now: float) -> list[AlertEvent]:
        self._last_seen[(device_id, metric)] = now
        self._last_value[(device_id, metric)] = value
        events: list[AlertEvent] = []
        nodata = self._open.get((device_id, metric, "no_data"))
        if nodata is not None:  # data is back
            events.append(self._resolve(nodata, (device_id, metric, "no_data"), value, now))
        events.extend(self._evaluate(device_id, metric, value, now))
        return events

    def tick(self, now: float) -> list[AlertEvent]:
        """`for` durations that elapsed without new readings, and no_data rules."""
        events: list[AlertEvent] = []
        for (device_id, metric), value in list(self._last_value.items()):
            events.extend(self._evaluate(device_id, metric, value, now))
        for rule in self.rules.values():
            if not rule.enabled or rule.kind != "no_data":
                continue
            for (device_id, metric), seen in list(self._last_seen.items()):
                key = (device_id, metric, "no_data")
                if metric != rule.metric or not rule.applies_to(device_id) or key in self._open:
                    continue
                if now - seen >= rule.threshold + rule.for_s:
                    events.append(self._create(rule, device_id, metric, None, now, key))
        return events

    def sync_acknowledged(self, acked: dict[str, tuple[float, str]]) -> None:
        """Acknowledgements made elsewhere (the front writes them to the database)."""
        for alert in self._open.values():
            if alert.alert_id in acked and alert.state == "active":
                alert.acknowledged_at, alert.acknowledged_by = acked[alert.alert_id]
                alert.state = "acknowledged"

    def acknowledge(self, alert_id: str, by: str, now: float) -> AlertEvent | None:
        for key, alert in self._open.items():
            if alert.alert_id == alert_id and alert.state == "active":
                alert.state, alert.acknowledged_at, alert.acknowledged_by = "acknowledged", now, by
                alert.updated_at = now
                return AlertEvent("acknowledged", replace(alert), key[2])
        return None

    # -- core ------------------------------------------------------------------------------------
    def _evaluate(self, device_id: str, metric: str, value: float, now: float) -> list[AlertEvent]:
        key = (device_id, metric, "value")
        candidates = [
            r
            for r in self.rules.values()
            if r.enabled and r.kind == "value" and r.metric == metric and r.applies_to(device_id)
        ]
        firing: list[Rule] = []
        for rule in candidates:
            track = self._tracks.setdefault((rule.rule_id, device_id, metric), _Track())
            if rule.breached(value):
                if track.since is None:
                    track.since = now
                if now - track.since >= rule.for_s:
                    firing.append(rule)
            else:
                track.since = None
        alert = self._open.get(key)
        if firing:
            top = max(firing, key=lambda r: SEVERITY_RANK[r.severity])
            if alert is None:
                return [self._create(top, device_id, metric, value, now, key)]
            if SEVERITY_RANK[top.severity] > SEVERITY_RANK[alert.severity]:
                return [self._escalate(alert, top, value, now)]
            owner = self.rules.get(alert.rule_id)
            if top.rule_id != alert.rule_id and (
                owner is None or not owner.enabled or owner.cleared(value)
            ):
                # the higher condition cleared (past its own hysteresis), a lower one holds,
                # or the alert's own rule was deleted or disabled
                return [self._escalate(alert, top, value, now)]
            alert.actual_value = value
            return []
        if alert is not None:
            owner = self.rules.get(alert.rule_id)
            # the alert's own rule may have been deleted or disabled meanwhile: the alert ends
            if owner is None or not owner.enabled or owner.cleared(value):
                return [self._resolve(alert, key, value, now)]
        return []

    def _create(
        self,
        rule: Rule,
        device_id: str,
        metric: str,
        value: float | None,
        now: float,
        key: tuple[str, str, str],
    ) -> AlertEvent:
        alert = Alert(
            alert_id=f"al_{uuid.uuid4().hex[:16]}",
            rule_id=rule.rule_id,
            device_id=device_id,
            metric=metric,
            severity=rule.severity,
            title=_render(rule.title, rule, device_id, value),
            message=_render(rule.message, rule, device_id, value),
            state="active",
            created_at=now,
            updated_at=now,
            threshold_value=rule.threshold,
            actual_value=value,
        )
        self._open[key] = alert
        return AlertEvent("created", replace(alert), key[2])

    def _escalate(self, alert: Alert, rule: Rule, value: float, now: float) -> AlertEvent:
        alert.rule_id, alert.severity = rule.rule_id, rule.severity
        alert.threshold_value, alert.actual_value, alert.updated_at = rule.threshold, value, now
        alert.title = _render(rule.title, rule, alert.device_id, value)
        alert.message = _render(rule.message, rule, alert.device_id, value)
        alert.state = "active"  # an escalation needs a fresh acknowledgement
        return AlertEvent("updated", replace(alert), "value")

    def _resolve(
        self, alert: Alert, key: tuple[str, str, str], value: float | None, now: float
    ) -> AlertEvent:
        del self._open[key]
        alert.state, alert.resolved_at, alert.updated_at = "resolved", now, now
        alert.actual_value = value
        return AlertEvent("resolved", replace(alert), key[2])


def _render(template: str, rule: Rule, device_id: str, value: float | None) -> str:
    """Templates see only these fields; anything else is left as written."""
    fields = {
        "device_id": device_id,
        "metric": rule.metric,
        "value": "no data" if value is None else f"{value:g}",
        "threshold": f"{rule.threshold:g}",
        "threshold_high": "" if rule.threshold_high is None else f"{rule.threshold_high:g}",
        "condition": rule.condition,
        "severity": rule.severity,
        "name": rule.name or rule.rule_id,
    }
    try:
        return template.format_map(fields)[:500]
    except (KeyError, ValueError, IndexError, AttributeError):
        return template[:500]
