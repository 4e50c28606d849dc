"""A client's subscription bookkeeping, no event loop: counts, held messages, frequency
flushes, what a refreshed token withdraws and what an ``unsubscribe`` names."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.auth import Principal
from bridge.protocol import ClientError
from bridge.subscription_set import Subscription, SubscriptionSet
from bridge.subscriptions import Selector

ADMIN = Principal("u", frozenset({"admin"}))


def _sub(
    sub_id: str, selector: Selector, dialect: str = "channel", label: str = "", **kw: Any
) -> Subscription:
    sub = Subscription(sub_id, selector, (), dialect, label)
    for k, v in kw.items():
        setattr(sub, k, v)
    return sub


def _set(*subs: Subscription) -> SubscriptionSet:
    out = SubscriptionSet()
    for sub in subs:
        out.add(sub)
    return out


def test_has_intervals_follows_adds_and_discards() -> None:
    subs = _set(_sub("a", Selector("telemetry")))
    assert not subs.has_intervals
    subs.add(_sub("b", Selector("telemetry", interval_s=1.0)))
    assert subs.has_intervals
    subs.discard("b")
    subs.discard("b")  # gone already: nothing happens
    assert not subs.has_intervals
    assert list(subs) == ["a"]


def test_held_messages_are_bounded_across_subscriptions_and_released() -> None:
    a = _sub("a", Selector("telemetry"), held=[])
    b = _sub("b", Selector("alerts"), held=[])
    subs = _set(a, b)
    levels = ("telemetry", "d1", "t")
    assert subs.hold(a, levels, {"n": 1}, limit=2)
    assert subs.hold(b, levels, {"n": 2}, limit=2)
    assert not subs.hold(a, levels, {"n": 3}, limit=2)
    assert subs.release_held(a) == [(levels, {"n": 1})]
    assert a.held is None and subs.held == 1
    assert subs.release_held(a) == []  # released once
    assert subs.hold(b, levels, {"n": 4}, limit=2)


def test_due_takes_the_latest_values_once_per_interval() -> None:
    fast = _sub("f", Selector("telemetry", interval_s=1.0))
    live = _sub("l", Selector("telemetry"))
    subs = _set(fast, live)
    fast.pending[("telemetry", "d1", "t")] = {"value": 2}
    assert [(s.id, p) for s, p in subs.due(10.0)] == [
        ("f", {("telemetry", "d1", "t"): {"value": 2}})
    ]
    assert fast.pending == {} and fast.next_flush == 11.0
    assert list(subs.due(10.5)) == []  # not due yet
    assert [(s.id, p) for s, p in subs.due(11.0)] == [("f", {})]


def test_withdraw_ends_what_a_refreshed_token_no_longer_allows() -> None:
    alerts = _sub("a", Selector("alerts"))
    named = _sub("n", Selector("telemetry", devices=("d2",)))
    sampled = _sub("s", Selector("telemetry", interval_s=1.0))
    sampled.pending = {("telemetry", "d1", "t"): {}, ("telemetry", "d2", "t"): {}}
    subs = _set(alerts, named, sampled)
    refreshed = Principal("u", frozenset({"telemetry:read"}), devices=("d1",))
    ended = subs.withdraw(refreshed)
    assert [(s.id, e.code) for s, e in ended] == [("a", 403), ("n", 403)]
    assert list(subs) == ["s"]
    assert list(sampled.pending) == [("telemetry", "d1", "t")]
    assert alerts.held == []  # what it still gets is parked, never delivered


def test_wants_checks_the_claim_components_and_alert_events() -> None:
    telemetry = _sub("t", Selector("telemetry", devices=("d1",)))
    assert telemetry.wants(ADMIN, ("telemetry", "d1", "x"), {"metric": "x", "value": 1})
    assert not telemetry.wants(ADMIN, ("telemetry", "d2", "x"), {"metric": "x", "value": 1})
    only_d1 = Principal("u", frozenset({"admin"}), devices=("d1",))
    assert not _sub("all", Selector("telemetry")).wants(
        only_d1, ("telemetry", "d2", "x"), {"metric": "x", "value": 1}
    )
    system = _sub("s", Selector("system", devices=("ingest",)))
    assert system.wants(ADMIN, ("system", "ingest"), {"component": "ingest"})
    assert not system.wants(ADMIN, ("system", "front"), {"component": "front"})
    acked = _sub("e", Selector("alerts"), dialect="events", label="alert.acknowledged")
    assert acked.wants(ADMIN, ("alerts", "critical", "d1"), {"event": "acknowledged"})
    assert not acked.wants(ADMIN, ("alerts", "critical", "d1"), {"event": "created"})


@pytest.mark.parametrize(
    ("levels", "event", "expected"),
    [
        (("telemetry", "d1", "t"), {"received_at": "r", "ts": "x"}, "r"),
        (("alerts", "critical", "d1"), {"updated_at": "u"}, "u"),
        (("status", "d1"), {"ts": "s"}, "s"),
        (("status", "d1"), {}, "start"),  # no resume field: stays where it was
    ],
)
def test_advance_moves_the_resume_point(
    levels: tuple[str, ...], event: dict[str, Any], expected: str
) -> None:
    sub = _sub("a", Selector("telemetry"), resume_point="start")
    sub.advance(levels, event)
    assert sub.resume_point == expected
    not_resumable = _sub("b", Selector("telemetry"))
    not_resumable.advance(levels, event)
    assert not_resumable.resume_point is None


def _fleet() -> SubscriptionSet:
    return _set(
        _sub("t_all", Selector("telemetry")),
        _sub("t_d1", Selector("telemetry", devices=("d1",))),
        _sub("t_d12", Selector("telemetry", devices=("d1", "d2"))),
        _sub("sys", Selector("system"), parent="t_all"),
        _sub("top", Selector("alerts"), dialect="topics", label="alerts"),
        _sub("ev", Selector("devices"), dialect="events", label="agent.status"),
    )


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"subscription_id": "t_all"}, ["t_all", "sys"]),  # with the one made together with it
        ({"subscriptionId": "t_d1"}, ["t_d1"]),
        ({"topics": ["alerts", "logs"]}, ["top"]),
        ({"events": ["agent.status"]}, ["ev"]),
        ({"channel": "telemetry"}, ["t_all", "t_d1", "t_d12"]),
        ({"channel": "telemetry", "device_id": ["d1", "d2"]}, ["t_d1", "t_d12"]),
        ({"channel": "telemetry", "filters": {"device_id": "d1"}}, None),  # t_d12 partly
        ({"channel": "alerts"}, []),
        ({"subscription_id": "nope"}, 404),
        ({"subscription_id": 5}, 404),
        ({"topics": "alerts"}, 422),
        ({"channel": "weather"}, 422),
        ({"channel": "telemetry", "filters": ["d1"]}, 422),
        ({}, 422),
    ],
)
def test_named_by(msg: dict[str, Any], expected: list[str] | int | None) -> None:
    subs = _fleet()
    if isinstance(expected, list):
        assert [s.id for s in subs.named_by(msg)] == expected
        return
    with pytest.raises(ClientError) as caught:
        subs.named_by(msg)
    assert caught.value.code == (expected or 422)
    if expected is None:
        assert "t_d12" in caught.value.message


def test_withdrawing_a_subscription_gives_its_held_messages_back() -> None:
    from bridge.auth import Principal
    from bridge.subscriptions import parse_channel_subscribe

    subs = SubscriptionSet()
    sel = parse_channel_subscribe({"channel": "alerts"})
    sub = Subscription("s1", sel, ("alerts/#",), "channel", "")
    subs.add(sub)
    sub.held = []
    for i in range(3):
        assert subs.hold(sub, ("alerts", "warning", "d1"), {"i": i}, limit=10)
    assert subs.held == 3
    ended = subs.withdraw(Principal("alice", frozenset({"telemetry:read"})))
    assert [s.id for s, _ in ended] == ["s1"] and subs.held == 0
