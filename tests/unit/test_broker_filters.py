"""Filter algebra (overlap, subsumption, join) and the disjoint broker cover, checked against
brute force over every topic of a small alphabet."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.broker_filters import Cover, FilterTrie, join, matches, overlaps, subsumes

# 'c' stands for every level no filter names; '$s' for a '$' level (special only first)
TOPIC_LEVELS = ["a", "b", "c", "$s"]
UNIVERSE = [
    "/".join(levels) for n in range(1, 5) for levels in itertools.product(TOPIC_LEVELS, repeat=n)
]


def _filter(levels: list[str], hash_: bool) -> str:
    return "/".join([*levels, "#"] if hash_ else levels) if levels or hash_ else "a"


FILTER = st.builds(
    _filter,
    st.lists(st.sampled_from(["a", "b", "+", "$s"]), min_size=0, max_size=3),
    st.booleans(),
)


def topics_of(filter_: str) -> set[str]:
    return {t for t in UNIVERSE if matches(filter_, t)}


@pytest.mark.parametrize(
    ("a", "b", "overlap", "a_subsumes_b", "joined"),
    [
        ("telemetry/+/+", "telemetry/d1/+", True, True, "telemetry/+/+"),
        ("telemetry/d1/+", "telemetry/+/temp", True, False, "telemetry/+/+"),
        ("telemetry/d1/+", "telemetry/d2/+", False, False, "telemetry/+/+"),
        ("telemetry/d1/t", "telemetry/d1/t", True, True, "telemetry/d1/t"),
        ("p/alerts/+/d1", "p/alerts/critical/+", True, False, "p/alerts/+/+"),
        ("status/+", "alerts/+/+", False, False, "+/+/#"),
        ("x/#", "x", True, True, "x/#"),
        ("x/+", "x", False, False, "x/#"),
        ("x/#", "x/y/z", True, True, "x/#"),
        ("#", "$SYS/x", False, False, "#"),
        ("+/x", "$SYS/x", False, False, "+/x"),
    ],
)
def test_table(a: str, b: str, overlap: bool, a_subsumes_b: bool, joined: str) -> None:
    assert overlaps(a, b) is overlap and overlaps(b, a) is overlap
    assert subsumes(a, b) is a_subsumes_b
    assert join(a, b) == joined


@settings(max_examples=400, deadline=None)
@given(FILTER, FILTER)
def test_algebra_agrees_with_brute_force(a: str, b: str) -> None:
    ta, tb = topics_of(a), topics_of(b)
    assert overlaps(a, b) == bool(ta & tb)
    assert subsumes(a, b) == (tb <= ta)
    if overlaps(a, b):
        j = join(a, b)
        assert topics_of(j) >= ta | tb
        assert subsumes(j, a) and subsumes(j, b)


@settings(max_examples=300, deadline=None)
@given(FILTER, FILTER)
def test_join_of_overlapping_filters_is_the_narrowest(a: str, b: str) -> None:
    """No filter contains both and is narrower than their join."""
    if not overlaps(a, b):
        return
    j = join(a, b)
    levels = ["a", "b", "+", "$s", "#"]
    for n in range(1, 5):
        for cand in itertools.product(levels, repeat=n):
            if "#" in cand[:-1]:
                continue
            c = "/".join(cand)
            if subsumes(c, a) and subsumes(c, b):
                assert subsumes(c, j), (a, b, j, c)


@settings(max_examples=300, deadline=None)
@given(st.lists(FILTER, max_size=12, unique=True), FILTER)
def test_trie_finds_every_overlapping_filter(filters: list[str], query: str) -> None:
    trie = FilterTrie()
    for f in filters:
        trie.add(f)
    removed = filters[::4]
    for f in removed:
        trie.discard(f)
    kept = [f for f in filters if f not in removed]
    assert len(trie) == len(kept)
    assert sorted(trie.overlapping(query)) == sorted(f for f in kept if overlaps(f, query))


def check_cover(cover: Cover, in_use: set[str], on_broker: set[str]) -> None:
    broker = cover.broker_filters()
    assert set(broker) == on_broker  # the deltas kept the broker where the cover says
    for i, a in enumerate(broker):
        for b in broker[i + 1 :]:
            assert not overlaps(a, b), (a, b)  # never two copies of one message
    owned: set[str] = set()
    for bf in broker:
        members = cover.members(bf)
        assert members, bf  # nothing subscribed for nobody
        owned |= members
        for m in members:
            assert subsumes(bf, m) and cover.owner(m) == bf
        narrowest = members.pop()
        for m in members:
            narrowest = join(narrowest, m)
        assert subsumes(narrowest, bf)  # no wider than needed ('+/#' and '#' are the same)
    assert owned == in_use


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), FILTER), max_size=40))
def test_cover_stays_disjoint_minimal_and_complete(ops: list[tuple[bool, str]]) -> None:
    cover = Cover()
    in_use: set[str] = set()
    on_broker: set[str] = set()
    for add, f in ops:
        if add:
            subscribe, unsubscribe = cover.add(f)
            in_use.add(f)
        else:
            subscribe, unsubscribe = cover.remove(f)
            in_use.discard(f)
        assert not set(subscribe) & set(unsubscribe)
        on_broker |= set(subscribe)
        on_broker -= set(unsubscribe)
        check_cover(cover, in_use, on_broker)


def test_cover_examples() -> None:
    cover = Cover()
    assert cover.add("t/d1/+") == (["t/d1/+"], [])
    assert cover.add("t/d2/+") == (["t/d2/+"], [])
    assert cover.add("t/d1/x") == ([], [])  # subsumed: no broker subscription of its own
    assert cover.add("t/+/x") == (["t/+/+"], ["t/d1/+", "t/d2/+"])  # overlaps both
    assert cover.add("t/+/+") == ([], [])
    assert cover.remove("t/+/x") == ([], [])  # t/+/+ itself still in use
    assert cover.remove("t/+/+") == (["t/d1/+", "t/d2/+"], ["t/+/+"])
    assert cover.remove("t/d1/+") == (["t/d1/x"], ["t/d1/+"])
    assert cover.remove("t/d1/x") == ([], ["t/d1/x"])
    assert cover.remove("t/d1/x") == ([], [])
    assert cover.broker_filters() == ["t/d2/+"]
