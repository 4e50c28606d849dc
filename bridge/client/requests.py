"""Requests waiting for their reply, matched by ``id``. Pure bookkeeping: the caller sends the
message and awaits the waiter; the reader hands every incoming message to :meth:`resolve`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.client.errors import BridgeError

Reply = dict[str, Any]


class Waiter(Protocol):
    """Where a reply goes: an ``asyncio.Future`` (or a ``concurrent.futures.Future``)."""

    def done(self) -> bool: ...
    def set_result(self, result: Reply, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


@dataclass
class _Pending:
    waiter: Waiter
    done: Callable[[Reply], bool] | None
    on_reply: Callable[[Reply], None] | None


class PendingRequests:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}

    def add(
        self,
        waiter: Waiter,
        done: Callable[[Reply], bool] | None = None,
        on_reply: Callable[[Reply], None] | None = None,
    ) -> int:
        """Wait for the reply to a new request; returns the ``id`` to send it with.

        ``done`` tells the final reply from intermediate ones with the same id (command
        progress); an ``error`` reply always ends the request with :class:`BridgeError`.
        If ``done`` raises, the request ends with its exception. ``on_reply`` runs with the
        final reply before anything later is resolved."""
        id_ = next(self._ids)
        self._pending[id_] = _Pending(waiter, done, on_reply)
        return id_

    def discard(self, id_: int) -> None:
        """The request is over (answered, timed out, cancelled): forget it."""
        self._pending.pop(id_, None)

    def resolve(self, msg: Reply) -> bool:
        """Hand ``msg`` to the request it answers; ``False`` if it answers none."""
        id_ = msg.get("id")
        if not isinstance(id_, int) or id_ not in self._pending:
            return False
        pending = self._pending[id_]
        if msg.get("type") == "error":
            self.discard(id_)
            if not pending.waiter.done():
                pending.waiter.set_exception(BridgeError.from_reply(msg))
            return True
        if pending.done is not None:
            try:
                final = pending.done(msg)
            except Exception as exc:
                # the caller's code (a command's on_progress): its error ends its request,
                # not the reader that called it
                self.discard(id_)
                if not pending.waiter.done():
                    pending.waiter.set_exception(exc)
                return True
            if not final:
                return True  # progress, consumed; the final reply is still to come
        self.discard(id_)
        if pending.on_reply is not None:
            pending.on_reply(msg)  # in the reader, before any later frame is handled
        if not pending.waiter.done():
            pending.waiter.set_result(msg)
        return True

    def fail_all(self, exc: BaseException) -> None:
        """End every request waiting with ``exc`` (the connection is gone)."""
        for pending in list(self._pending.values()):
            if not pending.waiter.done():
                pending.waiter.set_exception(exc)
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._pending
