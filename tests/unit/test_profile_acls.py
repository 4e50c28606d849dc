"""The broker topics of the mapping profiles: the production acl file lets the ingest read
every profile's topics, and add-device --profile gives a device only its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.device_credentials import device_acls
from bridge.profile_acls import PROFILE_TOPICS, RESERVED_FIRST_LEVELS, profile_acls

ACL_FILE = Path(__file__).parents[2] / "deploy" / "mosquitto" / "acl-ingest"


def ingest_reads() -> set[str]:
    """The `pattern read` lines of the ingests' listener's acl file (no user lines: every
    user of that listener is one of an ingest's connections)."""
    lines = [line.split() for line in ACL_FILE.read_text().splitlines()]
    assert not [w for w in lines if w[:1] in (["user"], ["topic"])], "rights by user, not listener"
    return {w[2] for w in lines if w[:2] == ["pattern", "read"]}


def test_the_acl_file_lets_the_ingest_read_every_profiles_topics() -> None:
    wanted = {t for p in PROFILE_TOPICS.values() for t in p.ingest_reads}
    missing = wanted - ingest_reads()
    assert not missing


def test_a_profile_gives_the_device_its_own_topics_under_the_prefix() -> None:
    acls = profile_acls("tasmota", "kitchen", "site1")
    sends = [a["topic"] for a in acls if a["acltype"] == "publishClientSend"]
    subs = [a["topic"] for a in acls if a["acltype"] == "subscribePattern"]
    assert sends == ["site1/tele/kitchen/+", "site1/stat/kitchen/+"]
    assert subs == ["site1/cmnd/kitchen/+"]
    both = device_acls("kitchen", "", ["tasmota", "esphome"])
    topics = {a["topic"] for a in both}
    assert "devices/kitchen/telemetry" in topics and "tele/kitchen/+" in topics
    assert "kitchen/sensor/+/state" in topics
    assert all("#" not in t or t.startswith("zigbee2mqtt/") for t in topics)


def test_ids_that_would_reach_other_namespaces_and_unknown_profiles_are_refused() -> None:
    assert {"devices", "telemetry", "tele", "zigbee2mqtt", "spBv1.0"} <= RESERVED_FIRST_LEVELS
    for profile in ("esphome", "shelly_gen2"):
        with pytest.raises(ValueError, match="topic level"):
            profile_acls(profile, "devices")
    assert profile_acls("tasmota", "devices")  # tele/devices/+ reaches nothing of ours
    with pytest.raises(ValueError, match="no built-in profile 'nope'"):
        profile_acls("nope", "kitchen")


def test_every_profiles_subscriptions_are_within_its_acl_topics() -> None:
    """The engine's filters for a profile (what the ingest subscribes to) and the topics the
    ACLs allow for it are kept apart; they must agree, or the ingest would be refused."""
    from bridge.broker_filters import subsumes
    from ingest.mapping.profiles import build_profile, profile_names

    assert set(profile_names()) == set(PROFILE_TOPICS)
    for profile in profile_names():
        allowed = PROFILE_TOPICS[profile].ingest_reads
        for mapping in build_profile(profile):
            assert any(subsumes(acl, mapping.filter) for acl in allowed), (
                profile,
                mapping.filter,
                allowed,
            )
