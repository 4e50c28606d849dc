"""BridgeClient: the API (subscribe, query, command, ack_alert, request) and the routing of
what the connection reads to the requests and subscriptions waiting for it. The connection
itself (reconnects, token refresh) is :mod:`bridge.client.connection`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed

from bridge.client.connection import Link
from bridge.client.errors import BridgeError, ClientClosedError, ConnectionLostError
from bridge.client.messages import parse_live
from bridge.client.requests import PendingRequests
from bridge.client.subscription import Subscribing, Subscription
from bridge.client.tokens import TokenProvider

log = logging.getLogger("bridge.client")


class BridgeClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        reconnect: bool = True,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
        request_timeout_s: float = 30.0,
        open_timeout_s: float = 10.0,
        max_queue: int = 10_000,
    ) -> None:
        self.url = url
        self.reconnect = reconnect
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.request_timeout_s, self.open_timeout_s = request_timeout_s, open_timeout_s
        self.max_queue = max_queue
        self._link = Link(self, token, token_provider)
        self._pending = PendingRequests()
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._by_id: dict[str, Subscription] = {}
        self._closed = False

    @property
    def connections(self) -> int:
        """How many times a connection was established."""
        return self._link.connections

    @property
    def client_id(self) -> str | None:
        """The ``client_id`` the bridge gave the current connection."""
        return self._link.client_id

    @property
    def connected(self) -> bool:
        return self._link.connected.is_set()

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> BridgeClient:
        await self.connect()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """The first connection; errors here (bad token, nothing listening) raise."""
        await self._link.start()

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.closed = True
            sub._fail(StopAsyncIteration())
        await self._link.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fail_pending(ClientClosedError())

    # -- API -----------------------------------------------------------------------------------
    def subscribe(self, channel: str, **fields: Any) -> Subscribing:
        """Subscribe to ``channel`` (telemetry, alerts, devices, system, logs) with the fields
        of a subscribe message (``device_id``, ``filters``, ``since``, ``snapshot``...).
        Await it for the :class:`Subscription`, or use ``async with`` directly."""
        request = {"type": "subscribe", "channel": channel, **fields}
        return Subscribing(self, request)

    async def query(self, **params: Any) -> dict[str, Any]:
        """Stored telemetry (``device_id``, ``metric``/``metrics``, ``from``, ``to``,
        ``bucket``, ``agg``, ``limit``); the ``query_result`` message."""
        return await self.request({"type": "query", **params})

    async def command(
        self,
        device_id: str,
        command: str,
        parameters: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Send a command and wait for the device's final result (``command_result`` with
        status success or error; progress replies go to ``on_progress``); a device that does
        not answer in time raises :class:`BridgeError` 504."""
        msg: dict[str, Any] = {"type": "command", "device_id": device_id, "command": command}
        if parameters is not None:
            msg["parameters"] = parameters
        if timeout_s is not None:
            msg["timeout_s"] = timeout_s
        wait = (timeout_s or 30.0) + self.request_timeout_s

        def finished(reply: dict[str, Any]) -> bool:
            if reply.get("type") != "command_result":
                return False
            if reply.get("status") in ("success", "error", "timeout"):
                return True
            if on_progress is not None:
                on_progress(reply)
            return False

        reply = await self.request(msg, timeout_s=wait, done=finished)
        if reply.get("status") == "timeout":
            raise BridgeError(504, "timeout", str(reply.get("message") or "command timed out"))
        return reply

    async def ack_alert(self, alert_id: str) -> dict[str, Any]:
        return await self.request({"type": "ack_alert", "alert_id": alert_id})

    async def request(
        self,
        msg: dict[str, Any],
        *,
        timeout_s: float | None = None,
        done: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Send ``msg`` with a fresh ``id`` and return the reply carrying it. ``done`` tells
        the final reply from intermediate ones with the same id (command progress); an
        ``error`` reply always ends the request and raises."""
        return await self._request(msg, timeout_s=timeout_s, done=done)

    # -- requests and subscriptions --------------------------------------------------------------
    async def _request(
        self,
        msg: dict[str, Any],
        *,
        timeout_s: float | None = None,
        done: Callable[[dict[str, Any]], bool] | None = None,
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        if self._closed:
            raise ClientClosedError()
        await asyncio.wait_for(self._link.connected.wait(), self.request_timeout_s)
        ws = self._link.ws
        assert ws is not None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        id_ = self._pending.add(future, done, on_reply)
        try:
            await ws.send(orjson.dumps({**msg, "id": id_}).decode())
            return await asyncio.wait_for(future, timeout_s or self.request_timeout_s)
        except ConnectionClosed:
            raise ConnectionLostError() from None
        finally:
            self._pending.discard(id_)

    async def _add_subscription(self, request: dict[str, Any]) -> Subscription:
        sub = Subscription(self, {k: v for k, v in request.items() if k != "since"}, self.max_queue)
        sub.resume_point = request.get("since")
        self._subs.append(sub)
        try:
            await self._send_subscribe(sub)
        except BaseException:
            self._subs.remove(sub)
            raise
        return sub

    async def _send_subscribe(self, sub: Subscription) -> None:
        def bind(reply: dict[str, Any]) -> None:
            sub.id = reply.get("subscription_id")
            if sub.id and not sub.closed:
                self._by_id[sub.id] = sub

        await self._request(sub.subscribe_message(), on_reply=bind)
        if sub.closed and sub.id:
            # closed while its (re)subscription was on the way: the bridge has it again
            await self._send_unsubscribe(sub.id)

    async def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if sub.id and self._by_id.get(sub.id) is sub:
            del self._by_id[sub.id]
            await self._send_unsubscribe(sub.id)

    async def _send_unsubscribe(self, subscription_id: str) -> None:
        if self.connected and not self._closed:
            with contextlib.suppress(BridgeError, ConnectionClosed, TimeoutError):
                await self._request({"type": "unsubscribe", "subscription_id": subscription_id})

    # -- called by the link ----------------------------------------------------------------------
    def _handle(self, msg: dict[str, Any]) -> None:
        if self._pending.resolve(msg):
            return
        sub_id = msg.get("subscription_id")
        sub = self._by_id.get(sub_id) if isinstance(sub_id, str) else None
        if sub is None:
            if msg.get("type") == "error":
                log.warning("bridge error: %s", msg.get("message"))
            return
        if msg.get("type") == "replay_complete":
            sub.replays += 1
            return
        for update in parse_live(msg):
            sub._deliver(update)

    def _resubscribe(self) -> None:
        self._by_id.clear()
        for sub in list(self._subs):
            if not sub.closed:
                # not awaited inline: the reader must run to receive the replies
                task = asyncio.create_task(self._resubscribe_one(sub), name="bridge-resubscribe")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _resubscribe_one(self, sub: Subscription) -> None:
        try:
            await self._send_subscribe(sub)
        except ConnectionLostError:
            pass  # the next connection tries again
        except BridgeError as exc:
            sub._fail(exc)
        except TimeoutError:
            if self.connected:
                # no reply: say so rather than leave the caller waiting on a dead iterator
                sub._fail(
                    BridgeError(
                        504,
                        "timeout",
                        f"no reply to the resubscription in {self.request_timeout_s} s; "
                        "subscribe again with since=subscription.resume_point",
                    )
                )
            # else the connection dropped again meanwhile: the next one resubscribes

    def _fail_pending(self, exc: BridgeError) -> None:
        self._pending.fail_all(exc)

    def _fail_subscriptions(self, exc: BaseException) -> None:
        for sub in self._subs:
            sub._fail(exc)
