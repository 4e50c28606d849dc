"""Which database errors are worth retrying."""

from __future__ import annotations

import asyncpg

# Classes of SQLSTATE where the same statement can succeed later: connection exceptions (08),
# insufficient resources (53), operator intervention such as admin shutdown or
# pg_terminate_backend (57), system errors (58), and serialization/deadlock (40).
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def is_transient(exc: BaseException) -> bool:
    # InternalClientError: asyncpg's protocol state broke, typically because the server
    # closed the connection mid-COPY; a fresh connection fixes it.
    if isinstance(
        exc,
        (
            OSError,
            ConnectionError,
            TimeoutError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
        ),
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_CLASSES
    return False
