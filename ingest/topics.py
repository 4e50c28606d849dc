"""MQTT topic names (PROTOCOL.md section 2): built and parsed here and nowhere else.

Every builder takes already-validated names and validates them again (cheap, and it keeps a
caller's mistake from ever becoming a wildcard). The optional deployment prefix isolates one
deployment or one test on a shared broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage import names

SHARED_GROUP = "ingest"


def _severity(value: str) -> str:
    if value not in names.SEVERITIES:
        allowed = ", ".join(names.SEVERITIES)
        raise names.InvalidName(f"invalid severity {names.safe_excerpt(value)}: one of {allowed}")
    return value


def _level(value: str | None, check: Callable[[str], str]) -> str:
    return "+" if value is None else check(value)


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = ""

    def __post_init__(self) -> None:
        names.topic_prefix(self.prefix)

    def _join(self, *levels: str) -> str:
        topic = "/".join(levels)
        return f"{self.prefix}/{topic}" if self.prefix else topic

    # -- device side -------------------------------------------------------------------
    def device_telemetry(self, device_id: str) -> str:
        return self._join("devices", names.device_id(device_id), "telemetry")

    def device_telemetry_filter(self) -> str:
        return self._join("devices", "+", "telemetry")

    def ingest_subscription(self, *, shared: bool, kind: str = "telemetry") -> str:
        """What the ingest subscribes to; `$share/ingest/...` spreads load over processes."""
        topic = self._join("devices", "+", kind)
        return f"$share/{SHARED_GROUP}/{topic}" if shared else topic

    def mapped_subscription(self, filter_: str, *, shared: bool) -> str:
        """What the ingest subscribes to for a mapping's filter (a firmware's own topics,
        ingest/mapped.py): under the deployment prefix like every topic of the bridge."""
        topic = self._join(filter_)
        return f"$share/{SHARED_GROUP}/{topic}" if shared else topic

    def device_errors(self, device_id: str) -> str:
        return self._join("devices", names.device_id(device_id), "errors")

    def device_status(self, device_id: str) -> str:
        return self._join("devices", names.device_id(device_id), "status")

    def device_command(self, device_id: str, command_id: str) -> str:
        return self._join(
            "devices", names.device_id(device_id), "commands", names.device_id(command_id)
        )

    def device_command_result(self, device_id: str, command_id: str) -> str:
        return self.device_command(device_id, command_id) + "/result"

    # -- validated stream --------------------------------------------------------------
    def telemetry(self, device_id: str, metric: str) -> str:
        return self._join("telemetry", names.device_id(device_id), names.metric(metric))

    def status(self, device_id: str) -> str:
        return self._join("status", names.device_id(device_id))

    def alert(self, severity: str, device_id: str) -> str:
        return self._join("alerts", _severity(severity), names.device_id(device_id))

    def system(self, component: str) -> str:
        return self._join("system", names.device_id(component))

    def stream_resync(self) -> str:
        """A stream publisher that had to drop messages while cut off from the broker says so
        here once it is back; fronts then replay what they missed from storage. Outside the
        validated stream's namespaces, so no subscriber of ``system/+`` ever sees it (the
        production ACL lets the ingest write it and the front read it)."""
        return self._join("bridge", "stream-resync")

    def logs(self, device_id: str) -> str:
        return self._join("logs", names.device_id(device_id))

    # -- filters over the validated stream (None = every value of that level) -----------
    # A level is either a validated name or the single-level wildcard we put there ourselves;
    # client input never reaches a filter unvalidated.
    def telemetry_filter(self, device_id: str | None, metric: str | None) -> str:
        return self._join(
            "telemetry", _level(device_id, names.device_id), _level(metric, names.metric)
        )

    def status_filter(self, device_id: str | None) -> str:
        return self._join("status", _level(device_id, names.device_id))

    def alerts_filter(self, severity: str | None, device_id: str | None) -> str:
        return self._join("alerts", _level(severity, _severity), _level(device_id, names.device_id))

    def system_filter(self) -> str:
        return self._join("system", "+")

    def logs_filter(self, device_id: str | None) -> str:
        return self._join("logs", _level(device_id, names.device_id))

    def parse_stream(self, topic: str) -> tuple[str, ...] | None:
        """Levels of a validated-stream topic without the prefix, e.g. ("telemetry", d, m)."""
        rest = self.strip_prefix(topic)
        if rest is None:
            return None
        parts = tuple(rest.split("/"))
        shapes = {"telemetry": 3, "status": 2, "alerts": 3, "system": 2, "logs": 2}
        if not parts or shapes.get(parts[0]) != len(parts):
            return None
        return parts

    # -- parsing -----------------------------------------------------------------------
    def strip_prefix(self, topic: str) -> str | None:
        if not self.prefix:
            return topic
        head = self.prefix + "/"
        return topic[len(head) :] if topic.startswith(head) else None

    def parse_device_topic(self, topic: str, kind: str) -> str | None:
        """The raw device-id level of ``devices/{id}/{kind}``, or None if the shape differs.

        The id is returned unvalidated so the caller can dead-letter it with a reason;
        use :func:`storage.names.is_device_id` before building any topic from it.
        """
        rest = self.strip_prefix(topic)
        if rest is None:
            return None
        parts = rest.split("/")
        if len(parts) != 3 or parts[0] != "devices" or parts[2] != kind:
            return None
        return parts[1]
