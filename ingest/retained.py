"""Retained messages on device topics: which copies were dead-lettered already (pure).

A device may publish with the retain flag, and the broker then hands its last retained message
on that topic to every new subscription: each time the ingest subscribes anew (MQTT 3.1.1: on
every reconnect; MQTT 5: only when the broker lost the session, as the ingest asks for retained
messages on new subscriptions only) it would dead-letter the same garbage once more.

The broker keeps one retained message per topic, so this keeps, per topic, a digest of the last
retained message handled (for the most recently used ``max_topics`` topics). The ingest
subscribes with MQTT 5 "retain as published", so it sees the flag on a device's live retained
publishes too. A retained message equal to the topic's last one is not dead-lettered again.
Valid messages are always handled: a thermostat publishing the same retained value without
``ts`` every minute sends a reading every minute, indistinguishable on the wire from a copy;
a retained copy of a reading with ``ts`` stores nothing twice anyway.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict


def payload_digest(payload: bytes) -> bytes:
    """A fixed-size stand-in for a payload (up to 1 MiB) to compare retained copies by."""
    return hashlib.blake2b(payload, digest_size=16).digest()


class LastRetained:
    """Per topic, the digest of the last retained message handled; bounded, LRU."""

    def __init__(self, max_topics: int = 100_000) -> None:
        if max_topics < 1:
            raise ValueError("max_topics must be >= 1")
        self.max_topics = max_topics
        self._last: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def get(self, topic: str) -> bytes | None:
        return self._last.get(topic)

    def remember(self, topic: str, digest: bytes) -> None:
        self._last[topic] = digest
        self._last.move_to_end(topic)
        if len(self._last) > self.max_topics:
            self._last.popitem(last=False)
