"""Frame shaping per seed dialect: what a subscription's client gets for one stream event.

Pure functions of a :class:`~bridge.subscription_set.Subscription` and a stream message (its
topic levels and event), no session and no I/O. The dialects (``channel``, ``topics``,
``events``, ``o1-metrics``, ``o1-logs``) and the frames of each are described in
docs/protocol.md, section 8.
"""

from __future__ import annotations

from typing import Any

import orjson

from bridge.protocol import encode, message
from bridge.subscription_set import Subscription, device_of

EVENT_CHANNELS = {
    "telemetry.updated": "telemetry",
    "alert.created": "alerts",
    "alert.updated": "alerts",
    "alert.acknowledged": "alerts",
    "alert.resolved": "alerts",
    "device.status": "devices",
    "system.status": "system",
    "log.entry": "logs",
    # The Nexus document's names for the same streams: its agents are devices, and its
    # server republishes telemetry it receives as telemetry.received.
    "agent.status": "devices",
    "telemetry.received": "telemetry",
}

_ID_SLOT = "\x00subscription_id\x00"
_ID_SLOT_JSON = orjson.dumps(_ID_SLOT)


def shared_frame(
    sub: Subscription, levels: tuple[str, ...], event: dict[str, Any], frames: dict[Any, Any]
) -> bytes:
    """``live_frame``, serialised once per stream message for every subscription it reaches.

    ``frames`` lives for one message. Channel frames differ between subscriptions only in
    ``subscription_id``, so the message is encoded once with a placeholder there and each
    subscription's frame is the two halves around its id (a bytes join instead of a dict
    build and a JSON encode per delivery). The placeholder is found by its first occurrence:
    ``type``, ``channel`` and ``subscription_id`` come before any content from the device.
    Other dialects carry no subscription id: one frame serves them all. Either way the
    finished frame is kept under the subscription's id, which is a hash of everything that
    shapes it (``subscription_id``): clients with the same subscription get the very same
    bytes, built once.
    """
    frame = frames.get(sub.id)
    if frame is not None:
        return frame
    frame = frames[sub.id] = _shared_frame(sub, levels, event, frames)
    return frame


def _shared_frame(
    sub: Subscription, levels: tuple[str, ...], event: dict[str, Any], frames: dict[Any, Any]
) -> bytes:
    channel = sub.selector.channel
    # system frames show only the fields the subscription's `metrics` asked for
    shape = (sub.dialect, sub.label, channel, sub.selector.metrics if channel == "system" else None)
    if sub.dialect != "channel":
        frame = frames.get(shape)
        if frame is None:
            frame = frames[shape] = live_frame(sub, levels, event)
        return frame
    halves: tuple[bytes, bytes | None] | None = frames.get(shape)
    if halves is None:
        template = live_frame(sub, levels, event, sub_id=_ID_SLOT)
        head, found, tail = template.partition(_ID_SLOT_JSON)
        halves = frames[shape] = (head, tail) if found else (template, None)
    head, rest = halves
    return head if rest is None else head + orjson.dumps(sub.id) + rest


