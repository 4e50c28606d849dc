"""bridge.client's pure bookkeeping, no event loop: what a subscription delivered and where it
resumes, replies matched to requests, token refresh timing, reconnection backoff."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import jwt
import pytest

from bridge.client import AuthError, BridgeError, ConnectionLostError, TelemetryUpdate
from bridge.client.connection import backoff_delay
from bridge.client.messages import AlertEvent, Event, SystemStatus
from bridge.client.requests import PendingRequests
from bridge.client.subscription import DeliveryLog
from bridge.client.tokens import expiry, refresh_delay


def _reading(i: int, received_at: str | None = None) -> TelemetryUpdate:
    at = received_at if received_at is not None else f"2026-01-01T00:00:{i:02d}Z"
    return TelemetryUpdate("d1", "t", i, None, f"ts{i}", at, raw={})


# -- DeliveryLog -----------------------------------------------------------------------------
def test_delivered_messages_are_repeats_and_the_resume_point_follows_them() -> None:
    log = DeliveryLog("telemetry", resume_point="2025-12-31T00:00:00Z")
    assert not log.is_repeat(_reading(1))
    log.record(_reading(1))
    log.record(_reading(2))
    assert log.is_repeat(_reading(1)) and log.is_repeat(_reading(2))
    assert not log.is_repeat(_reading(3))
    assert log.resume_point == _reading(2).received_at
    # the same reading received at another time is another message
    assert not log.is_repeat(_reading(1, received_at="2026-01-02T00:00:00Z"))


def test_the_resume_point_stays_when_a_message_has_no_received_at() -> None:
    log = DeliveryLog("telemetry")
    log.record(_reading(1))
    log.record(_reading(2, received_at=""))
    assert log.resume_point == _reading(1).received_at


@pytest.mark.parametrize(
    ("channel", "resumable"),
    [("telemetry", True), ("alerts", True), ("devices", True), ("system", False), ("logs", False)],
)
def test_only_resumable_channels_resubscribe_with_since(channel: str, resumable: bool) -> None:
    log = DeliveryLog(channel, resume_point="2026-01-01T00:00:00Z")
    request = {"type": "subscribe", "channel": channel, "device_id": "d1"}
    log.record(_reading(5))
    msg = log.subscribe_message(request)
    assert log.resumable is resumable
    assert msg == ({**request, "since": _reading(5).received_at} if resumable else request)
    assert "since" not in request  # the request itself is kept as it was


def test_a_subscription_with_nothing_delivered_resubscribes_without_since() -> None:
    request = {"type": "subscribe", "channel": "alerts"}
    assert DeliveryLog("alerts").subscribe_message(request) == request


def test_the_memory_of_delivered_messages_is_bounded_oldest_first() -> None:
    log = DeliveryLog("telemetry", memory=3)
    for i in range(5):
        log.record(_reading(i))
    assert len(log) == 3
    assert [log.is_repeat(_reading(i)) for i in range(5)] == [False, False, True, True, True]


def test_messages_without_identity_are_never_repeats() -> None:
    log = DeliveryLog("system")
    status = SystemStatus("front", {}, raw={})
    log.record(status)
    log.record(Event("log", raw={}))
    assert not log.is_repeat(status) and len(log) == 0 and log.resume_point is None


def test_an_alert_changing_state_is_a_new_message() -> None:
    log = DeliveryLog("alerts")
    active = AlertEvent("al_1", "d1", "critical", "active", None, None, None, "r1", raw={})
    acked = AlertEvent("al_1", "d1", "critical", "acknowledged", None, None, None, "r2", raw={})
    log.record(active)
    assert log.is_repeat(active) and not log.is_repeat(acked)
    assert log.resume_point == "r1"


# -- PendingRequests -------------------------------------------------------------------------
def test_a_reply_resolves_the_request_with_its_id_only() -> None:
    pending = PendingRequests()
    first: Future[dict[str, Any]] = Future()
    second: Future[dict[str, Any]] = Future()
    a, b = pending.add(first), pending.add(second)
    assert (a, b) == (1, 2)
    assert not pending.resolve({"type": "pong"})  # no id: not a reply
    assert not pending.resolve({"type": "pong", "id": 99})
    assert not pending.resolve({"type": "pong", "id": "2"})
    assert pending.resolve({"type": "query_result", "id": 2})
    assert second.result() == {"type": "query_result", "id": 2} and not first.done()
    assert 2 not in pending and len(pending) == 1
    assert not pending.resolve({"type": "query_result", "id": 2})  # answered already


def test_an_error_reply_raises_bridge_error() -> None:
    pending = PendingRequests()
    waiter: Future[dict[str, Any]] = Future()
    id_ = pending.add(waiter, done=lambda _reply: False)  # even for a multi-reply request
    assert pending.resolve({"type": "error", "id": id_, "code": 403, "error": "forbidden"})
    with pytest.raises(AuthError):
        waiter.result()
    assert len(pending) == 0


def test_progress_replies_are_consumed_until_done_says_final() -> None:
    pending = PendingRequests()
    waiter: Future[dict[str, Any]] = Future()
    seen: list[dict[str, Any]] = []
    id_ = pending.add(
        waiter,
        done=lambda reply: reply.get("status") == "success",
        on_reply=seen.append,
    )
    assert pending.resolve({"id": id_, "status": "running"})
    assert not waiter.done() and id_ in pending and seen == []
    assert pending.resolve({"id": id_, "status": "success"})
    assert waiter.result()["status"] == "success"
    assert seen == [{"id": id_, "status": "success"}]  # on_reply with the final reply only


def test_an_error_in_the_callers_done_ends_that_request_with_it() -> None:
    pending = PendingRequests()
    waiter: Future[dict[str, Any]] = Future()

    def done(reply: dict[str, Any]) -> bool:
        raise RuntimeError(f"progress handler broke on {reply['status']}")

    id_ = pending.add(waiter, done=done)
    assert pending.resolve({"id": id_, "status": "running"})  # does not raise in the reader
    assert isinstance(waiter.exception(), RuntimeError)
    assert id_ not in pending
    assert not pending.resolve({"id": id_, "status": "success"})  # later replies: nobody's


def test_fail_all_ends_every_waiting_request() -> None:
    pending = PendingRequests()
    waiters: list[Future[dict[str, Any]]] = [Future() for _ in range(3)]
    ids = [pending.add(w) for w in waiters]
    pending.resolve({"id": ids[0]})
    pending.fail_all(ConnectionLostError())
    assert waiters[0].result() == {"id": ids[0]}
    for waiter in waiters[1:]:
        with pytest.raises(ConnectionLostError):
            waiter.result()
    assert len(pending) == 0
    assert pending.add(Future()) == 4  # ids are never reused


def test_a_reply_for_a_request_given_up_is_ignored() -> None:
    pending = PendingRequests()
    waiter: Future[dict[str, Any]] = Future()
    id_ = pending.add(waiter)
    pending.discard(id_)  # timed out, or cancelled by the caller
    assert not pending.resolve({"id": id_})
    assert not waiter.done()


# -- tokens and backoff ----------------------------------------------------------------------
def _jwt(**claims: Any) -> str:
    return jwt.encode(claims, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, None),
        ("", None),
        ("not-a-jwt", None),
        (_jwt(sub="me"), None),
        (_jwt(sub="me", exp="soon"), None),
        (_jwt(sub="me", exp=1_900_000_000), 1_900_000_000.0),
        (_jwt(sub="me", exp=1_900_000_000.5), 1_900_000_000.5),
        (_jwt(sub="me", exp=1_000), 1_000.0),  # expired: still its expiry (not verified)
    ],
)
def test_expiry(token: str | None, expected: float | None) -> None:
    assert expiry(token) == expected


@pytest.mark.parametrize(
    ("remaining", "delay"),
    [(100.0, 80.0), (10.0, 8.0), (1.0, 1.0), (0.0, 1.0), (-50.0, 1.0)],
)
def test_refresh_delay(remaining: float, delay: float) -> None:
    now = time.time()
    assert refresh_delay(now + remaining, now) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [
        (0, 1.0, 0.2),
        (1, 1.0, 0.4),
        (3, 0.5, 0.8),
        (7, 1.0, 25.6),
        (8, 1.0, 30.0),
        (8, 0.5, 15.0),
        (100, 1.0, 30.0),
    ],
)
def test_backoff_doubles_up_to_the_maximum(attempt: int, jitter: float, delay: float) -> None:
    assert backoff_delay(attempt, 0.2, 30.0, jitter) == pytest.approx(delay)


@pytest.mark.parametrize("attempt", [1023, 1024, 5000, 10**6])
def test_backoff_after_hours_of_outage_is_still_the_maximum(attempt: int) -> None:
    # at 30 s (times jitter) per attempt, attempt 1024 comes after about six hours; it raised
    # OverflowError, which stopped the client for good
    assert backoff_delay(attempt, 0.2, 30.0, 0.75) == pytest.approx(22.5)


def test_bridge_error_fields() -> None:
    exc = ConnectionLostError()
    assert (exc.code, exc.error) == (503, "connection_lost") and isinstance(exc, BridgeError)
