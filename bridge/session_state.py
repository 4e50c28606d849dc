"""What every part of a client's session holds, and its output.

:class:`SessionState` is the base of :class:`bridge.session.Session` and of the parts it is
made of (``bridge/handlers.py``, ``bridge/delivery.py``, ``bridge/subscribing.py``): the
connection's state, and ``reply``/``error``/``room``/``request_close``, the only ways out.
Handlers never touch the socket: replies and live frames go into the client's
:class:`~bridge.outbound.OutboundQueue`, which its connection (``bridge/connection.py``) writes
out: everything queued in one burst in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from bridge import protocol
from bridge.actions import FrontActions
from bridge.auth import JwtVerifier, Principal
from bridge.commands import Commands
from bridge.device_sessions import DeviceSessions
from bridge.history import History
from bridge.hub import Hub
from bridge.limits import FrontLimits, TokenBucket
from bridge.outbound import OutboundQueue, SharedBudget
from bridge.protocol import ClientError, encode
from bridge.subscription_set import Subscription, SubscriptionSet
from bridge.subscriptions import Selector


class SessionState(ABC):
    def __init__(
        self,
        *,
        client_id: str,
        hub: Hub,
        verifier: JwtVerifier | None,
        auth_required: bool,
        limits: FrontLimits,
        principal: Principal | None,
        wake: Callable[[], None],
        snapshot: Callable[
            [Selector, Principal], Awaitable[list[tuple[tuple[str, ...], dict[str, Any]]]]
        ]
        | None = None,
        on_principal: Callable[[Principal], None] | None = None,
        actions: FrontActions | None = None,
        commands: Commands | None = None,
        device_sessions: DeviceSessions | None = None,
        history: History | None = None,
        budget: SharedBudget | None = None,
        wait_room: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.client_id = client_id
        self.hub = hub
        self.verifier = verifier
        self.auth_required = auth_required
        self.limits = limits
        self.principal = principal
        self.queue = OutboundQueue(
            limits.queue_capacity,
            limits.max_behind_s,
            max_bytes=limits.queue_max_bytes,
            room_bytes=limits.room_bytes,
            budget=budget,
        )
        # Waits until the client has read enough of what is queued for it (False: it will
        # not, the connection is closing). Long outputs (replays, batches) await it between
        # chunks, so what one request makes the server hold is bounded too.
        self._wait_room = wait_room
        self._strikes = TokenBucket(limits.rate_strikes_per_s, limits.rate_strike_burst)
        self.subscriptions = SubscriptionSet()
        self.bucket = TokenBucket(limits.messages_per_s, limits.burst)
        self.received = 0
        self.errors = 0  # error replies sent (o1's processorStats)
        self._wake = wake
        self._snapshot = snapshot
        self._on_principal = on_principal
        self.actions = actions
        self.commands = commands
        self.device_sessions = device_sessions
        self.history = history
        # created with the first task: most connections never start one, and an empty set
        # is 216 bytes of every idle connection's budget
        self._tasks: set[asyncio.Task[None]] | None = None
        # Also created on first use: the turn of this connection's storage reads, and the
        # replays a broker-link gap calls for, waiting for the one task that runs them
        # (bridge/delivery.py).
        self._reading: asyncio.Lock | None = None
        self._gaps: dict[str, tuple[Subscription, datetime]] | None = None
        self.closed = False
        self.close_request: tuple[int, str] | None = None
        self.batch_mode = False  # set by a subscribe with "batch": true
        self._forget_hub = (
            hub.on_resubscribed(self._broker_link_restored) if history is not None else None
        )

    # -- what the parts need from each other ----------------------------------------------------
    @abstractmethod
    async def handle_message(self, msg: Any, in_batch: bool = False) -> None:
        """One parsed client message (bridge/session.py); a batch's items come here too."""

    @abstractmethod
    def _broker_link_restored(self) -> None:
        """The front's broker connection is back (bridge/delivery.py)."""

    # -- output ------------------------------------------------------------------------------
    def reply(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "error":
            self.errors += 1
        self.queue.put(encode(msg), time.monotonic(), force=True)
        self._wake()

    def _track(self, task: asyncio.Task[None]) -> None:
        """Keep a background task of this connection until it ends (cancelled on close)."""
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def storage_turn(self) -> AsyncIterator[None]:
        """This connection's turn to read storage (a query, a replay's read): one at a time,
        so that one client holds at most one of the process's slots for long reads
        (bridge/history.py) however many requests and replays it has going."""
        if self._reading is None:
            self._reading = asyncio.Lock()
        async with self._reading:
            yield

    def reply_wake(self) -> None:
        self._wake()

    def error(self, exc: ClientError, id_: Any = None) -> None:
        self.reply(protocol.error_message(exc, id_))

    def request_close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
        self._wake()

    async def room(self) -> bool:
        """True once the client has read enough of its queue for more output to be made
        for it; False when it never will (the connection is closing)."""
        if self.closed or self.close_request is not None:
            return False
        if self.queue.room() or self._wait_room is None:
            return True
        self._wake()  # what was queued without a wake (replayed frames) must start moving
        return await self._wait_room()
