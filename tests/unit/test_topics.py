import pytest

from ingest.names import InvalidName
from ingest.topics import Topics


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", "devices/d1/telemetry"),
        ("acme", "acme/devices/d1/telemetry"),
        ("a/b", "a/b/devices/d1/telemetry"),
    ],
)
def test_device_telemetry(prefix: str, expected: str) -> None:
    assert Topics(prefix).device_telemetry("d1") == expected


def test_builders() -> None:
    t = Topics("acme")
    assert t.telemetry("d1", "temperature") == "acme/telemetry/d1/temperature"
    assert t.device_errors("d1") == "acme/devices/d1/errors"
    assert t.status("d1") == "acme/status/d1"
    assert t.ingest_subscription(shared=False) == "acme/devices/+/telemetry"
    assert t.ingest_subscription(shared=True) == "$share/ingest/acme/devices/+/telemetry"


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "$SYS", "$share/x", ""])
def test_builders_refuse_wildcards_and_levels(bad: str) -> None:
    t = Topics()
    with pytest.raises(InvalidName):
        t.device_telemetry(bad)
    with pytest.raises(InvalidName):
        t.telemetry(bad, "temperature")
    with pytest.raises(InvalidName):
        t.telemetry("d1", bad)


@pytest.mark.parametrize(
    ("prefix", "topic", "expected"),
    [
        ("", "devices/d1/telemetry", "d1"),
        ("", "devices/bad$id/telemetry", "bad$id"),  # raw: the caller validates
        ("", "devices/d1/status", None),
        ("", "devices/d1/telemetry/extra", None),
        ("", "other/d1/telemetry", None),
        ("acme", "acme/devices/d1/telemetry", "d1"),
        ("acme", "devices/d1/telemetry", None),
        ("acme", "acmex/devices/d1/telemetry", None),
    ],
)
def test_parse_device_topic(prefix: str, topic: str, expected: str | None) -> None:
    assert Topics(prefix).parse_device_topic(topic, "telemetry") == expected


def test_invalid_prefix_is_refused() -> None:
    with pytest.raises(InvalidName):
        Topics("a/#")
