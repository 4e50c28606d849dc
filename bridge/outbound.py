"""Per-client outbound queue with conflation and byte budgets (pure: the caller passes the time).

Fan-out puts frames here and never waits; one writer task per client drains it. Telemetry
frames carry a conflation key (device, metric, subscription). Once a client has fallen behind
(``conflate_from`` frames queued, a tenth of the capacity by default) a newer value replaces the
queued one in place, so a slow client gets the latest value, never a stale one, and never a
backlog of them. Below that every value is delivered: a chart needs each point, and a client
resuming with ``since`` must see no gap. Other live frames are dropped (and counted) when the
queue is full: ``capacity`` frames, ``max_bytes`` bytes, or the process-wide
:class:`SharedBudget` spent while this client still has frames from an earlier write waiting.

Replies (``force``) are never dropped: a client waiting for an answer must get it. What bounds
them is the caller: a connection's next message is read only once its queue has ``room()``
again (bridge/connection.py), so a client that does not read stops being read. A queue that has
stayed full or over its byte budget for ``max_behind_s`` tells its owner to close the
connection (4008).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from itertools import count


class SharedBudget:
    """Bytes queued for every client of one process together."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit


class OutboundQueue:
    __slots__ = (
        "_items",
        "_latest",
        "_seq",
        "_unreported",
        "_unreported_conflated",
        "budget",
        "bytes",
        "capacity",
        "carried",
        "conflate_from",
        "conflated",
        "delivered",
        "dropped",
        "full_since",
        "max_behind_s",
        "max_bytes",
        "room_bytes",
    )

    def __init__(
        self,
        capacity: int = 1000,
        max_behind_s: float = 10.0,
        conflate_from: int | None = None,
        *,
        max_bytes: int = 1 << 20,
        room_bytes: int | None = None,
        budget: SharedBudget | None = None,
    ) -> None:
        self.capacity = capacity
        self.conflate_from = max(1, capacity // 10) if conflate_from is None else conflate_from
        self.max_behind_s = max_behind_s
        self.max_bytes = max_bytes
        # below this many queued bytes the client's next message may be read
        self.room_bytes = max_bytes // 4 if room_bytes is None else room_bytes
        self.budget = budget
        # slot number -> (frame, conflation key); slots are unique so that, below
        # ``conflate_from``, several values of one key can wait in line together
        self._items: OrderedDict[int, tuple[bytes, Hashable | None]] = OrderedDict()
        self._latest: dict[Hashable, int] = {}  # conflation key -> its newest queued slot
        self._seq = count()
        self.bytes = 0
        # counted for the front's metrics (read at scrape time): live frames queued, frames
        # replaced by a newer value of their key, frames dropped
        self.delivered = 0
        self.dropped = 0
        self.conflated = 0
        self._unreported = 0
        self._unreported_conflated = 0
        self.full_since: float | None = None
        # This client did not take everything it was sent: frames were left after the last
        # write, or (set by its connection) that write waits for the client to read.
        self.carried = False

    def __len__(self) -> int:
        return len(self._items)

    def _account(self, delta: int) -> None:
        self.bytes += delta
        if self.budget is not None:
            self.budget.used += delta

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

        ``force`` (direct replies) queues past every limit: the client asked for it. The
        caller bounds how much a client can ask for while it is not reading (``room``).
        """
        if key is not None and len(self._items) >= self.conflate_from:
            slot = self._latest.get(key)
            if slot is not None:
                old, _ = self._items[slot]
                self._items[slot] = (frame, key)  # keeps its place in line, newest value
                self._account(len(frame) - len(old))
                self.conflated += 1
                self._unreported_conflated += 1
                return True
        size = len(frame)
        if not force and self._over(size):
            if self.full_since is None:
                self.full_since = now
            self.count_dropped(1)
            return False
        slot = next(self._seq)
        self._items[slot] = (frame, key)
        # _account, inline: this runs once per frame per client
        self.bytes += size
        if self.budget is not None:
            self.budget.used += size
        if key is not None:
            self._latest[key] = slot
        if urgent:  # e.g. the slow-consumer warning: next out, ahead of the backlog
            self._items.move_to_end(slot, last=False)
        if force:
            if self.bytes > self.max_bytes and self.full_since is None:
                self.full_since = now  # replies the client is not reading count as behind too
        else:
            self.delivered += 1  # a live frame (replies and replays are forced)
        return True

    def _over(self, size: int) -> bool:
        if len(self._items) >= self.capacity or self.bytes + size > self.max_bytes:
            return True
        # The whole process is at its budget: clients that did not take everything last
        # time get no more. Not "clients with anything queued": a burst from the broker
        # queues frames for every client before one write takes them, and a client that
        # reads would lose the rest of each burst while the others spend the budget.
        return self.budget is not None and self.budget.exhausted and self.carried

    def pop(self, limit: int = 100) -> list[bytes]:
        out: list[bytes] = []
        items, latest = self._items, self._latest
        size = 0
        while items and len(out) < limit:
            slot, (frame, key) = items.popitem(last=False)
            if key is not None and latest.get(key) == slot:
                del latest[key]
            out.append(frame)
            size += len(frame)
        self._account(-size)
        self.carried = bool(items)
        if len(items) < self.capacity and self.bytes <= self.max_bytes:
            self.full_since = None
        return out

    def clear(self) -> None:
        """Forget everything queued (the connection is gone); gives the bytes back."""
        self._items.clear()
        self._latest.clear()
        self._account(-self.bytes)
        self.carried = False

    def room(self) -> bool:
        """Whether the client's next message may be handled: little enough is waiting for it,
        here and (when the process is at its budget) anywhere."""
        if self.bytes > self.room_bytes:
            return False
        return not (self.budget is not None and self.budget.exhausted and self.bytes > 0)

    def count_dropped(self, n: int) -> None:
        """Frames lost for this client elsewhere (e.g. held during a replay): reported with
        the next ``warning``, as drops here are."""
        self.dropped += n
        self._unreported += n

    def take_unreported_drops(self) -> int:
        """Drops since the last ``warning`` the client was sent."""
        n, self._unreported = self._unreported, 0
        return n

    def take_unreported_conflated(self) -> int:
        """Values replaced by newer ones since the last ``warning``: a chart that got them
        lacks those points, so the client is told as it is of drops."""
        n, self._unreported_conflated = self._unreported_conflated, 0
        return n

    def too_far_behind(self, now: float) -> bool:
        return self.full_since is not None and now - self.full_since >= self.max_behind_s
