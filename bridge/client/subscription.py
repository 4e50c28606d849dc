"""One subscription as the caller sees it: an async iterator of typed messages that survives
reconnections. :class:`DeliveryLog` is its pure bookkeeping (what was handed over, where to
resume); :class:`Subscription` adds the bounded queue the caller reads from."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator
from typing import Any, Protocol

from bridge.client.errors import BridgeError
from bridge.client.messages import Update, identity


class _Owner(Protocol):
    """What a subscription needs of the client that made it (BridgeClient, bridge.client.core)."""

    async def _unsubscribe(self, sub: Subscription) -> None: ...

    async def _add_subscription(self, request: dict[str, Any]) -> Subscription: ...


RESUMABLE = ("telemetry", "alerts", "devices")
SEEN_MEMORY = 10_000  # delivered-message keys kept per subscription to drop repeats


class DeliveryLog:
    """What one subscription has handed to its caller: the identities of the last ``memory``
    messages (to drop them when the server sends them again after a resume) and the resume
    point, the ``received_at`` of the last one (on resumable channels)."""

    def __init__(
        self, channel: str, resume_point: str | None = None, memory: int = SEEN_MEMORY
    ) -> None:
        self.channel = channel
        self.resume_point = resume_point
        self._memory = memory
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()

    @property
    def resumable(self) -> bool:
        return self.channel in RESUMABLE

    def is_repeat(self, update: Update) -> bool:
        key = identity(update)
        return key is not None and key in self._seen

    def record(self, update: Update) -> None:
        """``update`` was handed over: remember it, and resume after it."""
        key = identity(update)
        if key is not None:
            self._seen[key] = None
            if len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        received_at = getattr(update, "received_at", None)
        if received_at and self.resumable:
            self.resume_point = received_at

    def subscribe_message(self, request: dict[str, Any]) -> dict[str, Any]:
        """The subscribe message to send (again): ``request`` with ``since`` the resume point."""
        msg = dict(request)
        if self.resume_point and self.resumable:
            msg["since"] = self.resume_point
        return msg

    def __len__(self) -> int:
        return len(self._seen)


def queue_full_error(max_queue: int) -> BridgeError:
    return BridgeError(
        507,
        "client_queue_full",
        f"more than {max_queue} updates unread; resubscribe with since=subscription.resume_point",
    )


class Subscription:
    """An async iterator of typed messages; survives reconnections. Use ``async with`` or
    call :meth:`close` to unsubscribe."""

    def __init__(self, client: _Owner, request: dict[str, Any], max_queue: int) -> None:
        self._client = client
        self.request = request  # the subscribe message, without `id` and `since`
        self.channel = str(request.get("channel"))
        self.id: str | None = None  # the server's subscription_id (same again after resume)
        self._log = DeliveryLog(self.channel, request.get("since"))
        # unbounded as a queue, bounded by `_deliver`: there is always room for the error
        self._queue: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self._max_queue = max_queue
        self._ended = False  # an error or the end is queued: nothing more is delivered
        self._finished = False  # ...and the caller got it
        self.closed = False
        self.replays = 0  # replay_complete messages seen (resumes that read storage)

    @property
    def resumable(self) -> bool:
        return self._log.resumable

    @property
    def resume_point(self) -> str | None:
        """The ``received_at`` of the last message queued for the caller (resumable channels):
        a new subscription with ``since=`` this loses nothing."""
        return self._log.resume_point

    @resume_point.setter
    def resume_point(self, value: str | None) -> None:
        self._log.resume_point = value

    def subscribe_message(self) -> dict[str, Any]:
        return self._log.subscribe_message(self.request)

    def _deliver(self, update: Update) -> None:
        if self._ended or self._log.is_repeat(update):
            return  # ended, or already given to the caller before a reconnect
        if self._queue.qsize() >= self._max_queue:
            # The caller is not reading. Fail loudly (after the queued messages) rather than
            # grow without bound or drop silently; the resume point stays at the last message
            # really queued, so a new subscription with `since=sub.resume_point` loses nothing.
            self._fail(queue_full_error(self._max_queue))
            return
        self._log.record(update)
        self._queue.put_nowait(update)

    def _fail(self, exc: BaseException) -> None:
        """End the iteration with ``exc`` after what is already queued (once)."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(exc)

    def __aiter__(self) -> AsyncIterator[Update]:
        return self

    async def __anext__(self) -> Update:
        if self._finished or (self.closed and self._queue.empty()):
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            # the end: it stays the end, for this reader and any other one waiting
            self._finished = True
            self._queue.put_nowait(StopAsyncIteration())
            if isinstance(item, StopAsyncIteration):
                raise StopAsyncIteration
            raise item
        return item

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._fail(StopAsyncIteration())
        await self._client._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


class Subscribing:
    """What ``client.subscribe(...)`` returns: ``await`` it for the :class:`Subscription`, or
    use ``async with`` to unsubscribe at the end of the block."""

    def __init__(self, client: _Owner, request: dict[str, Any]) -> None:
        self._client, self._request = client, request
        self._sub: Subscription | None = None

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._client._add_subscription(self._request).__await__()

    async def __aenter__(self) -> Subscription:
        self._sub = await self._client._add_subscription(self._request)
        return self._sub

    async def __aexit__(self, *_exc: object) -> None:
        if self._sub is not None:
            await self._sub.close()
