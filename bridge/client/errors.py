"""What the client raises. Every error carries the bridge's ``code``, ``error`` and ``message``:

- :class:`BridgeError`: an error reply from the bridge (or from the client, with the same fields)

  - :class:`AuthError`: the token was refused (401) or does not allow this (403)
  - :class:`ConnectionLostError`: 503, the connection dropped before the reply came
  - :class:`ClientClosedError`: 499, the client was closed
"""

from __future__ import annotations

from typing import Any


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
