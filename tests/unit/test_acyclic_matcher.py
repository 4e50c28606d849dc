"""The acyclic matcher answers exactly like paho's own, for any filters and topics."""

import paho.mqtt.client as paho
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.matcher import MQTTMatcher

from ingest.acyclic_matcher import AcyclicMatcher, install

LEVEL = st.sampled_from(["a", "b", "$SYS", "", "+", "#"])
TOPIC_LEVEL = st.sampled_from(["a", "b", "$SYS", ""])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(LEVEL, min_size=1, max_size=4).map("/".join), max_size=20, unique=True),
    st.lists(st.lists(TOPIC_LEVEL, min_size=1, max_size=5).map("/".join), min_size=1, max_size=8),
)
def test_same_matches_as_paho(filters: list[str], topics: list[str]) -> None:
    ours, theirs = AcyclicMatcher(), MQTTMatcher()
    for f in filters:
        ours[f] = theirs[f] = f
    for topic in topics:
        assert sorted(ours.iter_match(topic)) == sorted(theirs.iter_match(topic)), topic


def test_installed_on_a_fresh_client_and_callbacks_still_route() -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    install(client)
    assert isinstance(client._on_message_filtered, AcyclicMatcher)
    client.message_callback_add("telemetry/+/v", lambda *a: None)
    assert len(list(client._on_message_filtered.iter_match("telemetry/d1/v"))) == 1
    assert list(client._on_message_filtered.iter_match("telemetry/d1/x")) == []


def test_not_installed_over_callbacks_already_added() -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.message_callback_add("x/#", lambda *a: None)
    install(client)
    assert type(client._on_message_filtered) is MQTTMatcher
