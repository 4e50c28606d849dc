"""Streamed HTTP responses on the WebSocket port (CSV export).

websockets answers plain HTTP requests from ``process_request`` with a complete body and
bounds the whole exchange by its opening-handshake timeout, so a month of CSV would have to
sit in memory and finish in 10 s. This connection class intercepts the few streamed paths
before the handshake: it writes a chunked response itself, with the transport's flow control
(a slow reader pauses the database cursor instead of growing a buffer), then closes. Every
other request gets the usual handshake, with the timeout applied here instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamedResponse:
    content_type: str
    body: AsyncIterator[bytes]
    filename: str | None = None


# Returns a StreamedResponse to take the request over, or None for the normal handshake.
StreamPlanner = Callable[[Request], Awaitable[StreamedResponse | None]]


def streaming_connection(
    planner: StreamPlanner, open_timeout: float, server_header: str
) -> type[ServerConnection]:
    """A ServerConnection class bound to ``planner`` (pass it as ``create_connection`` and
    ``open_timeout=None`` to ``serve``)."""

    class StreamingConnection(ServerConnection):
        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            async with asyncio.timeout(open_timeout):
                await asyncio.wait(
                    [self.request_rcvd, self.connection_lost_waiter],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                plan = await planner(self.request) if self.request is not None else None
            if plan is not None:
                await _stream(self, plan, server_header)
                return  # still CONNECTING: websockets aborts the (already closed) transport
            async with asyncio.timeout(open_timeout):
                await super().handshake(*args, **kwargs)

    return StreamingConnection


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
    try:
        async for chunk in plan.body:
            if transport.is_closing():
                return  # the client went away: stop reading the database
            if chunk:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await conn.drain()
        transport.write(b"0\r\n\r\n")
        await conn.drain()
    except Exception:
        # Headers are out: the only honest signal left is an unterminated chunked body,
        # which every HTTP client reports as an incomplete response.
        log.exception("streamed response failed")
        transport.abort()
        return
    finally:
        aclose = getattr(plan.body, "aclose", None)
        if aclose is not None:
            await aclose()
    transport.close()  # flushes what is buffered, then closes
    # websockets aborts the transport when the handshake returns without a WebSocket, which
    # would discard the tail still buffered: return only once it is really closed.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(conn.connection_lost_waiter), 30)
