"""Per-client outbound queue with conflation (pure: the caller passes the time).

Fan-out puts frames here and never waits; one writer task per client drains it. Telemetry
frames carry a conflation key (device, metric, subscription): a newer value replaces the queued
one in place, so a slow client gets the latest value, never a stale one, and never a backlog of
them. Other frames are dropped (and counted) when the queue is full. A queue that has stayed
full for ``max_behind_s`` tells its owner to close the connection (4008).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from itertools import count


class OutboundQueue:
    def __init__(self, capacity: int = 1000, max_behind_s: float = 10.0) -> None:
        self.capacity = capacity
        self.max_behind_s = max_behind_s
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._seq = count()
        self.dropped = 0
        self.conflated = 0
        self._unreported = 0
        self.full_since: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(
        self,
        frame: bytes,
        now: float,
        key: Hashable | None = None,
        *,
        force: bool = False,
        urgent: bool = False,
    ) -> bool:
        """Queue ``frame``; False when it had to be dropped.

        ``force`` (direct replies) queues past capacity: the client asked for it, and the
        per-connection rate limit already bounds how many it can ask for.
        """
        slot = ("k", key) if key is not None else None
        if slot is not None and slot in self._items:
            self._items[slot] = frame  # keeps its place in line, carries the newest value
            self.conflated += 1
            return True
        if len(self._items) >= self.capacity and not force:
            if self.full_since is None:
                self.full_since = now
            self.dropped += 1
            self._unreported += 1
            return False
        slot = slot if slot is not None else ("s", next(self._seq))
        self._items[slot] = frame
        if urgent:  # e.g. the slow-consumer warning: next out, ahead of the backlog
            self._items.move_to_end(slot, last=False)
        return True

    def pop(self, limit: int = 100) -> list[bytes]:
        out: list[bytes] = []
        while self._items and len(out) < limit:
            out.append(self._items.popitem(last=False)[1])
        if len(self._items) < self.capacity:
            self.full_since = None
        return out

    def take_unreported_drops(self) -> int:
        """Drops since the last ``warning`` the client was sent."""
        n, self._unreported = self._unreported, 0
        return n

    def too_far_behind(self, now: float) -> bool:
        return self.full_since is not None and now - self.full_since >= self.max_behind_s
