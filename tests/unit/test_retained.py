"""Retained copies already handled: per topic, the digest of the last retained message."""

from __future__ import annotations

import pytest

from ingest.retained import LastRetained, payload_digest


def test_digest_is_fixed_size_and_tells_payloads_apart() -> None:
    assert payload_digest(b"x") == payload_digest(b"x")
    assert payload_digest(b"x") != payload_digest(b"y")
    assert len(payload_digest(b"p" * 1_000_000)) == 16


def test_the_last_retained_message_per_topic_replaces_the_one_before() -> None:
    last = LastRetained()
    online, offline = payload_digest(b"online"), payload_digest(b"offline")
    assert last.get("devices/d/status") is None
    last.remember("devices/d/status", online)
    assert last.get("devices/d/status") == online  # a resent copy is recognised
    last.remember("devices/d/status", offline)
    assert last.get("devices/d/status") == offline  # so "online" again is new again
    assert last.get("devices/e/status") is None


def test_topics_are_bounded_and_the_least_recently_used_goes_first() -> None:
    last = LastRetained(max_topics=3)
    for t in "abc":
        last.remember(t, payload_digest(t.encode()))
    last.remember("a", payload_digest(b"a2"))  # refreshed
    last.remember("d", payload_digest(b"d"))  # evicts b
    assert last.get("b") is None
    assert all(last.get(t) is not None for t in "acd")
    for i in range(1000):
        last.remember(f"t{i}", payload_digest(b"x"))
    assert len(last) == 3


def test_invalid_bound() -> None:
    with pytest.raises(ValueError):
        LastRetained(0)
