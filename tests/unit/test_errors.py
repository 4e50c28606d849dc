"""The one exception-to-error ladder (bridge.errors): what HTTP and WebSocket clients are
told about each kind of exception, and that only unknown errors log a traceback."""

from __future__ import annotations

import logging

import orjson
import pytest

from bridge import errors
from bridge.auth import AuthError
from bridge.protocol import ClientError
from bridge.subscriptions import SubscriptionError

CASES = [
    # exception, (code, error, message), Retry-After header, traceback logged
    (
        ClientError(404, "not_found", "no such device"),
        (404, "not_found", "no such device"),
        None,
        False,
    ),
    (
        ClientError(429, "rate_limit_exceeded", "slow down", retry_after=2.4),
        (429, "rate_limit_exceeded", "slow down"),
        "2",
        False,
    ),
    (
        ClientError(503, "unavailable", "busy", retry_after=0.01),  # never "retry now"
        (503, "unavailable", "busy"),
        "1",
        False,
    ),
    (
        SubscriptionError(403, "forbidden", "not your device"),
        (403, "forbidden", "not your device"),
        None,
        False,
    ),
    (
        AuthError("token_expired", "token has expired"),
        (401, "token_expired", "token has expired"),
        None,
        False,
    ),
    (
        RuntimeError("pool at /var/run/db: secret"),
        (500, "internal_error", "internal error"),
        None,
        True,
    ),
    (KeyError("device_id"), (500, "internal_error", "internal error"), None, True),
]


@pytest.mark.parametrize(("exc", "expected", "retry_after", "logged"), CASES)
def test_ladder(
    exc: Exception,
    expected: tuple[int, str, str],
    retry_after: str | None,
    logged: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.errors")
    code, error, message = expected

    response = errors.http_error(exc, "GET /thing")
    assert response.status_code == code
    assert orjson.loads(response.body) == {"error": error, "message": message}
    assert response.headers.get("Retry-After") == retry_after
    assert response.headers["Content-Type"] == "application/json"

    ws = errors.ws_error(exc, id_=7)
    assert (ws["type"], ws["id"], ws["code"], ws["error"], ws["message"]) == (
        "error",
        7,
        code,
        error,
        message,
    )
    assert "timestamp" in ws

    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == (2 if logged else 0)  # once per answer above
    if logged:
        assert tracebacks[0].getMessage() == "GET /thing failed"
    # no internal detail reaches a client
    assert b"secret" not in response.body and "secret" not in orjson.dumps(ws).decode()
