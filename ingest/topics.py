"""MQTT topic names (PROTOCOL.md section 2): built and parsed here and nowhere else.

Every builder takes already-validated names and validates them again (cheap, and it keeps a
caller's mistake from ever becoming a wildcard). The optional deployment prefix isolates one
deployment or one test on a shared broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest import names

SHARED_GROUP = "ingest"


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

    def ingest_subscription(self, *, shared: bool) -> str:
        """What the ingest subscribes to; `$share/ingest/...` spreads load over processes."""
        topic = self.device_telemetry_filter()
        return f"$share/{SHARED_GROUP}/{topic}" if shared else topic

    def device_errors(self, device_id: str) -> str:
        return self._join("devices", names.device_id(device_id), "errors")

    def device_status(self, device_id: str) -> str:
        return self._join("devices", names.device_id(device_id), "status")

    # -- validated stream --------------------------------------------------------------
    def telemetry(self, device_id: str, metric: str) -> str:
        return self._join("telemetry", names.device_id(device_id), names.metric(metric))

    def status(self, device_id: str) -> str:
        return self._join("status", names.device_id(device_id))

    # -- parsing -----------------------------------------------------------------------
    def strip_prefix(self, topic: str) -> str | None:
        if not self.prefix:
            return topic
        head = self.prefix + "/"
        return topic[len(head) :] if topic.startswith(head) else None

    def parse_device_topic(self, topic: str, kind: str) -> str | None:
        """The raw device-id level of ``devices/{id}/{kind}``, or None if the shape differs.

        The id is returned unvalidated so the caller can dead-letter it with a reason;
        use :func:`ingest.names.is_device_id` before building any topic from it.
        """
        rest = self.strip_prefix(topic)
        if rest is None:
            return None
        parts = rest.split("/")
        if len(parts) != 3 or parts[0] != "devices" or parts[2] != kind:
            return None
        return parts[1]
