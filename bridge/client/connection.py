"""The client's connection: open it, read it, keep its token fresh, and open a new one with
jittered exponential backoff when it drops. What the messages mean is the owner's business
(:class:`bridge.client.core.BridgeClient`): the link hands it every message read and tells it
when a connection is back, lost, or over for good."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, Protocol

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bridge.client.errors import AuthError, BridgeError, ConnectionLostError
from bridge.client.messages import decode_frame
from bridge.client.tokens import TokenProvider, call_provider, expiry, refresh_delay

log = logging.getLogger("bridge.client")


class Owner(Protocol):
    """What the link needs from the client: its settings (read at each use, so changing
    them on a live client takes effect) and four callbacks."""

    url: str
    reconnect: bool
    backoff_initial_s: float
    backoff_max_s: float
    open_timeout_s: float

    def _handle(self, msg: dict[str, Any]) -> None:
        """One message read (in the reader: it must not block)."""

    def _resubscribe(self) -> None:
        """A connection is back after a drop."""

    def _fail_pending(self, exc: BridgeError) -> None:
        """The connection dropped: nothing waiting for a reply will get one."""

    def _fail_subscriptions(self, exc: BaseException) -> None:
        """No more connections: end every subscription with ``exc``."""


def backoff_delay(attempt: int, initial_s: float, max_s: float, jitter: float) -> float:
    """The wait before reconnection attempt ``attempt`` (from 0): doubling from ``initial_s``
    up to ``max_s``, times ``jitter`` (drawn from [0.5, 1]: no herds). The exponent is capped:
    ``2**attempt`` past 1023 does not fit a float, and an outage of a few hours reaches that."""
    return min(max_s, initial_s * 2 ** min(attempt, 64)) * jitter


class Link:
    """The connection of one client, and the task that reads it and reconnects."""

    def __init__(self, owner: Owner, token: str | None, token_provider: TokenProvider | None):
        self._owner = owner
        self.token = token
        self.token_provider = token_provider
        self.ws: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.connections = 0  # how many times a connection was established
        self.client_id: str | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """The first connection; errors here (bad token, nothing listening) raise."""
        ws = await self._open(await self._token_now())
        self._runner = asyncio.create_task(self._run(ws), name="bridge-client")

    async def close(self) -> None:
        """Stop reconnecting, stop the reader and close the connection."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.wait([self._runner])  # unlike `await`, lets our own cancellation out
        if self.ws is not None:
            await self.ws.close()

    async def _token_now(self) -> str | None:
        if self.token_provider is not None:
            self.token = await call_provider(self.token_provider)
        return self.token

    async def _open(self, token: str | None) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(
                self._owner.url,
                additional_headers=headers,
                open_timeout=self._owner.open_timeout_s,
                max_size=None,
                max_queue=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthError(status, "unauthorized", "the bridge refused the token") from None
            raise BridgeError(status, "handshake_refused", f"HTTP {status}") from None
        if token:
            try:
                self.client_id = await self._hello(ws)
            except BaseException:
                # no usable hello (none in time, garbage, cancelled): close what was opened,
                # or every attempt leaves a connection behind on both sides
                with contextlib.suppress(Exception):
                    await ws.close()
                raise
        self.ws = ws
        self.connections += 1
        self.connected.set()
        return ws

    async def _hello(self, ws: ClientConnection) -> str | None:
        """The ``client_id`` from the bridge's first message on an authenticated connection."""
        frame = await asyncio.wait_for(ws.recv(), self._owner.open_timeout_s)
        try:
            hello = orjson.loads(frame)
        except orjson.JSONDecodeError:
            hello = None
        if not isinstance(hello, dict):
            raise BridgeError(502, "bad_hello", "the bridge's first message is not an object")
        return hello.get("client_id")

    async def _run(self, ws: ClientConnection) -> None:
        """The connection loop; whatever ends it unexpectedly ends every subscription and
        request with an error instead of leaving them waiting forever."""
        try:
            await self._connection_loop(ws)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("bridge client stopped")
            self.connected.clear()
            self._owner._fail_pending(ConnectionLostError(f"client stopped: {exc!r}"))
            self._owner._fail_subscriptions(
                BridgeError(500, "client_error", f"client stopped: {exc!r}")
            )
            if self.ws is not None:
                # nobody reads it any more, and its incoming queue has no bound (max_queue=None)
                await self.ws.close()

    async def _connection_loop(self, ws: ClientConnection) -> None:
        """Read, and reconnect when the connection drops, until closed."""
        owner = self._owner
        attempt = 0
        while True:
            refresher = asyncio.create_task(self._refresh_token(ws), name="bridge-client-token")
            try:
                if self.connections > 1:
                    owner._resubscribe()
                attempt = 0
                await self._read(ws)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                log.info("bridge connection closed (%s); reconnecting", code)
            finally:
                refresher.cancel()
                self.connected.clear()
                owner._fail_pending(ConnectionLostError())
                await asyncio.wait([refresher])  # it may be in the token provider
            if self._closed or not owner.reconnect:
                owner._fail_subscriptions(ConnectionLostError("connection closed"))
                return
            while True:
                jitter = random.uniform(0.5, 1.0)
                await asyncio.sleep(
                    backoff_delay(attempt, owner.backoff_initial_s, owner.backoff_max_s, jitter)
                )
                attempt += 1
                try:
                    token = await self._token_now()
                except Exception:
                    # the caller's provider (an auth service that is down, say): try again
                    log.warning("token provider failed; retry %d", attempt, exc_info=True)
                    continue
                try:
                    ws = await self._open(token)
                    break
                except AuthError as exc:
                    if self.token_provider is None:
                        owner._fail_subscriptions(exc)  # a fixed token will not get better
                        return
                    log.warning("bridge refused the token (%s); retrying", exc)
                except (OSError, TimeoutError, BridgeError, WebSocketException) as exc:
                    # including a handshake cut short by a front that is stopping (InvalidMessage)
                    log.info("bridge not reachable (%s); retry %d", exc, attempt)

    async def _read(self, ws: ClientConnection) -> None:
        # one malformed frame, or message in a batch, must not end the subscriptions nor cost
        # the other messages of its batch: skip just it, loudly
        async for frame in ws:
            try:
                messages = decode_frame(frame)
            except (ValueError, TypeError):
                log.warning("ignoring a malformed frame from the bridge", exc_info=True)
                continue
            for msg in messages:
                try:
                    self._owner._handle(msg)
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring a malformed message from the bridge", exc_info=True)

    async def _refresh_token(self, ws: ClientConnection) -> None:
        """Send a fresh token on the open connection before the current one expires."""
        if self.token_provider is None:
            return
        while True:
            expires = expiry(self.token)
            if expires is None:
                return
            await asyncio.sleep(refresh_delay(expires, time.time()))
            try:
                token = await self._token_now()
                if token:
                    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            except ConnectionClosed:
                return  # the next connection gets a fresh token anyway
            except Exception:
                log.warning("token refresh failed; trying again shortly", exc_info=True)
