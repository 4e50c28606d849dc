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


# Classes of SQLSTATE a row's content can cause: data exceptions (22: bad text encoding, out
# of range), integrity violations (23: CHECK, NOT NULL, foreign keys) and program limits (54:
# e.g. an index entry too large). Retrying the same rows fails the same way; only leaving the
# offending message out helps.
_DATA_CLASSES = ("22", "23", "54")


def is_data_error(exc: BaseException) -> bool:
    """Whether the rows being written, not the database or the connection, caused ``exc``."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _DATA_CLASSES
    # Raised by the driver while encoding the rows, before anything reaches the server: text
    # it cannot encode, input a codec refuses. (Checked before is_transient by the caller:
    # asyncpg's client-side DataError is also an InterfaceError.) Not TypeError: the rows'
    # types are the bridge's own doing, and a bug must stall the stream loudly, not turn
    # every message into a dead letter.
    return isinstance(exc, (UnicodeEncodeError, asyncpg.exceptions._base.DataError))
