"""A Python client for the bridge's WebSocket API that reconnects by itself.

    async with BridgeClient("ws://127.0.0.1:8765/ws", token) as client:
        async with client.subscribe("telemetry", device_id=["pump-1", "pump-2"]) as updates:
            async for update in updates:
                print(update.device_id, update.metric, update.value)

What it does for the caller:

- **Reconnects** with jittered exponential backoff when the connection drops (front restart,
  network), and **resubscribes**. Telemetry, alerts and devices subscriptions resume from the
  ``received_at`` of the last message the caller got (``since``), so nothing is missed, and
  messages already delivered are dropped if the server sends them again: the iterator sees
  no gap and no duplicate. (Other channels resubscribe without a replay.)
- **Requests** (``query``, ``command``, ``ack_alert``, ``request``) are correlated with their
  reply by ``id``. A request in flight when the connection drops raises
  :class:`ConnectionLostError` (commands are not idempotent, so it is not resent).
- **Tokens**: a fixed token, or ``token_provider`` (a function or coroutine function returning
  a fresh token) that is called before every connection and before the current token
  expires, and the new token is sent on the open connection (``auth``), so a long-lived
  client never gets closed with 4001.
- **Errors** from the server raise :class:`BridgeError` (with ``code``, ``error``,
  ``message``), :class:`AuthError` for 401/403.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import jwt
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

log = logging.getLogger(__name__)

TokenProvider = Callable[[], "str | Awaitable[str]"]
RESUMABLE = ("telemetry", "alerts", "devices")
SEEN_MEMORY = 10_000  # delivered-message keys kept per subscription to drop repeats


# -- errors -------------------------------------------------------------------------------
class BridgeError(Exception):
    """An error reply from the bridge."""

    def __init__(self, code: int, error: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code} {error}: {message}")
        self.code, self.error, self.message, self.details = code, error, message, details

    @classmethod
    def from_reply(cls, msg: dict[str, Any]) -> BridgeError:
        code = int(msg.get("code") or 500)
        kind = AuthError if code in (401, 403) else cls
        return kind(code, str(msg.get("error")), str(msg.get("message")), msg.get("details"))


class AuthError(BridgeError):
    """The token was refused (401) or does not allow this (403)."""


class ConnectionLostError(BridgeError):
    """The connection dropped before the reply came; the request may or may not have run."""

    def __init__(self, message: str = "connection lost before the reply") -> None:
        super().__init__(503, "connection_lost", message)


class ClientClosedError(BridgeError):
    def __init__(self) -> None:
        super().__init__(499, "client_closed", "the client is closed")


# -- typed messages -------------------------------------------------------------------------
@dataclass(frozen=True)
class TelemetryUpdate:
    device_id: str
    metric: str
    value: Any
    unit: str | None
    timestamp: str | None
    received_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class AlertEvent:
    alert_id: str
    device_id: str
    severity: str
    state: str
    title: str | None
    message: str | None
    metric: str | None
    received_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    old_status: str | None
    new_status: str
    reason: str | None
    last_seen: str | None
    received_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class SystemStatus:
    component: str | None
    metrics: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Event:
    """Any other live message (logs, events), as sent."""

    type: str
    raw: dict[str, Any] = field(repr=False, compare=False)


Update = TelemetryUpdate | AlertEvent | DeviceStatus | SystemStatus | Event


def parse_live(msg: dict[str, Any]) -> list[Update]:
    """The typed messages in one live frame (a telemetry frame may carry several metrics)."""
    kind = msg.get("type")
    if kind == "telemetry_update":
        return [
            TelemetryUpdate(
                device_id=msg["device_id"],
                metric=metric,
                value=reading.get("value"),
                unit=reading.get("unit"),
                timestamp=reading.get("timestamp"),
                received_at=msg.get("received_at"),
                raw=msg,
            )
            for metric, reading in (msg.get("telemetry") or {}).items()
        ]
    if kind == "alert":
        return [
            AlertEvent(
                alert_id=msg["alert_id"],
                device_id=msg["device_id"],
                severity=msg.get("severity", ""),
                state=msg.get("state", ""),
                title=msg.get("title"),
                message=msg.get("message"),
                metric=msg.get("metric"),
                received_at=msg.get("received_at"),
                raw=msg,
            )
        ]
    if kind == "device_status_update":
        return [
            DeviceStatus(
                device_id=msg["device_id"],
                old_status=msg.get("old_status"),
                new_status=msg.get("new_status", ""),
                reason=msg.get("reason"),
                last_seen=(msg.get("metadata") or {}).get("last_seen"),
                received_at=msg.get("received_at"),
                raw=msg,
            )
        ]
    if kind == "system_status_update":
        return [SystemStatus(msg.get("component"), msg.get("metrics") or {}, raw=msg)]
    return [Event(str(kind), raw=msg)]


def _identity(update: Update) -> tuple[Any, ...] | None:
    """What makes a message the same message when the server sends it again after a resume."""
    if isinstance(update, TelemetryUpdate):
        return ("t", update.device_id, update.metric, update.timestamp, update.received_at)
    if isinstance(update, AlertEvent):
        return ("a", update.alert_id, update.state, update.received_at)
    if isinstance(update, DeviceStatus):
        return ("s", update.device_id, update.new_status, update.received_at)
    return None


# -- subscriptions ----------------------------------------------------------------------------
class Subscription:
    """An async iterator of typed messages; survives reconnections. Use ``async with`` or
    call :meth:`close` to unsubscribe."""

    def __init__(self, client: BridgeClient, request: dict[str, Any], max_queue: int) -> None:
        self._client = client
        self.request = request  # the subscribe message, without `id` and `since`
        self.channel = str(request.get("channel"))
        self.id: str | None = None  # the server's subscription_id (same again after resume)
        self.resume_point: str | None = request.get("since")
        # unbounded as a queue, bounded by `_deliver`: there is always room for the error
        self._queue: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self._max_queue = max_queue
        self._ended = False  # an error or the end is queued: nothing more is delivered
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self.closed = False
        self.replays = 0  # replay_complete messages seen (resumes that read storage)

    @property
    def resumable(self) -> bool:
        return self.channel in RESUMABLE

    def _deliver(self, update: Update) -> None:
        if self._ended:
            return
        key = _identity(update)
        if key is not None and key in self._seen:
            return  # already given to the caller before a reconnect
        if self._queue.qsize() >= self._max_queue:
            # The caller is not reading. Fail loudly (after the queued messages) rather than
            # grow without bound or drop silently; the resume point stays at the last message
            # really queued, so a new subscription with `since=sub.resume_point` loses nothing.
            self._fail(
                BridgeError(
                    507,
                    "client_queue_full",
                    f"more than {self._max_queue} updates unread; resubscribe with "
                    "since=subscription.resume_point",
                )
            )
            return
        if key is not None:
            self._seen[key] = None
            if len(self._seen) > SEEN_MEMORY:
                self._seen.popitem(last=False)
        received_at = getattr(update, "received_at", None)
        if received_at and self.resumable:
            self.resume_point = received_at
        self._queue.put_nowait(update)

    def _fail(self, exc: BaseException) -> None:
        """End the iteration with ``exc`` after what is already queued (once)."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(exc)

    def __aiter__(self) -> AsyncIterator[Update]:
        return self

    async def __anext__(self) -> Update:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, StopAsyncIteration):
            raise StopAsyncIteration
        if isinstance(item, BaseException):
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


