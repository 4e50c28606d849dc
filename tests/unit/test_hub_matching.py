import pytest

from bridge.hub import topic_matches


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
