"""The front's message registry (bridge/registry.py): each type's schema and handler, the
handlers called with ``send=list.append``, and the schemas never stricter than the handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.auth import Principal
from bridge.hub import Hub
from bridge.limits import FrontLimits
from bridge.protocol import ClientError
from bridge.registry import SCHEMAS, Registry, message_id
from bridge.session import REGISTRY, Session
from ingest.mqtt_endpoint import MqttEndpoint
from ingest.topics import Topics

READER = Principal("u1", frozenset({"telemetry:read"}))


def session(principal: Principal | None = None) -> Session:
    """A session with no connection: its hub never connects (nothing here subscribes)."""
    hub = Hub(MqttEndpoint("127.0.0.1", 1), Topics(""), "test")
    return Session(
        client_id="c1",
        hub=hub,
        verifier=None,
        auth_required=False,
        limits=FrontLimits(),
        principal=principal,
        wake=lambda: None,
    )


def test_ping_answers_pong_echoing_its_timestamp() -> None:
    sent: list[dict[str, Any]] = []
    Session._ping(session(), {"type": "ping", "timestamp": 17}, "m1", sent.append)
    Session._ping(session(), {"type": "ping"}, None, sent.append)
    assert [m["type"] for m in sent] == ["pong", "pong"]
    assert sent[0]["id"] == "m1" and sent[0]["timestamp"] == 17
    assert sent[0]["client_timestamp"] == 17 and "server_timestamp" in sent[0]
    assert "id" not in sent[1] and "client_timestamp" not in sent[1]


def test_pong_sends_nothing() -> None:
    sent: list[dict[str, Any]] = []
    Session._pong(session(), {"type": "pong"}, None, sent.append)
    assert sent == []


def test_list_subscriptions_of_a_new_session_is_empty() -> None:
    sent: list[dict[str, Any]] = []
    Session._list(session(), {"type": "list_subscriptions"}, 7, sent.append)
    assert len(sent) == 1
    assert {k: sent[0][k] for k in ("type", "id", "subscriptions", "count")} == {
        "type": "subscriptions_list",
        "id": 7,
        "subscriptions": [],
        "count": 0,
    }


def test_list_sessions_without_device_sessions_is_unavailable() -> None:
    sent: list[dict[str, Any]] = []
    with pytest.raises(ClientError) as err:
        asyncio.run(
            REGISTRY.dispatch(
                session(READER), "list_sessions", {"type": "list_sessions"}, None, sent.append
            )
        )
    assert (err.value.code, err.value.error) == (503, "unavailable")
    assert sent == []


def test_a_schema_refusal_is_answered_with_the_handlers_own_error() -> None:
    # ClientBatch refuses an empty list; the client gets the handler's text, not pydantic's
    msg = {"type": "batch", "messages": []}
    assert not REGISTRY.valid("batch", msg)
    with pytest.raises(ClientError) as err:
        asyncio.run(REGISTRY.dispatch(session(), "batch", msg, None, [].append))
    assert (err.value.code, err.value.message) == (
        422,
        "batch.messages must be a list of 1-50 messages",
    )


@pytest.mark.parametrize(
    ("type_", "msg"),
    [
        ("ping", {"type": "ping", "id": True}),  # a bad id is not echoed, not refused
        ("ping", {"type": "ping", "id": "x" * 129}),
        ("ping", {"type": "ping", "id": {"a": 1}}),
        ("query", {"type": "query", "device_id": "d1", "from": "-1h", "to": "now"}),
        ("query", {"type": "query", "from": "now-30m"}),
        ("list_sessions", {"type": "list_sessions", "data": {}}),
        ("subscribe", {"type": "subscribe", "channel": "telemetry", "device_id": "d1"}),
        ("subscribe", {"type": "subscribe", "topics": ["alerts"]}),
        ("subscribe", {"type": "subscribe", "events": ["telemetry.updated"]}),
        ("subscribe", {"type": "subscribe", "deploymentId": 3}),
    ],
)
def test_schemas_take_what_the_handlers_take(type_: str, msg: dict[str, Any]) -> None:
    assert REGISTRY.valid(type_, msg)


def test_a_handler_accepting_what_its_schema_refused_is_counted() -> None:
    calls: list[str] = []

    def accepts(_owner: object, msg: dict[str, Any], _id: Any, _send: Any) -> None:
        calls.append(msg["type"])

    def refuses_by_reply(_owner: object, _msg: dict[str, Any], _id: Any, _send: Any) -> bool:
        return False

    registry: Registry[object] = Registry(
        {t: refuses_by_reply if t == "authenticate" else accepts for t in SCHEMAS}
    )
    asyncio.run(registry.dispatch(object(), "auth", {"type": "auth"}, None, [].append))
    assert calls == ["auth"] and registry.drifted == 1  # Auth needs a token
    asyncio.run(
        registry.dispatch(object(), "authenticate", {"type": "authenticate"}, None, [].append)
    )
    asyncio.run(registry.dispatch(object(), "ping", {"type": "ping"}, None, [].append))
    assert registry.drifted == 1


def test_every_type_needs_a_schema_and_a_handler() -> None:
    with pytest.raises(ValueError, match="extra"):
        Registry({**{t: Session._ping for t in SCHEMAS}, "extra": Session._ping})
    with pytest.raises(ValueError, match="ping"):
        Registry({t: Session._ping for t in SCHEMAS if t != "ping"})


@pytest.mark.parametrize(
    ("msg", "id_"),
    [
        ({"id": "a"}, "a"),
        ({"id": 5}, 5),
        ({}, None),
        ({"id": True}, None),
        ({"id": 1.5}, None),
        ({"id": "x" * 129}, None),
        ({"id": "x" * 128}, "x" * 128),
    ],
)
def test_message_id(msg: dict[str, Any], id_: Any) -> None:
    assert message_id(msg) == id_