# -- the client -------------------------------------------------------------------------------
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
        self._token = token
        self._token_provider = token_provider
        self.reconnect = reconnect
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.request_timeout_s, self.open_timeout_s = request_timeout_s, open_timeout_s
        self.max_queue = max_queue
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[
            int, tuple[asyncio.Future[dict[str, Any]], Callable[[dict[str, Any]], bool]]
        ] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._by_id: dict[str, Subscription] = {}
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self.connections = 0  # how many times a connection was established
        self.client_id: str | None = None

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
        ws = await self._open()
        self._runner = asyncio.create_task(self._run(ws), name="bridge-client")

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.closed = True
            sub._fail(StopAsyncIteration())
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending(ClientClosedError())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- API -----------------------------------------------------------------------------------
    def subscribe(self, channel: str, **fields: Any) -> _Subscribing:
        """Subscribe to ``channel`` (telemetry, alerts, devices, system, logs) with the fields
        of a subscribe message (``device_id``, ``filters``, ``since``, ``snapshot``...).
        Await it for the :class:`Subscription`, or use ``async with`` directly."""
        request = {"type": "subscribe", "channel": channel, **fields}
        return _Subscribing(self, request)

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

    # -- internals -------------------------------------------------------------------------------
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
        await asyncio.wait_for(self._connected.wait(), self.request_timeout_s)
        ws = self._ws
        assert ws is not None
        id_ = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def resolve(reply: dict[str, Any]) -> bool:
            if reply.get("type") == "error":
                self._pending.pop(id_, None)
                if not future.done():
                    future.set_exception(BridgeError.from_reply(reply))
                return True
            if done is not None and not done(reply):
                return True  # progress, consumed; the final reply is still to come
            self._pending.pop(id_, None)
            if on_reply is not None:
                on_reply(reply)  # in the reader, before any later frame is handled
            if not future.done():
                future.set_result(reply)
            return True

        self._pending[id_] = (future, resolve)
        try:
            await ws.send(orjson.dumps({**msg, "id": id_}).decode())
            return await asyncio.wait_for(future, timeout_s or self.request_timeout_s)
        except ConnectionClosed:
            raise ConnectionLostError() from None
        finally:
            self._pending.pop(id_, None)

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
        msg = dict(sub.request)
        if sub.resume_point and sub.resumable:
            msg["since"] = sub.resume_point

        def bind(reply: dict[str, Any]) -> None:
            sub.id = reply.get("subscription_id")
            if sub.id:
                self._by_id[sub.id] = sub

        await self._request(msg, on_reply=bind)

    async def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if sub.id and self._by_id.get(sub.id) is sub:
            del self._by_id[sub.id]
            if self.connected and not self._closed:
                with contextlib.suppress(BridgeError, ConnectionClosed, TimeoutError):
                    await self._request({"type": "unsubscribe", "subscription_id": sub.id})

    async def _token_now(self) -> str | None:
        if self._token_provider is not None:
            token = self._token_provider()
            self._token = await token if inspect.isawaitable(token) else token
        return self._token

    async def _open(self) -> ClientConnection:
        token = await self._token_now()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.open_timeout_s,
                max_size=None,
                max_queue=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthError(status, "unauthorized", "the bridge refused the token") from None
            raise BridgeError(status, "handshake_refused", f"HTTP {status}") from None
        if token:
            hello = orjson.loads(await asyncio.wait_for(ws.recv(), self.open_timeout_s))
            self.client_id = hello.get("client_id")
        self._ws = ws
        self.connections += 1
        self._connected.set()
        return ws

    async def _run(self, ws: ClientConnection) -> None:
        """The connection loop; whatever ends it unexpectedly ends every subscription and
        request with an error instead of leaving them waiting forever."""
        try:
            await self._connection_loop(ws)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("bridge client stopped")
            self._connected.clear()
            self._fail_pending(ConnectionLostError(f"client stopped: {exc!r}"))
            self._fail_subscriptions(BridgeError(500, "client_error", f"client stopped: {exc!r}"))

    async def _connection_loop(self, ws: ClientConnection) -> None:
        """Read, and reconnect when the connection drops, until closed."""
        attempt = 0
        while True:
            refresher = asyncio.create_task(self._refresh_token(ws))
            try:
                if self.connections > 1:
                    await self._resubscribe()
                attempt = 0
                await self._read(ws)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                log.info("bridge connection closed (%s); reconnecting", code)
            finally:
                refresher.cancel()
                self._connected.clear()
                self._fail_pending(ConnectionLostError())
            if self._closed or not self.reconnect:
                self._fail_subscriptions(ConnectionLostError("connection closed"))
                return
            while True:
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: no herds
                attempt += 1
                try:
                    ws = await self._open()
                    break
                except AuthError as exc:
                    if self._token_provider is None:
                        self._fail_subscriptions(exc)  # a fixed token will not get better
                        return
                    log.warning("bridge refused the token (%s); retrying", exc)
                except (OSError, TimeoutError, BridgeError, WebSocketException) as exc:
                    # including a handshake cut short by a front that is stopping (InvalidMessage)
                    log.info("bridge not reachable (%s); retry %d", exc, attempt)

    async def _resubscribe(self) -> None:
        self._by_id.clear()
        for sub in list(self._subs):
            if not sub.closed:
                # not awaited inline: the reader must run to receive the replies
                task = asyncio.create_task(self._resubscribe_one(sub))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _resubscribe_one(self, sub: Subscription) -> None:
        try:
            await self._send_subscribe(sub)
        except ConnectionLostError:
            pass  # the next connection tries again
        except BridgeError as exc:
            sub._fail(exc)

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            try:
                msg = orjson.loads(frame)
                if not isinstance(msg, dict):
                    continue
                for one in msg.get("messages") or () if msg.get("type") == "batch" else (msg,):
                    if isinstance(one, dict):
                        self._handle(one)
            except (ValueError, KeyError, TypeError):
                # one malformed frame must not end the subscriptions: skip it, loudly
                log.warning("ignoring a malformed frame from the bridge", exc_info=True)

    def _handle(self, msg: dict[str, Any]) -> None:
        id_ = msg.get("id")
        if isinstance(id_, int) and id_ in self._pending and self._pending[id_][1](msg):
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

    async def _refresh_token(self, ws: ClientConnection) -> None:
        """Send a fresh token on the open connection before the current one expires."""
        if self._token_provider is None:
            return
        while True:
            expires = _expiry(self._token)
            if expires is None:
                return
            # at 80% of the remaining lifetime, and not in a tight loop
            await asyncio.sleep(max(1.0, (expires - time.time()) * 0.8))
            try:
                token = await self._token_now()
                if token:
                    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            except ConnectionClosed:
                return  # the next connection gets a fresh token anyway
            except Exception:
                log.warning("token refresh failed; trying again shortly", exc_info=True)

    def _fail_pending(self, exc: BridgeError) -> None:
        for future, _ in list(self._pending.values()):
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _fail_subscriptions(self, exc: BaseException) -> None:
        for sub in self._subs:
            sub._fail(exc)


class _Subscribing:
    """``await client.subscribe(...)`` or ``async with client.subscribe(...) as sub``."""

    def __init__(self, client: BridgeClient, request: dict[str, Any]) -> None:
        self._client, self._request = client, request
        self._sub: Subscription | None = None

    def __await__(self) -> Any:
        return self._client._add_subscription(self._request).__await__()

    async def __aenter__(self) -> Subscription:
        self._sub = await self._client._add_subscription(self._request)
        return self._sub

    async def __aexit__(self, *_exc: object) -> None:
        if self._sub is not None:
            await self._sub.close()


def _expiry(token: str | None) -> float | None:
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None
