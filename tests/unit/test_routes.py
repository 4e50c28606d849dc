"""Exactly-once delivery from one broker connection: copies routed by subscription identifier,
messages routed by topic, and second copies while disjoint broker filters are replaced."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.broker_filters import matches
from bridge.routes import MAX_SUBSCRIPTION_ID, Echoes, Route, Routes

FILTERS = [
    "t/+/+",
    "t/d1/+",
    "t/+/temp",
    "t/d1/temp",
    "t/d2/+",
    "a/+/+",
    "a/critical/+",
    "a/+/d1",
]
TOPICS = ["t/d1/temp", "t/d1/hum", "t/d2/temp", "t/d3/hum", "a/critical/d1", "a/info/d2"]


class Recorder:
    def __init__(self, name: str, got: Counter[tuple[str, str]]) -> None:
        self.name, self.got = name, got

    def __call__(self, levels: Any, *_: Any) -> None:
        self.got[(self.name, levels)] += 1


def broker_copies(routes: Routes, topic: str, combined: bool, order: list[int]) -> list[list[int]]:
    """What a broker sends for one message: one copy per matching subscription (mosquitto
    over MQTT 5), in some order, or one copy naming them all."""
    sids = [r.sid for r in routes if matches(r.filter, topic)]
    if combined:
        return [sids] if sids else []
    ranked = sorted(range(len(sids)), key=lambda i: order[i % len(order)] if order else 0)
    return [[sids[i]] for i in ranked]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(FILTERS), min_size=1, max_size=3, unique=True),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
    st.lists(st.integers(0, 100), max_size=8),
)
def test_each_listener_gets_each_message_once(
    subscriptions: list[list[str]], combined: bool, order: list[int]
) -> None:
    """Any mix of listeners, some with overlapping filters of their own, and either way a
    broker sends copies: each listener is called once per message it has a matching filter
    for, and never for others."""
    got: Counter[tuple[str, str]] = Counter()
    routes = Routes()
    listeners = [Recorder(f"l{i}", got) for i in range(len(subscriptions))]
    for listener, filters in zip(listeners, subscriptions, strict=True):
        for f in filters:
            routes.add(f, listener)
    for topic in TOPICS:
        for copy in broker_copies(routes, topic, combined, order):
            named = [r for sid in copy if (r := routes.by_sid(sid)) is not None]
            for ls in routes.for_copy(named, topic):
                ls(topic)
        for ls in routes.for_topic(topic):  # the MQTT 3.1.1 path: one message, local match
            ls(topic + "#local")
    for listener, filters in zip(listeners, subscriptions, strict=True):
        for topic in TOPICS:
            wanted = int(any(matches(f, topic) for f in filters))
            assert got[(listener.name, topic)] == wanted, (listener.name, filters, topic)
            assert got[(listener.name, topic + "#local")] == wanted


def test_overlapping_listener_is_served_by_its_oldest_route_until_it_leaves_it() -> None:
    got: Counter[tuple[str, str]] = Counter()
    routes = Routes()
    mine, other = Recorder("mine", got), Recorder("other", got)
    broad = routes.add("t/+/+", mine)
    narrow = routes.add("t/d1/+", mine)
    routes.add("t/d1/+", other)
    assert broad is not None and narrow is not None and broad.seq < narrow.seq
    assert routes.for_copy([broad], "t/d1/x") == [mine]
    assert routes.for_copy([narrow], "t/d1/x") == [other]
    assert routes.remove("t/+/+", mine) is broad  # last user: the broker filter goes
    assert routes.by_sid(broad.sid) is None  # a late copy for it reaches nobody
    assert sorted(routes.for_copy([narrow], "t/d1/x"), key=id) == sorted([mine, other], key=id)
    assert routes.remove("t/d1/+", mine) is None  # still used by the other listener
    assert routes.remove("t/d1/+", other) is narrow
    assert len(routes) == 0


def test_a_filter_back_in_use_is_a_new_route_with_a_new_identifier() -> None:
    routes = Routes()

    def listener(*_: Any) -> None:
        return None

    first = routes.add("t/d1/+", listener)
    assert first is not None
    routes.remove("t/d1/+", listener)
    second = routes.add("t/d1/+", listener)
    assert second is not None and second.sid != first.sid
    assert routes.by_sid(first.sid) is None and routes.by_sid(second.sid) is second


def test_identifiers_stay_in_the_mqtt_range() -> None:
    assert Route("x", 1).sid == 1
    assert Route("x", MAX_SUBSCRIPTION_ID).sid == MAX_SUBSCRIPTION_ID
    assert Route("x", MAX_SUBSCRIPTION_ID + 1).sid == 1


def test_echoes_drop_the_second_copy_only_while_filters_are_replaced() -> None:
    echoes = Echoes()
    assert not echoes.repeat(1, "t/d1/x", b"1")
    assert not echoes.repeat(2, "t/d1/x", b"1")  # no change under way: never a copy
    echoes.open(["t/d1/+"])  # t/d1/+ is being replaced by t/+/+
    assert not echoes.repeat(3, "t/d1/x", b"2")
    assert echoes.repeat(4, "t/d1/x", b"2")  # same message through the other filter
    assert not echoes.repeat(5, "t/d2/x", b"2")  # only the replaced filter's topics
    assert not echoes.repeat(6, "t/d2/x", b"2")
    assert not echoes.repeat(7, "t/d1/x", b"3")
    echoes.close_after(8)
    assert echoes.repeat(8, "t/d1/x", b"3")  # arrived before the change was acknowledged
    assert not echoes.repeat(9, "t/d1/x", b"3")  # after: a copy per message again
    assert not echoes.active
