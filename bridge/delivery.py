"""How stream messages reach one client: live, frequency-limited, as a snapshot, or replayed.

The part of :class:`bridge.session.Session` that makes and releases broker subscriptions
(``_add``/``_remove``), runs the live listener of each subscription, flushes frequency-limited
ones, sends snapshots, and replays from storage after a ``since`` or a cut broker link
(docs/protocol.md, section 3: ``since``, ``replay_complete``). Live frames are built once per
broker message and subscription shape and shared by every client with the same subscription
(the subscription id is a hash of its content; ``bridge/dialects.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.dialects import live_frame, shared_frame
from bridge.errors import ws_error
from bridge.history import replay_key
from bridge.protocol import ClientError, message
from bridge.session_state import SessionState
from bridge.subscription_set import Subscription, device_of, subscription_id
from bridge.subscriptions import Selector, authorize
from ingest.payload import parse_timestamp

log = logging.getLogger(__name__)

REPLAY_CHUNK = 500  # replayed frames queued before waiting for the client to read them
REPLAY_DEDUP_S = 10.0


class Delivery(SessionState):
    async def _add(
        self,
        selector: Selector,
        dialect: str,
        label: str,
        hold: bool = False,
        parent: str | None = None,
    ) -> Subscription:
        assert self.principal is not None
        authorize(selector, self.principal)
        sub_id = subscription_id(selector, dialect, label)
        if sub_id in self.subscriptions:
            return self.subscriptions[sub_id]
        if len(self.subscriptions) >= self.limits.max_subscriptions:
            raise ClientError(
                429,
                "rate_limit_exceeded",
                f"at most {self.limits.max_subscriptions} subscriptions per connection",
            )
        sub = Subscription(
            sub_id, selector, selector.mqtt_filters(self.hub.topics, self.principal), dialect, label
        )
        sub.listener = self._listener(sub)
        sub.parent = parent
        if hold:
            sub.held = []
        self.subscriptions.add(sub)
        for f in sub.filters:
            await self.hub.add(f, sub.listener)
        return sub

    def _listener(self, sub: Subscription) -> Callable[..., None]:
        def on_event(
            levels: tuple[str, ...], event: dict[str, Any], _retained: bool, frames: dict[Any, Any]
        ) -> None:
            principal = self.principal
            if principal is None or self.closed or self.subscriptions.get(sub.id) is not sub:
                return  # gone: closed, unsubscribed, or ended by a refreshed token
            if not sub.wants(principal, levels, event):
                return
            if sub.held is not None:
                if not self.subscriptions.hold(sub, levels, event, self.limits.replay_max):
                    # a replay this client is slow to take: what arrives meanwhile is
                    # bounded like its queue, and the loss is reported (warning)
                    self.queue.count_dropped(1)
                return
            if sub.replayed is not None:
                if time.monotonic() > sub.replayed_until:
                    sub.replayed = None
                elif (key := replay_key(levels, event)) in sub.replayed:
                    sub.replayed.discard(key)
                    return
            if sub.selector.interval_s and levels[0] in ("telemetry", "system"):
                sub.pending[levels] = event  # the latest per reading or component
                return
            sub.advance(levels, event)
            frame = shared_frame(sub, levels, event, frames)
            # queued, not written: the connection writes all a broker read brought it at
            # once (bridge/connection.py, Connections.schedule)
            self.queue.put(frame, time.monotonic(), key=sub.conflation_key(levels))
            self._wake()

        return on_event

    async def _remove(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub.id)
        for f in sub.filters:
            await self.hub.remove(f, sub.listener)  # type: ignore[arg-type]

    @property
    def has_intervals(self) -> bool:
        return self.subscriptions.has_intervals

    def flush_intervals(self, now: float) -> None:
        """Frequency-limited subscriptions: the latest value per (device, metric) per interval."""
        for sub, pending in self.subscriptions.due(now):
            for levels, event in pending.items():
                frame = live_frame(sub, levels, event)
                self.queue.put(frame, now, key=(sub.id, *levels[1:]))
            if pending:
                self._wake()

    async def _send_snapshot(self, sub: Subscription) -> None:
        if not sub.selector.snapshot or self._snapshot is None or self.principal is None:
            return
        for levels, event in await self._snapshot(sub.selector, self.principal):
            frame = live_frame(sub, levels, event)
            self.queue.put(frame, time.monotonic(), key=sub.conflation_key(levels))
        self.reply(message("snapshot_complete", subscription_id=sub.id))

    # -- replays -------------------------------------------------------------------------------
    async def _replay(self, sub: Subscription, since: datetime) -> None:
        """Stored messages after ``since``, then the live ones that arrived meanwhile (minus
        those storage already had), then ``replay_complete``: no gap, no duplicate.

        The broker subscription exists before storage is read, so a message committed after
        the read is held live; one committed before it is in storage (and maybe also held).
        """
        assert self.history is not None and self.principal is not None
        try:
            async with self.storage_turn():
                events, truncated = await self.history.replay(
                    sub.selector, self.principal, since, self.limits.replay_max
                )
        except BaseException:
            self.subscriptions.release_held(sub)
            raise
        seen = set()
        for start in range(0, len(events), REPLAY_CHUNK):
            # live messages keep collecting in sub.held while this waits for the client
            if not await self.room():
                self.subscriptions.release_held(sub)
                return
            now = time.monotonic()
            for levels, event in events[start : start + REPLAY_CHUNK]:
                seen.add(replay_key(levels, event))
                self._deliver_replayed(sub, levels, event, now)
        now = time.monotonic()
        held = self.subscriptions.release_held(sub)  # no await from here on: live resumes in order
        for levels, event in held:
            key = replay_key(levels, event)
            if key in seen:
                seen.discard(key)
            else:
                self._deliver_replayed(sub, levels, event, now)
        # A reading committed just before storage was read can have its live copy still in
        # flight (ingest -> broker -> here): drop it when it comes.
        sub.replayed, sub.replayed_until = seen, now + REPLAY_DEDUP_S
        self.reply(
            message(
                "replay_complete",
                subscription_id=sub.id,
                count=len(events),
                truncated=truncated,
            )
        )

    def _deliver_replayed(
        self, sub: Subscription, levels: tuple[str, ...], event: dict[str, Any], now: float
    ) -> None:
        principal = self.principal
        if principal is None or not sub.selector.accepts(principal, device_of(levels), event):
            return  # read under a token since refreshed to fewer rights
        sub.advance(levels, event)
        self.queue.put(live_frame(sub, levels, event), now, force=True)

    def _broker_link_restored(self) -> None:
        """The front's broker connection was lost and is back: whatever the stream carried
        meanwhile never arrived here. Each resumable subscription replays it from storage
        (after its last delivered message), exactly as a client's ``since`` would, so the
        client sees no gap without having to notice anything (then ``replay_complete``)."""
        if self.closed or self.principal is None:
            return
        for sub in self.subscriptions.values():
            self._replay_gap(sub)

    def _replay_gap(self, sub: Subscription) -> None:
        """Queue ``sub``'s replay after a gap for the connection's one task that runs them,
        starting it if need be. One task per subscription let one client with many of them
        hold every replay slot of the process at once (bridge/history.py), and the stored
        messages of all its replays in memory together."""
        if sub.resume_point is None:
            return  # not resumable
        gaps = self._gaps
        if sub.held is not None:
            if gaps is None or sub.id not in gaps:
                # its replay is running and may have read storage before what is now
                # announced was committed: one more when it finishes (a queued one reads
                # storage later anyway)
                sub.replay_again = True
            return
        try:
            since = parse_timestamp(sub.resume_point)
        except (TypeError, ValueError):
            return
        sub.held = []  # live messages from now on wait for the replay (no await before)
        if gaps is None:
            gaps = self._gaps = {}
            self._track(asyncio.create_task(self._replay_gaps(gaps), name="gap-replays"))
        gaps[sub.id] = (sub, since)

    async def _replay_gaps(self, gaps: dict[str, tuple[Subscription, datetime]]) -> None:
        """The queued replays, oldest first, one at a time, until none is left."""
        try:
            while gaps:
                sub, since = gaps.pop(next(iter(gaps)))
                if self.subscriptions.get(sub.id) is not sub:
                    self.subscriptions.release_held(sub)  # unsubscribed while it waited
                    continue
                try:
                    await self._replay(sub, since)
                except Exception as exc:  # the one ladder: only unknown errors log
                    self.reply(ws_error(exc, what="replay after the broker reconnected"))
                if sub.replay_again and not self.closed:
                    sub.replay_again = False
                    self._replay_gap(sub)  # into ``gaps``: this loop runs it
        finally:
            self._gaps = None  # no await since ``gaps`` was last seen empty
