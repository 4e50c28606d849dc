"""Retained messages on device topics that this process has already handled (pure).

A device may publish with the retain flag, and the broker then hands its last message to every
new subscription: on each reconnect that had to subscribe again (MQTT 3.1.1 always does; MQTT 5
only when the broker lost the session) the ingest would store or dead-letter the same message
once more, and a retained reading without ``ts`` would even be stored again under a new time.
A digest of (topic, payload) of each retained copy handled is kept, for the most recent
``max_items`` of them, and a copy seen before is acknowledged without being handled again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict


def retained_key(topic: str, payload: bytes) -> bytes:
    """A fixed-size digest of one retained message (payloads can be up to 1 MiB)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(topic.encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")  # no topic contains NUL (MQTT forbids it), so no ambiguity
    digest.update(payload)
    return digest.digest()


class RetainedSeen:
    """A bounded set of digests, least recently seen evicted first."""

    def __init__(self, max_items: int = 100_000) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items = max_items
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: bytes) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def add(self, key: bytes) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        if len(self._seen) > self.max_items:
            self._seen.popitem(last=False)
