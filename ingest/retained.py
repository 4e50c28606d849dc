"""Retained messages on device topics that this process has already handled (pure).

A device may publish with the retain flag, and the broker then hands its last retained message
on that topic to every new subscription: each time the ingest subscribes anew (MQTT 3.1.1: on
every reconnect; MQTT 5: when the broker lost the session) it would store or dead-letter the
same message once more, and a retained reading without ``ts`` would even be stored again under
a new time.

The broker keeps one retained message per topic, so this keeps, per topic, a digest of the last
retained message handled (for the most recently used ``max_topics`` topics). A retained
message equal to it is a copy of one already handled and is only acknowledged. The ingest
subscribes with MQTT 5 "retain as published", so it also sees the flag on a device's live
retained publishes and remembers those; a device's next, different retained message replaces
the entry (``online`` -> ``offline`` -> ``online`` is handled three times). The one cost: a
device publishing the very same retained payload twice in a row has the second one skipped,
which loses nothing unless it is a reading without ``ts``.
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