def live_frame(
    sub: Subscription,
    levels: tuple[str, ...],
    event: dict[str, Any],
    *,
    sub_id: str | None = None,
) -> bytes:
    """The frame a subscription of this dialect gets for one stream event (``sub_id``
    stands in for the subscription's own id)."""
    channel = sub.selector.channel
    sid = sub.id if sub_id is None else sub_id
    if sub.dialect == "topics":
        kind, data = _openframe_event(sub, levels, event)
        return encode(message("event", topic=sub.label, event=kind, data=data))
    if sub.dialect == "events":
        return encode(message("event", eventType=sub.label, data=_nexus_data(levels, event)))
    if sub.dialect == "o1-metrics" and channel == "system":
        fields = _system_fields(event)
        wanted = sub.selector.metrics
        if wanted is None:
            shown = {_O1_NAMES.get(k, k): v for k, v in fields.items()}
        else:  # o1's names (cpu, memory, disk) or the status's own field names
            shown = {
                w: fields[_O1_FIELDS.get(w, w)] for w in wanted if _O1_FIELDS.get(w, w) in fields
            }
        return encode(
            message(
                "metrics",
                host=event.get("component"),
                application=sub.label or None,
                **shown,
            )
        )
    if sub.dialect == "o1-metrics":
        return encode(
            message(
                "metrics",
                host=event.get("device_id"),
                application=sub.label or None,
                **{str(event.get("metric")): event.get("value")},
            )
        )
    if sub.dialect == "o1-logs":
        return encode(
            message("log", host=levels[1], **{k: v for k, v in event.items() if k != "type"})
        )
    if channel == "telemetry":
        return encode(
            message(
                "telemetry_update",
                channel=channel,
                subscription_id=sid,
                device_id=event.get("device_id"),
                telemetry={
                    str(event.get("metric")): {
                        "value": event.get("value"),
                        "unit": event.get("unit"),
                        "timestamp": event.get("ts"),
                    }
                },
                received_at=event.get("received_at"),
            )
        )
    if channel == "alerts":
        return encode(message("alert", channel=channel, subscription_id=sid, **_alert(event)))
    if channel == "devices":
        return encode(
            message(
                "device_status_update",
                channel=channel,
                subscription_id=sid,
                device_id=event.get("device_id"),
                old_status=event.get("old_status"),
                new_status=event.get("new_status"),
                reason=event.get("reason"),
                metadata={"last_seen": event.get("last_seen")},
                received_at=event.get("ts"),  # the resume point
            )
        )
    if channel == "system":
        metrics = _system_fields(event, sub.selector.metrics)
        return encode(
            message(
                "system_status_update",
                channel=channel,
                subscription_id=sid,
                component=event.get("component"),
                metrics=metrics,
            )
        )
    fields = {k: v for k, v in event.items() if k not in ("device_id", "type", "timestamp")}
    return encode(
        message("log", channel=channel, subscription_id=sid, device_id=levels[1], **fields)
    )


# o1's metric names for the fields of the bridge's system status, and back
_O1_FIELDS = {"cpu": "cpu_usage", "memory": "memory_usage", "disk": "disk_usage"}
_O1_NAMES = {v: k for k, v in _O1_FIELDS.items()}


def _system_fields(event: dict[str, Any], wanted: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The measurements of a ``system/{component}`` status, only the ``wanted`` ones if named."""
    fields = {
        k: v for k, v in event.items() if k not in ("component", "status", "type", "timestamp")
    }
    if wanted is None:
        return fields
    return {k: fields[k] for k in wanted if k in fields}


def _openframe_event(
    sub: Subscription, levels: tuple[str, ...], event: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The topics form (OpenFrame): the kind of event and its ``data``, with the document's
    field names first (``id``, ``status``, ``metrics``...) and the bridge's own after them."""
    kind = levels[0]
    if kind == "status":
        data = {
            "id": event.get("device_id"),
            "status": event.get("new_status"),
            "last_seen": event.get("last_seen"),
        }
        return "device_update", data | {k: v for k, v in event.items() if k not in data}
    if kind == "alerts":
        return f"alert_{event.get('event') or 'created'}", {"id": event.get("alert_id")} | event
    if kind == "system":
        data = {
            "id": event.get("component"),
            # a component that publishes its status is up; one that stops sends nothing
            "status": event.get("status") or "healthy",
            "metrics": _system_fields(event, sub.selector.metrics),
        }
        return "system_status", data | {"component": event.get("component")}
    if kind == "telemetry":
        return "telemetry_update", event
    return "log", {"device_id": levels[1]} | event


def _nexus_data(levels: tuple[str, ...], event: dict[str, Any]) -> dict[str, Any]:
    """The events form (Nexus): the stream event, plus the document's names for its device
    (``agentId``), a device's ``status`` and a reading's ``metrics``."""
    device = device_of(levels)
    extra: dict[str, Any] = {} if device is None else {"agentId": device}
    if levels[0] == "status":
        extra["status"] = event.get("new_status")
    elif levels[0] == "telemetry":
        extra["metrics"] = {str(event.get("metric")): event.get("value")}
    return event | extra


def _alert(event: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "alert_id",
        "rule_id",
        "device_id",
        "metric",
        "severity",
        "title",
        "message",
        "state",
        "event",
    )
    out = {k: event.get(k) for k in keys}
    out["metadata"] = event.get("metadata") or {}
    out["created_at"] = event.get("created_at")
    out["updated_at"] = out["received_at"] = event.get("updated_at")  # the resume point
    return out
