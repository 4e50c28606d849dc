import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.hub import topic_matches
from bridge.topic_index import TopicIndex


@pytest.mark.parametrize(
    ("filter_", "topic", "expected"),
    [
        ("telemetry/d1/t", "telemetry/d1/t", True),
        ("telemetry/+/t", "telemetry/d1/t", True),
        ("telemetry/+/+", "telemetry/d1/t", True),
        ("telemetry/#", "telemetry/d1/t", True),
        ("telemetry/+", "telemetry/d1/t", False),
        ("telemetry/d1/t", "telemetry/d1/h", False),
        ("telemetry/+/t", "telemetry/d1/t/x", False),
        ("a/telemetry/+/+", "a/telemetry/d1/t", True),
        ("a/telemetry/+/+", "b/telemetry/d1/t", False),
        ("+/x", "$SYS/x", False),
        ("#", "$SYS/x", False),
    ],
)
def test_topic_matches(filter_: str, topic: str, expected: bool) -> None:
    assert topic_matches(filter_, topic) is expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "+", "#", ""]), min_size=1, max_size=4).map(
            "/".join
        ),
        max_size=25,
    ),
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", ""]), min_size=1, max_size=5).map("/".join),
        min_size=1,
        max_size=10,
    ),
)
def test_topic_index_agrees_with_matching_every_filter(
    filters: list[str], topics: list[str]
) -> None:
    valid = [
        f
        for f in filters
        if "#" not in f[:-1]
        and all(lvl in ("+", "#") or ("+" not in lvl and "#" not in lvl) for lvl in f.split("/"))
    ]
    index = TopicIndex()
    for f in valid:
        index.add(f)
    removed = valid[::3]
    for f in removed:
        index.discard(f)
    kept = set(valid) - set(removed)
    for topic in topics:
        assert sorted(set(index.match(topic))) == sorted(f for f in kept if topic_matches(f, topic))
