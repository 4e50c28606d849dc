"""Retained copies already handled: a bounded set of (topic, payload) digests."""

from __future__ import annotations

from ingest.retained import RetainedSeen, retained_key


def test_key_depends_on_topic_and_payload_without_ambiguity() -> None:
    assert retained_key("a/b", b"x") == retained_key("a/b", b"x")
    assert retained_key("a/b", b"x") != retained_key("a/b", b"y")
    assert retained_key("a/b", b"x") != retained_key("a/c", b"x")
    assert retained_key("ab", b"c") != retained_key("a", b"bc")
    assert len(retained_key("t", b"p" * 1_000_000)) == 16


def test_seen_is_bounded_and_evicts_the_least_recently_seen() -> None:
    seen = RetainedSeen(max_items=3)
    keys = [retained_key("t", bytes([i])) for i in range(5)]
    for key in keys[:3]:
        seen.add(key)
    assert keys[0] in seen  # refreshed: now the most recent
    seen.add(keys[3])  # evicts keys[1]
    assert keys[1] not in seen
    assert keys[0] in seen and keys[2] in seen and keys[3] in seen
    for key in keys:
        seen.add(key)
    assert len(seen) == 3
