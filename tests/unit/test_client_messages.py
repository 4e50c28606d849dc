"""bridge.client's pure parsing: frames, typed messages, their identities, error replies."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.client import (
    AlertEvent,
    AuthError,
    BridgeError,
    DeviceStatus,
    Event,
    SystemStatus,
    TelemetryUpdate,
    parse_live,
)
from bridge.client.messages import decode_frame, identity

AT = "2026-01-01T00:00:01Z"


@pytest.mark.parametrize(
    ("frame", "messages"),
    [
        ('{"type": "pong"}', [{"type": "pong"}]),
        (b'{"type": "pong"}', [{"type": "pong"}]),
        ("[1, 2]", []),
        ('"text"', []),
        ("null", []),
        ('{"type": "batch", "messages": [{"a": 1}, 2, "x", null, {"b": 2}]}', [{"a": 1}, {"b": 2}]),
        ('{"type": "batch"}', []),
        ('{"type": "batch", "messages": null}', []),
        ('{"type": "batch", "messages": {"a": {"b": 1}}}', []),  # keys, not messages
    ],
)
def test_decode_frame(frame: str | bytes, messages: list[dict[str, Any]]) -> None:
    assert decode_frame(frame) == messages


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("{not json", ValueError),
        ("", ValueError),
        ('{"type": "batch", "messages": 5}', TypeError),
    ],
)
def test_decode_frame_refuses(frame: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_frame(frame)


TELEMETRY = {
    "type": "telemetry_update",
    "subscription_id": "s1",
    "device_id": "d1",
    "received_at": AT,
    "telemetry": {
        "t": {"value": 21.5, "unit": "C", "timestamp": "ts1"},
        "h": {"value": 40},
    },
}
ALERT = {
    "type": "alert",
    "alert_id": "al_1",
    "device_id": "d1",
    "severity": "critical",
    "state": "active",
    "title": "hot",
    "message": "t > 30",
    "metric": "t",
    "received_at": AT,
}
STATUS = {
    "type": "device_status_update",
    "device_id": "d1",
    "old_status": "online",
    "new_status": "offline",
    "reason": "timeout",
    "metadata": {"last_seen": "ls"},
    "received_at": AT,
}


@pytest.mark.parametrize(
    ("msg", "updates"),
    [
        (
            TELEMETRY,
            [
                TelemetryUpdate("d1", "t", 21.5, "C", "ts1", AT, raw=TELEMETRY),
                TelemetryUpdate("d1", "h", 40, None, None, AT, raw=TELEMETRY),
            ],
        ),
        ({"type": "telemetry_update", "device_id": "d1"}, []),
        ({"type": "telemetry_update", "device_id": "d1", "telemetry": {}}, []),
        (
            ALERT,
            [AlertEvent("al_1", "d1", "critical", "active", "hot", "t > 30", "t", AT, raw=ALERT)],
        ),
        (
            {"type": "alert", "alert_id": "al_2", "device_id": "d2"},
            [AlertEvent("al_2", "d2", "", "", None, None, None, None, raw={})],
        ),
        (STATUS, [DeviceStatus("d1", "online", "offline", "timeout", "ls", AT, raw=STATUS)]),
        (
            {"type": "device_status_update", "device_id": "d1", "metadata": None},
            [DeviceStatus("d1", None, "", None, None, None, raw={})],
        ),
        (
            {"type": "device_status_update", "device_id": "d1", "metadata": ["x"]},
            [DeviceStatus("d1", None, "", None, None, None, raw={})],
        ),
        (
            {"type": "system_status_update", "component": "front", "metrics": {"clients": 3}},
            [SystemStatus("front", {"clients": 3}, raw={})],
        ),
        ({"type": "system_status_update"}, [SystemStatus(None, {}, raw={})]),
        ({"type": "log", "line": "x"}, [Event("log", raw={})]),
        ({"line": "x"}, [Event("None", raw={})]),
    ],
)
def test_parse_live(msg: dict[str, Any], updates: list[Any]) -> None:
    parsed = parse_live(msg)
    assert parsed == updates  # `raw` is left out of the comparison...
    assert all(update.raw is msg for update in parsed)  # ...and is the message as sent


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "telemetry_update", "telemetry": {"t": {"value": 1}}},  # no device_id
        {"type": "alert", "device_id": "d1"},  # no alert_id
        {"type": "alert", "alert_id": "al_1"},  # no device_id
        {"type": "device_status_update", "new_status": "online"},  # no device_id
    ],
)
def test_parse_live_refuses_a_message_without_its_keys(msg: dict[str, Any]) -> None:
    with pytest.raises(KeyError):
        parse_live(msg)


@pytest.mark.parametrize(
    "telemetry",
    [[1, 2], "t=1", 5, {"t": 21.5}, {"t": None}, {"t": {"value": 1}, "h": [40]}],
)
def test_parse_live_refuses_telemetry_that_is_not_readings(telemetry: Any) -> None:
    # these raised AttributeError, which the reader took for an internal error: the client
    # stopped and every subscription ended with 500 client_error
    with pytest.raises(ValueError):
        parse_live({"type": "telemetry_update", "device_id": "d1", "telemetry": telemetry})


def test_identity_tells_a_message_sent_again_after_a_resume() -> None:
    first = parse_live(TELEMETRY)[0]
    again = parse_live({**TELEMETRY, "subscription_id": "s2"})[0]
    later = parse_live({**TELEMETRY, "received_at": "2026-01-01T00:00:02Z"})[0]
    assert identity(first) == identity(again) == ("t", "d1", "t", "ts1", AT)
    assert identity(later) != identity(first)
    acked = parse_live({**ALERT, "state": "acknowledged"})[0]
    assert identity(parse_live(ALERT)[0]) == ("a", "al_1", "active", AT) != identity(acked)
    assert identity(parse_live(STATUS)[0]) == ("s", "d1", "offline", AT)
    # messages without an identity are never taken for repeats
    assert identity(parse_live({"type": "system_status_update"})[0]) is None
    assert identity(parse_live({"type": "log"})[0]) is None


@pytest.mark.parametrize(
    ("reply", "kind", "code", "error"),
    [
        (
            {"type": "error", "code": 404, "error": "not_found", "message": "m"},
            BridgeError,
            404,
            "not_found",
        ),
        ({"type": "error", "code": 401, "error": "unauthorized"}, AuthError, 401, "unauthorized"),
        ({"type": "error", "code": 403, "error": "forbidden"}, AuthError, 403, "forbidden"),
        (
            {"type": "error", "code": "429", "error": "rate_limited"},
            BridgeError,
            429,
            "rate_limited",
        ),
        ({"type": "error"}, BridgeError, 500, "None"),
        ({"type": "error", "code": 0}, BridgeError, 500, "None"),
    ],
)
def test_error_replies(
    reply: dict[str, Any], kind: type[BridgeError], code: int, error: str
) -> None:
    exc = BridgeError.from_reply({**reply, "details": {"k": 1}})
    assert type(exc) is kind
    assert (exc.code, exc.error, exc.details) == (code, error, {"k": 1})
    assert str(exc).startswith(f"{code} {error}: ")
