"""Streamed HTTP responses on the WebSocket port (CSV export).

websockets answers plain HTTP requests from ``process_request`` with a complete body and
bounds the whole exchange by its opening-handshake timeout, so a month of CSV would have to
sit in memory and finish in 10 s. This connection class intercepts the few streamed paths
before the handshake: it writes a chunked response itself, with the transport's flow control
(a slow reader pauses the database cursor instead of growing a buffer), then closes. Every
other request gets the usual handshake, with the timeout applied here instead.

Flow control alone let a client that never reads pause the cursor forever, holding a pool
connection: each write must drain within the response's ``write_timeout_s`` or the transport
is aborted and the body closed. The planner may also answer at once with a plain
:class:`~websockets.http11.Response` (an export refused for lack of slots).

websockets itself answers a request line or header line over its 8 KiB limit (414, 431) in
plain text before any of our code sees the request; the class answers those in JSON like the
rest of the port, and an oversized ``Authorization`` header (a huge token) with 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import HeaderLineTooLong
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request, Response
from websockets.server import ServerProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamedResponse:
    content_type: str
    body: AsyncIterator[bytes]
    filename: str | None = None
    # A client that takes nothing for this long is gone or hostile: its transport is
    # aborted and the body closed (for CSV exports that returns the database connection).
    write_timeout_s: float = 30.0
    # A client that takes a little before every write timeout would keep the body (and its
    # database connection and export slot) for as long as it likes: a whole response may take
    # at most this long.
    max_duration_s: float | None = None
    on_close: Callable[[], None] | None = None  # once, when the body is done with

    async def close(self) -> None:
        try:
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self.on_close is not None:
                self.on_close()


# Returns a StreamedResponse to take the request over, a Response to answer it at once, or
# None for the normal handshake.
StreamPlanner = Callable[[Request], Awaitable[StreamedResponse | Response | None]]


class StalledClient(Exception):
    """The client did not take a write within the response's write timeout."""


class TooSlowClient(Exception):
    """The response was not done within its ``max_duration_s``."""


def streaming_connection(
    planner: StreamPlanner, open_timeout: float, server_header: str
) -> type[ServerConnection]:
    """A ServerConnection class bound to ``planner`` (pass it as ``create_connection`` and
    ``open_timeout=None`` to ``serve``)."""

    class StreamingConnection(ServerConnection):
        def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
            super().__init__(protocol, *args, **kwargs)
            # ServerProtocol.reject() is how websockets builds those 414/431 answers; the
            # protocol object is made per connection, so this replaces it for this one only.
            protocol.reject = functools.partial(  # type: ignore[method-assign]
                _reject_oversized, protocol, protocol.reject
            )

        async def handshake(self, process_request: Any = None, *args: Any, **kwargs: Any) -> None:
            plan: StreamedResponse | Response | None = None
            try:
                async with asyncio.timeout(open_timeout):
                    await asyncio.wait(
                        [self.request_rcvd, self.connection_lost_waiter],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    plan = await planner(self.request) if self.request is not None else None
            except BaseException:
                # the timeout can strike after the planner returned: release what it took
                if isinstance(plan, StreamedResponse):
                    await plan.close()
                raise
            if isinstance(plan, StreamedResponse):
                await _stream(self, plan, server_header)
                return  # still CONNECTING: websockets aborts the (already closed) transport
            if isinstance(plan, Response):
                process_request = _answer_with(plan)
            async with asyncio.timeout(open_timeout):
                await super().handshake(process_request, *args, **kwargs)

    return StreamingConnection


def _reject_oversized(
    protocol: ServerProtocol,
    reject: Callable[[http.HTTPStatus | int, str], Response],
    status: http.HTTPStatus | int,
    text: str,
) -> Response:
    if status == http.HTTPStatus.REQUEST_URI_TOO_LONG:
        return _json(
            414,
            "uri_too_long",
            f"the request line is longer than {MAX_LINE_LENGTH} bytes: "
            "send fewer or shorter query parameters",
        )
    if status != http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        return reject(status, text)
    # The line that was too long is still unread at the front of the buffer.
    line = bytes(protocol.reader.buffer[:14]).lower()
    if isinstance(protocol.handshake_exc, HeaderLineTooLong) and line == b"authorization:":
        return _json(
            401,
            "invalid_token",
            f"token too large: the Authorization header is longer than {MAX_LINE_LENGTH} bytes",
        )
    return _json(
        431,
        "header_too_large",
        f"a header line is longer than {MAX_LINE_LENGTH} bytes "
        f"or there are more than {MAX_NUM_HEADERS} headers",
    )


def _json(status: int, error: str, message: str) -> Response:
    body = orjson.dumps({"error": error, "message": message})
    headers = Headers(
        [
            ("Connection", "close"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _answer_with(response: Response) -> Callable[[ServerConnection, Request], Response]:
    """A ``process_request`` that answers with ``response`` (websockets then sends it, adds
    its Server header and closes, as for any HTTP answer)."""
    return lambda _conn, _request: response


async def _drain(conn: ServerConnection, timeout_s: float, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    if loop.time() >= deadline:
        raise TooSlowClient
    try:
        async with asyncio.timeout(min(timeout_s, deadline - loop.time())):
            await conn.drain()
    except TimeoutError:
        raise (TooSlowClient if loop.time() >= deadline else StalledClient) from None


async def _stream(conn: ServerConnection, plan: StreamedResponse, server_header: str) -> None:
    transport = conn.transport
    head = [
        "HTTP/1.1 200 OK",
        f"Content-Type: {plan.content_type}",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "Cache-Control: no-store",
        f"Server: {server_header}",
    ]
    if plan.filename:
        head.append(f'Content-Disposition: attachment; filename="{plan.filename}"')
    transport.write(("\r\n".join(head) + "\r\n\r\n").encode())
    deadline = asyncio.get_running_loop().time() + (plan.max_duration_s or float("inf"))
    try:
        async for chunk in plan.body:
            if transport.is_closing():
                return  # the client went away: stop reading the database
            if chunk:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await _drain(conn, plan.write_timeout_s, deadline)
        transport.write(b"0\r\n\r\n")
        await _drain(conn, plan.write_timeout_s, deadline)
    except StalledClient:
        log.info(
            "streamed response aborted: the client took nothing for %.0f s", plan.write_timeout_s
        )
        transport.abort()
        return
    except TooSlowClient:
        log.info("streamed response aborted: not done after %.0f s", plan.max_duration_s)
        transport.abort()
        return
    except Exception:
        # Headers are out: the only honest signal left is an unterminated chunked body,
        # which every HTTP client reports as an incomplete response.
        log.exception("streamed response failed")
        transport.abort()
        return
    finally:
        await plan.close()
    transport.close()  # flushes what is buffered, then closes
    # websockets aborts the transport when the handshake returns without a WebSocket, which
    # would discard the tail still buffered: return only once it is really closed (or the
    # client has had as long to take it as it had for any other write).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(conn.connection_lost_waiter), plan.write_timeout_s)
