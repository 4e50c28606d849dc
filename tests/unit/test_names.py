import pytest

from storage import names

VALID_IDS = ["d1", "sensor-01", "plant.a:line_3", "A", "9" * 64, "x" + "y" * 63]
INVALID_IDS = [
    "",
    "+",
    "#",
    "a/b",
    "$SYS",
    "$share/x",
    "-leading-dash",
    "_leading",
    ".dot",
    "a b",
    "a\x00b",
    "a\nb",
    "d1\n",
    "é",
    "x" * 65,
    "dev+ice",
    "dev#",
    "a%20b",
    None,
    42,
    ["d1"],
]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_device_ids(value: str) -> None:
    assert names.is_device_id(value)
    assert names.device_id(value) == value


@pytest.mark.parametrize("value", INVALID_IDS)
def test_invalid_device_ids(value: object) -> None:
    assert not names.is_device_id(value)
    with pytest.raises(names.InvalidName, match="invalid device id"):
        names.device_id(value)


VALID_METRICS = ["temperature", "_x", "a.b-c_d", "T1", "m" * 64]
INVALID_METRICS = [
    "",
    "1abc",
    "-x",
    ".x",
    "a/b",
    "+",
    "#",
    "$SYS",
    "a b",
    "a\x00",
    "m" * 65,
    "tëmp",
    3,
]


@pytest.mark.parametrize("value", VALID_METRICS)
def test_valid_metrics(value: str) -> None:
    assert names.metric(value) == value


@pytest.mark.parametrize("value", INVALID_METRICS)
def test_invalid_metrics(value: object) -> None:
    with pytest.raises(names.InvalidName, match="invalid metric name"):
        names.metric(value)


@pytest.mark.parametrize("value", ["", "acme", "site1/test", "a.b:c-d_e"])
def test_valid_prefixes(value: str) -> None:
    assert names.topic_prefix(value) == value


@pytest.mark.parametrize("value", ["+", "#", "$SYS", "a//b", "/a", "a/", "a/+/b", "a b", "a\x00"])
def test_invalid_prefixes(value: str) -> None:
    with pytest.raises(names.InvalidName):
        names.topic_prefix(value)


def test_error_messages_do_not_echo_control_characters_or_unbounded_input() -> None:
    with pytest.raises(names.InvalidName) as err:
        names.device_id("evil\x00\n" + "x" * 10_000)
    text = str(err.value)
    assert "\x00" not in text and "\n" not in text
    assert len(text) < 200


@pytest.mark.parametrize(
    ("value", "reserved"),
    [
        ("telemetry-bridge-ingest", True),
        ("telemetry-bridge-ingest-1", True),
        ("Telemetry-Bridge-front-x", True),
        ("telemetry-bridge", True),
        ("bridge-ingest", True),
        ("BRIDGE-FRONT", True),
        ("bridge-front-2", False),  # not a broker user, not a client id of the bridge
        ("bridge-sensor-7", False),
        ("dev-0001", False),
        ("my-telemetry-bridge-ingest", False),
    ],
)
def test_names_reserved_for_the_bridges_broker_identities(value: str, reserved: bool) -> None:
    assert names.is_reserved_for_bridge(value) is reserved


def test_the_bridges_client_ids_are_reserved_and_distinct() -> None:
    ids = {names.bridge_client_id(role) for role in ("front", "front-pub", "scheduler")}
    assert len(ids) == 3
    assert all(names.is_reserved_for_bridge(i) and names.is_device_id(i) for i in ids)


def test_ingest_names_only_reexports_storage_names() -> None:
    """One definition of every name, whichever of the two paths imports it."""
    from ingest import names as ingest_names

    imported_modules = {"annotations", "re", "uuid", "Final"}
    public = {n for n in vars(names) if not n.startswith("_")} - imported_modules
    assert set(ingest_names.__all__) == public
    for name in public:
        assert getattr(ingest_names, name) is getattr(names, name)
