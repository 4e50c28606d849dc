"""Tokens: where they come from and when to fetch a fresh one (pure but for calling the
caller's provider)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import jwt

TokenProvider = Callable[[], "str | Awaitable[str]"]


async def call_provider(provider: TokenProvider) -> str:
    """The token from ``provider``, a function or a coroutine function."""
    token = provider()
    return await token if inspect.isawaitable(token) else token


def expiry(token: str | None) -> float | None:
    """The token's ``exp`` (seconds since the epoch), if it is a JWT that has one."""
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def refresh_delay(expires: float, now: float) -> float:
    """How long to wait before fetching a fresh token: at 80% of the remaining lifetime, and
    not in a tight loop (at least a second, also once it has expired)."""
    return max(1.0, (expires - now) * 0.8)
