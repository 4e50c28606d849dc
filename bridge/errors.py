"""The one exception-to-error ladder of the front: an exception in, the error a client is told
out (no I/O but logging an unknown error).

REST, plain HTTP, the connection's own WebSocket errors and every client message
(bridge/session.py) turn an exception into the error format of docs/protocol.md through
:func:`client_error`:

- ``ClientError``: the client caused it or must know; it goes out as it is;
- ``SubscriptionError`` (bridge.subscriptions): a refused subscription, with its own code;
- ``AuthError`` (bridge.auth): a token that does not authenticate, 401;
- anything else: a bug or an outage. It is logged with its traceback and the client gets
  ``500 internal_error``, never a traceback or any internal detail.

Known errors are the client's business and log nothing; only unknown ones log a traceback.
:func:`http_error` and :func:`ws_error` shape the result for HTTP and for WebSocket;
:func:`json_response` builds every JSON answer of the port.
"""

from __future__ import annotations

import http
import logging
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from bridge import protocol
from bridge.auth import AuthError
from bridge.protocol import ClientError
from bridge.subscriptions import SubscriptionError

log = logging.getLogger(__name__)

INTERNAL = ClientError(500, "internal_error", "internal error")


def client_error(exc: Exception, what: str = "request") -> ClientError:
    """What the client is told about ``exc``; an unknown error is logged as ``{what} failed``
    with its traceback (call it from the ``except`` block that caught ``exc``)."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, SubscriptionError):
        return ClientError(exc.code, exc.error, exc.message)
    if isinstance(exc, AuthError):
        return ClientError(401, exc.error, exc.message)
    log.error("%s failed", what, exc_info=exc)
    return INTERNAL


def http_error(exc: Exception, what: str = "request") -> Response:
    """The HTTP answer to ``exc``: ``error`` and ``message`` in JSON, and a wait in
    ``Retry-After`` (whole seconds, at least 1: a 0 would say "retry now", and be refused)."""
    err = client_error(exc, what)
    response = json_response(err.code, {"error": err.error, "message": err.message})
    if err.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(err.retry_after)))
    return response


def ws_error(exc: Exception, id_: Any = None, what: str = "request") -> dict[str, Any]:
    """The WebSocket ``error`` message answering ``exc`` (to the message ``id_``)."""
    return protocol.error_message(client_error(exc, what), id_)


def json_response(status: int, body: dict[str, Any]) -> Response:
    """Every JSON answer of the port (endpoints and refusals) is built here."""
    data = orjson.dumps(body)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, data)
