"""Per-client outbound queue with conflation (pure: the caller passes the time).

Fan-out puts frames here and never waits; one writer task per client drains it. Telemetry
frames carry a conflation key (device, metric, subscription). Once a client has fallen behind
(``conflate_from`` frames queued, a tenth of the capacity by default) a newer value replaces the
queued one in place, so a slow client gets the latest value, never a stale one, and never a
backlog of them. Below that every value is delivered: a chart needs each point, and a client
resuming with ``since`` must see no gap. Other frames are dropped (and counted) when the queue
is full. A queue that has stayed full for ``max_behind_s`` tells its owner to close the
connection (4008).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from itertools import count


class OutboundQueue:
    def __init__(
        self, capacity: int = 1000, max_behind_s: float = 10.0, conflate_from: int | None = None
    ) -> None:
        self.capacity = capacity
        self.conflate_from = max(1, capacity // 10) if conflate_from is None else conflate_from
        self.max_behind_s = max_behind_s
        # slot number -> (frame, conflation key); slots are unique so that, below
        # ``conflate_from``, several values of one key can wait in line together
        self._items: OrderedDict[int, tuple[bytes, Hashable | None]] = OrderedDict()
        self._latest: dict[Hashable, int] = {}  # conflation key -> its newest queued slot
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
        if key is not None and len(self._items) >= self.conflate_from:
            slot = self._latest.get(key)
            if slot is not None:
                self._items[slot] = (frame, key)  # keeps its place in line, newest value
                self.conflated += 1
                return True
        if len(self._items) >= self.capacity and not force:
            if self.full_since is None:
                self.full_since = now
            self.dropped += 1
            self._unreported += 1
            return False
        slot = next(self._seq)
        self._items[slot] = (frame, key)
        if key is not None:
            self._latest[key] = slot
        if urgent:  # e.g. the slow-consumer warning: next out, ahead of the backlog
            self._items.move_to_end(slot, last=False)
        return True

    def pop(self, limit: int = 100) -> list[bytes]:
        out: list[bytes] = []
        items, latest = self._items, self._latest
        while items and len(out) < limit:
            slot, (frame, key) = items.popitem(last=False)
            if key is not None and latest.get(key) == slot:
                del latest[key]
            out.append(frame)
        if len(items) < self.capacity:
            self.full_since = None
        return out

    def take_unreported_drops(self) -> int:
        """Drops since the last ``warning`` the client was sent."""
        n, self._unreported = self._unreported, 0
        return n

    def too_far_behind(self, now: float) -> bool:
        return self.full_since is not None and now - self.full_since >= self.max_behind_s
