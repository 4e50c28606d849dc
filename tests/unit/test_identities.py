"""Who each broker connection logs in as (bridge/identities.py, ``?username=client-id``)."""

from __future__ import annotations

import pytest

from bridge.config import Settings
from bridge.front_setup import ConfigError
from bridge.identities import broker_users, front_ids, ingest_ids, scheduler_id, tool_id
from bridge.supervisor import child_env
from ingest.mqtt_endpoint import MqttEndpoint

BOUND = "mqtt://:s3cret@127.0.0.1:1883?username=client-id"


def settings(url: str, **more: str) -> Settings:
    return Settings(mqtt_url=url, **more)  # type: ignore[arg-type]


def test_the_url_option_makes_every_connection_log_in_as_its_client_id() -> None:
    ep = MqttEndpoint.from_url(BOUND)
    assert ep.username_is_client_id and ep.password == "s3cret"
    assert ep.login("telemetry-bridge-ingest-1") == "telemetry-bridge-ingest-1"
    assert ep.redacted() == "mqtt://:***@127.0.0.1:1883?username=client-id"
    assert "s3cret" not in repr(ep)  # an endpoint in a log line shows no password
    plain = MqttEndpoint.from_url("mqtt://bridge-ingest:pw@127.0.0.1:1883")
    assert plain.login("anything") == "bridge-ingest" and not plain.username_is_client_id


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mqtt://u:pw@127.0.0.1?username=client-id", "leave the user out"),
        ("mqtt://:pw@127.0.0.1?username=me", "must be client-id"),
    ],
)
def test_a_contradictory_url_is_refused_with_the_fix(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        MqttEndpoint.from_url(url)


def test_bound_ids_are_fixed_and_named_as_the_units_name_them() -> None:
    s = settings(BOUND, ingest_client_id="telemetry-bridge-ingest-2")
    ids = ingest_ids(s)
    assert (ids.session, ids.stream, ids.scheduler) == (
        "telemetry-bridge-ingest-2",
        "telemetry-bridge-ingest-2-stream",
        "telemetry-bridge-ingest-2-scheduler",
    )
    assert front_ids(s).subscriptions == front_ids(s).subscriptions == "telemetry-bridge-front"
    assert front_ids(s).publisher == "telemetry-bridge-front-pub"
    assert scheduler_id(s) == "telemetry-bridge-scheduler"
    assert tool_id(MqttEndpoint.from_url(BOUND), "doctor") == "telemetry-bridge-tool"
    assert set(broker_users("ingest", 2)) >= {ids.session, ids.stream, ids.scheduler}


def test_unbound_fronts_and_schedulers_get_fresh_ids_so_several_share_a_broker() -> None:
    s = settings("mqtt://127.0.0.1:1883")
    assert front_ids(s).subscriptions != front_ids(s).subscriptions
    assert scheduler_id(s) != scheduler_id(s)
    assert front_ids(s).subscriptions.startswith("telemetry-bridge-front-")


def test_a_bound_id_without_the_reserved_prefix_is_refused() -> None:
    # a device of that name would hold the same id: add-device refuses only the prefix
    with pytest.raises(ConfigError, match="telemetry-bridge-"):
        ingest_ids(settings(BOUND, ingest_client_id="ingest-1"))
    with pytest.raises(ConfigError, match="BRIDGE_FRONT_CLIENT_ID"):
        front_ids(settings(BOUND, front_client_id="front"))


def test_each_child_of_serve_processes_gets_its_own_ids() -> None:
    bound = {"BRIDGE_MQTT_URL": BOUND}
    assert child_env(bound, 0)["BRIDGE_FRONT_CLIENT_ID"] == "telemetry-bridge-front-1"
    assert child_env(bound, 1)["BRIDGE_FRONT_CLIENT_ID"] == "telemetry-bridge-front-2"
    named = {"BRIDGE_FRONT_CLIENT_ID": "telemetry-bridge-front-7"}
    assert child_env(named, 1)["BRIDGE_FRONT_CLIENT_ID"] == "telemetry-bridge-front-7-2"
    assert "BRIDGE_FRONT_CLIENT_ID" not in child_env({"BRIDGE_MQTT_URL": "mqtt://h"}, 0)
